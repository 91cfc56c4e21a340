"""The HTTP API against a hostile client (issue 15): each test talks to a real ``mnistlab serve``
process on a loopback socket, with the standard library's urllib, httpx or a raw socket.

Two servers per module: ``server`` with the default limits and access rules, ``locked`` with a
bearer token (from ``MNISTLAB_SERVE_TOKEN``), trusted hosts and ``--expose-details``.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from PIL import Image
from shipping_support import encode, trained_run

from mnistlab.data import load_dataset
from mnistlab.shipping.guard import host_allowed

TOKEN = "s3cret-token"


@dataclass
class Server:
    base: str
    port: int
    process: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(run: Path, log_path: Path, *options: str, env: dict[str, str] | None = None) -> Server:
    port = _free_port()
    command = [sys.executable, "-m", "mnistlab", "serve", str(run), "--port", str(port), *options]
    environment = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200", **(env or {})}
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, env=environment, stdout=log, stderr=subprocess.STDOUT)
    server = Server(f"http://127.0.0.1:{port}", port, process, log_path)
    deadline = time.monotonic() + 180  # a bound for a loaded machine, not a timing
    while True:
        try:
            if httpx.get(server.base + "/healthz", timeout=2).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        assert process.poll() is None, server.log()
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.2)


def _stop(server: Server) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return trained_run(tmp_path_factory)


@pytest.fixture(scope="module")
def server(run: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    started = _start(run, tmp_path_factory.mktemp("serve") / "server.log")
    yield started
    _stop(started)


@pytest.fixture(scope="module")
def locked(run: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    options = ["--allowed-host", "digits.test", "--allowed-host", "127.0.0.1", "--expose-details"]
    started = _start(
        run,
        tmp_path_factory.mktemp("serve") / "locked.log",
        *options,
        env={"MNISTLAB_SERVE_TOKEN": TOKEN},
    )
    yield started
    _stop(started)


@pytest.fixture(scope="module")
def digit() -> np.ndarray:
    return load_dataset("mnist-mini", "test", download=False).images[0]


def assert_error(response: httpx.Response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["message"] and error["code"]
    if code is not None:
        assert error["code"] == code, error
    return error


def urllib_post(url: str, data: object, content_type: str) -> tuple[int, dict]:
    """POST with the standard library; the status and JSON of the answer, error or not."""
    request = urllib.request.Request(url, data=data, headers={"content-type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def healthz_times(base: str, stop: threading.Event, minimum: int = 5) -> list[float]:
    """Seconds each /healthz took, asked again and again (a fresh connection each time) until
    ``stop`` is set and at least ``minimum`` were asked."""
    times: list[float] = []
    while not stop.is_set() or len(times) < minimum:
        start = time.perf_counter()
        assert httpx.get(base + "/healthz", timeout=30).status_code == 200
        times.append(time.perf_counter() - start)
        time.sleep(0.05)
    return times


# ---------------------------------------------------------------------------- 1. JSON pixels


def test_api_rejects_boolean_pixels(server: Server, digit: np.ndarray) -> None:
    with httpx.Client(base_url=server.base, timeout=30) as http:
        assert_error(http.post("/v1/predict", json={"image": [[True] * 28] * 28}), 422, "bad_value")
        one = digit.tolist()
        one[14][14] = True
        error = assert_error(http.post("/v1/predict", json={"image": one}), 422, "bad_value")
        assert "[14][14]" in error["message"] and "true" in error["message"]
        batch = {"images": [digit.tolist(), [[False] * 28] * 28]}
        error = assert_error(http.post("/v1/predict/batch", json=batch), 422, "bad_value")
        assert "images[1]" in error["message"]
        assert http.post("/v1/predict", json={"image": digit.tolist()}).status_code == 200


def test_api_concurrent_clients_each_get_their_own_answer(server: Server, run: Path) -> None:
    """Sixteen clients at once on real sockets, each sending other digits: the requests that
    arrive together are classified in one call (dynamic batching) and every answer must still
    be the one its own digit gets alone."""
    from concurrent.futures import ThreadPoolExecutor

    from mnistlab.shipping import load_model

    images = load_dataset("mnist-mini", "test", download=False).images[:64]
    expected = [p.label for p in load_model(run).predict(images)]

    def client(start: int) -> list[str]:
        with httpx.Client(base_url=server.base, timeout=120) as http:
            return [
                http.post("/v1/predict", json={"image": images[i].tolist()}).json()["label"]
                for i in range(start, len(images), 16)
            ]

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(client, range(16)))
    for start, labels in enumerate(answers):
        assert labels == expected[start::16]


def test_api_pixel_rounding_rule(server: Server, digit: np.ndarray) -> None:
    """Pixels are rounded to the nearest integer, then must lie in 0-255 (docs/shipping.md)."""
    with httpx.Client(base_url=server.base, timeout=30) as http:

        def seen(value: float) -> int:
            image = digit.astype(float).tolist()
            image[0][0] = value
            body = http.post("/v1/predict?include_input=true", json={"image": image}).json()
            return body["input"][0][0]

        assert seen(-0.4) == 0 and seen(255.4) == 255 and seen(254.6) == 255 and seen(7.2) == 7
        for value in (-0.6, 255.6, -1, 256):
            image = digit.tolist()
            image[3][4] = value
            assert_error(http.post("/v1/predict", json={"image": image}), 422, "out_of_range")
        for value, word in ((None, "null"), ("7", "string"), ({}, "object")):
            image = digit.tolist()
            image[2][9] = value
            error = assert_error(http.post("/v1/predict", json={"image": image}), 422, "bad_value")
            assert word in error["message"] and "[2][9]" in error["message"]
        nan = json.dumps({"image": [[0] * 28] * 27 + [[float("nan")] * 28]})
        headers = {"content-type": "application/json"}
        assert_error(http.post("/v1/predict", content=nan, headers=headers), 422, "not_finite")
        assert_error(http.post("/v1/predict", json={"image": [[0] * 28] * 27}), 422, "bad_shape")


# ---------------------------------------------------------------------------- 2. body size


def test_api_oversized_body_413_reaches_urllib(server: Server) -> None:
    """urllib sends the whole body before it reads: the server reads and discards it (up to
    64 MiB) so that the client sees the 413 instead of a connection reset."""
    url = server.base + "/v1/predict"
    for size in (5 << 20, 50 << 20):
        status, body = urllib_post(url, b"\x00" * size, "image/png")
        assert status == 413 and body["error"]["code"] == "too_large", (size, body)

    def chunks() -> Iterator[bytes]:  # no Content-Length: chunked, cut off as it streams in
        for _ in range(80):
            yield b"\x00" * 65536

    status, body = urllib_post(url, chunks(), "image/png")
    assert status == 413 and body["error"]["code"] == "too_large"
    assert httpx.get(server.base + "/healthz").status_code == 200


def test_api_body_beyond_drain_cap_is_answered_and_closed(server: Server) -> None:
    """A Content-Length beyond the 64 MiB drain cap: 413 at once, then the connection closes
    (the body is not read)."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s:
        s.sendall(
            b"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\ncontent-type: image/png\r\n"
            b"content-length: 200000000\r\n\r\n" + b"\x00" * 1000
        )
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413"), answer[:300]
    assert b"connection: close" in head.lower()
    assert json.loads(body)["error"]["code"] == "too_large"


