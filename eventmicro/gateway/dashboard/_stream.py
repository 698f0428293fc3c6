"""``GET /dashboard/events``: live CloudEvents from NATS as Server-Sent Events, one subscription a client.

Query: ``subject`` (a NATS subject, wildcards allowed, inside the gateway's ``events_subject``;
default: all of it) and ``type`` (an exact CloudEvent type, or a prefix ending with ``*``).
What the client reads::

    : connected
    event: ready                                      the NATS subscription is in place
    data: {"subject": "events.>", "type": ""}

    data: {"subject": "events.shop...", "id": "...", "type": "...", "data": {...}}
    event: dropped                                    this client fell behind: k oldest dropped
    data: {"dropped": k}
    : heartbeat                                       after 15 s without anything to send

The subscription lives exactly as long as the HTTP response: it is taken before the first byte
and given back when the client disconnects (or the server stops the response).

The streams read NATS on a connection of their own (`StreamConnection`: opened with the
gateway connection's options for the first stream, closed after the last), never on the one
``/api`` and ``/events`` use: when a flood of large events is more than the gateway reads in
time, the server cuts a slow consumer, and only the streams' connection is cut (it reconnects).
Each subscription buffers at most `PENDING_MSGS` messages and `PENDING_BYTES` bytes; what a
full buffer drops is counted in the client's ``event: dropped`` like what its queue drops.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from collections.abc import Iterable
from typing import Any, Final

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import Receive, Scope, Send

from eventmicro._errors import EventMicroError
from eventmicro.gateway._problems import Problem, problem_response
from eventmicro.gateway.dashboard._feed import MAX_QUEUE, Feed, TypeFilter
from eventmicro.transport.connection import Connection, Subscription
from eventmicro.wire.names import check_subject, within

__all__ = [
    "HEARTBEAT",
    "PENDING_BYTES",
    "PENDING_MSGS",
    "EventsEndpoint",
    "StreamConnection",
    "error_response",
    "within",
]

log = logging.getLogger("eventmicro.gateway.dashboard")

HEARTBEAT: Final = 15.0  # seconds of silence before a comment line keeps proxies from closing
PENDING_MSGS: Final = 10_000  # messages a stream's NATS subscription holds before dropping
PENDING_BYTES: Final = 16 * 1024 * 1024  # and bytes
_UNAVAILABLE: Final = "cannot subscribe to NATS at the moment"
_HEADERS: Final = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache, no-store"),
    (b"x-accel-buffering", b"no"),  # nginx: do not buffer the stream
]


def error_response(status: int, kind: str, detail: str) -> JSONResponse:
    """The gateway's error answer (``{"error": {"code", "status", "id", "detail"}}``)."""
    return problem_response(Problem(status, kind, detail))


class StreamConnection:
    """The event streams' own NATS connection: opened for the first stream, closed after the
    last, with the options (server, credentials) of the gateway's connection."""

    def __init__(self, connection: Connection) -> None:
        self.gateway_connection = connection
        self._connection: Connection | None = None
        self._users = 0
        self._lock = asyncio.Lock()

    async def acquire(self) -> Connection:
        """The connection, opened when no stream holds it; give it back with `release`."""
        async with self._lock:
            if self._connection is None:
                options = self.gateway_connection.options
                name = f"{options.name or 'eventmicro gateway'} (event streams)"
                connection = Connection(dataclasses.replace(options, name=name, connect_attempts=1))
                await connection.open()
                self._connection = connection
            self._users += 1
            return self._connection

    async def release(self) -> None:
        """A stream is done with the connection; the last one closes it."""
        async with self._lock:
            self._users -= 1
            if self._users == 0 and self._connection is not None:
                connection, self._connection = self._connection, None
                try:
                    await connection.close()
                except EventMicroError as exc:  # closing: nothing left to do with it
                    log.info("dashboard: closing the event streams' connection: %s", exc)


