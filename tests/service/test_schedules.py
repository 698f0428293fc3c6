"""Delayed events (``client.publish_later``) and recurring handlers (``@svc.schedule``) on
JetStream message schedules (ADR-51), against a real nats-server: on time, once per tick across
instances, through a server restart and a killed instance; bad options refused."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import uuid
from asyncio.subprocess import Process
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from prometheus_client import CollectorRegistry

from eventmicro import (
    Client,
    ConfigurationError,
    Connection,
    ConnectOptions,
    Durable,
    Event,
    NatsServer,
    Service,
    Stream,
    Tick,
    discover,
)
from eventmicro.transport import schedules
from eventmicro.transport.jetstream import Delivery, PullConsumer, _js, consumer_pending, ensure_stream
from schemas.shop.orders.v1 import orders_pb2 as orders

Eventually = Callable[..., Awaitable[None]]
HERE = Path(__file__).resolve().parent


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


async def open_connection(server: NatsServer, **extra: Any) -> Connection:
    return await Connection(ConnectOptions.from_env(server.url, environ={}, **extra)).open()


# --- delayed events -------------------------------------------------------------------------


@asynccontextmanager
async def receiving(conn: Connection, subject: str) -> AsyncIterator[list[tuple[datetime, Event]]]:
    """A service whose durable handler records (arrival time, event) of what reaches ``subject``,
    stored by a stream that allows schedules."""
    name = unique("later")
    svc = Service(name, version="1.0.0", streams=[Stream(name, subjects=[subject], schedules=True)])
    arrived: list[tuple[datetime, Event]] = []

    @svc.subscribe(subject=subject, delivery=Durable())
    async def placed(event: orders.OrderPlaced, ctx: Any) -> None:
        arrived.append((datetime.now(UTC), ctx.event))

    async with svc.serving(conn, drain_timeout=1):
        yield arrived


Receiving = tuple[Client, str, list[tuple[datetime, Event]]]


@pytest_asyncio.fixture
async def receiver(conn: Connection, service_conn: Connection) -> AsyncIterator[Receiving]:
    """A client, a subject whose stream allows schedules, and what a durable handler got on it."""
    subject = f"{unique('orders')}.placed"
    async with receiving(service_conn, subject) as arrived:
        yield Client(conn, source="/test"), subject, arrived


async def test_a_delayed_event_arrives_once_and_not_before_its_time(
    receiver: Receiving, eventually: Eventually
) -> None:
    client, subject, arrived = receiver
    scheduled = await client.publish_later(orders.OrderPlaced(order_id="o-1"), delay=1, subject=subject)
    assert scheduled.target == subject
    await eventually(lambda: len(arrived) == 1)
    when, event = arrived[0]
    assert when >= scheduled.at  # stored at its time, not before
    assert event.get_id() == scheduled.event.get_id()  # the same CloudEvent, delivered as normal
    assert event.get_type() == "shop.orders.v1.OrderPlaced"
    assert await client.cancel_scheduled(scheduled) is False  # it fired: nothing left to cancel


async def test_a_cancelled_delayed_event_is_never_delivered(
    receiver: Receiving, eventually: Eventually
) -> None:
    client, subject, arrived = receiver
    now = datetime.now(UTC)
    cancelled = await client.publish_later(
        orders.OrderPlaced(order_id="cancelled"), at=now + timedelta(seconds=1), subject=subject
    )
    kept = await client.publish_later(
        orders.OrderPlaced(order_id="kept"), at=now + timedelta(seconds=2), subject=subject
    )
    assert await client.cancel_scheduled(cancelled) is True
    assert await client.cancel_scheduled(cancelled) is False
    await eventually(lambda: len(arrived) == 1)  # the later one came: the earlier one would have first
    assert [event.get_id() for _, event in arrived] == [kept.event.get_id()]


async def test_a_delayed_event_survives_a_server_restart(fresh_nats_server: NatsServer) -> None:
    subject = "restart.placed"
    conn = await open_connection(fresh_nats_server)
    try:
        await ensure_stream(conn, Stream("RESTART", subjects=[subject], schedules=True))
        scheduled = await Client(conn, source="/test").publish_later(
            orders.OrderPlaced(order_id="o-2"), delay=2, subject=subject
        )
    finally:
        await conn.close()
    await fresh_nats_server.arestart()
    conn = await open_connection(fresh_nats_server)
    try:
        consumer = await PullConsumer.bind(conn, name="reader", subject=subject, stream="RESTART")
        deliveries: list[Delivery] = []
        async with asyncio.timeout(15):
            while not deliveries:
                deliveries = await consumer.fetch(1, 1.0)
        await consumer.close()
    finally:
        await conn.close()
    headers = deliveries[0].message.headers or {}
    assert headers["ce-id"] == scheduled.event.get_id()
    assert deliveries[0].stored is not None
    assert deliveries[0].stored >= scheduled.at


@pytest.mark.parametrize(
    ("when", "complaint"),
    [
        ({"at": datetime(2030, 1, 1)}, "timezone-aware"),
        ({"at": datetime.now(UTC) - timedelta(hours=1)}, "in the past"),
        ({"delay": -1}, "cannot be negative"),
        ({"delay": float("nan")}, "number of seconds"),
        ({"delay": "5s"}, "number of seconds"),
        ({}, "exactly one"),
        ({"at": datetime.now(UTC), "delay": 1}, "exactly one"),
    ],
)
async def test_publish_later_refuses_a_bad_time(
    conn: Connection, when: dict[str, Any], complaint: str
) -> None:
    with pytest.raises(ConfigurationError, match=complaint):
        await Client(conn, source="/test").publish_later(orders.OrderPlaced(), subject="x.y", **when)


async def test_publish_later_needs_a_stream_that_allows_schedules(conn: Connection) -> None:
    client = Client(conn, source="/test")
    with pytest.raises(ConfigurationError, match="no stream stores"):
        await client.publish_later(orders.OrderPlaced(), delay=1, subject=f"{unique('nostream')}.x")
    plain = unique("plain")
    await ensure_stream(conn, Stream(plain, subjects=[f"{plain}.>"]))
    with pytest.raises(ConfigurationError, match=r"schedules=True"):
        await client.publish_later(orders.OrderPlaced(), delay=1, subject=f"{plain}.x")


# --- recurring handlers -------------------------------------------------------------------


def ticking(name: str, label: str, ran: list[tuple[str, Tick]]) -> Service:
    """Service ``name`` whose handler runs every second, recording (``label``, tick)."""
    svc = Service(name, version="1.0.0")

    @svc.schedule("@every 1s")
    async def beat(tick: Tick) -> None:
        ran.append((label, tick))

    return svc


async def test_a_recurring_handler_runs_each_tick_on_one_instance_of_two(
    nats_server: NatsServer, eventually: Eventually
) -> None:
    name = unique("ticker")
    ran: list[tuple[str, Tick]] = []
    first, second = await open_connection(nats_server), await open_connection(nats_server)
    try:
        async with (
            ticking(name, "a", ran).serving(first, drain_timeout=1),
            ticking(name, "b", ran).serving(second, drain_timeout=1),
        ):
            await eventually(lambda: len(ran) >= 4)
            stats = await discover(first, "STATS", name)
    finally:
        await first.close()
        await second.close()
    ids = [tick.id for _, tick in ran]
    assert len(ids) == len(set(ids))  # no tick ran twice
    times = [tick.at for _, tick in ran]
    assert times == sorted(times)
    assert all(t.tzinfo is not None for t in times)
    assert all(tick.schedule == "@every 1s" for _, tick in ran)
    counted = [answer["data"]["schedules"]["beat"] for answer in stats]
    assert len(counted) == 2
    assert {c["schedule"] for c in counted} == {"@every 1s"}
    assert sum(c["ran"] for c in counted) >= 3
    assert all(c["failed"] == 0 for c in counted)


async def test_a_failing_tick_is_counted_and_the_next_one_still_runs(
    conn: Connection, eventually: Eventually, prometheus_registry: CollectorRegistry
) -> None:
    name = unique("failing")
    svc = Service(name, version="1.0.0")
    seen: list[Tick] = []

    @svc.schedule(every=1)
    async def flaky(tick: Tick) -> None:
        seen.append(tick)
        if len(seen) == 1:
            raise RuntimeError("secret-token-123 in a message")

    async with svc.serving(conn, drain_timeout=1) as running:
        await eventually(lambda: len(seen) >= 2)
        await eventually(lambda: running.schedules[0].ran >= 1)
        stats = await discover(conn, "STATS", name)
    counted = stats[0]["data"]["schedules"]["flaky"]
    assert counted["failed"] == 1
    assert counted["last_error"] == "RuntimeError"
    assert "secret" not in json.dumps(stats)  # the error's text stays in the instance's log
    labels = {"service": name, "kind": "schedule", "handler": "flaky"}
    assert (
        prometheus_registry.get_sample_value("eventmicro_handled_total", {**labels, "outcome": "error"}) == 1
    )
    assert (
        prometheus_registry.get_sample_value("eventmicro_handled_total", {**labels, "outcome": "ok"}) or 0
    ) >= 1


async def test_ticks_keep_coming_through_a_server_restart_and_a_backlog_runs_once(
    fresh_nats_server: NatsServer, eventually: Eventually, prometheus_registry: CollectorRegistry
) -> None:
    ran: list[tuple[str, Tick]] = []
    conn = await open_connection(fresh_nats_server, reconnect_wait=0.1)
    try:
        async with ticking("restarted", "a", ran).serving(conn, drain_timeout=1):
            await eventually(lambda: len(ran) >= 1)
            stored = await schedules.current(conn, "eventmicro-schedules", "eventmicro.cron.restarted.beat")
            await fresh_nats_server.arestart()
            before = len(ran)
            await eventually(lambda: len(ran) >= before + 2, timeout=20)  # ticks after the restart
    finally:
        await conn.close()
    # every instance away while the server keeps ticking: one run for the backlog, the rest missed
    conn = await open_connection(fresh_nats_server)
    try:
        async with asyncio.timeout(15):
            while True:  # the server's ticks pile up with nobody taking them; no event to wait on
                if await consumer_pending(conn, "eventmicro-schedules", "restarted-schedule-beat") >= 3:
                    break
                await asyncio.sleep(0.1)
        async with ticking("restarted", "b", ran).serving(conn, drain_timeout=1) as running:
            await eventually(lambda: any(label == "b" for label, _ in ran))
            missed = running.schedules[0].counts.missed
        again = await schedules.current(conn, "eventmicro-schedules", "eventmicro.cron.restarted.beat")
    finally:
        await conn.close()
    assert stored is not None
    assert again is not None
    assert again.seq == stored.seq  # the same schedule throughout: not stored again by the restart
    assert missed >= 2
    labels = {"service": "restarted", "kind": "schedule", "handler": "beat"}
    assert (
        prometheus_registry.get_sample_value("eventmicro_schedule_missed_total", labels) or 0
    ) >= missed  # + a's
    assert len({tick.id for _, tick in ran}) == len(ran)


@asynccontextmanager
async def app_process(server: NatsServer, service: str) -> AsyncIterator[tuple[Process, list[str]]]:
    """``schedule_app.py`` serving ``service`` in its own process; yields it and its tick lines
    (read as they come)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EVENTMICRO_", "NATS_URL"))}
    env |= {"NATS_URL": server.url, "PYTHONPATH": os.pathsep.join((str(HERE), str(HERE.parents[1])))}
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(HERE / "schedule_app.py"), service,
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    lines: list[str] = []

    async def read() -> None:
        assert process.stdout is not None
        async for line in process.stdout:
            if line.startswith(b"tick "):
                lines.append(line.decode().split()[1])

    reader = asyncio.create_task(read())
    try:
        yield process, lines
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()
        await reader


