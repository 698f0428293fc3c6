"""A tiny HTTP/1.1 server for operations: ``/metrics`` (Prometheus), ``/healthz`` and
``/readyz`` (Kubernetes probes), on asyncio, with no dependency.

=========  =============================================================================
path       answer
=========  =============================================================================
/metrics   prometheus-client's exposition of the registry metrics are enabled in (text
           format 0.0.4, or OpenMetrics when the ``Accept`` header asks for it)
/healthz   200 while every instance is live, else 503 (also ``/livez``); JSON body
/readyz    200 while there is an instance and every instance is ready, else 503; JSON body
           (asks the server for each durable consumer first, bounded to 2 s)
=========  =============================================================================

Only GET and HEAD; one request per connection (``Connection: close``); a request must arrive
within 5 s and fit in 16 KiB; a client that does not take its answer within 5 s is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Final

from eventmicro.observability.health import check, probe
from eventmicro.observability.metrics import active, enable

if TYPE_CHECKING:  # pragma: no cover
    from eventmicro.observability.instance import Instance

__all__ = ["HttpEndpoint", "serve"]

log = logging.getLogger("eventmicro.http")

_READ_TIMEOUT: Final = 5.0
_WRITE_TIMEOUT: Final = 5.0
_LIMIT: Final = 16 * 1024
_REASONS: Final = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}


class HttpEndpoint:
    """A running operations endpoint; `close` stops it."""

    def __init__(
        self, server: asyncio.Server, *, metrics: bool, instances: Sequence[Instance] | None
    ) -> None:
        self._server = server
        self.metrics = metrics
        self.instances = instances  # None: no health paths; a list may grow after start

    @property
    def port(self) -> int:
        """The port it listens on (useful with port 0)."""
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        host = self._server.sockets[0].getsockname()[0]
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}"

    async def close(self) -> None:
        self._server.close()
        with contextlib.suppress(Exception):
            await self._server.wait_closed()

    async def __aenter__(self) -> HttpEndpoint:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(_READ_TIMEOUT):
                head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, target, _version = lines[0].split(" ", 2)
            headers = {}
            for line in lines[1:]:
                name, sep, value = line.partition(":")
                if sep:
                    headers[name.strip().lower()] = value.strip()
            status, content_type, body = await self._route(method, target.split("?", 1)[0], headers)
            writer.write(
                (
                    f"HTTP/1.1 {status} {_REASONS.get(status, '')}\r\n"
                    f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
                    "Cache-Control: no-store\r\nConnection: close\r\n\r\n"
                ).encode("latin-1")
                + (b"" if method == "HEAD" else body)
            )
            async with asyncio.timeout(_WRITE_TIMEOUT):  # a client that does not read: dropped
                await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, OSError):
            writer.transport.abort()  # a broken or slow client: closed now, unsent data dropped
        except Exception:
            log.exception("operations endpoint: request failed")
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(_WRITE_TIMEOUT):  # close flushes what is buffered
                    await writer.wait_closed()
            writer.transport.abort()  # no-op once closed

    async def _route(self, method: str, path: str, headers: dict[str, str]) -> tuple[int, str, bytes]:
        if method not in ("GET", "HEAD"):
            return 405, "text/plain; charset=utf-8", b"only GET and HEAD\n"
        if path == "/metrics" and self.metrics:
            metrics = active()
            if metrics is None:
                return 503, "text/plain; charset=utf-8", b"metrics are disabled\n"
            body, content_type = metrics.exposition(headers.get("accept"))
            return 200, content_type, body
        if path in ("/healthz", "/livez", "/readyz") and self.instances is not None:
            instances = list(self.instances)
            if path == "/readyz":
                states = [await probe(running) for running in instances]
                ok = bool(states) and all(state.ready for state in states)
            else:
                states = [check(running) for running in instances]
                ok = all(state.live for state in states)
            document = {"status": "ok" if ok else "unavailable", "instances": [s.as_dict() for s in states]}
            return 200 if ok else 503, "application/json", json.dumps(document).encode() + b"\n"
        return 404, "text/plain; charset=utf-8", b"not found\n"


async def serve(
    port: int = 0,
    host: str | None = "127.0.0.1",
    *,
    metrics: bool = True,
    instances: Sequence[Instance] | None = None,
) -> HttpEndpoint:
    """Start an operations endpoint on ``host:port`` (``host=None``: every interface).

    ``metrics=True`` serves ``/metrics`` (and enables metrics, which needs the ``metrics``
    extra); ``instances`` (running service instances, e.g. what ``Service.serving`` yields; a
    list may be filled later) serves ``/healthz`` and ``/readyz``.
    """
    if metrics and active() is None:
        enable()
    endpoint: HttpEndpoint | None = None

    async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert endpoint is not None
        await endpoint._connection(reader, writer)

    server = await asyncio.start_server(on_connection, host, port, limit=_LIMIT)
    endpoint = HttpEndpoint(server, metrics=metrics, instances=instances)
    paths = [p for p, on in (("/metrics", metrics), ("/healthz /readyz", instances is not None)) if on]
    log.info("operations endpoint on %s (%s)", endpoint.url, ", ".join(paths))
    return endpoint