# ---------------------------------------------------------------------------- 3. header size


def test_api_huge_header_gets_431_and_others_stay_fast(server: Server) -> None:
    outcome: dict[str, object] = {}

    def attacker() -> None:
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ")
            sent = 0
            try:
                while sent < 50 << 20:  # 50 MB of one header line
                    s.sendall(b"a" * 65536)
                    sent += 65536
            except OSError:
                pass  # the server closed the connection: expected
            outcome["sent"] = sent
            try:
                outcome["answer"] = s.recv(65536)
            except OSError as error:
                outcome["answer"] = error

    thread = threading.Thread(target=attacker)
    thread.start()
    times: list[float] = []
    try:
        while thread.is_alive() or len(times) < 5:
            start = time.perf_counter()
            assert httpx.get(server.base + "/healthz", timeout=30).status_code == 200
            times.append(time.perf_counter() - start)
    finally:
        thread.join(60)
    assert max(times) < 1.0, times
    assert outcome["sent"] < 50 << 20, "the server read the whole 50 MB header"
    answer = outcome["answer"]
    if isinstance(answer, bytes) and answer:  # else the connection was reset: also fine
        assert answer.startswith(b"HTTP/1.1 431"), answer[:200]
        assert b'"headers_too_large"' in answer
    assert "refused a request whose head" in server.log()


