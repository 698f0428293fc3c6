"""OpenTelemetry tracing: spans for call, handle, publish and consume, linked through the
CloudEvents distributed-tracing extension — with the SDK's in-memory exporter and a real
nats-server (the cross-process links: tests/system/test_traced_processes.py). Every span ends,
whatever happens to its message (not encodable, a batch cancelled), and a span processor that
raises loses no reply and no ack: tracing is only observation."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence

import pytest

from eventmicro import Durable

pytest.importorskip("opentelemetry.sdk")

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NoOpTracerProvider, SpanKind, StatusCode

from eventmicro import (
    Client,
    Connection,
    Context,
    EventMicroError,
    InternalError,
    Message,
    Service,
    ServiceError,
    Stream,
    event_type,
)
from eventmicro.observability import tracing
from eventmicro.transport.jetstream import ensure_stream
from eventmicro.wire.trace import Trace

Eventually = Callable[..., Awaitable[None]]


@event_type("tests.tracing.v1.Place")
@dataclasses.dataclass
class Place:
    order_id: str
    fail: str = ""  # "", "crash" (an exception carrying data) or "refuse" (a ServiceError)


@event_type("tests.tracing.v1.Placed")
@dataclasses.dataclass
class Placed:
    order_id: str


@event_type("tests.tracing.v1.OrderMade")
@dataclasses.dataclass
class OrderMade:
    order_id: str
    fail: bool = False


@event_type("tests.tracing.v1.Shipped")
@dataclasses.dataclass
class Shipped:
    order_id: str


@event_type("tests.tracing.v1.Note")
@dataclasses.dataclass
class Note:
    text: str


@event_type("tests.tracing.v1.Ask")
@dataclasses.dataclass
class Ask:
    key: str


@event_type("tests.tracing.v1.Answer")
@dataclasses.dataclass
class Answer:
    key: str


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Tracing on, into an SDK provider of this test's own (the global one is left alone)."""
    provider = TracerProvider()
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.enable(tracer_provider=provider)
    try:
        yield exporter
    finally:
        tracing.disable()
        provider.shutdown()


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


async def finished(exporter: InMemorySpanExporter, *names: str) -> dict[str, ReadableSpan]:
    """The finished spans, by name, once every one of ``names`` has ended."""
    async with asyncio.timeout(10):
        while True:
            by_name = {span.name: span for span in exporter.get_finished_spans()}
            if all(name in by_name for name in names):
                return by_name
            await asyncio.sleep(0.01)


def traceparent(span: ReadableSpan) -> str:
    context = span.get_span_context()
    assert context is not None
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"


def assert_chain(chain: Sequence[ReadableSpan]) -> None:
    """Each span is the child of the one before; all in one trace."""
    first = chain[0].get_span_context()
    assert first is not None
    for parent, child in itertools.pairwise(chain):
        parent_context, child_context = parent.get_span_context(), child.get_span_context()
        assert parent_context is not None
        assert child_context is not None
        assert child.parent is not None, f"{child.name} has no parent"
        assert child.parent.span_id == parent_context.span_id, f"{child.name} is not a child of {parent.name}"
        assert child_context.trace_id == first.trace_id


def order_chain(prefix: str) -> tuple[Service, Service, Service, asyncio.Queue[Shipped]]:
    """place (RPC) -> OrderMade (core event) -> Shipped (durable event) -> the audit's queue."""
    orders = Service(unique("trord"), version="1.0.0")
    shipping = Service(unique("trship"), version="1.0.0")
    audit = Service(unique("traudit"), version="1.0.0")
    shipped: asyncio.Queue[Shipped] = asyncio.Queue()

    @orders.rpc
    async def place(req: Place, ctx: Context) -> Placed:
        if req.fail == "crash":
            raise ValueError(f"secret card number of {req.order_id}")
        if req.fail == "refuse":
            raise ServiceError(f"order {req.order_id} refused", code=409)
        await ctx.publish(OrderMade(req.order_id), subject=f"{prefix}.made")
        return Placed(req.order_id)

    @shipping.subscribe(subject=f"{prefix}.made")
    async def on_made(made: OrderMade, ctx: Context) -> None:
        if made.fail:
            raise ValueError(f"secret address of {made.order_id}")
        await ctx.publish(Shipped(made.order_id), subject=f"{prefix}.shipped", durable=True)

    @audit.subscribe(subject=f"{prefix}.shipped", delivery=Durable(stream=prefix))
    async def on_shipped(event: Shipped) -> None:
        await shipped.put(event)

    return orders, shipping, audit, shipped