async def test_a_killed_instance_leaves_the_ticks_to_the_one_still_running(
    nats_server: NatsServer, service_conn: Connection, eventually: Eventually
) -> None:
    name = unique("killed")
    ran: list[tuple[str, Tick]] = []
    async with (
        app_process(nats_server, name) as (process, by_process),
        ticking(name, "here", ran).serving(service_conn, drain_timeout=1),
    ):
        await eventually(lambda: len(by_process) >= 1 and len(ran) >= 1, timeout=30)
        process.send_signal(signal.SIGKILL)  # a crash: no drain, no goodbye
        await process.wait()
        after_kill = len(ran)
        await eventually(lambda: len(ran) >= after_kill + 3, timeout=30)
    here = [tick.id for _, tick in ran]
    assert len(set(here)) == len(here)
    assert not set(here) & set(by_process)  # no tick ran in both instances


async def test_bad_schedules_are_refused_when_decorated() -> None:
    svc = Service(unique("bad"), version="1.0.0")

    async def beat(tick: Tick) -> None:
        return None

    for pattern, complaint in [
        ("@every 100ms", "at least 1s"),
        ("@every soon", "duration"),
        ("* * * * *", "6 cron fields"),
        ("@at 2030-01-01T00:00:00Z", "publish_later"),
        ("", "6 cron fields"),
    ]:
        with pytest.raises(ConfigurationError, match=complaint):
            svc.schedule(pattern)(beat)
    for every, complaint in [(0.5, "whole seconds"), (timedelta(0), "at least 1"), ("1s", "timedelta")]:
        with pytest.raises(ConfigurationError, match=complaint):
            svc.schedule(every=every)(beat)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="give a pattern"):
        svc.schedule("@every 1s", every=1)(beat)

    def not_async(tick: Tick) -> None:
        return None

    async def two(tick: Tick, other: int) -> None:
        return None

    with pytest.raises(ConfigurationError, match="scheduled handler"):
        svc.schedule("@hourly")(not_async)  # type: ignore[type-var]
    with pytest.raises(ConfigurationError, match="scheduled handler"):
        svc.schedule("@hourly")(two)
    svc.schedule("@every 5m")(beat)
    with pytest.raises(ConfigurationError, match="two schedules"):
        svc.schedule("@daily")(beat)
    assert [spec.pattern for spec in svc.schedules] == ["@every 5m"]