def test_api_complete_head_over_the_limit_gets_431(server: Server) -> None:
    """A whole head of 100 KB arriving at once (the parser would finish it in one go) is still
    over the 64 KiB limit; one of 60 KB is not."""
    for size, status in ((100_000, b"431"), (60_000, b"200")):
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s:
            s.sendall(
                b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: "
                + b"a" * size
                + b"\r\nConnection: close\r\n\r\n"
            )
            answer = b""
            with contextlib.suppress(OSError):
                while chunk := s.recv(65536):
                    answer += chunk
        assert answer.startswith(b"HTTP/1.1 " + status), (size, answer[:200])


# ---------------------------------------------------------------------------- 4. pixels


def test_api_refuses_pixel_amplification_quickly(server: Server) -> None:
    """64 small PNGs of 4000x4000 pixels each (1 gigapixel in all) are refused before any is
    decoded, and /healthz stays fast meanwhile."""
    buffer = io.BytesIO()
    picture = np.zeros((4000, 4000), np.uint8)
    picture[1000:3000, 1900:2100] = 255
    Image.fromarray(picture).save(buffer, "PNG", optimize=True)
    png = base64.b64encode(buffer.getvalue()).decode()
    assert len(png) < 100_000
    body = json.dumps({"images_base64": [png] * 64})
    result: dict[str, object] = {}

    def attacker() -> None:
        start = time.perf_counter()
        result["response"] = httpx.post(
            server.base + "/v1/predict/batch",
            content=body,
            headers={"content-type": "application/json"},
            timeout=120,
        )
        result["seconds"] = time.perf_counter() - start

    stop = threading.Event()
    thread = threading.Thread(target=lambda: (attacker(), stop.set()))
    thread.start()
    times = healthz_times(server.base, stop)
    thread.join(120)
    error = assert_error(result["response"], 413, "too_many_pixels")
    assert "per request" in error["message"]
    assert result["seconds"] < 5, result["seconds"]  # refused, not decoded (was 29 s)
    assert max(times) < 1.0, times


# ---------------------------------------------------------------------------- 5. disconnects


def test_api_client_disconnect_is_not_a_500(server: Server) -> None:
    before = server.log()
    for content_type in ("application/json", "image/png", "multipart/form-data; boundary=xx"):
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s:
            s.sendall(
                b"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                + f"content-type: {content_type}\r\ncontent-length: 20000\r\n\r\n".encode()
                + b"{" * 10_000  # half the body, then hang up
            )
            time.sleep(0.2)
    deadline = time.monotonic() + 30
    while True:
        text = httpx.get(server.base + "/metrics").text
        gone = re.search(r'mnistlab_client_disconnects_total\{path="/v1/predict"\} (\d+)', text)
        if (gone and int(gone.group(1)) >= 3) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert gone and int(gone.group(1)) >= 3, text
    assert 'status="500"' not in text
    assert re.search(r'path="/v1/predict",status="499"\} [3-9]', text), text
    log = server.log()[len(before) :]
    assert "Traceback" not in log and "ClientDisconnect" not in log, log
    assert log.count("the client disconnected before its answer") == 3, log


class _Responses:
    """Reads HTTP responses (head, Content-Length body) one by one off a socket; bytes of the
    next response that arrive with one are kept for it (pipelined requests)."""

    def __init__(self, s: socket.socket) -> None:
        self.socket, self.data = s, b""

    def __call__(self) -> tuple[bytes, bytes]:
        while b"\r\n\r\n" not in self.data:
            self.data += self.socket.recv(65536)
        head, _, rest = self.data.partition(b"\r\n\r\n")
        length = int(re.search(rb"content-length: (\d+)", head, re.IGNORECASE).group(1))
        while len(rest) < length:
            rest += self.socket.recv(65536)
        self.data = rest[length:]
        return head, rest[:length]