async def test_a_trace_follows_an_order_from_the_call_through_every_event(
    conn: Connection, spans: InMemorySpanExporter
) -> None:
    prefix = unique("trace")
    await ensure_stream(conn, Stream(prefix, [f"{prefix}.shipped"]))
    orders, shipping, audit, shipped = order_chain(prefix)
    made_headers: asyncio.Queue[dict[str, str]] = asyncio.Queue()

    async def capture(msg: Message) -> None:
        await made_headers.put(dict(msg.headers or {}))

    await conn.subscribe(f"{prefix}.made", capture)
    async with orders.serving(conn), shipping.serving(conn), audit.serving(conn):
        reply = await Client(conn).call(f"{orders.name}.place", Place("o-1"), returns=Placed)
        assert reply == Placed("o-1")
        assert (await asyncio.wait_for(shipped.get(), 10)) == Shipped("o-1")
        by_name = await finished(
            spans,
            f"call {orders.name}.place",
            f"handle {orders.name}.place",
            "publish tests.tracing.v1.OrderMade",
            f"consume {shipping.name}.on_made",
            "publish tests.tracing.v1.Shipped",
            f"consume {audit.name}.on_shipped",
        )
    call = by_name[f"call {orders.name}.place"]
    handle = by_name[f"handle {orders.name}.place"]
    made = by_name["publish tests.tracing.v1.OrderMade"]
    consume = by_name[f"consume {shipping.name}.on_made"]
    ship = by_name["publish tests.tracing.v1.Shipped"]
    consume_durable = by_name[f"consume {audit.name}.on_shipped"]
    assert call.parent is None  # nothing was current: the call starts the trace
    assert_chain([call, handle, made, consume, ship, consume_durable])
    assert [s.kind for s in (call, handle, made, consume, ship, consume_durable)] == [
        SpanKind.CLIENT,
        SpanKind.SERVER,
        SpanKind.PRODUCER,
        SpanKind.CONSUMER,
        SpanKind.PRODUCER,
        SpanKind.CONSUMER,
    ]
    assert all(s.status.status_code is StatusCode.UNSET for s in by_name.values())

    # the event carries the producer span's context, in the extension and the plain header
    headers = await asyncio.wait_for(made_headers.get(), 5)
    assert headers["ce-traceparent"] == traceparent(made)
    assert headers["traceparent"] == traceparent(made)
    assert headers["ce-correlationid"]  # the correlation id travels on as before

    assert made.attributes is not None
    assert consume.attributes is not None
    assert made.attributes["messaging.system"] == "nats"
    assert made.attributes["messaging.destination.name"] == f"{prefix}.made"
    assert made.attributes["messaging.message.id"] == headers["ce-id"]
    assert made.attributes["cloudevents.event_type"] == "tests.tracing.v1.OrderMade"
    assert consume.attributes["messaging.message.id"] == headers["ce-id"]
    assert consume.attributes["messaging.destination.name"] == f"{prefix}.made"
    assert consume.attributes["cloudevents.event_type"] == "tests.tracing.v1.OrderMade"
    assert handle.attributes is not None
    assert handle.attributes["messaging.destination.name"] == f"{orders.name}.place"
    assert handle.attributes["cloudevents.event_type"] == "tests.tracing.v1.Place"


async def test_errors_set_status_error_with_the_code_and_no_foreign_text(
    conn: Connection, spans: InMemorySpanExporter
) -> None:
    prefix = unique("trerr")
    await ensure_stream(conn, Stream(prefix, [f"{prefix}.shipped"]))
    orders, shipping, _audit, _shipped = order_chain(prefix)
    client = Client(conn)
    async with orders.serving(conn), shipping.serving(conn):
        with pytest.raises(InternalError):
            await client.call(f"{orders.name}.place", Place("o-2", fail="crash"), returns=Placed)
        crashed = await finished(spans, f"call {orders.name}.place", f"handle {orders.name}.place")
        spans.clear()
        with pytest.raises(ServiceError) as refused:
            await client.call(f"{orders.name}.place", Place("o-3", fail="refuse"), returns=Placed)
        assert refused.value.instance_code == 409
        refusals = await finished(spans, f"call {orders.name}.place", f"handle {orders.name}.place")
        spans.clear()
        await client.publish(OrderMade("o-4", fail=True), subject=f"{prefix}.made")
        failed = await finished(spans, f"consume {shipping.name}.on_made")

    for name in (f"call {orders.name}.place", f"handle {orders.name}.place"):
        span = crashed[name]
        assert span.status.status_code is StatusCode.ERROR
        assert span.status.description == "500 Internal Server Error"
        assert span.attributes is not None
        assert span.attributes["error.type"] == "500"
        span = refusals[name]
        assert span.status.status_code is StatusCode.ERROR
        assert span.status.description == "409 order o-3 refused"  # eventmicro's own error: its text
        assert span.attributes is not None
        assert span.attributes["error.type"] == "409"
    consume = failed[f"consume {shipping.name}.on_made"]
    assert consume.status.status_code is StatusCode.ERROR
    assert consume.status.description == "500 ValueError"  # the type, never the text
    every = [*crashed.values(), *refusals.values(), consume]
    assert not any("secret" in str(s.status.description) or s.events for s in every)


