"""The API's outer layer: a pure ASGI middleware in front of the FastAPI app.

For every HTTP request, before the app sees it:

* **trusted hosts**: with ``allowed_hosts`` set, a ``Host`` header naming another host gets
  400 ``bad_host`` (DNS rebinding, host-header spoofing);
* **bearer token**: with ``token`` set, ``/v1/*`` and ``/metrics`` need
  ``Authorization: Bearer <token>``, else 401 ``unauthorized``; ``/``, ``/healthz``, ``/docs``
  and ``/openapi.json`` stay open;
* **body size**: a ``Content-Length`` over ``max_upload_bytes`` gets 413 ``too_large`` at once,
  a streamed body is cut off at the limit as it arrives. Before a 413 the rest of the body is
  read and discarded, up to ``max_drain_bytes``, so that clients which send the whole body
  before reading (Python's urllib and requests) see the answer instead of a connection reset;
  a body beyond that cap is not read: the answer goes out and the connection is closed;
* **client disconnects**: a client that goes away before its request is answered is logged in
  one line and counted with status 499 (and in ``mnistlab_client_disconnects_total``), not as
  an error of the server;
* **security headers** on every answer: ``X-Content-Type-Options: nosniff``,
  ``X-Frame-Options: DENY``, ``Referrer-Policy: no-referrer``, and a Content-Security-Policy
  (``default-src 'none'`` unless the route set its own: the page and ``/docs`` do).

It also times every request for ``/metrics``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from fastapi.responses import JSONResponse

from mnistlab.errors import MnistlabError
from mnistlab.shipping.errors import InputError
from mnistlab.shipping.metrics import Metrics

__all__ = ["Guard", "error_response", "host_allowed", "page_csp"]

log = logging.getLogger("mnistlab.serve")

ASGIApp = Callable[[dict[str, Any], Any, Any], Awaitable[None]]

LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")
"""The Host names a server bound to a loopback address accepts unless told otherwise."""
SECURITY_HEADERS = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
)
API_CSP = b"default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
CLIENT_CLOSED = 499  # nginx's "client closed request": never sent, only counted


def page_csp(html: str) -> str:
    """The Content-Security-Policy of a self-contained page: only its own inline scripts and
    styles (by hash) run, requests go to this server only, no framing, no forms elsewhere."""

    def hashes(tag: str) -> str:
        bodies = re.findall(rf"<{tag}>(.*?)</{tag}>", html, flags=re.DOTALL)
        digests = [base64.b64encode(hashlib.sha256(b.encode()).digest()).decode() for b in bodies]
        return " ".join(f"'sha256-{d}'" for d in digests) or "'none'"

    return (
        f"default-src 'none'; script-src {hashes('script')}; style-src {hashes('style')}; "
        "img-src 'self' data: blob:; connect-src 'self'; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    )


def error_response(error: MnistlabError, status: int | None = None) -> JSONResponse:
    """The API's error JSON, ``{"error": {"code", "message", "hint"}}``."""
    code = getattr(error, "code", "invalid")
    return JSONResponse(
        {"error": {"code": code, "message": error.message, "hint": error.hint}},
        status_code=status or getattr(error, "status", 422),
        headers={"www-authenticate": "Bearer"} if code == "unauthorized" else None,
    )


def host_allowed(host: str | None, allowed: Iterable[str]) -> bool:
    """Whether a ``Host`` header value (port ignored) matches one of ``allowed``: exact names,
    ``*.example.com`` (any sub-domain) or ``*`` (anything)."""
    patterns = [a.lower().strip("[]") for a in allowed]
    if "*" in patterns:
        return True
    if not host:
        return False
    host = host.strip().lower()
    if host.startswith("["):  # [::1]:8000
        name = host[1:].partition("]")[0]
    else:
        name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    name = name.rstrip(".")
    return any(
        name == p or (p.startswith("*.") and name.endswith(p[1:]) and len(name) > len(p) - 1)
        for p in patterns
    )


def _protected(path: str) -> bool:
    return path.startswith("/v1/") or path == "/metrics"


