"""Services: decorators, typed RPC, error mapping, deadlines, retries, events, concurrency, $SRV."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from collections.abc import Awaitable, Callable

import pytest

from eventmicro import (
    BadRequest,
    Broadcast,
    Client,
    ConfigurationError,
    Connection,
    ConnectionClosed,
    ConnectionState,
    ConnectOptions,
    Context,
    DeadlineExceeded,
    Event,
    InternalError,
    NatsServer,
    NoResponders,
    NotFound,
    Service,
    ServiceError,
    Timeout,
    discover,
    event_type,
    register_error,
)
from eventmicro import cloudevents_nats as binding
from schemas.shop.orders.v1 import orders_pb2 as orders


@register_error
class OutOfStock(ServiceError):
    code = 409
    status = "Conflict"
    error_id = "shop.inventory.OutOfStock"


@event_type("shop.notes.v1.NoteAdded")
@dataclasses.dataclass
class NoteAdded:
    text: str
    count: int = 1


@dataclasses.dataclass
class Sum:
    numbers: list[int]


@dataclasses.dataclass
class Total:
    total: int


Eventually = Callable[..., Awaitable[None]]  # the conftest fixture: wait for a condition


async def open_connection(url: str) -> Connection:
    return await Connection(ConnectOptions.from_env(url, environ={}, connect_attempts=3)).open()


# --- definition -------------------------------------------------------------------------------


def test_service_names_and_versions_follow_adr_32() -> None:
    with pytest.raises(ConfigurationError, match=r"orders\.v1"):
        Service("orders.v1", version="1.0.0")
    with pytest.raises(ConfigurationError, match="SemVer"):
        Service("orders", version="1.0")
    Service("orders-v1", version="1.0.0-rc.1")


def test_decorators_check_the_handler_when_they_run() -> None:
    svc = Service("shape", version="1.0.0")

    def sync(req: orders.PlaceOrder) -> orders.OrderAccepted:
        return orders.OrderAccepted()

    with pytest.raises(ConfigurationError, match=r"sync must be an 'async def'"):
        svc.rpc(sync)  # type: ignore[type-var]

    async def unannotated(req):  # type: ignore[no-untyped-def]
        return None

    with pytest.raises(ConfigurationError, match="unannotated needs a type annotation"):
        svc.rpc(unannotated)

    async def three(a: orders.PlaceOrder, b: Context, c: int) -> None:
        return None

    with pytest.raises(ConfigurationError, match="three must take"):
        svc.rpc(three)

    async def no_return(req: orders.PlaceOrder):  # type: ignore[no-untyped-def]
        return None

    with pytest.raises(ConfigurationError, match="no_return needs a return annotation"):
        svc.rpc(no_return)

    async def fine(req: orders.PlaceOrder, ctx: Context) -> orders.OrderAccepted:
        return orders.OrderAccepted()

    assert svc.rpc(fine) is fine  # registered, returned unchanged
    assert svc.handlers[0].subject == "shape.fine"
    assert svc.handlers[0].queue == "shape"


# --- RPC ----------------------------------------------------------------------------------------


def shop() -> Service:
    svc = Service(
        "orders",
        version="1.2.0",
        description="Takes orders",
        metadata={"team": "shop"},
        publishes=[orders.OrderPlaced],
    )
    calls: list[str] = []

    @svc.rpc
    async def place(req: orders.PlaceOrder, ctx: Context) -> orders.OrderAccepted:
        calls.append(req.customer_id)
        if req.customer_id == "broke":
            raise OutOfStock("sku-1 is out of stock")
        if req.customer_id == "bug":
            raise RuntimeError("secret internal detail s3cret")
        total = sum(item.quantity * item.unit_price_cents for item in req.items)
        await ctx.publish(orders.OrderPlaced(order_id="o-1", customer_id=req.customer_id, total_cents=total))
        return orders.OrderAccepted(order_id="o-1", total_cents=total)

    @svc.rpc(name="sum")
    async def add(req: Sum) -> Total:
        return Total(total=sum(req.numbers))

    svc.metadata["calls"] = ""  # visible in INFO
    svc.placed = calls  # type: ignore[attr-defined]
    return svc


async def test_typed_rpc_round_trips_with_protobuf_and_json(
    nats_server: NatsServer, conn: Connection, eventually: Eventually
) -> None:
    svc = shop()
    got: list[orders.OrderPlaced] = []
    listener = Service("listener", version="1.0.0")

    @listener.subscribe
    async def on_placed(event: orders.OrderPlaced) -> None:
        got.append(event)

    async with svc.serving(conn), listener.serving(conn):
        caller = await open_connection(nats_server.url)
        client = Client(caller)
        request = orders.PlaceOrder(
            customer_id="c-1", items=[orders.LineItem(sku="s", quantity=2, unit_price_cents=5)]
        )
        reply = await client.call("orders.place", request, returns=orders.OrderAccepted, timeout=5)
        assert reply == orders.OrderAccepted(order_id="o-1", total_cents=10)
        assert await client.call("orders.sum", Sum([1, 2, 3]), returns=Total) == Total(6)
        await caller.close()
        await eventually(lambda: bool(got))
    assert got[0].customer_id == "c-1"


async def test_errors_come_back_typed_and_never_leak_internals(
    nats_server: NatsServer, conn: Connection
) -> None:
    svc = shop()
    async with svc.serving(conn) as running:
        client = Client(conn)
        with pytest.raises(OutOfStock) as caught:
            await client.call(
                "orders.place", orders.PlaceOrder(customer_id="broke"), returns=orders.OrderAccepted
            )
        assert caught.value.instance_code == 409
        assert caught.value.detail == "sku-1 is out of stock"
        with pytest.raises(InternalError) as internal:
            await client.call(
                "orders.place", orders.PlaceOrder(customer_id="bug"), returns=orders.OrderAccepted
            )
        assert "s3cret" not in str(internal.value)
        assert "RuntimeError" not in str(internal.value)
        # the wire: ADR-32 headers and eventmicro's JSON body
        wire = binding.to_binary(Event.of(orders.PlaceOrder(customer_id="broke"), source="/t"), None)
        raw = await conn.request("orders.place", wire.data, headers=wire.headers, timeout=5)
        assert raw.headers is not None
        assert raw.headers["Nats-Service-Error-Code"] == "409"
        assert raw.headers["Nats-Service-Error"] == "sku-1 is out of stock"
        assert json.loads(raw.data) == {
            "id": "shop.inventory.OutOfStock",
            "code": 409,
            "status": "Conflict",
            "detail": "sku-1 is out of stock",
        }
        stats = running.stats["place"]
        assert stats.num_requests == 3
        assert stats.num_errors == 3
        assert stats.last_error == "409:sku-1 is out of stock"


async def test_a_request_that_does_not_decode_gets_400_and_the_handler_is_not_called(
    conn: Connection,
) -> None:
    svc = shop()
    async with svc.serving(conn):
        for body, headers in [(b"not a cloudevent", None), (b"\xff\xfe", {"ce-specversion": "1.0"})]:
            raw = await conn.request("orders.place", body, headers=headers, timeout=5)
            assert raw.headers is not None
            assert raw.headers["Nats-Service-Error-Code"] == "400"
            assert "shop.orders.v1.PlaceOrder" in raw.headers["Nats-Service-Error"]
        wrong = binding.to_binary(Event.of(orders.OrderAccepted(order_id="x"), source="/t"), None)
        with pytest.raises(BadRequest, match="PlaceOrder"):
            await Client(conn).call(
                "orders.place", orders.OrderAccepted(order_id="x"), returns=orders.OrderAccepted
            )
        assert wrong.headers["ce-type"] == "shop.orders.v1.OrderAccepted"
    assert svc.placed == []  # type: ignore[attr-defined]


async def test_no_responders_fails_fast_and_is_retried_a_bounded_number_of_times(
    conn: Connection, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="eventmicro.client")
    with pytest.raises(NoResponders):
        await Client(conn).call("nobody.there", Sum([1]), returns=Total, timeout=10)
    attempts = [r for r in caplog.records if "attempt" in r.getMessage()]
    assert len(attempts) == 3  # four attempts, three retries logged


async def test_timeouts_are_retried_only_for_idempotent_calls(conn: Connection) -> None:
    svc = Service("slow", version="1.0.0")
    invocations: list[int] = []

    @svc.rpc
    async def wait(req: Sum) -> Total:
        invocations.append(1)
        await asyncio.sleep(10)
        return Total(0)

    async with svc.serving(conn, drain_timeout=0.1):
        client = Client(conn)
        with pytest.raises((Timeout, DeadlineExceeded)):
            await client.call("slow.wait", Sum([]), returns=Total, timeout=2.0, attempt_timeout=0.2)
        assert len(invocations) == 1  # not idempotent: a lost attempt is not repeated
        with pytest.raises((Timeout, DeadlineExceeded)):
            await client.call(
                "slow.wait", Sum([]), returns=Total, timeout=2.0, attempt_timeout=0.2, idempotent=True
            )
        assert len(invocations) == 1 + 4  # idempotent: every attempt the policy allows


async def test_the_deadline_travels_into_nested_calls(conn: Connection) -> None:
    front, back = Service("front", version="1.0.0"), Service("back", version="1.0.0")
    seen: list[float | None] = []

    @back.rpc
    async def budget(req: Sum, ctx: Context) -> Total:
        seen.append(ctx.remaining())
        return Total(0)

    @front.rpc
    async def relay(req: Sum, ctx: Context) -> Total:
        return await ctx.call("back.budget", req, returns=Total, timeout=60)

    async with front.serving(conn), back.serving(conn):
        await Client(conn).call("front.relay", Sum([]), returns=Total, timeout=2)
    assert seen[0] is not None
    assert 0 < seen[0] <= 2


async def test_a_handler_running_past_the_callers_deadline_is_cancelled_and_counted(
    conn: Connection, eventually: Eventually
) -> None:
    svc = Service("late", version="1.0.0")
    cancelled: list[int] = []

    @svc.rpc
    async def slow(req: Sum) -> Total:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.append(1)  # its cleanup runs
            raise
        return Total(0)

    @svc.rpc
    async def quick(req: Sum) -> Total:
        return Total(sum(req.numbers))

    async with svc.serving(conn) as running:
        client = Client(conn)
        with pytest.raises((Timeout, DeadlineExceeded)):
            await client.call("late.slow", Sum([]), returns=Total, timeout=0.3)
        await eventually(lambda: cancelled == [1] and running.stats["slow"].num_errors == 1)
        assert running.stats["slow"].last_error.startswith("504:")
        assert await client.call("late.quick", Sum([2, 3]), returns=Total) == Total(5)


async def test_a_request_whose_deadline_passed_while_queued_is_not_executed(
    conn: Connection, eventually: Eventually
) -> None:
    svc = Service("queue", version="1.0.0")
    started: list[int] = []
    release = asyncio.Event()

    @svc.rpc(concurrency=1)
    async def work(req: Sum) -> Total:
        started.append(req.numbers[0])
        await release.wait()
        return Total(req.numbers[0])

    async with svc.serving(conn):
        client = Client(conn)
        first = asyncio.create_task(client.call("queue.work", Sum([1]), returns=Total, timeout=10))
        await eventually(lambda: bool(started))
        with pytest.raises(Timeout):
            await client.call("queue.work", Sum([2]), returns=Total, timeout=0.2)
        # the request reached the service before this PONG (one connection, in order), so its
        # 200 ms budget, counted from there, is over once the clock passes `arrived + 0.2`
        await conn.flush()
        arrived = time.monotonic()
        await eventually(lambda: time.monotonic() > arrived + 0.2)
        release.set()
        assert (await first) == Total(1)
        await conn.flush()
    assert started == [1]  # the second request waited past its deadline and never ran


async def test_concurrency_is_parallel_and_bounded(conn: Connection) -> None:
    svc = Service("par", version="1.0.0")
    active, peak = 0, {"free": 0, "bounded": 0}

    async def body(key: str) -> Total:
        nonlocal active
        active += 1
        peak[key] = max(peak[key], active)
        await asyncio.sleep(0.05)
        active -= 1
        return Total(0)

    @svc.rpc
    async def free(req: Sum) -> Total:
        return await body("free")

    @svc.rpc(concurrency=3)
    async def bounded(req: Sum) -> Total:
        return await body("bounded")

    async with svc.serving(conn):
        client = Client(conn)
        await asyncio.gather(
            *(client.call("par.free", Sum([]), returns=Total, timeout=20) for _ in range(50))
        )
        await asyncio.gather(
            *(client.call("par.bounded", Sum([]), returns=Total, timeout=20) for _ in range(12))
        )
    assert peak["free"] >= 25  # 50 calls overlapped, not one after another
    assert peak["bounded"] == 3


# --- events ---------------------------------------------------------------------------------


async def test_events_are_shared_by_instances_unless_broadcast(
    nats_server: NatsServer, eventually: Eventually
) -> None:
    def make(log: list[str], label: str) -> Service:
        svc = Service("notes", version="1.0.0")

        @svc.subscribe
        async def pooled(note: NoteAdded) -> None:
            log.append(f"pooled:{label}:{note.text}")

        @svc.subscribe(delivery=Broadcast())
        async def everyone(note: NoteAdded) -> None:
            log.append(f"broadcast:{label}:{note.text}")

        return svc

    log: list[str] = []
    a, b, publisher = [await open_connection(nats_server.url) for _ in range(3)]
    async with make(log, "a").serving(a), make(log, "b").serving(b):
        client = Client(publisher)
        for n in range(20):
            await client.publish(NoteAdded(text=str(n)))
        await eventually(lambda: len(log) >= 60)
    for connection in (a, b, publisher):
        await connection.close()
    pooled = [entry for entry in log if entry.startswith("pooled")]
    assert sorted(entry.rsplit(":", 1)[1] for entry in pooled) == sorted(str(n) for n in range(20))
    assert {entry.split(":")[1] for entry in pooled} == {"a", "b"}  # balanced across instances
    assert len([entry for entry in log if entry.startswith("broadcast")]) == 40  # every instance


async def test_wildcard_subscribers_dispatch_by_type_and_survive_unknown_types(
    conn: Connection, eventually: Eventually
) -> None:
    svc = Service("audit", version="1.0.0")
    seen: list[object] = []

    @svc.subscribe(subject="events.shop.>")
    async def record(event: orders.OrderPlaced | NoteAdded) -> None:
        seen.append(event)

    async with svc.serving(conn) as running:
        client = Client(conn)
        await client.publish(orders.OrderPlaced(order_id="o-9"))
        await client.publish({"x": 1}, type="shop.unknown.v1.Thing")
        await client.publish(NoteAdded(text="hi"))
        await eventually(lambda: len(seen) >= 2 and running.event_stats["record"].num_errors >= 1)
        info = (await discover(conn, "INFO", "audit", window=0.2))[0]
        assert (
            info["metadata"]["eventmicro.subscribes"] == "shop.notes.v1.NoteAdded,shop.orders.v1.OrderPlaced"
        )
    assert seen == [orders.OrderPlaced(order_id="o-9"), NoteAdded(text="hi")]
    assert "shop.unknown.v1.Thing" in running.event_stats["record"].last_error


# --- discovery ------------------------------------------------------------------------------


async def test_srv_ping_info_stats_follow_adr_32(conn: Connection) -> None:
    svc = shop()
    async with svc.serving(conn) as running:
        client = Client(conn)
        await client.call("orders.sum", Sum([1]), returns=Total)
        with pytest.raises(OutOfStock):
            await client.call(
                "orders.place", orders.PlaceOrder(customer_id="broke"), returns=orders.OrderAccepted
            )
        for subject in ("$SRV.PING", "$SRV.PING.orders", f"$SRV.PING.orders.{running.id}"):
            ping = json.loads((await conn.request(subject, b"", timeout=5)).data)
            assert ping["type"] == "io.nats.micro.v1.ping_response"
            assert {"name", "id", "version", "metadata"} <= ping.keys()
        info = json.loads((await conn.request("$SRV.INFO.orders", b"", timeout=5)).data)
        assert info["type"] == "io.nats.micro.v1.info_response"
        assert info["metadata"]["eventmicro.publishes"] == "shop.orders.v1.OrderPlaced"
        assert info["metadata"]["team"] == "shop"
        assert info["description"] == "Takes orders"
        place = next(e for e in info["endpoints"] if e["name"] == "place")
        assert place["subject"] == "orders.place"
        assert place["queue_group"] == "orders"
        assert place["metadata"]["eventmicro.request"] == "shop.orders.v1.PlaceOrder"
        assert (
            place["metadata"]["eventmicro.reply_schema"] == "type.googleapis.com/shop.orders.v1.OrderAccepted"
        )
        stats = json.loads((await conn.request(f"$SRV.STATS.orders.{running.id}", b"", timeout=5)).data)
        assert stats["type"] == "io.nats.micro.v1.stats_response"
        assert stats["started"].endswith("Z")
        by_name = {e["name"]: e for e in stats["endpoints"]}
        assert by_name["place"]["num_errors"] == 1
        assert by_name["place"]["last_error"] == "409:sku-1 is out of stock"
        assert by_name["sum"]["num_requests"] == 1
        assert isinstance(by_name["sum"]["processing_time"], int)
        assert by_name["sum"]["average_processing_time"] == by_name["sum"]["processing_time"]
        found = await discover(conn, "PING", "orders", window=0.3)
        assert [p["id"] for p in found] == [running.id]


async def test_a_foreign_nats_micro_service_is_called_and_its_errors_raised(nats_server: NatsServer) -> None:
    import nats
    from nats.micro import add_service
    from nats.micro.request import Request

    foreign = await nats.connect(nats_server.url)

    async def echo(request: Request) -> None:
        if request.data == b"missing":
            await request.respond_error("404", "no such thing")
        else:
            await request.respond(request.data.upper())

    service = await add_service(foreign, name="foreign", version="1.0.0")
    await service.add_endpoint(name="echo", handler=echo)
    await foreign.flush()
    conn = await open_connection(nats_server.url)
    try:
        client = Client(conn)
        assert await client.call("echo", "hi", returns=bytes) == b"HI"
        with pytest.raises(NotFound) as caught:
            await client.call("echo", "missing", returns=bytes)
        assert caught.value.detail == "no such thing"
        found = await discover(conn, "INFO", "foreign", window=0.3)
        assert found[0]["endpoints"][0]["name"] == "echo"
    finally:
        await conn.close()
        await service.stop()
        await foreign.close()


# --- middleware, hooks, trace ----------------------------------------------------------------


async def test_middleware_runs_in_order_and_logging_records_each_call(
    conn: Connection, caplog: pytest.LogCaptureFixture
) -> None:
    from eventmicro import logging_middleware, timing_middleware
    from eventmicro.service.middleware import Invoke

    order: list[str] = []
    durations: list[tuple[str, float]] = []

    def tag(label: str) -> Callable[[Invoke], Invoke]:
        def wrap(invoke: Invoke) -> Invoke:
            async def tagged(message: object, ctx: Context) -> object:
                order.append(label)
                return await invoke(message, ctx)

            return tagged

        return wrap

    svc = Service(
        "mw",
        version="1.0.0",
        middleware=[
            tag("outer"),
            logging_middleware(),
            timing_middleware(lambda h, s: durations.append((h, s))),
        ],
    )
    svc.use(tag("inner"))

    @svc.rpc
    async def echo(req: Sum) -> Total:
        order.append("handler")
        return Total(sum(req.numbers))

    caplog.set_level(logging.INFO, logger="eventmicro.handled")
    async with svc.serving(conn):
        assert await Client(conn).call("mw.echo", Sum([2, 3]), returns=Total) == Total(5)
    assert order == ["outer", "inner", "handler"]
    assert durations[0][0] == "echo"
    record = next(r for r in caplog.records if r.name == "eventmicro.handled")
    fields = record.eventmicro  # type: ignore[attr-defined]
    assert fields["service"] == "mw"
    assert fields["handler"] == "echo"
    assert fields["outcome"] == "ok"
    assert fields["event_type"].endswith("Sum")


async def test_start_and_stop_hooks_run_around_serving(conn: Connection) -> None:
    svc = Service("hooks", version="1.0.0")
    events: list[str] = []

    @svc.on_startup
    async def opened() -> None:
        events.append("start")

    @svc.on_shutdown
    async def closed() -> None:
        events.append("stop")

    @svc.rpc
    async def ping(req: Sum) -> Total:
        events.append("call")
        return Total(0)

    async with svc.serving(conn):
        assert events == ["start"]
        await Client(conn).call("hooks.ping", Sum([]), returns=Total)
    assert events == ["start", "call", "stop"]


async def test_events_published_by_a_handler_carry_the_callers_correlation_and_trace(
    conn: Connection,
) -> None:
    svc = Service("tracer", version="1.0.0")
    published: list[Event] = []

    @svc.rpc
    async def act(req: Sum, ctx: Context) -> Total:
        published.append(await ctx.publish(NoteAdded(text="done")))
        return Total(0)

    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    async with svc.serving(conn):
        request = Event.of(
            Sum([]),
            source="/caller",
            type="tests.Sum",
            extensions={"traceparent": parent, "correlationid": "corr-1"},
        )
        wire = binding.to_binary(request, None)
        reply = await conn.request("tracer.act", wire.data, headers=wire.headers, timeout=5)
    assert reply.headers is not None
    assert reply.headers["ce-correlationid"] == "corr-1"
    event = published[0]
    assert event.get_extension("correlationid") == "corr-1"
    assert event.get_extension("traceparent") == parent
    assert event.get_source().startswith("/tracer")


async def test_plain_nats_py_discovers_and_calls_an_eventmicro_service(nats_server: NatsServer) -> None:
    import nats

    svc = shop()
    conn = await open_connection(nats_server.url)
    foreign = await nats.connect(nats_server.url)
    try:
        async with svc.serving(conn):
            info = json.loads((await foreign.request("$SRV.INFO.orders", b"", timeout=5)).data)
            endpoint = next(e for e in info["endpoints"] if e["name"] == "place")
            headers = {  # what a Go or JS client writes by hand from the discovered metadata
                "ce-specversion": "1.0",
                "ce-id": "go-42",
                "ce-source": "/go-client",
                "ce-type": endpoint["metadata"]["eventmicro.request"],
                "ce-datacontenttype": "application/protobuf",
            }
            body = orders.PlaceOrder(customer_id="go").SerializeToString()
            reply = await foreign.request(endpoint["subject"], body, headers=headers, timeout=5)
            assert reply.headers is not None
            assert reply.headers["ce-type"] == endpoint["metadata"]["eventmicro.reply"]
            assert orders.OrderAccepted.FromString(reply.data).order_id == "o-1"
            failed = await foreign.request(endpoint["subject"], b"junk", headers=headers, timeout=5)
            assert failed.headers is not None
            assert failed.headers["Nats-Service-Error-Code"] == "400"
    finally:
        await foreign.close()
        await conn.close()


async def test_events_from_a_handler_name_the_service_instance(conn: Connection) -> None:
    svc = Service("source", version="1.0.0")
    published: list[Event] = []

    @svc.rpc
    async def act(req: Sum, ctx: Context) -> Total:
        published.append(await ctx.publish(NoteAdded(text="x")))
        return Total(0)

    async with svc.serving(conn) as running:
        await Client(conn).call("source.act", Sum([]), returns=Total)
    assert published[0].get_source() == f"/source/{running.id}"


async def test_a_client_can_own_its_connection(nats_server: NatsServer) -> None:
    svc = Service("owned", version="1.0.0")

    @svc.rpc
    async def add(req: Sum) -> Total:
        return Total(sum(req.numbers))

    async with Connection(ConnectOptions.from_env(nats_server.url, environ={})) as conn, svc.serving(conn):
        async with Client.connect(nats_server.url, environ={}) as client:
            assert await client.call("owned.add", Sum([1, 2]), returns=Total) == Total(3)
        assert client.connection.state is ConnectionState.CLOSED
        with pytest.raises(ConnectionClosed):
            await client.call("owned.add", Sum([1]), returns=Total)
