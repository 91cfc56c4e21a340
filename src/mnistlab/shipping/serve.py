"""The HTTP API and the draw-a-digit page: FastAPI on uvicorn.

Endpoints (OpenAPI schema at ``/openapi.json``; interactive docs at ``/docs``: Swagger UI, whose
script and style the server serves itself, from the ``fastapi-offline`` package, so that the page
works without internet access):

* ``POST /v1/predict``: one image as a multipart upload (any file field, e.g. ``file``), as a
  raw ``image/png`` / ``image/jpeg`` body, or as JSON ``{"image": <28x28 array of 0-255>}`` or
  ``{"image_base64": "<PNG or JPEG, optionally a data: URL>"}``. Pictures go through
  :func:`mnistlab.shipping.preprocess.preprocess_image`; a 28x28 array is taken as already in
  MNIST form. Answers ``{"label", "index", "confidence", "top3", "low_confidence", "model"}``,
  plus ``"input"`` (the 28x28 pixels the model saw) with ``?include_input=true``.
* ``POST /v1/predict/batch``: several images: multipart with several files, or JSON
  ``{"images": [...]}`` / ``{"images_base64": [...]}``; answers ``{"predictions": [...]}``.
* ``POST /v1/read``: a photo or scan of a whole handwritten number (multipart, a raw image
  body or JSON ``{"image_base64": ...}``); answers ``{"text", "confidence", "digits": [{"digit",
  "confidence", "box", "top"}], "reason", "model"}`` (:mod:`mnistlab.shipping.read`);
  ``?digits=N`` when the number's length is known (a postcode: the best reading of N digits).
* ``GET /v1/models`` (a public card: classes, input format, accuracy, weights hash; paths,
  training configuration and package versions only with ``expose_details``), ``GET /healthz``,
  ``GET /metrics`` (Prometheus text: requests, latency histogram, errors by code, client
  disconnects, predictions by label), ``GET /`` (the web page).

Bad input never gets a 5xx: every error is JSON ``{"error": {"code", "message", "hint"}}``
with a 4xx status (400 malformed, 401 no token, 413 too large, 415 wrong type, 422 invalid
content, 431 headers too large), and the server keeps serving. Request bodies are cut off at
``max_upload_bytes`` while they stream in (:mod:`mnistlab.shipping.guard`, which also checks the
token and the Host header and adds security headers), request heads at ``max_header_bytes``
(:mod:`mnistlab.shipping.protocol`), pictures over ``max_pixels`` (each) or
``max_request_pixels`` (all of a request) are refused before decoding, batches hold at most
``max_batch``, and pictures are decoded in at most ``compute_threads`` threads off the event
loop. 28x28 arrays sent to ``/v1/predict`` at the same moment are classified in one call of the
model (:mod:`mnistlab.shipping.batching`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from anyio import CapacityLimiter, to_thread
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from mnistlab import __version__
from mnistlab.errors import MnistlabError
from mnistlab.shipping.batching import MicroBatcher
from mnistlab.shipping.errors import InputError
from mnistlab.shipping.guard import (
    CLIENT_CLOSED,
    LOOPBACK_HOSTS,
    Guard,
    error_response,
    page_csp,
)
from mnistlab.shipping.metrics import Metrics
from mnistlab.shipping.model import Prediction, ShippedModel, load_model
from mnistlab.shipping.preprocess import preprocess_image
from mnistlab.shipping.read import MAX_DIGITS, load_number_model, read_number_file
from mnistlab.shipping.reader_config import DEFAULT_READER
from mnistlab.shipping.requests import body_doc, picture_pixels, read_images

__all__ = ["ServeConfig", "app_from_environment", "create_app", "serve"]

log = logging.getLogger("mnistlab.serve")

ROUTES = ("/", "/v1/predict", "/v1/predict/batch", "/v1/read", "/v1/models", "/healthz", "/metrics")
# The docs page's script, style and icon, served by the app itself (FastAPI's default page loads
# them from a CDN and stays blank offline): the files the fastapi-offline package ships.
DOCS_ASSETS = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "favicon.png": "image/png",
}
DOCS_ASSETS_PATH = "/docs/assets"
# What the docs page may load: only what this server serves (its inline script starts Swagger
# UI, which styles itself inline too). "Try it out" requests go to this server as well.
DOCS_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; connect-src 'self'; frame-ancestors 'self'; "
    "base-uri 'self'; form-action 'self'"
)

DIGITS_DOC = (
    f"the number's length when known (1-{MAX_DIGITS}; a postcode: 5): the most likely reading "
    "of exactly that many digits (needs a number reader)"
)


@dataclass(frozen=True)
class ServeConfig:
    """Limits and access rules of the API."""

    max_upload_bytes: int = 4 << 20  # largest request body (4 MiB)
    max_pixels: int = 16_000_000  # largest picture decoded (width x height)
    max_batch: int = 64  # most images in one /v1/predict/batch request
    # Threads decoding and classifying pictures at once, per worker. More only fight over the
    # GIL: with 8 concurrent PNG clients on 2 cores, 2 threads served 560 requests/s, p99 21 ms;
    # anyio's default 40 served 374/s, p99 35 ms (docs/benchmarks.md).
    compute_threads: int = 2
    max_request_pixels: int = 32_000_000  # all pictures of one request together
    max_header_bytes: int = 64 << 10  # request line + headers (enforced by serve's uvicorn)
    # An oversized body is read and discarded up to this size before the 413 (so that clients
    # which send all before reading see it); a larger one is not read: the connection closes.
    max_drain_bytes: int = 64 << 20
    token: str | None = field(default=None, repr=False)  # bearer token for /v1/* and /metrics
    allowed_hosts: tuple[str, ...] = ()  # Host header names answered; () = any
    expose_details: bool = False  # /v1/models shows paths, training config, package versions
    # What /v1/read reads numbers with: a number reader (a run folder or pretrained:NAME, see
    # shipping.read.load_number_model); None = the served classifier, cutting by recognition.
    # The shipped reader reads touching digits far better (docs/benchmarks.md, "Reading whole
    # numbers") and is loaded at the first /v1/read; another reader is loaded at start.
    reader: str | None = DEFAULT_READER
    # A number reader's digits are read again by the served classifier, and the two
    # probabilities multiplied (shipping.read.load_number_model's `classifier`).
    second_opinion: bool = True

    def __post_init__(self) -> None:
        limits = (
            self.max_upload_bytes,
            self.max_pixels,
            self.max_batch,
            self.compute_threads,
            self.max_request_pixels,
            self.max_header_bytes,
            self.max_drain_bytes,
        )
        if min(limits) < 1:
            raise MnistlabError("serve limits must be positive")
        if self.token is not None and (not self.token or not self.token.isprintable()):
            raise MnistlabError("the serve token must be a non-empty printable string")
        object.__setattr__(self, "allowed_hosts", tuple(self.allowed_hosts))


# ---------------------------------------------------------------------------- response schemas


class TopClass(BaseModel):
    label: str
    probability: float


class PredictionOut(BaseModel):
    label: str = Field(description="the most probable class")
    index: int = Field(description="its index in the model's class_names")
    confidence: float = Field(description="its probability (after temperature scaling)")
    top3: list[TopClass]
    low_confidence: bool = Field(description="confidence below the model's threshold")
    model: str
    input: list[list[int]] | None = Field(
        None, description="with ?include_input=true: the 28x28 pixels the model saw"
    )


class BatchOut(BaseModel):
    predictions: list[PredictionOut]
    count: int


class DigitOut(BaseModel):
    digit: str
    confidence: float
    box: list[int] = Field(description="x0, y0, x1, y1 in the picture's pixels (x1, y1 excluded)")
    top: list[TopClass]


class NumberOut(BaseModel):
    text: str = Field(description="the digits read, left to right; empty when none")
    confidence: float = Field(description="the product of the digits' probabilities")
    digits: list[DigitOut]
    reason: str | None = Field(None, description="why nothing was read (a blank picture, ...)")
    model: str


class ErrorDetail(BaseModel):
    code: str = Field(
        description="e.g. not_an_image, too_large, bad_shape, bad_value, out_of_range"
    )
    message: str
    hint: str | None = None


class ErrorOut(BaseModel):
    error: ErrorDetail


ERRORS = {
    status: {"model": ErrorOut, "description": text}
    for status, text in (
        (400, "malformed request (bad JSON, bad multipart, empty body, Host not allowed)"),
        (401, "the server has a token and the request lacks 'Authorization: Bearer <token>'"),
        (413, "body, picture, pixels of the request or batch too large"),
        (415, "unsupported content type or not an image"),
        (422, "invalid content (shape, a pixel not a number, range, NaN, blank picture)"),
        (431, "request line and headers too large (the connection is then closed)"),
    )
}

_IMAGE_SCHEMA = {
    "type": "object",
    "properties": {
        "image": {
            "type": "array",
            "description": "28 rows of 28 pixel values in [0, 255], light ink on 0",
            "items": {"type": "array", "items": {"type": "number"}},
        },
        "image_base64": {"type": "string", "description": "a PNG or JPEG, base64 or data: URL"},
    },
}
_PICTURE_SCHEMA = {
    "type": "object",
    "properties": {"image_base64": _IMAGE_SCHEMA["properties"]["image_base64"]},
}
_BATCH_SCHEMA = {
    "type": "object",
    "properties": {
        "images": {"type": "array", "items": _IMAGE_SCHEMA["properties"]["image"]},
        "images_base64": {"type": "array", "items": {"type": "string"}},
    },
}


def model_card(info: dict[str, Any]) -> dict[str, Any]:
    """What ``GET /v1/models`` shows by default: the model's name, runtime, classes, input
    format, test accuracy, calibration and weights hash; no paths, training configuration or
    package versions (``ServeConfig.expose_details`` shows all of :meth:`ShippedModel.info`)."""
    manifest = info.get("manifest", {})
    metrics = info.get("metrics", {})
    calibration = dict(info.get("calibration", {}))
    if calibration.get("source"):
        calibration["source"] = Path(str(calibration["source"])).name
    keep = ("kind", "architecture", "num_classes", "format", "weights_sha256")
    return {
        "name": info.get("name"),
        "backend": info.get("backend"),
        "format": info.get("format"),
        "class_names": info.get("class_names"),
        "preprocessing": info.get("preprocessing"),
        "metrics": {k: metrics[k] for k in ("test_accuracy", "num_test") if k in metrics},
        "calibration": calibration,
        "provenance": {"mnistlab_version": info.get("provenance", {}).get("mnistlab_version")},
        "manifest": {k: manifest[k] for k in keep if k in manifest},
        "details": "hidden (paths, training configuration, package versions): start the server "
        "with --expose-details to show them",
    }


# ---------------------------------------------------------------------------- the app


def create_app(
    model: ShippedModel | str | os.PathLike[str], config: ServeConfig | None = None
) -> FastAPI:
    """The FastAPI app serving ``model`` (a loaded model, or anything :func:`load_model` takes).

    Args:
        model: the model to serve.
        config: limits (default :class:`ServeConfig`).

    Returns:
        An ASGI app; run it with uvicorn (see :func:`serve`) or test it with a TestClient.
    """
    shipped = model if isinstance(model, ShippedModel) else load_model(model)
    config = config or ServeConfig()
    metrics = Metrics()
    limiter = CapacityLimiter(config.compute_threads)

    async def offload(function: Callable[..., Any], *args: Any) -> Any:
        return await to_thread.run_sync(function, *args, limiter=limiter)

    readers: dict[str, Any] = {}  # the number model, loaded once (shipped: at first use)
    reader_lock = threading.Lock()

    def number_model() -> Any:
        with reader_lock:
            if "model" not in readers:
                second = shipped if config.second_opinion else None
                readers["model"] = (
                    load_number_model(config.reader, threads=1, classifier=second)
                    if config.reader
                    else shipped
                )
            return readers["model"]

    if config.reader != DEFAULT_READER:
        number_model()  # a reader of the user's: fails here, clearly, if it is not one
    info = shipped.info()
    page = resources.files("mnistlab.shipping").joinpath("static/index.html").read_text()
    csp = page_csp(page)
    app = FastAPI(
        title="mnistlab",
        version=__version__,
        description="Classify handwritten digits with a model trained by mnistlab. "
        "Errors are JSON {error: {code, message, hint}} with a 4xx status.",
        docs_url=None,  # /docs is added below, with local assets
        redoc_url=None,  # ReDoc's page fetches its logo from cdn.redoc.ly, always
    )
    app.state.model = shipped
    app.state.metrics = metrics
    app.state.config = config

    def answer(request: Request, error: MnistlabError, status: int | None = None) -> JSONResponse:
        path = request.url.path if request.url.path in ROUTES else "other"
        metrics.error(path, getattr(error, "code", "invalid"))
        return error_response(error, status)

    @app.exception_handler(MnistlabError)
    async def _mnistlab_error(request: Request, exc: MnistlabError) -> JSONResponse:
        return answer(request, exc, getattr(exc, "status", 400))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        details = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in exc.errors()
        )
        return answer(request, InputError(f"invalid request: {details}", code="invalid_request"))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        error = InputError(str(exc.detail), status=exc.status_code, code=code)
        return answer(request, error, exc.status_code)

    @app.exception_handler(ClientDisconnect)
    async def _gone(request: Request, exc: ClientDisconnect) -> Response:
        return Response(status_code=CLIENT_CLOSED)  # never sent; the guard logs and counts it

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s", request.url.path)
        error = MnistlabError(f"internal error ({type(exc).__name__})")
        error.code = "internal"  # type: ignore[attr-defined]
        return answer(request, error, 500)

    def classify(pixels: np.ndarray) -> list[Prediction]:
        predictions = shipped.predict(pixels)
        metrics.predictions(predictions)
        return predictions

    batcher = MicroBatcher(classify, max_batch=config.max_batch)

    def rows(
        predictions: list[Prediction], pixels: Any, include_input: bool
    ) -> list[dict[str, Any]]:
        out = []
        for p, x in zip(predictions, pixels, strict=True):
            row = {**p.to_dict(), "model": shipped.name}
            if include_input:
                row["input"] = x.tolist()
            out.append(row)
        return out

    def run(items: list[bytes | np.ndarray], include_input: bool) -> list[dict[str, Any]]:
        pictures = [item for item in items if isinstance(item, bytes)]
        total = sum(picture_pixels(item) for item in pictures)
        if total > config.max_request_pixels:  # before decoding any of them
            raise InputError(
                f"the {len(pictures)} pictures hold {total:,} pixels in all, more than the limit "
                f"of {config.max_request_pixels:,} per request",
                hint="scale the pictures down or send fewer per request",
                status=413,
                code="too_many_pixels",
            )
        pixels = np.stack(
            [
                item
                if isinstance(item, np.ndarray)
                else preprocess_image(item, max_pixels=config.max_pixels)
                for item in items
            ]
        )
        return rows(classify(pixels), pixels, include_input)

    @app.post(
        "/v1/predict",
        response_model=PredictionOut,
        responses=ERRORS,
        openapi_extra=body_doc(_IMAGE_SCHEMA, "file"),
        summary="Classify one picture or 28x28 array",
    )
    async def predict(request: Request, include_input: bool = False) -> Response:
        items = await read_images(request, config, batch=False)
        if isinstance(items[0], np.ndarray):  # a checked 28x28 array: no thread hop, and
            # classified with the other arrays that arrive at the same moment (batching.py)
            return JSONResponse(rows([await batcher(items[0])], items, include_input)[0])
        return JSONResponse((await offload(run, items, include_input))[0])

    @app.post(
        "/v1/predict/batch",
        response_model=BatchOut,
        responses=ERRORS,
        openapi_extra=body_doc(_BATCH_SCHEMA, "files"),
        summary="Classify several pictures or 28x28 arrays",
    )
    async def predict_batch(request: Request, include_input: bool = False) -> Response:
        items = await read_images(request, config, batch=True)
        rows = await offload(run, items, include_input)
        return JSONResponse({"predictions": rows, "count": len(rows)})

    def read(item: bytes | np.ndarray, digits: int | None) -> dict[str, Any]:
        if isinstance(item, np.ndarray):
            raise InputError(
                "/v1/read takes a picture of a number, not a 28x28 array",
                hint='send the picture as a file, a raw image body or {"image_base64": "..."}',
                code="not_a_picture",
            )
        reader = number_model()
        reading = read_number_file(item, reader, max_pixels=config.max_pixels, digits=digits)
        return {**reading.to_dict(), "model": reader.name}

    @app.post(
        "/v1/read",
        response_model=NumberOut,
        responses=ERRORS,
        openapi_extra=body_doc(_PICTURE_SCHEMA, "file"),
        summary="Read a whole handwritten number: its digits, their boxes and confidences",
    )
    async def read_number(
        request: Request,
        digits: Annotated[int | None, Query(description=DIGITS_DOC)] = None,
    ) -> Response:
        items = await read_images(request, config, batch=False, route="/v1/read")
        return JSONResponse(await offload(read, items[0], digits))

    card = info if config.expose_details else model_card(info)

    @app.get("/v1/models", summary="The model served: its public card (or all details)")
    async def models() -> dict[str, Any]:
        return {"models": [card]}

    @app.get("/healthz", summary="Liveness")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "model": shipped.name, "backend": shipped.backend}

    @app.get("/metrics", response_class=PlainTextResponse, summary="Prometheus metrics")
    async def prometheus() -> Response:
        return PlainTextResponse(
            metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8"
        )

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(page, headers={"content-security-policy": csp})

    _add_docs(app)

    app.add_middleware(
        Guard,
        metrics=metrics,
        routes=ROUTES,
        max_upload_bytes=config.max_upload_bytes,
        max_drain_bytes=config.max_drain_bytes,
        token=config.token,
        allowed_hosts=config.allowed_hosts,
    )
    return app


def _docs_assets() -> Path:
    """The folder of the fastapi-offline package's Swagger UI files."""
    folder = Path(str(resources.files("fastapi_offline").joinpath("static")))
    missing = [name for name in DOCS_ASSETS if not (folder / name).is_file()]
    if missing:
        raise MnistlabError(
            f"the fastapi-offline package lacks {', '.join(missing)} (looked in {folder})",
            hint="reinstall it: pip install --force-reinstall fastapi-offline",
        )
    return folder


