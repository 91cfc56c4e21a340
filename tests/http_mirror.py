"""A real HTTP mirror on 127.0.0.1 for download tests: fault injection and a request log.

No mocking: :class:`MirrorServer` is a ``http.server.ThreadingHTTPServer`` on an ephemeral
port, serving bytes held in memory (the real MNIST ``.gz`` files, usually) with HTTP Range
support, the way S3 or a plain nginx would. A test injects faults per file and per request::

    with MirrorServer({"t10k-labels-idx1-ubyte.gz": data}) as server:
        server.inject("t10k-labels-idx1-ubyte.gz", Fault(status=500), times=2)
        mnistlab.fetch_dataset("mnist", mirrors=[server.url], ...)
        assert [r.status for r in server.requests("t10k-labels-idx1-ubyte.gz")] == [500, 500, 200]

Every request is logged (:class:`Request`: path, Range header, status, Content-Range, bytes
of body sent, the fault applied, and whether the client hung up) the moment it arrives, so a
test can also watch it while a fetch is still running.
"""

from __future__ import annotations

import fnmatch
import http.server
import re
import socket
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

_RANGE = re.compile(r"bytes=(\d+)-(\d*)")


@dataclass(frozen=True)
class Fault:
    """What to do wrong for one request. The default, ``Fault()``, answers normally.

    Attributes:
        status: answer with this HTTP status (and a short text body) instead of the file.
        delay: seconds to sleep before answering anything (the client may time out first).
        wait: block until this event is set before answering (a gate the test opens).
        drop: close the connection without answering at all.
        cut_after: send the headers (full Content-Length), then only this many bytes of the
            body, then close the connection.
        hang_after: send the headers, then this many bytes of the body, then stall (up to
            ``hang`` seconds, or until the server stops) without closing.
        hang: how long ``hang_after`` stalls.
        ignore_range: answer 200 with the whole body even to a Range request.
        location: with ``status`` (a 3xx), the redirect target; the path of the request
            is appended when it ends with ``/`` (``location=other.url`` redirects any file
            to the same file on ``other``).
        body: serve these bytes instead of the file (Range still honoured).
        content_range: send this Content-Range on a 206 instead of the right one.
        no_length: send no Content-Length; the body ends when the connection closes.
    """

    status: int | None = None
    delay: float = 0.0
    wait: threading.Event | None = None
    drop: bool = False
    cut_after: int | None = None
    hang_after: int | None = None
    hang: float = 10.0
    ignore_range: bool = False
    location: str | None = None
    body: bytes | None = None
    content_range: str | None = None
    no_length: bool = False


@dataclass
class Request:
    """One request as the server saw and answered it."""

    method: str
    path: str
    range: str | None
    status: int | None = None  # None: no status line was sent (dropped, or client gone)
    content_range: str | None = None
    length: int | None = None  # the Content-Length header sent
    sent: int = 0  # body bytes actually written
    fault: Fault | None = None
    error: str | None = None  # e.g. "BrokenPipeError" when the client hung up
    time: float = field(default_factory=time.monotonic)

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]

    @property
    def complete(self) -> bool:
        """A 200/206 whose whole body was written."""
        return self.status in (200, 206) and self.length is not None and self.sent == self.length


@dataclass
class _Rule:
    pattern: str
    fault: Fault
    times: int | None  # None: forever