def test_api_expect_100_continue_still_gets_its_interim_answer(server: Server, digit) -> None:
    # Responses leave in one write (head held for the body: shipping/protocol.py); the
    # interim "100 Continue" must not be held, or a client waiting for it never sends its body.
    body = json.dumps({"image": digit.tolist()}).encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s:
        s.sendall(
            b"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nexpect: 100-continue\r\n"
            + f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n".encode()
        )
        assert s.recv(100).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        s.sendall(body)
        response = _Responses(s)
        head, answer = response()
        assert head.startswith(b"HTTP/1.1 200") and "label" in json.loads(answer)
        s.sendall(b"HEAD /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")  # no body: not held
        s.settimeout(10)
        head = b""
        while b"\r\n\r\n" not in head:
            head += s.recv(65536)
        assert head.startswith(b"HTTP/1.1 ") and head.endswith(b"\r\n\r\n")
        for _ in range(3):  # keep-alive: the next responses on the connection come whole
            s.sendall(
                b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
                + b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"  # pipelined
            )
            assert json.loads(response()[1])["status"] == "ok"
            assert "models" in json.loads(response()[1])


def test_a_response_head_waits_for_its_body() -> None:
    from mnistlab.shipping.protocol import _HeadWithBody

    class Transport:  # records what would go to the socket
        def __init__(self) -> None:
            self.writes: list[bytes] = []
            self.closed = False

        def write(self, data: bytes) -> None:
            self.writes.append(data)

        def close(self) -> None:
            self.closed = True

        def is_closing(self) -> bool:
            return self.closed

    class Cycle:
        def __init__(self) -> None:
            self.response_started = False
            self.scope = {"method": "POST"}

    transport, cycle = Transport(), Cycle()
    wrapped = _HeadWithBody(transport, cycle)
    wrapped.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # before the response: straight out
    cycle.response_started = True
    wrapped.write(b"HEAD")
    assert transport.writes == [b"HTTP/1.1 100 Continue\r\n\r\n"]
    wrapped.write(b"BODY")
    wrapped.write(b"CHUNK")
    assert transport.writes[1:] == [b"HEADBODY", b"CHUNK"] and not wrapped.is_closing()
    cut = _HeadWithBody(transport, cycle)  # an app that fails after starting its response
    cut.write(b"HEAD2")
    cut.close()
    assert transport.writes[-1] == b"HEAD2" and transport.closed


# ---------------------------------------------------------------------------- 6. /v1/models


def test_api_models_public_card_by_default(server: Server, run: Path) -> None:
    response = httpx.get(server.base + "/v1/models")
    assert response.status_code == 200
    card = response.json()["models"][0]
    manifest = json.loads((run / "model" / "model.json").read_text())
    assert card["name"] == "fast-cnn" and card["class_names"] == [str(i) for i in range(10)]
    assert card["manifest"]["weights_sha256"] == manifest["weights_sha256"]
    assert card["metrics"]["test_accuracy"] > 0.9 and card["preprocessing"]["pixels"]
    text = response.text
    assert str(run) not in text and "/tmp" not in text and str(Path.home()) not in text
    for secret in ('"path"', '"config"', '"packages"', '"numpy"', '"optimizer"', '"lr"'):
        assert secret not in text, secret
    assert "--expose-details" in card["details"]


def test_api_models_expose_details_on_option(locked: Server, run: Path) -> None:
    headers = {"authorization": f"Bearer {TOKEN}"}
    info = httpx.get(locked.base + "/v1/models", headers=headers).json()["models"][0]
    assert info["path"].startswith(str(run)) and info["manifest"]["config"]["optimizer"]
    assert "details" not in info


# ---------------------------------------------------------------------------- 7. access rules


def test_api_bearer_token(locked: Server, digit: np.ndarray) -> None:
    image = {"image": digit.tolist()}
    with httpx.Client(base_url=locked.base, timeout=30) as http:
        for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": TOKEN}):
            response = http.post("/v1/predict", json=image, headers=headers)
            assert_error(response, 401, "unauthorized")
            assert response.headers["www-authenticate"] == "Bearer"
        assert_error(http.get("/v1/models"), 401, "unauthorized")
        assert_error(http.get("/metrics"), 401, "unauthorized")
        ok = {"authorization": f"Bearer {TOKEN}"}
        assert http.post("/v1/predict", json=image, headers=ok).status_code == 200
        assert http.get("/metrics", headers=ok).status_code == 200
        for open_path in ("/healthz", "/", "/docs", "/openapi.json"):
            assert http.get(open_path).status_code == 200, open_path
    # urllib posting a big body without a token sees the 401 too (the body is drained)
    status, body = urllib_post(locked.base + "/v1/predict", b"\x00" * (5 << 20), "image/png")
    assert status == 401 and body["error"]["code"] == "unauthorized"