async def test_tracing_off_makes_no_spans_and_passes_the_traceparent_on(conn: Connection) -> None:
    provider = TracerProvider()
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.enable(tracer_provider=provider)
    tracing.disable()
    assert not tracing.enabled()
    prefix = unique("troff")
    orders, _shipping, _audit, _shipped = order_chain(prefix)
    made_headers: asyncio.Queue[dict[str, str]] = asyncio.Queue()

    async def capture(msg: Message) -> None:
        await made_headers.put(dict(msg.headers or {}))

    await conn.subscribe(f"{prefix}.made", capture)
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    async with orders.serving(conn):
        trace = Trace(traceparent=parent, tracestate="vendor=1")
        await Client(conn).call(f"{orders.name}.place", Place("o-5"), returns=Placed, trace=trace)
        headers = await asyncio.wait_for(made_headers.get(), 5)
    assert headers["ce-traceparent"] == parent
    assert headers["traceparent"] == parent
    assert headers["ce-tracestate"] == "vendor=1"
    assert exporter.get_finished_spans() == ()
    provider.shutdown()


async def test_tracing_on_without_an_sdk_still_passes_the_traceparent_on(conn: Connection) -> None:
    tracing.enable(tracer_provider=NoOpTracerProvider())  # the API alone: spans record nothing
    try:
        prefix = unique("trnoop")
        orders, _shipping, _audit, _shipped = order_chain(prefix)
        made_headers: asyncio.Queue[dict[str, str]] = asyncio.Queue()

        async def capture(msg: Message) -> None:
            await made_headers.put(dict(msg.headers or {}))

        await conn.subscribe(f"{prefix}.made", capture)
        parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        async with orders.serving(conn):
            trace = Trace(traceparent=parent)
            await Client(conn).call(f"{orders.name}.place", Place("o-6"), returns=Placed, trace=trace)
            headers = await asyncio.wait_for(made_headers.get(), 5)
        assert headers["ce-traceparent"] == parent
    finally:
        tracing.disable()


async def test_a_published_batch_gets_a_producer_span_per_event(
    conn: Connection, spans: InMemorySpanExporter
) -> None:
    prefix = unique("trbatch")
    await ensure_stream(conn, Stream(prefix, [f"{prefix}.>"]))
    events = await Client(conn).publish_batch([Shipped(f"o-{i}") for i in range(3)], subject=f"{prefix}.x")
    produced = [s for s in spans.get_finished_spans() if s.name == "publish tests.tracing.v1.Shipped"]
    assert len(produced) == 3
    by_id = {s.attributes["messaging.message.id"]: s for s in produced if s.attributes is not None}
    for event in events:
        assert event.get_extension("traceparent") == traceparent(by_id[event.get_id()])


def test_the_environment_turns_tracing_on() -> None:
    tracing._from_environment({"EVENTMICRO_TRACING": "0"})
    assert not tracing.enabled()
    tracing._from_environment({"EVENTMICRO_TRACING": "1"})  # the global provider (no-op here)
    try:
        assert tracing.enabled()
    finally:
        tracing.disable()


# --- spans that end, whatever happens ----------------------------------------------------------


class Unsendable:
    """A message no codec can encode: making its event fails."""


@pytest.fixture
def open_spans() -> Iterator[dict[int, str]]:
    """Tracing on, into an SDK provider of this test's own; yields the spans started and
    not (yet) ended, by span id."""
    sdk = pytest.importorskip("opentelemetry.sdk.trace")
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


async def test_a_failing_span_processor_loses_no_reply_and_no_ack(
    conn: Connection, eventually: Eventually
) -> None:
    """A span processor that raises (on start or on end) made every request answer 500 and
    every durable event fail (nak, redelivery, in the end a dead letter): tracing is only
    observation, the messages are handled as without it."""
    sdk = pytest.importorskip("opentelemetry.sdk.trace")

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