class _Handler(http.server.BaseHTTPRequestHandler):
    server_version = "mnistlab-test-mirror/1"
    server: _Server

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass

    def do_HEAD(self) -> None:
        self._handle(head=True)

    def do_GET(self) -> None:
        self._handle(head=False)

    def _handle(self, head: bool) -> None:
        mirror = self.server.mirror
        path = self.path.split("?", 1)[0]
        record = Request(self.command, path, self.headers.get("Range"))
        fault = mirror._take_fault(path)
        record.fault = fault
        mirror._log(record)
        try:
            self._answer(mirror, record, fault or Fault(), head)
        except OSError as exc:  # the client went away (timed out, refused the body, ...)
            record.error = type(exc).__name__
            self.close_connection = True

    # The record is updated *before* bytes leave: a client that has seen them (and a test
    # asserting right after the fetch returned) must find them logged.

    def _send_head(self, record: Request, status: int, headers: dict[str, str]) -> None:
        record.status = status
        record.content_range = headers.get("Content-Range")
        length = headers.get("Content-Length")
        record.length = int(length) if length is not None else None
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()

    def _write(self, record: Request, data: bytes | memoryview) -> None:
        record.sent += len(data)
        try:
            self.wfile.write(data)
        except OSError:
            record.sent -= len(data)  # not (all) delivered
            raise

    def _send_text(
        self, record: Request, status: int, text: str, extra: dict[str, str] | None = None
    ) -> None:
        body = text.encode()
        headers = {"Content-Type": "text/plain", "Content-Length": str(len(body))}
        self._send_head(record, status, {**headers, **(extra or {})})
        if self.command != "HEAD":
            self._write(record, body)

    def _answer(self, mirror: MirrorServer, record: Request, fault: Fault, head: bool) -> None:
        if fault.wait is not None:
            while not fault.wait.wait(0.05) and not mirror._stopping.is_set():
                pass
        if fault.delay:
            mirror._stopping.wait(fault.delay)
        if fault.drop:
            self.close_connection = True
            return
        if fault.status is not None:
            extra = {}
            if fault.location is not None:
                target = fault.location
                extra["Location"] = target + record.name if target.endswith("/") else target
            self._send_text(record, fault.status, f"injected HTTP {fault.status}\n", extra)
            return
        data = fault.body if fault.body is not None else mirror.files.get(record.path)
        if data is None:
            self._send_text(record, 404, f"{record.path} not found\n")
            return

        status, start, end = 200, 0, len(data)
        match = _RANGE.fullmatch(record.range or "")
        if match and not fault.ignore_range:
            start = int(match[1])
            if start >= len(data):
                self._send_text(
                    record,
                    416,
                    "range not satisfiable\n",
                    {"Content-Range": f"bytes */{len(data)}"},
                )
                return
            end = min(int(match[2]) + 1, len(data)) if match[2] else len(data)
            status = 206
        body = memoryview(data)[start:end]
        headers = {"Content-Type": "application/octet-stream", "Accept-Ranges": "bytes"}
        if not fault.no_length:
            headers["Content-Length"] = str(len(body))
        if status == 206:
            headers["Content-Range"] = fault.content_range or f"bytes {start}-{end - 1}/{len(data)}"
        self._send_head(record, status, headers)
        if head:
            return

        stop = len(body)
        if fault.cut_after is not None:
            stop = min(stop, fault.cut_after)
        if fault.hang_after is not None:
            stop = min(stop, fault.hang_after)
        for offset in range(0, stop, 1 << 16):
            self._write(record, body[offset : min(offset + (1 << 16), stop)])
        self.wfile.flush()
        if fault.hang_after is not None and stop < len(body):
            mirror._stopping.wait(fault.hang)
        if stop < len(body):
            self.close_connection = True  # cut: the server closes with the body incomplete


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    mirror: MirrorServer


class MirrorServer:
    """A threaded HTTP server on 127.0.0.1 serving ``files`` under ``prefix``.

    Args:
        files: file name -> bytes, served at ``{prefix}{name}``; other paths get 404.
        prefix: the URL path the files live under (``url`` is the mirror's base URL).

    Use as a context manager, or call :meth:`close`; the server runs in a daemon thread.
    """

    def __init__(self, files: Mapping[str, bytes] | None = None, prefix: str = "/mnist/") -> None:
        self.prefix = "/" + prefix.strip("/") + "/"
        self.files: dict[str, bytes] = {self.prefix + n: d for n, d in (files or {}).items()}
        self.log: list[Request] = []
        self._rules: list[_Rule] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.mirror = self
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        """The mirror's base URL, e.g. ``http://127.0.0.1:PORT/mnist/``."""
        return self.url_for(self.prefix)

    def url_for(self, prefix: str) -> str:
        """The base URL of another path prefix on this server."""
        return f"http://127.0.0.1:{self.port}/{prefix.strip('/')}/"

    def put(self, name: str, data: bytes) -> None:
        """Serve ``data`` as ``name`` (replacing what was there)."""
        self.files[self.prefix + name] = data

    def inject(self, pattern: str, fault: Fault, times: int | None = 1) -> None:
        """Apply ``fault`` to the next ``times`` requests matching ``pattern`` (None: all).

        ``pattern`` is an fnmatch pattern on the file name (``"*"``: any file), or on the
        whole path when it contains a ``/``. Rules are tried in the order they were added;
        the first one that matches and has uses left is used up.
        """
        with self._lock:
            self._rules.append(_Rule(pattern, fault, times))

    def requests(self, name: str | None = None) -> list[Request]:
        """The log, or the requests for the file called ``name``."""
        with self._lock:
            return [r for r in self.log if name is None or r.name == name]

    def _take_fault(self, path: str) -> Fault | None:
        name = path.rsplit("/", 1)[-1]
        with self._lock:
            for rule in self._rules:
                target = path if "/" in rule.pattern else name
                if (rule.times is None or rule.times > 0) and fnmatch.fnmatchcase(
                    target, rule.pattern
                ):
                    if rule.times is not None:
                        rule.times -= 1
                    return rule.fault
        return None

    def _log(self, record: Request) -> None:
        with self._lock:
            self.log.append(record)

    def close(self) -> None:
        """Stop serving (stalled and gated handlers are released) and free the port."""
        self._stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> MirrorServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def closed_port_url(prefix: str = "/mnist/") -> str:
    """A base URL on 127.0.0.1 where nothing listens (connections are refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/{prefix.strip('/')}/"