class _Body:
    """The app's ``receive``: counts the body as it streams in, cuts it off at the limit, and
    notes whether the client went away before its answer."""

    def __init__(self, receive: Any, limit: int, has_body: bool) -> None:
        self.receive = receive
        self.limit = limit
        self.received = 0
        self.done = not has_body
        self.answered = False
        self.disconnected = False

    def note(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            self.done = self.done or not message.get("more_body", False)
        elif message["type"] == "http.disconnect":
            self.disconnected = self.disconnected or not self.answered
            self.done = True

    async def __call__(self) -> dict[str, Any]:
        message = await self.receive()
        self.note(message)
        if message["type"] == "http.request" and self.received > self.limit:
            raise InputError(
                f"the request body is larger than the limit of {self.limit:,} bytes",
                hint="send a smaller picture (a digit needs only a few kB)",
                status=413,
                code="too_large",
            )
        return message

    async def drain(self, cap: int) -> bool:
        """Read and discard the rest of the body, up to ``cap`` bytes in all; whether all of it
        was read (else the connection must close)."""
        while not self.done and self.received <= cap:
            self.note(await self.receive())
        return self.done and not self.disconnected


class Guard:
    """Pure ASGI middleware: hosts, token, body size, disconnects, security headers, metrics
    (see the module docstring)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        metrics: Metrics,
        routes: tuple[str, ...],
        max_upload_bytes: int,
        max_drain_bytes: int,
        token: str | None = None,
        allowed_hosts: tuple[str, ...] = (),
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.routes = routes
        self.limit = max_upload_bytes
        self.drain_cap = max(max_drain_bytes, max_upload_bytes)
        self.token = token.encode() if token else None
        self.allowed_hosts = allowed_hosts

    def _refusal(self, headers: dict[bytes, bytes], path: str) -> InputError | None:
        """The error a request gets before the app sees it, if any."""
        if self.allowed_hosts:
            host = headers.get(b"host", b"").decode("latin-1")
            if not host_allowed(host, self.allowed_hosts):
                return InputError(
                    f"the Host header {host[:100]!r} is not one this server answers to",
                    hint="use the address the server was started for (see --allowed-host)",
                    status=400,
                    code="bad_host",
                )
        if self.token is not None and _protected(path):
            scheme, _, given = headers.get(b"authorization", b"").partition(b" ")
            if scheme.lower() != b"bearer" or not hmac.compare_digest(given.strip(), self.token):
                return InputError(
                    "this endpoint needs a bearer token",
                    hint="send the header 'Authorization: Bearer <token>' (the server's --token)",
                    status=401,
                    code="unauthorized",
                )
        length = headers.get(b"content-length")
        if length is not None and not length.isdigit():
            return InputError(
                "the Content-Length header is not a number", status=400, code="bad_request"
            )
        if length is not None and int(length) > self.limit:
            return InputError(
                f"the request body ({length.decode('latin-1')[:20]} bytes) is larger than the "
                f"limit of {self.limit:,} bytes",
                hint="send a smaller picture (a digit needs only a few kB)",
                status=413,
                code="too_large",
            )
        return None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        path = scope["path"] if scope["path"] in self.routes else "other"
        headers = dict(scope["headers"])
        has_body = b"content-length" in headers or b"transfer-encoding" in headers
        length = headers.get(b"content-length", b"")
        declared = int(length) if length.isdigit() else 0
        body = _Body(receive, self.limit, has_body and length != b"0")
        status = 500
        # A client that waits for "100 Continue" sends no body after an early answer.
        expects = headers.get(b"expect", b"").lower() == b"100-continue"

        async def guarded_send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                out = list(message.get("headers", []))
                names = {name.lower() for name, _ in out}
                out += [(n, v) for n, v in SECURITY_HEADERS if n not in names]
                if b"content-security-policy" not in names:
                    out.append((b"content-security-policy", API_CSP))
                if not body.done:  # answered before the whole body came: read the rest
                    drained = False
                    if not (expects and body.received == 0) and declared <= self.drain_cap:
                        drained = await body.drain(self.drain_cap)
                    if not drained:
                        out.append((b"connection", b"close"))
                body.answered = True
                message = {**message, "headers": out}
            await send(message)

        try:
            error = self._refusal(headers, scope["path"])
            if error is not None:
                self.metrics.error(path, error.code)
                await error_response(error)(scope, body, guarded_send)
                return
            await self.app(scope, body, guarded_send)
        finally:
            if body.disconnected:
                status = CLIENT_CLOSED
                self.metrics.client_disconnect(path)
                log.warning(
                    "%s %s: the client disconnected before its answer (%d body bytes read)",
                    scope["method"],
                    scope["path"][:200],
                    body.received,
                )
            self.metrics.observe(scope["method"], path, status, time.perf_counter() - start)