class EventsEndpoint:
    """The ASGI app of ``GET /dashboard/events`` (see the module docstring)."""

    def __init__(
        self,
        connection: Connection,
        *,
        allowed: str,
        max_queue: int = MAX_QUEUE,
        heartbeat: float = HEARTBEAT,
        max_streams: int = 64,
    ) -> None:
        self.connection = connection
        self.max_streams = max_streams  # open at once; each holds a NATS subscription
        self.open = 0
        self.allowed = allowed  # the widest subject a client may ask for
        self.max_queue = max_queue
        self.heartbeat = heartbeat
        self.streams = StreamConnection(connection)

    def parse(self, request: Request) -> tuple[str, TypeFilter]:
        """The subject and type filter a request asks for; `ValueError` saying what is wrong."""
        subject = request.query_params.get("subject", "").strip() or self.allowed
        try:
            check_subject(subject, wildcards=True)
        except EventMicroError as exc:
            raise ValueError(str(exc)) from exc
        if not within(subject, self.allowed):
            raise ValueError(f"subject must be within {self.allowed!r}")
        return subject, TypeFilter.parse(request.query_params.get("type"))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            subject, type_filter = self.parse(Request(scope))
        except ValueError as exc:
            await error_response(400, "BadRequest", str(exc))(scope, receive, send)
            return
        if self.open >= self.max_streams:
            detail = f"{self.max_streams} event streams are open already: close one, or try later"
            await error_response(503, "TooManyStreams", detail)(scope, receive, send)
            return
        if not self.connection.is_connected:  # the gateway is closed or NATS is down: so are its streams
            await error_response(503, "Unavailable", _UNAVAILABLE)(scope, receive, send)
            return
        self.open += 1
        try:
            try:
                connection = await self.streams.acquire()
            except EventMicroError as exc:
                log.warning("dashboard: cannot connect the event streams to NATS: %s", exc)
                await error_response(503, "Unavailable", _UNAVAILABLE)(scope, receive, send)
                return
            try:
                await self._stream(subject, type_filter, scope, receive, send, connection=connection)
            finally:
                await self.streams.release()
        finally:
            self.open -= 1

    async def _stream(
        self,
        subject: str,
        type_filter: TypeFilter,
        scope: Scope,
        receive: Receive,
        send: Send,
        *,
        connection: Connection,
    ) -> None:
        feed = Feed(type_filter, max_queue=self.max_queue)
        try:
            subscription = await connection.subscribe(
                subject, feed.on_message, pending_msgs_limit=PENDING_MSGS, pending_bytes_limit=PENDING_BYTES
            )
        except EventMicroError as exc:
            log.warning("dashboard: cannot subscribe to %s: %s", subject, exc)
            await error_response(503, "Unavailable", _UNAVAILABLE)(scope, receive, send)
            return
        log.debug("dashboard: event stream opened on %s", subject)
        try:
            await send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
            ready = {"subject": subject, "type": type_filter.pattern}
            async with asyncio.TaskGroup() as group:
                pump = group.create_task(self._pump(feed, subscription, send, _message(ready, event="ready")))
                group.create_task(_until_disconnect(receive, pump))
        except* OSError as group:  # ASGI 2.4 servers report a gone client by failing the send
            log.debug("dashboard: event stream client gone: %s", group.exceptions[0])
        finally:
            try:
                await subscription.unsubscribe()
            except EventMicroError as exc:  # the connection is closing: the server forgets it anyway
                log.info("dashboard: unsubscribing from %s: %s", subject, exc)
            log.debug("dashboard: event stream closed on %s", subject)

    async def _pump(self, feed: Feed, subscription: Subscription, send: Send, first: bytes) -> None:
        await send({"type": "http.response.body", "body": b": connected\n\n" + first, "more_body": True})
        counted = 0  # of the subscription's drops, those told to the client already
        while True:
            try:
                async with asyncio.timeout(self.heartbeat):
                    await feed.wait()
            except TimeoutError:
                chunk = b": heartbeat\n\n"
            else:
                feed.lost(subscription.dropped - counted)
                counted = subscription.dropped
                documents, dropped = feed.take()
                chunk = _chunk(documents, dropped)
            await send({"type": "http.response.body", "body": chunk, "more_body": True})


async def _until_disconnect(receive: Receive, pump: asyncio.Task[None]) -> None:
    """Wait for the client to go away, then stop ``pump``."""
    while (await receive())["type"] != "http.disconnect":
        pass
    pump.cancel()


def _chunk(documents: Iterable[dict[str, Any]], dropped: int) -> bytes:
    parts = [_message({"dropped": dropped}, event="dropped")] if dropped else []
    parts.extend(_message(document) for document in documents)
    return b"".join(parts)


def _message(document: dict[str, Any], *, event: str | None = None) -> bytes:
    data = json.dumps(document, ensure_ascii=False, default=str, separators=(",", ":"))
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {data}\n\n".encode()
