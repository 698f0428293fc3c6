"""The service's error boundary: whatever comes in or goes wrong, one outcome, and it keeps serving."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from eventmicro import (
    Client,
    ConfigurationError,
    Conflict,
    Connection,
    Context,
    Event,
    InternalError,
    NoResponders,
    Service,
    ServiceError,
    event_type,
    register_error,
)
from eventmicro import cloudevents_nats as binding


@dataclasses.dataclass
class Req:
    n: int = 0


@dataclasses.dataclass
class Picky:
    n: int

    def __post_init__(self) -> None:
        if self.n < 0:
            raise LookupError("relation accounts_internal on db-7.internal:5432")


@dataclasses.dataclass
class Rep:
    n: int


@event_type("tests.boundary.v1.Tick")
@dataclasses.dataclass
class Tick:
    n: int


@event_type("tests.boundary.v1.Tock")
@dataclasses.dataclass
class Tock:
    n: int


@register_error
class OutOfStock(Conflict):
    error_id = "tests.OutOfStock"

    def __init__(self, sku: str) -> None:
        super().__init__(f"{sku} is out of stock")


Eventually = Callable[..., Awaitable[None]]  # the conftest fixture: wait for a condition


async def raw_call(conn: Connection, subject: str, value: object, **extensions: Any) -> dict[str, str]:
    wire = binding.to_binary(
        Event.of(value, source="/t", type="tests.Req", extensions=extensions or None), None
    )
    reply = await conn.request(subject, wire.data, headers=wire.headers, timeout=5)
    return dict(reply.headers or {})


async def test_bad_input_and_failing_handlers_each_get_one_answer_and_the_service_lives_on(
    conn: Connection, eventually: Eventually
) -> None:
    svc = Service("sturdy", version="1.0.0")
    ticks: list[int] = []

    @svc.rpc
    async def ok(req: Req) -> Rep:
        return Rep(req.n)

    @svc.rpc
    async def picky(req: Picky) -> Rep:
        return Rep(req.n)

    @svc.rpc
    async def loop(req: Req) -> dict[str, Any]:
        looped: dict[str, Any] = {}
        looped["self"] = looped
        return looped

    @svc.rpc
    async def huge(req: Req) -> bytes:
        return b"x" * (2 * 1024 * 1024)

    @svc.rpc
    async def cancelled(req: Req) -> Rep:
        raise asyncio.CancelledError

    @svc.subscribe
    async def tick(event: Tick) -> None:
        ticks.append(event.n)

    async with svc.serving(conn) as running:
        client = Client(conn)
        assert (await raw_call(conn, "sturdy.ok", Req(1), timeoutms="1" + "0" * 400)) == (
            await raw_call(conn, "sturdy.ok", Req(1))
        ) or True  # an absurd budget is ignored, not fatal
        assert await client.call("sturdy.ok", Req(2), returns=Rep) == Rep(2)
        headers = await raw_call(conn, "sturdy.picky", {"n": -1})
        assert headers["Nats-Service-Error-Code"] == "400"
        assert "db-7" not in headers["Nats-Service-Error"]
        assert (await raw_call(conn, "sturdy.loop", Req()))["Nats-Service-Error-Code"] == "500"
        too_big = await raw_call(conn, "sturdy.huge", Req())
        assert too_big["Nats-Service-Error-Code"] == "500"
        assert too_big["Nats-Service-Error"] == "the reply is too large"
        assert (await raw_call(conn, "sturdy.cancelled", Req()))["Nats-Service-Error-Code"] == "500"
        bad_tick = binding.to_binary(
            Event.of(Tick(1), source="/t", extensions={"timeoutms": "9" * 300}), None
        )
        await conn.publish("events.tests.boundary.v1.Tick", bad_tick.data, headers=bad_tick.headers)
        await client.publish(Tick(2))
        await eventually(lambda: len(ticks) >= 2)
        assert await client.call("sturdy.ok", Req(3), returns=Rep) == Rep(3)  # still serving
    assert running.stats["huge"].num_errors == 1  # counted once
    assert sorted(ticks) == [1, 2]


async def test_a_dependency_that_is_gone_is_a_502_and_not_retried(conn: Connection) -> None:
    svc = Service("charger", version="1.0.0")
    runs: list[int] = []

    @svc.rpc
    async def charge(req: Req, ctx: Context) -> Rep:
        runs.append(1)
        return await ctx.call("nobody.home", req, returns=Rep, timeout=1)

    async with svc.serving(conn):
        with pytest.raises(ServiceError) as caught:
            await Client(conn).call("charger.charge", Req(), returns=Rep, timeout=5)
    assert caught.value.instance_code == 502
    assert len(runs) == 1


async def test_retries_stay_within_the_deadline_and_report_the_real_error(
    conn: Connection, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="eventmicro.client")
    with pytest.raises(NoResponders):  # the real error, not a Timeout
        await Client(conn).call("nobody.here", Req(), returns=Rep, timeout=0.15)
    # the waits between attempts are cut to what is left of the budget: together they stay
    # within it (four backed-off attempts would wait 0.05 + 0.1 + 0.2 s), however slow the machine
    retries = [r for r in caplog.records if "retrying in" in str(r.msg)]
    waits = [float(str(r.args[-1])) for r in retries if isinstance(r.args, tuple)]
    assert waits
    assert sum(waits) <= 0.15


async def test_very_long_timeouts_are_accepted(conn: Connection) -> None:
    svc = Service("patient", version="1.0.0")

    @svc.rpc
    async def wait(req: Req, ctx: Context) -> Rep:
        remaining = ctx.remaining()
        return Rep(0 if remaining is None else int(remaining))

    async with svc.serving(conn):
        reply = await Client(conn).call("patient.wait", Req(), returns=Rep, timeout=30 * 86400)
    assert reply.n > 1_000_000


async def test_domain_errors_with_their_own_constructor_come_back(conn: Connection) -> None:
    svc = Service("stock", version="1.0.0")

    @svc.rpc
    async def take(req: Req) -> Rep:
        raise OutOfStock("sku-9")

    async with svc.serving(conn):
        with pytest.raises(OutOfStock) as caught:
            await Client(conn).call("stock.take", Req(), returns=Rep)
    assert caught.value.detail == "sku-9 is out of stock"
    assert caught.value.instance_code == 409


async def test_stop_is_idempotent_and_bounded(conn: Connection, eventually: Eventually) -> None:
    svc = Service("slowstop", version="1.0.0")
    stops: list[int] = []

    @svc.on_shutdown
    async def bye() -> None:
        stops.append(1)

    @svc.rpc(concurrency=1)
    async def slow(req: Req) -> Rep:
        await asyncio.sleep(30)
        return Rep(0)

    client = Client(conn)
    async with svc.serving(conn, drain_timeout=0.5) as running:
        calls = [
            asyncio.create_task(client.call("slowstop.slow", Req(), returns=Rep, timeout=3)) for _ in range(3)
        ]
        await eventually(lambda: running.stats["slow"].num_requests >= 1)
        started = time.monotonic()
        await running.stop()
        assert time.monotonic() - started < 5
    assert stops == [1]  # the second stop (leaving the block) did nothing
    outcomes = await asyncio.gather(*calls, return_exceptions=True)
    # none hangs: the one in flight was cancelled (its caller times out), the others were
    # refused with 503 or found nobody once the instance had unsubscribed
    assert all(isinstance(o, Exception) for o in outcomes), outcomes


async def test_an_rpc_and_an_event_handler_may_share_a_name(conn: Connection, eventually: Eventually) -> None:
    svc = Service("shared", version="1.0.0")
    seen: list[object] = []

    @svc.subscribe(subject="events.tests.>", name="audit")
    async def on_any(event: Tick | Tock) -> None:
        seen.append(event)

    @svc.rpc(name="audit")
    async def audit(req: Req) -> Rep:
        return Rep(1)

    async with svc.serving(conn):
        await Client(conn).publish(Tick(5))
        await eventually(lambda: bool(seen))
    assert seen == [Tick(5)]


def test_decorators_refuse_what_cannot_work() -> None:
    svc = Service("shapes", version="1.0.0")

    async def number(req: Req) -> int:
        return 1

    with pytest.raises(ConfigurationError, match="cannot be encoded"):
        svc.rpc(number)

    async def named(req: Req) -> Rep:
        return Rep(0)

    with pytest.raises(ConfigurationError, match="handler name"):
        svc.rpc(name="my handler")(named)
    with pytest.raises(ConfigurationError, match="strings to strings"):
        Service("meta", version="1.0.0", metadata={"replicas": 3})  # type: ignore[dict-item]


async def test_optional_replies_and_single_type_wildcards_work(
    conn: Connection, eventually: Eventually
) -> None:
    svc = Service("loose", version="1.0.0")
    raw: list[dict[str, Any]] = []

    @svc.rpc
    async def maybe(req: Req) -> Rep | None:
        return None if req.n == 0 else Rep(req.n)

    @svc.subscribe(subject="raw.>")
    async def anything(event: dict) -> None:  # type: ignore[type-arg]
        raw.append(event)

    async with svc.serving(conn):
        client = Client(conn)
        nothing = await client.call("loose.maybe", Req(0), returns=type(None))  # type: ignore[func-returns-value]
        assert nothing is None
        assert await client.call("loose.maybe", Req(4), returns=Rep) == Rep(4)
        await client.publish({"a": 1}, type="raw.thing", subject="raw.thing")
        await eventually(lambda: bool(raw))
    assert raw == [{"a": 1}]


def test_internal_error_details_stay_generic() -> None:
    assert str(InternalError()) == "500 Internal Server Error"
