"""OpenTelemetry tracing: spans for call, handle, publish and consume, linked through the
CloudEvents distributed-tracing extension — with the SDK's in-memory exporter and a real
nats-server (the cross-process links: tests/system/test_traced_processes.py)."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence

import pytest
import pytest_asyncio

from eventmicro import Durable

pytest.importorskip("opentelemetry.sdk")

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NoOpTracerProvider, SpanKind, StatusCode

from eventmicro import (
    Client,
    Connection,
    ConnectOptions,
    Context,
    InternalError,
    Message,
    NatsServer,
    Service,
    ServiceError,
    Stream,
    event_type,
)
from eventmicro.observability import tracing
from eventmicro.transport.jetstream import ensure_stream
from eventmicro.wire.trace import Trace


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


@pytest_asyncio.fixture
async def conn(nats_server: NatsServer) -> AsyncIterator[Connection]:
    connection = await Connection(ConnectOptions.from_env(nats_server.url, environ={})).open()
    yield connection
    await connection.close()


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
