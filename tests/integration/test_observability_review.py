"""Review of the observability code (issue 7): each test shows a defect found in review —
a logging, tracing or redaction failure that loses a reply, leaks a span or leaks a secret —
against a real nats-server."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import logging
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
import pytest_asyncio

from eventmicro import (
    Client,
    Connection,
    ConnectOptions,
    Durable,
    EventMicroError,
    NatsServer,
    Service,
    event_type,
)
from eventmicro import logs as em_logs

Eventually = Callable[..., Awaitable[None]]


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


@event_type("tests.review.v1.Note")
@dataclasses.dataclass
class Note:
    text: str


@event_type("tests.review.v1.Ask")
@dataclasses.dataclass
class Ask:
    key: str


@event_type("tests.review.v1.Answer")
@dataclasses.dataclass
class Answer:
    key: str


@pytest_asyncio.fixture
async def conn(nats_server: NatsServer) -> AsyncIterator[Connection]:
    connection = await Connection(ConnectOptions.from_env(nats_server.url, environ={})).open()
    yield connection
    await connection.close()


@pytest.fixture
def json_logs() -> Iterator[io.StringIO]:
    """The root logger through `logs.configure(json=True)` (its ContextFilter included)."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    stream = io.StringIO()
    em_logs.configure(json=True, level="INFO", stream=stream)
    yield stream
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


async def test_a_log_record_about_a_deeply_nested_event_loses_no_reply(
    conn: Connection, json_logs: io.StringIO, eventually: Eventually
) -> None:
    """The context filter parses a structured event's body for its id; a deeply nested body
    made it raise RecursionError out of the logging call in the error boundary, which failed
    the handler task, aborted the instance's task group and cancelled an RPC in flight (its
    reply lost)."""
    svc = Service(unique("obsrev"), version="1.0.0")
    entered = asyncio.Event()
    release = asyncio.Event()
    subject = f"{svc.name}.notes"

    @svc.rpc
    async def slow(req: Ask) -> Answer:
        entered.set()
        await release.wait()
        return Answer(req.key)

    @svc.subscribe(subject=subject)
    async def note(event: Note) -> None:
        pass

    async with svc.serving(conn) as running:
        call = asyncio.create_task(
            Client(conn, source="/t").call(f"{svc.name}.slow", Ask("o-1"), returns=Answer, timeout=5)
        )
        await asyncio.wait_for(entered.wait(), 5)
        nested = b'{"data":' + b"[" * 5000 + b"]" * 5000 + b"}"
        await conn.publish(subject, nested, headers={"content-type": "application/cloudevents+json"})
        stats = running.event_stats["note"]
        await eventually(lambda: stats.num_errors == 1)
        release.set()
        accepted = await call  # with the defect: cancelled by the aborted task group, a Timeout
        assert accepted.key == "o-1"
        await eventually(lambda: "not handled by note" in json_logs.getvalue())


class Unsendable:
    """A message no codec can encode: making its event fails."""


@pytest.fixture
def open_spans() -> Iterator[dict[int, str]]:
    """Tracing on, into an SDK provider of this test's own; yields the spans started and
    not (yet) ended, by span id."""
    sdk = pytest.importorskip("opentelemetry.sdk.trace")
    from eventmicro.observability import tracing

    started: dict[int, str] = {}

    class Track(sdk.SpanProcessor):  # type: ignore[misc, name-defined]
        def on_start(self, span: object, parent_context: object = None) -> None:
            started[span.context.span_id] = span.name  # type: ignore[attr-defined]

        def on_end(self, span: object) -> None:
            started.pop(span.context.span_id, None)  # type: ignore[attr-defined]

    provider = sdk.TracerProvider()
    provider.add_span_processor(Track())
    tracing.enable(tracer_provider=provider)
    try:
        yield started
    finally:
        tracing.disable()
        provider.shutdown()


async def test_a_publish_that_cannot_make_its_event_ends_its_span(
    conn: Connection, open_spans: dict[int, str]
) -> None:
    """The PRODUCER span was started before the event was made and ended only around the
    send: an encoding failure left it open for ever."""
    with pytest.raises(EventMicroError):
        await Client(conn).publish(Unsendable(), subject=unique("obsrev."))
    assert open_spans == {}


async def test_a_batch_with_a_message_that_cannot_be_made_ends_every_span(
    conn: Connection, open_spans: dict[int, str]
) -> None:
    """publish_batch started a span per message, then made the events: one bad message left
    every span of the batch open."""
    with pytest.raises(EventMicroError):
        await Client(conn).publish_batch([Note("a"), Unsendable(), Note("c")], subject=unique("obsrev."))
    assert open_spans == {}