def test_api_rejects_unknown_host_header(server: Server, locked: Server) -> None:
    for base, port in ((locked.base, locked.port), (server.base, server.port)):
        response = httpx.get(base + "/healthz", headers={"host": f"evil.example:{port}"})
        assert_error(response, 400, "bad_host")
    assert httpx.get(locked.base + "/healthz", headers={"host": "digits.test"}).status_code == 200
    assert httpx.get(server.base + "/healthz", headers={"host": "localhost"}).status_code == 200
    assert host_allowed("a.example.com:80", ["*.example.com"])
    assert not host_allowed("example.com.evil", ["*.example.com"])
    assert host_allowed("[::1]:8000", ["::1"]) and not host_allowed(None, ["x"])


def test_api_security_headers(server: Server) -> None:
    with httpx.Client(base_url=server.base, timeout=30) as http:
        page = http.get("/")
        policy = page.headers["content-security-policy"]
        assert "default-src 'none'" in policy and "frame-ancestors 'none'" in policy
        assert "unsafe-inline" not in policy
        # the page's own inline script and style are allowed, by hash
        for tag in ("script", "style"):
            for inline in re.findall(rf"<{tag}>(.*?)</{tag}>", page.text, flags=re.DOTALL):
                digest = base64.b64encode(hashlib.sha256(inline.encode()).digest()).decode()
                assert f"'sha256-{digest}'" in policy
        responses = [page, http.get("/healthz"), http.post("/v1/predict", content=b"x")]
        for response in responses:
            assert response.headers["x-content-type-options"] == "nosniff"
            assert response.headers["x-frame-options"] == "DENY"
            assert "content-security-policy" in response.headers
        assert "'self'" in http.get("/docs").headers["content-security-policy"]


# ---------------------------------------------------------------------------- fuzzing

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=30) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=60,
)


def _pixels(seed: int, rows: int, i: int, j: int, value: object) -> list[list[object]]:
    """A random 28x28 digit-sized array (``rows`` rows) with one pixel set to ``value``."""
    image = np.random.default_rng(seed).integers(0, 256, (rows, 28)).tolist()
    image[i % rows][j] = value
    return image


PIXELS = st.builds(
    _pixels,
    st.integers(0),
    st.sampled_from([28, 28, 28, 27, 29]),
    st.integers(0, 27),
    st.integers(0, 27),
    st.one_of(st.integers(-2, 300), st.floats(), st.booleans(), st.none(), st.text(max_size=2)),
)


def _image_bytes(kind: str, cut: float, rng_seed: int) -> bytes:
    rng = np.random.default_rng(rng_seed)
    data = encode(rng.integers(0, 256, (28, 28)), kind)
    return data[: max(1, int(len(data) * cut))]


IMAGES = st.builds(
    _image_bytes,
    st.sampled_from(["PNG", "JPEG", "BMP", "GIF"]),
    st.floats(0.0, 1.0),
    st.integers(0),
) | st.binary(max_size=300)


@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    path=st.sampled_from(["/v1/predict", "/v1/predict/batch"]),
    body=st.one_of(
        st.fixed_dictionaries({}, optional={"image": PIXELS | JSON, "images": JSON}),
        st.builds(lambda k, v: {k: v}, st.sampled_from(["image", "images", "image_base64"]), JSON),
        JSON,
        IMAGES.map(lambda b: {"image_base64": base64.b64encode(b).decode()}),
        IMAGES,
    ),
)
def test_api_fuzz_real_server(server: Server, path: str, body: object) -> None:
    with httpx.Client(base_url=server.base, timeout=60) as http:
        if isinstance(body, bytes):
            response = http.post(path, content=body, headers={"content-type": "image/png"})
        else:
            content = json.dumps(body)  # NaN and Infinity included, as Python's json writes them
            response = http.post(
                path, content=content, headers={"content-type": "application/json"}
            )
        assert response.status_code < 500, response.text
        answer = response.json()
        event(f"{response.status_code} {answer.get('error', {}).get('code', 'ok')}")
        if response.status_code == 200:
            rows = answer["predictions"] if path.endswith("batch") else [answer]
            for row in rows:
                assert row["label"] in [str(i) for i in range(10)]
                assert 0 <= row["confidence"] <= 1 and len(row["top3"]) == 3
        else:
            assert 400 <= response.status_code < 500 and answer["error"]["code"]
        assert http.get("/healthz").status_code == 200
