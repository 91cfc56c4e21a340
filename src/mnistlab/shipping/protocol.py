"""uvicorn's HTTP/1.1 protocol (httptools) with a bound on the size of a request's head, and
each response's head sent together with its body.

httptools puts no limit on the request line and headers: a client sending a header of tens of
megabytes keeps the server parsing (httptools joins partial header values again and again) and
growing, and every other client waits. :class:`LimitedHttpToolsProtocol` counts the bytes of
each request head (up to the blank line that ends it) as they arrive, before the parser sees
them; past ``max_header_bytes`` it answers 431 (JSON, code ``headers_too_large``) and closes
the connection. uvicorn's other parser, h11, has such a bound
(``h11_max_incomplete_event_size``) but is pure Python and slower.

uvicorn writes a response's head (status line and headers) as soon as the app starts the
response, and the body in a second write. On loopback each write is a send that also runs the
receiving side and wakes the client: two per request where one does. :class:`_HeadWithBody`
holds the head back until the body's first write (every answer but one to HEAD has one), so
that the two leave in one send (docs/benchmarks.md, "Serving latency").
"""

from __future__ import annotations

import json
import logging
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["DEFAULT_MAX_HEADER_BYTES", "LimitedHttpToolsProtocol", "uvicorn_config"]

log = logging.getLogger("mnistlab.serve")

DEFAULT_MAX_HEADER_BYTES = 64 << 10
_ATTRIBUTE = "mnistlab_max_header_bytes"  # carried on uvicorn's Config, into worker processes


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """:class:`HttpToolsProtocol` answering 431 to a request head over the limit (the
    ``mnistlab_max_header_bytes`` attribute of uvicorn's Config; see :func:`uvicorn_config`)."""

    def __init__(self, config: uvicorn.Config, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        self.max_head = int(getattr(config, _ATTRIBUTE, DEFAULT_MAX_HEADER_BYTES))
        self.head_bytes: int | None = 0  # bytes of the current request head; None in a body
        self.tail = b""  # the last bytes of the head so far: its end may straddle two reads

    def data_received(self, data: bytes) -> None:
        if self.transport.is_closing():
            return
        if self.head_bytes is not None:  # counted before the parser sees them
            window = self.tail + data
            end = window.find(b"\r\n\r\n")
            if end < 0:
                self.head_bytes += len(data)
                self.tail = window[-3:]
            else:
                self.head_bytes += max(0, end + 4 - len(self.tail))
            if self.head_bytes > self.max_head:
                self.head_bytes = None
                self._refuse()
                return
        super().data_received(data)

    def on_headers_complete(self) -> None:
        self.head_bytes = None
        before = self.cycle
        super().on_headers_complete()
        if self.cycle is not None and self.cycle is not before:  # a new request's cycle
            self.cycle.transport = _HeadWithBody(self.transport, self.cycle)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self.head_bytes, self.tail = 0, b""

    def _refuse(self) -> None:
        log.warning(
            "%s: refused a request whose head (request line and headers) is over %s bytes",
            "{}:{}".format(*self.client) if self.client else "client",
            f"{self.max_head:,}",
        )
        body = json.dumps(
            {
                "error": {
                    "code": "headers_too_large",
                    "message": f"the request line and headers are over {self.max_head:,} bytes",
                    "hint": "send smaller headers (cookies, tokens)",
                }
            }
        ).encode()
        self.transport.write(
            b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
            b"content-type: application/json\r\n"
            b"x-content-type-options: nosniff\r\n"
            b"content-length: " + str(len(body)).encode() + b"\r\n"
            b"connection: close\r\n\r\n" + body
        )
        self.transport.close()


class _HeadWithBody:
    """The transport as one response cycle sees it: the write of the response head waits for
    the next write (the body, or its first chunk) and goes out with it. Every other write (a
    "100 Continue" before the response, the chunks after the first, the head of an answer to
    HEAD, which uvicorn sends no body write for) passes straight through; closing sends what is
    held first."""

    def __init__(self, transport: Any, cycle: Any) -> None:
        self._transport = transport
        self._cycle = cycle
        self._head: bytes | None = None
        self._sent_head = False

    def write(self, data: bytes) -> None:
        if self._head is not None:
            data, self._head = self._head + data, None
        elif not self._sent_head and getattr(self._cycle, "response_started", False):
            self._sent_head = True
            # HEAD answers get no body write; getattr: were uvicorn to rename these, pass through
            if getattr(self._cycle, "scope", {}).get("method") not in ("HEAD", None):
                self._head = data  # the head: held for the body
                return
        self._transport.write(data)

    def close(self) -> None:
        if self._head is not None:
            self._transport.write(self._head)
            self._head = None
        self._transport.close()

    def __getattr__(self, name: str) -> Any:  # is_closing, get_extra_info, ...
        return getattr(self._transport, name)


def uvicorn_config(app: Any, *, max_header_bytes: int, **options: Any) -> uvicorn.Config:
    """uvicorn's Config with :class:`LimitedHttpToolsProtocol` and its limit (which travels to
    worker processes with the Config)."""
    config = uvicorn.Config(app, http=LimitedHttpToolsProtocol, **options)
    setattr(config, _ATTRIBUTE, max_header_bytes)
    return config