async def test_a_cancelled_batch_ends_every_span(
    conn: Connection, open_spans: dict[int, str], eventually: Eventually
) -> None:
    """Cancelled while waiting for acknowledgements (no stream stores the subject here, so
    each publish waits): the spans of the events in flight and of those not yet sent stayed
    open."""
    batch = asyncio.create_task(
        Client(conn).publish_batch([Note(str(i)) for i in range(5)], subject=unique("obsrev."), window=2)
    )
    await eventually(lambda: len(open_spans) == 5)
    batch.cancel()
    with pytest.raises(asyncio.CancelledError):
        await batch
    assert open_spans == {}


async def test_a_password_with_an_at_sign_is_hidden_whole(nats_server: NatsServer) -> None:
    """`redact` stopped the user-info at the first "@": ``nats://bob:p@ss@host`` showed the
    rest of the password (nats-py, like `redact_url`, splits at the last "@")."""
    secret_tail = "tail-SECRET-9f3"
    url = nats_server.url.replace("nats://", f"nats://bob:pa@{secret_tail}@", 1)
    record = logging.LogRecord(
        "nats.aio.client", logging.ERROR, __file__, 1, "could not connect to %s", (url,), None
    )
    for formatter in (em_logs.JsonFormatter(), em_logs.TextFormatter()):
        text = formatter.format(record)
        assert secret_tail not in text
        assert "bob:***@" in text


async def test_a_scraper_that_never_reads_the_answer_is_dropped(eventually: Eventually) -> None:
    """Only reading the request was bounded: a client that sent ``GET /metrics`` and never
    read a large answer held its connection (and the handler's task) for ever."""
    pytest.importorskip("prometheus_client")
    from prometheus_client import CollectorRegistry
    from prometheus_client.core import GaugeMetricFamily

    from eventmicro import metrics as em_metrics

    class Large:  # a registry with a lot in it: megabytes of exposition
        def collect(self) -> Iterator[GaugeMetricFamily]:
            family = GaugeMetricFamily("review_large", "Many series.", labels=["n"])
            for n in range(150_000):
                family.add_metric([str(n)], n)
            yield family

    registry = CollectorRegistry()
    registry.register(Large())
    em_metrics.enable(registry)
    endpoint = await em_metrics.serve(0)
    stalled = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        await asyncio.to_thread(stalled.connect, ("127.0.0.1", endpoint.port))
        stalled.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")  # and never read
        server: Any = endpoint._server
        await eventually(lambda: server._active_count == 1)
        await eventually(lambda: server._active_count == 0, timeout=20)
    finally:
        stalled.close()
        await endpoint.close()
        em_metrics.disable()


async def test_a_failing_span_processor_loses_no_reply_and_no_ack(
    conn: Connection, eventually: Eventually
) -> None:
    """A span processor that raises (on start or on end) made every request answer 500 and
    every durable event fail (nak, redelivery, in the end a dead letter): tracing is only
    observation, the messages are handled as without it."""
    sdk = pytest.importorskip("opentelemetry.sdk.trace")
    from eventmicro import Stream
    from eventmicro.observability import tracing
    from eventmicro.transport.jetstream import ensure_stream

    class Broken(sdk.SpanProcessor):  # type: ignore[misc, name-defined]
        def on_start(self, span: object, parent_context: object = None) -> None:
            raise RuntimeError("exporter down")

        def on_end(self, span: object) -> None:
            raise RuntimeError("exporter down")

    stream = unique("R")
    await ensure_stream(conn, Stream(stream, [f"{stream}.>"]))
    svc = Service(unique("obsrev"), version="1.0.0")
    seen: list[str] = []

    @svc.rpc
    async def echo(req: Ask) -> Answer:
        return Answer(req.key)

    @svc.subscribe(subject=f"{stream}.notes", delivery=Durable(max_deliver=2, backoff=[0.05]))
    async def noted(event: Note) -> None:
        seen.append(event.text)

    provider = sdk.TracerProvider()
    provider.add_span_processor(Broken())
    tracing.enable(tracer_provider=provider)
    try:
        async with svc.serving(conn) as running:
            client = Client(conn, source="/t")
            answer = await client.call(f"{svc.name}.echo", Ask("k"), returns=Answer, timeout=5)
            assert answer == Answer("k")
            await client.publish(Note("n-1"), subject=f"{stream}.notes", durable=True)
            stats = running.event_stats["noted"]
            await eventually(lambda: stats.num_requests >= 1 and not running._durables[0].inflight)
            assert seen == ["n-1"]
            assert stats.num_errors == 0
    finally:
        tracing.disable()