def _add_docs(app: FastAPI) -> None:
    """``/docs`` (Swagger UI), whose script, style and icon the app serves itself under
    ``/docs/assets/``; its Content-Security-Policy lets the browser load nothing from
    elsewhere."""
    folder = _docs_assets()

    def prefix(request: Request) -> str:  # behind a proxy that strips a path prefix
        return str(request.scope.get("root_path", "")).rstrip("/")

    @app.get("/docs", response_class=HTMLResponse, include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = prefix(request)
        page = get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{root}{DOCS_ASSETS_PATH}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{DOCS_ASSETS_PATH}/swagger-ui.css",
            swagger_favicon_url=f"{root}{DOCS_ASSETS_PATH}/favicon.png",
            # Swagger UI's default would fetch a validity badge from validator.swagger.io.
            swagger_ui_parameters={"validatorUrl": None},
        )
        page.headers["Content-Security-Policy"] = DOCS_CSP
        return page

    @app.get(DOCS_ASSETS_PATH + "/{name}", include_in_schema=False)
    async def docs_asset(name: str) -> FileResponse:
        media_type = DOCS_ASSETS.get(name)
        if media_type is None:  # only the files listed: no path is built from the request
            raise StarletteHTTPException(404, f"no docs asset {name!r}")
        return FileResponse(
            folder / name,
            media_type=media_type,
            headers={"Cache-Control": "public, max-age=86400"},
        )


