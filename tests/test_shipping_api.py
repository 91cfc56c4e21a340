"""The HTTP API: every way to send an image, batch, models, health, Prometheus metrics, OpenAPI;
bad input of every kind gets a clear 4xx (fuzzed with hypothesis: never a 5xx) and the server
keeps serving; ``mnistlab serve`` on a real loopback socket."""

from __future__ import annotations

import base64
import json
import os
import re
import socket
import subprocess
import sys
import time
from importlib import resources
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from shipping_support import copy_run, encode, photo, trained_run
from typer.testing import CliRunner

from mnistlab.cli.main import app
from mnistlab.data import load_dataset
from mnistlab.data.numbers import number_set
from mnistlab.shipping.serve import ServeConfig, create_app

LIMITS = ServeConfig(max_upload_bytes=200_000, max_pixels=4_000_000, max_batch=8)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return trained_run(tmp_path_factory)


@pytest.fixture(scope="module")
def client(run: Path) -> TestClient:
    return TestClient(create_app(run, LIMITS))


@pytest.fixture(scope="module")
def digits():
    test = load_dataset("mnist-mini", "test", download=False)
    return test.images[:16], [str(v) for v in test.labels[:16]]


def assert_error(response: httpx.Response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["message"]
    if code is not None:
        assert error["code"] == code
    return error


# ---------------------------------------------------------------------------- happy paths


def test_every_way_to_send_one_image(client: TestClient, digits) -> None:
    images, labels = digits
    rng = np.random.default_rng(0)
    jpeg = photo(images[0], rng)
    png = encode(255 - images[0])
    b64 = base64.b64encode(png).decode()
    answers = [
        client.post("/v1/predict", files={"file": ("digit.jpg", jpeg, "image/jpeg")}),
        client.post("/v1/predict", files={"upload": ("d.png", png, "application/octet-stream")}),
        client.post("/v1/predict", content=jpeg, headers={"content-type": "image/jpeg"}),
        client.post("/v1/predict", json={"image": images[0].tolist()}),
        client.post("/v1/predict", json={"image_base64": b64}),
        client.post("/v1/predict", json={"image_base64": "data:image/png;base64," + b64}),
    ]
    for response in answers:
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["label"] == labels[0]
        assert {"label", "index", "confidence", "top3", "low_confidence", "model"} <= set(body)
        assert len(body["top3"]) == 3 and body["top3"][0]["label"] == body["label"]
        assert "input" not in body


def test_include_input_returns_what_the_model_saw(client: TestClient, digits) -> None:
    images, _ = digits
    body = client.post("/v1/predict?include_input=true", json={"image": images[1].tolist()}).json()
    np.testing.assert_array_equal(np.asarray(body["input"], np.uint8), images[1])
    body = client.post(
        "/v1/predict?include_input=true",
        content=encode(255 - images[1]),
        headers={"content-type": "image/png"},
    ).json()
    seen = np.asarray(body["input"])
    assert seen.shape == (28, 28) and seen.max() == 255 and seen[0].max() == 0


def test_batch(client: TestClient, digits) -> None:
    images, labels = digits
    files = [
        ("files", (f"{i}.png", encode(255 - x), "image/png")) for i, x in enumerate(images[:5])
    ]
    by_files = client.post("/v1/predict/batch", files=files).json()
    by_arrays = client.post("/v1/predict/batch", json={"images": images[:5].tolist()}).json()
    by_b64 = client.post(
        "/v1/predict/batch",
        json={"images_base64": [base64.b64encode(encode(x)).decode() for x in images[:5]]},
    ).json()
    for body in (by_files, by_arrays, by_b64):
        assert body["count"] == 5
        assert [p["label"] for p in body["predictions"]] == labels[:5]


def test_models_health_and_openapi(client: TestClient, run: Path) -> None:
    models = client.get("/v1/models").json()["models"]
    assert len(models) == 1
    info = models[0]
    assert info["name"] == "fast-cnn" and info["backend"] == "torch"
    assert info["metrics"]["test_accuracy"] > 0.95
    assert (
        info["manifest"]["weights_sha256"]
        == json.loads((run / "model" / "model.json").read_text())["weights_sha256"]
    )
    assert info["calibration"] == {"temperature": 1.0, "threshold": 0.5, "source": None}
    assert info["provenance"]["mnistlab_version"]
    assert client.get("/healthz").json()["status"] == "ok"
    spec = client.get("/openapi.json").json()
    assert {"/v1/predict", "/v1/predict/batch", "/v1/models", "/healthz", "/metrics"} <= set(
        spec["paths"]
    )
    body = spec["paths"]["/v1/predict"]["post"]["requestBody"]["content"]
    assert {"multipart/form-data", "application/json", "image/png"} <= set(body)
    assert "413" in spec["paths"]["/v1/predict"]["post"]["responses"]
    page = client.get("/")
    assert page.status_code == 200 and "<canvas" in page.text


def assert_docs_served_offline(http: httpx.Client | TestClient) -> None:
    """/docs (Swagger UI) names no other host: every script, style and icon it loads comes from
    the server itself, whole (the bytes of the fastapi-offline package), and its
    Content-Security-Policy lets the browser load nothing from elsewhere."""
    static = resources.files("fastapi_offline").joinpath("static")
    response = http.get("/docs")
    assert response.status_code == 200, response.text
    html = response.text
    assert "SwaggerUIBundle" in html and "'/openapi.json'" in html
    # No absolute URL at all (http:, https:, protocol-relative //host), so no CDN.
    assert not re.search(r"(https?:)?//", html), html
    assert '"validatorUrl": null' in html  # else a badge image from validator.swagger.io
    policy = response.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "script-src 'self' 'unsafe-inline'" in policy
    urls = re.findall(r'(?:src|href)="([^"]*)"', html)
    assert {Path(url).suffix for url in urls} == {".js", ".css", ".png"}, urls
    expected = {".js": "text/javascript", ".css": "text/css", ".png": "image/png"}
    for url in urls:
        assert url.startswith("/") and not url.startswith("//"), url
        asset = http.get(url)
        assert asset.status_code == 200, (url, asset.text[:200])
        assert asset.headers["content-type"].startswith(expected[Path(url).suffix]), url
        assert asset.content == static.joinpath(Path(url).name).read_bytes()
    # Only the listed files: nothing else of the package (or of the disk) is reachable.
    for name in ("core.py", "redoc.standalone.js", "..%2F__init__.py", "%2E%2E%2Fcore.py"):
        assert_error(http.get(f"/docs/assets/{name}"), 404, "not_found")
    assert_error(http.get("/redoc"), 404, "not_found")  # ReDoc always fetches a CDN logo


def test_docs_work_offline(client: TestClient) -> None:
    assert_docs_served_offline(client)
    spec = client.get("/openapi.json").json()
    assert not any(path.startswith("/docs") for path in spec["paths"])


def test_calibrated_model_flags_low_confidence(run: Path, tmp_path: Path, digits) -> None:
    copy = copy_run(run, tmp_path / "run")
    (copy / "model" / "calibration.json").write_text(
        json.dumps({"temperature": 3.0, "ood": {"score": "max_softmax", "threshold": 0.999}})
    )
    client = TestClient(create_app(copy))
    images, _ = digits
    body = client.post("/v1/predict", json={"image": images[0].tolist()}).json()
    assert body["low_confidence"] is True
    assert client.get("/v1/models").json()["models"][0]["calibration"]["temperature"] == 3.0


# ---------------------------------------------------------------------------- bad input


def _nested(value: str, rows: int = 28, cols: int = 28) -> bytes:
    row = "[" + ",".join([value] * cols) + "]"
    return ("{" + '"image": [' + ",".join([row] * rows) + "]}").encode()


BAD_REQUESTS = {
    "wrong content type": (dict(content=b"7", headers={"content-type": "text/plain"}), 415),
    "no content type": (dict(content=b"7"), 415),
    "bad content length": (
        dict(content=b"7", headers={"content-type": "image/png", "content-length": "x"}),
        400,
    ),
    "empty image body": (dict(content=b"", headers={"content-type": "image/png"}), 400),
    "empty json body": (dict(content=b"", headers={"content-type": "application/json"}), 400),
    "not an image": (dict(content=b"GIF89a", headers={"content-type": "image/gif"}), 415),
    "bytes not an image": (dict(files={"file": ("x.png", b"\x00" * 100, "image/png")}), 415),
    "form without file": (dict(files={"name": (None, "value")}), 422),
    "bad multipart": (
        dict(content=b"--x\r\nbroken", headers={"content-type": "multipart/form-data"}),
        400,
    ),
    "oversized": (dict(content=b"\x89PNG" * 60_000, headers={"content-type": "image/png"}), 413),
    "bad json": (dict(content=b"{", headers={"content-type": "application/json"}), 400),
    "json not object": (dict(json=[1, 2, 3]), 422),
    "json both keys": (dict(json={"image": [], "image_base64": ""}), 422),
    "json neither key": (dict(json={"picture": 1}), 422),
    "wrong shape": (dict(json={"image": [[0] * 28] * 27}), 422),
    "ragged": (dict(json={"image": [[0] * 28] * 27 + [[0] * 3]}), 422),
    "strings": (dict(json={"image": [["a"] * 28] * 28}), 422),
    "nulls": (dict(json={"image": [[None] * 28] * 28}), 422),
    "NaN": (dict(content=_nested("NaN"), headers={"content-type": "application/json"}), 422),
    "inf": (dict(content=_nested("Infinity"), headers={"content-type": "application/json"}), 422),
    "huge number": (
        dict(content=_nested("1e999"), headers={"content-type": "application/json"}),
        422,
    ),
    "negative": (dict(json={"image": [[-1] * 28] * 28}), 422),
    "above 255": (dict(json={"image": [[256] * 28] * 28}), 422),
    "bad base64": (dict(json={"image_base64": "%%%not base64%%%"}), 422),
    "base64 not image": (dict(json={"image_base64": base64.b64encode(b"hello").decode()}), 415),
    "blank picture": (
        dict(content=encode(np.full((50, 50), 200)), headers={"content-type": "image/png"}),
        422,
    ),
    "bad query": (dict(json={"image": [[0] * 28] * 28}, params={"include_input": "maybe"}), 422),
}


@pytest.mark.parametrize("name", list(BAD_REQUESTS))
def test_bad_input_gets_a_clear_4xx(client: TestClient, name: str) -> None:
    kwargs, status = BAD_REQUESTS[name]
    assert_error(client.post("/v1/predict", **kwargs), status)
    assert client.get("/healthz").status_code == 200


def test_decompression_bomb_upload(client: TestClient) -> None:
    from test_shipping_preprocess import _png_bomb

    bomb = _png_bomb(3000, 3000)  # 9 megapixels over the 4 megapixel limit, ~10 kB
    assert len(bomb) < LIMITS.max_upload_bytes
    error = assert_error(
        client.post("/v1/predict", content=bomb, headers={"content-type": "image/png"}), 413
    )
    assert error["code"] == "too_many_pixels"


def test_streamed_body_is_cut_off_at_the_limit(client: TestClient) -> None:
    def chunks():  # no Content-Length: the limit must hold while the body streams in
        for _ in range(100):
            yield b"\x00" * 10_000

    response = client.post("/v1/predict", content=chunks(), headers={"content-type": "image/png"})
    assert_error(response, 413, "too_large")


def test_batch_limits(client: TestClient) -> None:
    zeros = [[0] * 28] * 28
    assert_error(
        client.post("/v1/predict/batch", json={"images": [zeros] * 9}), 413, "batch_too_large"
    )
    files = [("files", (f"{i}.png", encode(np.zeros((28, 28))), "image/png")) for i in range(9)]
    assert client.post("/v1/predict/batch", files=files).status_code in (400, 413)
    assert_error(client.post("/v1/predict/batch", json={"images": []}), 422)
    assert_error(client.post("/v1/predict/batch", json={"images": [zeros, [[1]]]}), 422)
    two = [("file", ("a.png", encode(np.eye(28) * 255), "image/png"))] * 2
    assert_error(client.post("/v1/predict", files=two), 422, "too_many_images")


def test_unknown_routes_and_methods(client: TestClient) -> None:
    assert_error(client.get("/v2/predict"), 404, "not_found")
    assert_error(client.get("/v1/predict"), 405, "method_not_allowed")


def test_metrics_count_requests_latency_and_errors(run: Path, digits) -> None:
    client = TestClient(create_app(run, LIMITS))
    images, _ = digits
    for x in images[:3]:
        client.post("/v1/predict", json={"image": x.tolist()})
    client.post("/v1/predict", content=b"x", headers={"content-type": "image/png"})
    client.post("/v1/predict", content=b"x", headers={"content-type": "text/csv"})
    text = client.get("/metrics").text
    assert 'mnistlab_requests_total{method="POST",path="/v1/predict",status="200"} 3' in text
    assert 'mnistlab_requests_total{method="POST",path="/v1/predict",status="415"} 2' in text
    assert 'mnistlab_request_duration_seconds_bucket{path="/v1/predict",le="+Inf"} 5' in text
    assert 'mnistlab_request_duration_seconds_count{path="/v1/predict"} 5' in text
    assert 'mnistlab_errors_total{path="/v1/predict",code="not_an_image"} 1' in text
    assert 'mnistlab_errors_total{path="/v1/predict",code="unsupported_media_type"} 1' in text
    assert "# TYPE mnistlab_request_duration_seconds histogram" in text
    assert (
        sum(
            int(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("mnistlab_predictions_total")
        )
        == 3
    )


# ---------------------------------------------------------------------------- fuzzing

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=30) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=60,
)
CONTENT_TYPES = st.sampled_from(
    [
        "application/json",
        "image/png",
        "image/jpeg",
        "multipart/form-data",
        "multipart/form-data; boundary=xyz",
        "text/plain",
        "",
        "application/x-www-form-urlencoded",
    ]
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    path=st.sampled_from(["/v1/predict", "/v1/predict/batch", "/v1/read"]),
    key=st.sampled_from(["image", "image_base64", "images", "images_base64", "other"]),
    value=JSON,
)
def test_fuzz_json_bodies_never_5xx(client: TestClient, path: str, key: str, value) -> None:
    body = json.dumps({key: value})  # NaN and Infinity included, as Python's json writes them
    response = client.post(path, content=body, headers={"content-type": "application/json"})
    assert response.status_code < 500, response.text
    if response.status_code != 200:
        assert response.json()["error"]["code"]


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    path=st.sampled_from(["/v1/predict", "/v1/predict/batch", "/v1/read"]),
    content_type=CONTENT_TYPES,
    body=st.binary(max_size=2000)
    | st.sampled_from([b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF89a", b"BM", b"RIFF"]).flatmap(
        lambda magic: st.binary(max_size=500).map(lambda rest: magic + rest)
    ),
)
def test_fuzz_raw_bodies_never_5xx(client: TestClient, path: str, content_type: str, body: bytes):
    headers = {"content-type": content_type} if content_type else {}
    response = client.post(path, content=body, headers=headers)
    assert 400 <= response.status_code < 500, response.text
    assert response.json()["error"]["code"]


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(digits_query=st.text(max_size=12) | st.integers(-5, 40).map(str))
def test_fuzz_the_known_length_of_a_number(client: TestClient, digits, digits_query: str):
    """``/v1/read?digits=...``: any value gets an answer, never a 5xx; a whole number in
    [1, 32] gets exactly that many digits or an empty reading with its reason."""
    images, labels = digits
    picture = number_set(images, [int(v) for v in labels], 1, seed=2, digits=3)[0]
    response = client.post("/v1/read", params={"digits": digits_query},
                           files={"file": ("n.png", picture.data, "image/jpeg")})  # fmt: skip
    assert response.status_code < 500, response.text
    if response.status_code == 200:
        body = response.json()
        wanted = int(digits_query) if digits_query.strip() else None
        assert wanted is None or len(body["text"]) == wanted or body["reason"]
    else:
        assert response.status_code == 422 and response.json()["error"]["code"], response.text