async def test_a_cron_the_server_refuses_fails_the_start(service_conn: Connection) -> None:
    svc = Service(unique("refused"), version="1.0.0")

    @svc.schedule("99 * * * * *")  # second 99: the server's cron parser says no
    async def beat(tick: Tick) -> None:
        return None

    with pytest.raises(ConfigurationError, match="refused the pattern"):
        async with svc.serving(service_conn, drain_timeout=1):
            pass


async def test_schedules_can_be_turned_on_for_a_stream_in_use_and_stay_on(conn: Connection) -> None:
    name = unique("ON")
    await ensure_stream(conn, Stream(name, subjects=[f"{name}.>"], max_msgs_per_subject=3))
    await Client(conn, source="/test").publish(orders.OrderPlaced(), subject=f"{name}.x", durable=True)
    await ensure_stream(conn, Stream(name, subjects=[f"{name}.>"], schedules=True))  # an update
    client = Client(conn, source="/test")
    assert (await client.publish_later(orders.OrderPlaced(), delay=60, subject=f"{name}.x")).stream == name
    await ensure_stream(conn, Stream(name, subjects=[f"{name}.>"]))  # not declared: left on, no conflict
    info = await _js(conn).stream_info(name)
    assert info.config.allow_msg_schedules is True
    assert info.config.max_msgs_per_subject == 3  # what an update does not declare stays
