"""The draw-a-digit page in a real headless Chromium: the empty state (a prompt, no empty
sections), strokes drawn with the mouse and with touch, a prediction and the 28x28 input
appearing, clear, upload a picture; and the API docs (/docs, /redoc) rendering offline.

Chromium is driven through the system's chromedriver (Debian's ``chromium`` and
``chromium-driver`` packages; ``make test`` installs them) by speaking the W3C WebDriver
protocol over HTTP on the loopback interface: nothing is downloaded. The server is a real
uvicorn on 127.0.0.1, and Chromium resolves no other host name (``--host-resolver-rules``), so
the pages are checked as they work offline. Set
``MNISTLAB_SCREENSHOT=docs/img/draw-a-digit.png`` to keep the screenshot (that is how the one in
docs/ was made).
"""

from __future__ import annotations

import base64
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import uvicorn
from shipping_support import encode, trained_run

from mnistlab.data import load_dataset
from mnistlab.shipping.serve import create_app

ELEMENT = "element-6066-11e4-a52e-4f735466cecf"  # the W3C key of an element reference
CHROMIUM = ("chromium", "chromium-browser", "google-chrome")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.1)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The page and API on a real uvicorn in a background thread."""
    app = create_app(trained_run(tmp_path_factory))
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
    uv = uvicorn.Server(config)
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    wait_until(lambda: uv.started, 60, "uvicorn to start")
    yield f"http://127.0.0.1:{port}/"
    uv.should_exit = True
    thread.join(10)


class WebDriver:
    """The few W3C WebDriver commands the test needs, over HTTP."""

    def __init__(self, url: str, session: str) -> None:
        self.http = httpx.Client(base_url=f"{url}/session/{session}", timeout=120)

    def call(self, method: str, path: str, payload: dict | None = None):
        response = self.http.request(method, path, json=payload)
        body = response.json()
        assert response.status_code == 200, body
        return body["value"]

    def find(self, css: str) -> str:
        found = self.call("POST", "/element", {"using": "css selector", "value": css})
        assert ELEMENT in found, found
        return found[ELEMENT]

    def script(self, source: str, *args):
        return self.call("POST", "/execute/sync", {"script": source, "args": list(args)})

    def stroke(self, element: str, points: list[tuple[int, int]], kind: str = "mouse") -> None:
        """Press at the first point (offsets from the element's centre), move through the
        others, release."""
        origin = {ELEMENT: element}
        x0, y0 = points[0]
        actions = [
            {"type": "pointerMove", "duration": 0, "origin": origin, "x": x0, "y": y0},
            {"type": "pointerDown", "button": 0},
        ]
        for x, y in points[1:]:
            actions.append(
                {"type": "pointerMove", "duration": 60, "origin": origin, "x": x, "y": y}
            )
        actions.append({"type": "pointerUp", "button": 0})
        source = {
            "type": "pointer",
            "id": kind,
            "parameters": {"pointerType": kind},
            "actions": actions,
        }
        self.call("POST", "/actions", {"actions": [source]})
        self.call("DELETE", "/actions")

    def settled_label(self) -> str:
        """The predicted label once the page has no prediction on its way."""

        def done() -> str:
            idle = self.script("return document.body.dataset.state;") == "idle"
            return self.text("#label") if idle else ""

        return wait_until(done, 60, "the prediction of the finished stroke")

    def text(self, css: str) -> str:
        return self.script(f"return document.querySelector({css!r}).textContent;")

    def displayed(self, css: str) -> bool:
        """Whether the element is visible (WebDriver's own rendering check)."""
        return self.call("GET", f"/element/{self.find(css)}/displayed")

    def outside_requests(self, origin: str) -> list[str]:
        """The URLs this page loaded (or tried to) from anywhere but ``origin``."""
        urls = self.script(
            "return [location.href, ...performance.getEntriesByType('resource')"
            ".map((e) => e.name), ...Array.from(document.querySelectorAll("
            "'script[src], link[href], img[src]'), (e) => e.src || e.href)];"
        )
        return [url for url in urls if not url.startswith(origin)]


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    driver = shutil.which("chromedriver")
    binary = next((shutil.which(name) for name in CHROMIUM if shutil.which(name)), None)
    if driver is None or binary is None:
        pytest.fail(
            "the browser test needs Chromium and its chromedriver: on Debian/Ubuntu "
            "`apt-get install chromium chromium-driver` (`make test` does it)",
            pytrace=False,
        )
    port = free_port()
    process = subprocess.Popen(
        [driver, f"--port={port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    profile = tempfile.mkdtemp(prefix="mnistlab-chromium-")
    try:

        def ready() -> bool:
            try:
                return httpx.get(url + "/status", timeout=1).json()["value"]["ready"]
            except (httpx.TransportError, ValueError, KeyError):
                return False

        wait_until(ready, 60, "chromedriver")
        options = {
            "binary": binary,
            "args": [
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-extensions",
                "--no-first-run",
                "--window-size=900,760",
                # Offline: every host name but the loopback's fails to resolve.
                "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
                f"--user-data-dir={profile}",
            ],
        }
        capabilities = {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": options}}
        response = httpx.post(url + "/session", json={"capabilities": capabilities}, timeout=120)
        assert response.status_code == 200, response.text
        session = response.json()["value"]["sessionId"]
        yield WebDriver(url, session)
        httpx.delete(f"{url}/session/{session}", timeout=30)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
        shutil.rmtree(profile, ignore_errors=True)


def seen_ink(browser: WebDriver) -> int:
    """How many pixels of the 'what the model saw' canvas are lit."""
    return browser.script(
        "const d = document.getElementById('seen').getContext('2d')"
        ".getImageData(0, 0, 28, 28).data; let n = 0;"
        "for (let i = 0; i < d.length; i += 4) { if (d[i] > 0) n++; } return n;"
    )


def test_draw_a_digit_in_headless_chromium(server: str, browser: WebDriver, tmp_path: Path):
    browser.call("POST", "/url", {"url": server})
    wait_until(lambda: "fast-cnn" in browser.text("#model"), 60, "the model name")
    pad = browser.find("#pad")
    assert browser.text("#label") == ""

    # Before any drawing: a prompt, and no empty result sections (no empty "Top 3", no black
    # 28x28 box).
    assert browser.displayed("#empty") and "Draw a digit" in browser.text("#empty")
    for section in ("#prediction", "#top3-section", "#seen-section", "#label"):
        assert not browser.displayed(section), section

    # A vertical stroke with the mouse: a "1".
    browser.stroke(pad, [(0, -95), (0, -40), (0, 20), (2, 95)])
    assert browser.settled_label() == "1"
    assert not browser.displayed("#empty")
    assert browser.displayed("#top3-section") and browser.displayed("#seen-section")
    assert browser.script("return document.querySelectorAll('#top3 .bar').length;") == 3
    assert "%" in browser.text("#confidence")
    assert seen_ink(browser) > 10

    # Clear empties everything, and the prompt is back.
    browser.call("POST", f"/element/{browser.find('#clear')}/click", {})
    assert browser.text("#label") == "" and seen_ink(browser) == 0
    assert browser.displayed("#empty") and not browser.displayed("#top3-section")

    # A "7" drawn with touch: top bar, then the diagonal down.
    browser.stroke(pad, [(-70, -90), (0, -90), (70, -90), (30, 0), (-10, 95)], kind="touch")
    assert browser.settled_label() == "7"
    assert seen_ink(browser) > 10
    screenshot = base64.b64decode(browser.call("GET", "/screenshot"))
    assert screenshot.startswith(b"\x89PNG")
    (tmp_path / "page.png").write_bytes(screenshot)
    keep = os.environ.get("MNISTLAB_SCREENSHOT")
    if keep:
        Path(keep).parent.mkdir(parents=True, exist_ok=True)
        Path(keep).write_bytes(screenshot)

    # Upload a real MNIST digit, as a dark-on-light PNG.
    test = load_dataset("mnist-mini", "test", download=False)
    index = int(np.flatnonzero(test.labels == 3)[0])
    picture = tmp_path / "three.png"
    picture.write_bytes(encode(255 - test.images[index]))
    browser.call("POST", f"/element/{browser.find('#clear')}/click", {})
    browser.call("POST", f"/element/{browser.find('#upload')}/value", {"text": str(picture)})
    assert browser.settled_label() == "3"
    assert browser.text("#status") == ""
    assert browser.displayed("#top3-section") and not browser.displayed("#empty")

    # "Whole number": a wide pad read by /v1/read; two strokes far apart are two 1s.
    browser.call("POST", f"/element/{browser.find('#number-mode')}/click", {})
    assert browser.script("return document.getElementById('pad').width;") == 560
    assert browser.displayed("#empty") and browser.text("h1") == "Write a number"
    browser.stroke(pad, [(-150, -70), (-150, 0), (-148, 70)])
    browser.stroke(pad, [(150, -70), (150, 0), (152, 70)])
    assert browser.settled_label() == "11"
    assert browser.script("return document.querySelectorAll('#top3 .bar').length;") == 2
    assert not browser.displayed("#seen-section") and browser.text("#status") == ""
    # Its length, when known: the best reading of that many digits, read again at once.
    assert browser.displayed("#digits")
    browser.call("POST", f"/element/{browser.find('#digits')}/value", {"text": "3"})
    wait_until(lambda: len(browser.settled_label()) == 3, 60, "a reading of three digits")
    assert browser.script("return document.querySelectorAll('#top3 .bar').length;") == 3
    assert browser.outside_requests(server) == []


def test_api_docs_render_offline(server: str, browser: WebDriver):
    """Swagger UI (/docs) renders the API from the server's own files, in a browser that can
    reach no other host."""
    browser.call("POST", "/url", {"url": server + "docs"})

    def rendered() -> bool:
        text = browser.script("return document.body.innerText;")
        return all(
            words in text
            for words in ("Classify one picture or 28x28 array", "/v1/predict/batch", "Liveness")
        )

    wait_until(rendered, 60, "/docs to render the API")
    assert browser.script("return document.querySelectorAll('.opblock').length;") >= 5
    assert "Failed to load API definition" not in browser.text("body")
    assert browser.outside_requests(server) == []
