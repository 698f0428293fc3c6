"""Bounds on a request's header block, enforced while it arrives, before any route or auth runs.

uvicorn's httptools protocol buffers a header block for as long and as large as a client sends
it (20 connections each sending 20 MiB of unfinished header cost 609 MiB). `guarded` makes a
subclass of it that feeds the parser at most ``max_bytes`` of each request's head and
answers beyond any bound::

    head (request line + headers) over max_bytes          431, connection closed
    more than max_count header fields                     431, connection closed
    head not complete within timeout of its first byte    408, connection closed
    no byte at all within timeout of the connection       closed (nothing to answer)
    body with its chunk framing and trailers over
      max_body_bytes (trailers are headers the parser
      buffers whole, like the head's)                     413, connection closed
    body not complete within body_timeout of the head's
      end (a body that trickles in, or keeps coming
      after the answer, held a connection and up to
      max_body of memory for ever)                        408 (or, once answered, closed)
    more than MAX_PIPELINED requests waiting behind the
      one being answered (uvicorn parses every pipelined
      request it reads and resumes reading after each
      answer: 20 connections that never read their
      answers grew the gateway by 2.7 GiB)                closed

The bounds are the gateway's `GatewayConfig` ``max_header_bytes``, ``max_headers``,
``header_timeout`` and ``body_timeout``. Between requests on a kept-alive connection uvicorn's own keep-alive
timeout applies; the body is the routes' business (``max_body``).
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any, ClassVar, Final

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["HeaderLimits", "guarded"]

MAX_PIPELINED: Final = 100  # requests one connection may have waiting behind the one being answered
LINGER: Final = 2.0  # seconds a refused connection's further bytes are read and dropped before closing
_REASONS: Final = {
    408: b"Request Timeout",
    413: b"Content Too Large",
    431: b"Request Header Fields Too Large",
}
_KINDS: Final = {408: "HeaderTimeout", 413: "BodyTooLarge", 431: "HeadersTooLarge"}


@dataclass(frozen=True, slots=True)
class HeaderLimits:
    """How large, how many and how slow a request's header block may be; how many bytes its
    body may take on the wire."""

    max_bytes: int
    max_count: int
    timeout: float
    max_body_bytes: int
    body_timeout: float = 30.0


class _Refused(Exception):
    """Raised from a parser callback to stop the parser (uvicorn then answers via ``send_400_response``)."""


class GuardedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with `HeaderLimits` (see the module docstring)."""

    limits: ClassVar[HeaderLimits]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = True  # the next bytes belong to a request's head
        self._head_bytes = 0
        self._body_bytes = 0
        self._header_count = 0
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._refusal: tuple[int, str] | None = None
        self._lingering = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()  # a connection that never sends a byte is closed too

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self._disarm_body()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._lingering:
            return  # refused: what the client still sends is dropped unread
        while data and not self.transport.is_closing() and not self._lingering:
            if self._in_head:
                if self._head_timer is None:
                    self._arm()
                room = self.limits.max_bytes - self._head_bytes
                if room <= 0:
                    self._refuse(431, f"the request's header is larger than {self.limits.max_bytes} bytes")
                    return
                piece, data = data[:room], data[room:]
                self._head_bytes += len(piece)
            else:
                room = self.limits.max_body_bytes - self._body_bytes
                if room <= 0:
                    limit = self.limits.max_body_bytes
                    self._refuse(413, f"the request's body and trailers are larger than {limit} bytes")
                    return
                piece, data = data[:room], data[room:]
                self._body_bytes += len(piece)
            super().data_received(piece)  # may end the head (and a whole request) inside the piece

    def on_message_begin(self) -> None:
        self._header_count = 0
        super().on_message_begin()

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        if self._header_count > self.limits.max_count:
            self._refusal = (431, f"the request has more than {self.limits.max_count} header fields")
            raise _Refused
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        if len(self.pipeline) >= MAX_PIPELINED:  # sends requests and never reads the answers
            self.pipeline.clear()
            self.transport.close()
            raise _Refused  # stops the parser: the rest of what was read is not parsed
        self._in_head = False
        self._body_bytes = 0
        self._disarm()
        self._body_timer = self.loop.call_later(self.limits.body_timeout, self._body_timed_out)
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._disarm_body()
        super().on_message_complete()
        self._in_head = True
        self._head_bytes = 0

    def send_400_response(self, msg: str) -> None:
        if self.transport.is_closing():
            return  # closed on purpose (a pipeline too deep): nothing more to say
        if self._refusal is None:
            super().send_400_response(msg)
        else:
            self._refuse(*self._refusal)

    def _arm(self) -> None:
        self._head_timer = self.loop.call_later(self.limits.timeout, self._timed_out)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _disarm_body(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def _body_timed_out(self) -> None:
        self._body_timer = None
        if self._in_head or self.transport.is_closing():
            return
        cycle = self.cycle
        if cycle is not None and (cycle.response_complete or cycle.response_started):
            self.transport.close()  # answered (say 401) while the body still trickles in: nothing to say
            return
        detail = f"the request's body did not arrive within {self.limits.body_timeout:g} s"
        self._refuse(408, detail, "BodyTimeout")

    def _timed_out(self) -> None:
        self._head_timer = None
        if not self._in_head or self.transport.is_closing():
            return
        if self._head_bytes == 0:  # not one byte: nothing was asked, nothing to answer
            self.transport.close()
            return
        self._refuse(408, f"the request's header did not arrive within {self.limits.timeout:g} s")

    def _refuse(self, status: int, detail: str, kind: str | None = None) -> None:
        """Answer ``status`` with the gateway's JSON error and close the connection after
        `LINGER` seconds of dropping what the client still sends (closing with unread bytes
        would reset the connection, and the client could lose the answer: nginx's lingering
        close). When the app's answer has begun, close at once; when the app is still reading
        the request, it is told the client is gone."""
        self._disarm()
        self._disarm_body()
        if self.transport.is_closing() or self._lingering:
            return
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            if cycle.response_started:  # the app is answering: no room for another answer
                self.transport.close()
                return
            cycle.disconnected = True  # for the app: the client is gone, its answer goes nowhere
            cycle.message_event.set()
        error = {
            "code": status,
            "status": _REASONS[status].decode(),
            "id": f"eventmicro.gateway.{kind or _KINDS[status]}",
            "detail": detail,
        }
        body = json.dumps({"error": error}, separators=(",", ":")).encode()
        head = [
            b"HTTP/1.1 %d %s\r\n" % (status, _REASONS[status]),
            *(name + b": " + value + b"\r\n" for name, value in self.server_state.default_headers),
            b"content-type: application/json\r\n",
            b"content-length: %d\r\n" % len(body),
            b"connection: close\r\n\r\n",
        ]
        self.transport.write(b"".join(head) + body)
        self._lingering = True
        self.transport.write_eof()  # the answer, then our FIN; the client's bytes are dropped meanwhile
        self.loop.call_later(LINGER, self.transport.close)


def guarded(limits: HeaderLimits) -> type[GuardedProtocol]:
    """A `GuardedProtocol` class bound to ``limits``, for ``uvicorn.Config(http=...)``."""
    return type("GuardedProtocol", (GuardedProtocol,), {"limits": limits})