# ---------------------------------------------------------------------------- a real server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("workers", [1, 2])
def test_serve_command_on_loopback(run: Path, digits, workers: int) -> None:
    """A real server on a real socket; with 2 workers the model path and the API limits reach
    the worker processes through the environment (uvicorn's multiprocess supervisor)."""
    port = free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "mnistlab", "serve", str(run), "--port", str(port)]
    command += ["--max-upload-mb", "0.1", "--max-batch", "4", "--workers", str(workers)]
    server = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180  # a bound for a loaded machine, not a timing
        while True:
            try:
                if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert server.poll() is None, server.stdout.read().decode() if server.stdout else ""
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.2)
        images, labels = digits
        with httpx.Client(base_url=base, timeout=60) as http:
            for x, label in zip(images[:4], labels[:4], strict=True):
                files = {"file": ("d.png", encode(255 - x), "image/png")}
                assert http.post("/v1/predict", files=files).json()["label"] == label
            big = http.post(
                "/v1/predict", content=b"\x00" * 200_000, headers={"content-type": "image/png"}
            )
            assert big.status_code == 413
            assert (
                http.post(
                    "/v1/predict/batch", json={"images": [x.tolist() for x in images[:5]]}
                ).status_code
                == 413
            )
            assert http.get("/healthz").status_code == 200  # still serving
            assert "mnistlab_requests_total" in http.get("/metrics").text
            assert_docs_served_offline(http)
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    output = server.stdout.read().decode() if server.stdout else ""
    assert f"http://127.0.0.1:{port}/" in output


def test_serve_command_with_a_bad_model(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["serve", str(tmp_path / "nothing")])
    assert result.exit_code == 1 and "no such file" in result.output