ENV_MODEL = "MNISTLAB_SERVE_MODEL"
ENV_CONFIG = "MNISTLAB_SERVE_CONFIG"
ENV_THREADS = "MNISTLAB_SERVE_THREADS"


def app_from_environment() -> FastAPI:
    """App factory for uvicorn worker processes: the model path, limits and thread count come
    from ``MNISTLAB_SERVE_MODEL``, ``MNISTLAB_SERVE_CONFIG`` (JSON) and
    ``MNISTLAB_SERVE_THREADS``, set by :func:`serve`."""
    import torch

    threads = int(os.environ.get(ENV_THREADS, "1"))
    torch.set_num_threads(threads)
    config = ServeConfig(**json.loads(os.environ.get(ENV_CONFIG, "{}")))
    return create_app(load_model(os.environ[ENV_MODEL], threads=threads), config)


def _is_loopback(host: str) -> bool:
    return host in ("localhost", "::1") or host.startswith("127.")


def serve(
    model: str | os.PathLike[str] | Path,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    config: ServeConfig | None = None,
    threads: int = 1,
    workers: int = 1,
    access_log: bool = False,
    on_ready: Callable[[ShippedModel], None] | None = None,
) -> None:
    """Load ``model`` and serve it with uvicorn until interrupted.

    Args:
        model: run folder, model folder, model file, or ``pretrained:NAME`` (a shipped
            model, e.g. ``pretrained:handwriting``).
        host, port: where to listen (default loopback only). On a loopback address with no
            ``config.allowed_hosts``, only the Host names ``localhost``, ``127.0.0.1`` and
            ``::1`` are answered (a web page cannot reach the server through a DNS name of its
            own that resolves to 127.0.0.1: DNS rebinding).
        config: API limits and access rules.
        threads: CPU threads per forward pass (torch and ONNX Runtime); 1 keeps single-image
            latency low when requests arrive concurrently.
        workers: uvicorn worker processes, each with its own copy of the model (about one per
            CPU core serves the most requests; ``/metrics`` then counts per worker).
        access_log: log every request (costs time under load).
        on_ready: called with the loaded model before the server starts.
    """
    import torch
    import uvicorn

    from mnistlab.shipping.protocol import uvicorn_config

    config = config or ServeConfig()
    if not config.allowed_hosts and _is_loopback(host):
        config = replace(config, allowed_hosts=LOOPBACK_HOSTS)
    torch.set_num_threads(threads)
    shipped = load_model(model, threads=threads)  # fails here, clearly, on a bad model
    if on_ready is not None:
        on_ready(shipped)
    options = dict(host=host, port=port, log_level="warning", access_log=access_log)
    if workers > 1:
        from uvicorn.supervisors import Multiprocess

        os.environ[ENV_MODEL] = str(shipped.manifest_path)
        os.environ[ENV_CONFIG] = json.dumps(asdict(config))
        os.environ[ENV_THREADS] = str(threads)
        server_config = uvicorn_config(
            "mnistlab.shipping.serve:app_from_environment",
            max_header_bytes=config.max_header_bytes,
            factory=True,
            workers=workers,
            **options,
        )
        sock = server_config.bind_socket()
        # uvicorn's shared socket is made without IPPROTO_TCP, so asyncio does not switch Nagle's
        # algorithm off on the connections it accepts, and every response waits ~40 ms for a
        # delayed ACK. On the listening socket the option is inherited by accepted ones (Linux).
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with contextlib.suppress(KeyboardInterrupt):
            Multiprocess(server_config, sockets=[sock]).run()
        return
    app = create_app(shipped, config)
    server = uvicorn.Server(
        uvicorn_config(app, max_header_bytes=config.max_header_bytes, **options)
    )
    with contextlib.suppress(KeyboardInterrupt):
        server.run()
    if not server.started:
        raise MnistlabError(
            f"the server could not start on {host}:{port}",
            hint="is the port in use? (see the message above)",
        )
