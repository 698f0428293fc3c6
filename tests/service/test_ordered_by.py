"""Ordered per-key handling (``@svc.subscribe(ordered_by=...)``): events of one key in order,
other keys side by side, for core and durable deliveries; a failure holds back only its key;
an instance killed or a server restarted loses nothing and keeps each key's order; the lanes
show in ``$SRV.STATS`` and the metrics — on a real nats-server."""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from prometheus_client import CollectorRegistry

from eventmicro import (
    Broadcast,
    Client,
    ConfigurationError,
    Connection,
    ConnectOptions,
    DeadLetters,
    Durable,
    NatsServer,
    Ordered,
    PartitionKey,
    Service,
    Shared,
    Stream,
)
from eventmicro.observability import metrics as em_metrics
from eventmicro.service import lanes as lanes_module
from eventmicro.service.delivery import DeliveryOption
from eventmicro.transport.jetstream import ensure_stream
from eventmicro.wire.names import consumer_name
from schemas.shop.orders.v1 import orders_pb2 as orders

Eventually = Callable[..., Awaitable[None]]
CONSUMER = Path(__file__).parent / "ordered_consumer.py"
ROOT = Path(__file__).parents[2]


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


def placed(key: str, n: int) -> orders.OrderPlaced:
    """Event number ``n`` of order ``key`` (the number rides in total_cents)."""
    return orders.OrderPlaced(order_id=key, customer_id="c-1", total_cents=n)


async def srv_stats(conn: Connection, running: Any) -> dict[str, Any]:
    """What ``$SRV.STATS`` says about the instance's ordered event handler ``handle``."""
    reply = await conn.request(f"$SRV.STATS.{running.service.name}.{running.id}", b"", timeout=2)
    handler: dict[str, Any] = json.loads(reply.data)["data"]["events"]["handle"]
    return handler


def first_seen_in_order(handled: list[tuple[str, int]]) -> dict[str, list[int]]:
    """Per key, the numbers in the order each was first handled (a redelivered copy after a
    crash may come again: at least once)."""
    seen: dict[str, list[int]] = defaultdict(list)
    for key, n in handled:
        if n not in seen[key]:
            seen[key].append(n)
    return seen


# --- declaration ------------------------------------------------------------------------------


def test_ordered_by_is_checked_when_the_decorator_runs() -> None:
    svc = Service(unique("cfg"), version="1.0.0")

    async def handler(event: orders.OrderPlaced) -> None: ...

    async def key_async(event: orders.OrderPlaced) -> str:
        return event.order_id

    cases: list[tuple[Any, DeliveryOption, str]] = [
        ("order_idd", Shared(), "OrderPlaced has no such field"),
        ("order id", Shared(), "is not a field name"),
        (42, Shared(), "takes a field name"),
        (key_async, Shared(), "not async"),
        ("order_id", Ordered(), "already handles every event in order"),
    ]
    for option, delivery, text in cases:
        with pytest.raises(ConfigurationError, match=text):
            svc.subscribe(subject="x.y", ordered_by=option, delivery=delivery)(handler)
    for option in ("order_id", lambda e: e.order_id, PartitionKey()):
        svc.subscribe(subject="x.y", name=unique("ok"), ordered_by=option)(handler)


# --- core NATS --------------------------------------------------------------------------------


async def test_a_held_key_waits_alone_and_the_stats_show_it(
    conn: Connection, service_conn: Connection, eventually: Eventually
) -> None:
    svc = Service(unique("held"), version="1.0.0")
    subject = unique("held.")
    release = asyncio.Event()
    started: list[tuple[str, int]] = []
    done: list[tuple[str, int]] = []

    @svc.subscribe(subject=subject, concurrency=4, ordered_by="order_id")
    async def handle(event: orders.OrderPlaced) -> None:
        started.append((event.order_id, event.total_cents))
        if event.order_id == "slow":
            await release.wait()
        done.append((event.order_id, event.total_cents))

    client = Client(conn)
    async with svc.serving(service_conn) as running:
        for n in range(3):
            await client.publish(placed("slow", n), subject=subject)
            for k in range(3):
                await client.publish(placed(f"fast-{k}", n), subject=subject)
        # every fast event is handled while the first slow one is held; the other slow ones wait
        await eventually(lambda: sum(key != "slow" for key, _ in done) == 9)
        assert [e for e in started if e[0] == "slow"] == [("slow", 0)]
        stats = await srv_stats(conn, running)
        assert stats["ordered"] == {"lanes": 1, "waiting": 2, "unkeyed": 0}
        release.set()
        await eventually(lambda: len(done) == 12)
        assert (await srv_stats(conn, running))["ordered"] == {"lanes": 0, "waiting": 0, "unkeyed": 0}
    assert first_seen_in_order(done)["slow"] == [0, 1, 2]
    assert [e for e in done if e[0] == "slow"] == [("slow", 0), ("slow", 1), ("slow", 2)]


@pytest.mark.parametrize("delivery", [Shared(), Broadcast()], ids=["shared", "broadcast"])
async def test_many_keys_interleaved_keep_their_order_and_run_side_by_side(
    conn: Connection, service_conn: Connection, eventually: Eventually, delivery: DeliveryOption
) -> None:
    svc = Service(unique("many"), version="1.0.0")
    subject = unique("many.")
    handled: list[tuple[str, int]] = []
    running_keys: list[str] = []
    overlap: list[int] = []  # how many keys were in hand at once, per event
    twice: list[str] = []  # a key handled by two tasks at once (must stay empty)

    @svc.subscribe(subject=subject, concurrency=8, ordered_by=lambda e: e.order_id, delivery=delivery)
    async def handle(event: orders.OrderPlaced) -> None:
        if event.order_id in running_keys:
            twice.append(event.order_id)
        running_keys.append(event.order_id)
        overlap.append(len(running_keys))
        await asyncio.sleep(random.random() / 500)
        running_keys.remove(event.order_id)
        handled.append((event.order_id, event.total_cents))

    keys = [f"k{i}" for i in range(20)]
    sequence = [(key, n) for key in keys for n in range(25)]
    random.shuffle(sequence)
    counters: dict[str, int] = defaultdict(int)
    client = Client(conn)
    async with svc.serving(service_conn):
        for key, _ in sequence:  # each key's numbers in order, keys shuffled together
            await client.publish(placed(key, counters[key]), subject=subject)
            counters[key] += 1
        await eventually(lambda: len(handled) == len(sequence))
    per_key: dict[str, list[int]] = defaultdict(list)
    for key, n in handled:
        per_key[key].append(n)
    assert all(per_key[key] == list(range(25)) for key in keys)
    assert not twice
    assert max(overlap) > 1  # different keys were handled at the same time
    assert max(overlap) <= 8  # never more than the handler's concurrency


async def test_a_failing_event_does_not_stop_its_key_and_bad_events_are_counted(
    conn: Connection, service_conn: Connection, eventually: Eventually
) -> None:
    svc = Service(unique("fail"), version="1.0.0")
    subject = unique("fail.")
    handled: list[tuple[str, int]] = []

    @svc.subscribe(subject=subject, ordered_by="order_id")
    async def handle(event: orders.OrderPlaced) -> None:
        if event.total_cents == 1:
            raise RuntimeError("boom")
        handled.append((event.order_id, event.total_cents))

    client = Client(conn)
    async with svc.serving(service_conn) as running:
        for n in range(4):
            await client.publish(placed("a", n), subject=subject)
        await conn.publish(subject, b"\xff not a CloudEvent", headers={"ce-specversion": "1.0"})
        await client.publish(placed("", 9), subject=subject)  # no key: handled at once, counted
        await eventually(lambda: len(handled) == 4)
        stats = await srv_stats(conn, running)
    assert handled[:3] == [("a", 0), ("a", 2), ("a", 3)]
    assert ("", 9) in handled
    assert stats["errors"] == 2  # the failed event and the undecodable one, nothing else lost
    assert stats["ordered"]["unkeyed"] == 1


async def test_a_key_function_that_raises_is_counted_and_its_event_still_handled(
    conn: Connection, service_conn: Connection, eventually: Eventually, caplog: pytest.LogCaptureFixture
) -> None:
    svc = Service(unique("keyfn"), version="1.0.0")
    subject = unique("keyfn.")
    handled: list[int] = []

    def key(event: orders.OrderPlaced) -> str:
        if event.total_cents % 2:
            raise KeyError("secret-4111")  # its text must not reach the log
        return event.order_id

    @svc.subscribe(subject=subject, ordered_by=key)
    async def handle(event: orders.OrderPlaced) -> None:
        handled.append(event.total_cents)

    client = Client(conn)
    async with svc.serving(service_conn) as running:
        for n in range(6):
            await client.publish(placed("a", n), subject=subject)
        await eventually(lambda: sorted(handled) == list(range(6)))
        stats = await srv_stats(conn, running)
    assert stats["ordered"]["unkeyed"] == 3
    assert [n for n in handled if n % 2 == 0] == [0, 2, 4]  # the keyed ones in order
    assert "the ordered_by function of handle raised KeyError" in caplog.text
    assert "secret-4111" not in caplog.text


async def test_the_partition_key_extension_orders_events(
    conn: Connection, service_conn: Connection, eventually: Eventually
) -> None:
    svc = Service(unique("pk"), version="1.0.0")
    subject = unique("pk.")
    release = asyncio.Event()
    handled: list[tuple[str, int]] = []

    @svc.subscribe(subject=subject, concurrency=4, ordered_by=PartitionKey())
    async def handle(event: orders.OrderPlaced) -> None:
        if event.order_id == "first":
            await release.wait()
        handled.append((event.order_id, event.total_cents))

    client = Client(conn)
    async with svc.serving(service_conn) as running:
        # the same partition key on different orders: one lane; another key runs beside it
        await client.publish(placed("first", 0), subject=subject, extensions={"partitionkey": "p1"})
        await client.publish(placed("second", 1), subject=subject, extensions={"partitionkey": "p1"})
        await client.publish(placed("other", 2), subject=subject, extensions={"partitionkey": "p2"})
        await eventually(lambda: handled == [("other", 2)])
        assert (await srv_stats(conn, running))["ordered"]["waiting"] == 1
        release.set()
        await eventually(lambda: len(handled) == 3)
    assert handled == [("other", 2), ("first", 0), ("second", 1)]


async def test_what_waits_behind_a_key_is_bounded_and_nothing_is_lost(
    conn: Connection,
    service_conn: Connection,
    eventually: Eventually,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(lanes_module, "LANE_MSGS", 50)
    svc = Service(unique("bound"), version="1.0.0")
    subject = unique("bound.")
    release = asyncio.Event()
    handled: list[int] = []

    @svc.subscribe(subject=subject, ordered_by="order_id")
    async def handle(event: orders.OrderPlaced) -> None:
        await release.wait()
        handled.append(event.total_cents)

    client = Client(conn)
    async with svc.serving(service_conn) as running:
        for n in range(300):
            await client.publish(placed("one", n), subject=subject)
        lanes = running.event_stats["handle"].lanes
        assert lanes is not None
        await eventually(lambda: lanes.waiting == 50)
        await conn.flush()
        assert lanes.waiting == 50  # the rest waits in the subscription's bounded buffer
        release.set()
        await eventually(lambda: len(handled) == 300)
        assert running.event_stats["handle"].dropped == 0
    assert handled == list(range(300))


async def test_the_metrics_show_lanes_and_waiting_events(
    conn: Connection, service_conn: Connection, eventually: Eventually
) -> None:
    registry = CollectorRegistry()
    em_metrics.enable(registry)
    try:
        svc = Service(unique("metered"), version="1.0.0")
        subject = unique("metered.")
        release = asyncio.Event()

        @svc.subscribe(subject=subject, ordered_by="order_id")
        async def handle(event: orders.OrderPlaced) -> None:
            await release.wait()

        labels = {"service": svc.name, "kind": "event", "handler": "handle"}
        client = Client(conn)
        async with svc.serving(service_conn):
            for n in range(3):
                await client.publish(placed("a", n), subject=subject)
            await client.publish(placed("b", 0), subject=subject)
            await eventually(lambda: registry.get_sample_value("eventmicro_ordered_waiting", labels) == 2)
            assert registry.get_sample_value("eventmicro_ordered_lanes", labels) == 2
            release.set()
            await eventually(lambda: registry.get_sample_value("eventmicro_ordered_lanes", labels) == 0)
    finally:
        em_metrics.disable()


# --- durable (JetStream) ----------------------------------------------------------------------


@pytest_asyncio.fixture
async def stream_subject(conn: Connection) -> AsyncIterator[tuple[str, str]]:
    name = unique("ORD")
    await ensure_stream(conn, Stream(name, [f"{name}.>"]))
    yield name, f"{name}.placed"
    await DeadLetters(conn).purge()


async def consumer_info(conn: Connection, stream: str, service: str, handler: str) -> dict[str, Any]:
    name = consumer_name(service, handler)
    reply = await conn.request(f"$JS.API.CONSUMER.INFO.{stream}.{name}", b"", timeout=5)
    info: dict[str, Any] = json.loads(reply.data)
    return info


async def settled(conn: Connection, stream: str, service: str, handler: str) -> dict[str, Any]:
    """The consumer's info once nothing is pending or unacked (the acks have reached it)."""
    async with asyncio.timeout(20):
        while True:
            info = await consumer_info(conn, stream, service, handler)
            if info["num_pending"] == 0 and info["num_ack_pending"] == 0:
                return info
            await asyncio.sleep(0.05)


async def test_a_failed_durable_event_is_retried_in_place_and_holds_back_only_its_key(
    conn: Connection, service_conn: Connection, eventually: Eventually, stream_subject: tuple[str, str]
) -> None:
    stream, subject = stream_subject
    svc = Service(unique("retry"), version="1.0.0")
    attempts: list[tuple[str, int]] = []
    handled: list[tuple[str, int]] = []
    broken = True

    @svc.subscribe(
        subject=subject,
        concurrency=4,
        ordered_by="order_id",
        delivery=Durable(max_deliver=1000, backoff=[0.05]),
    )
    async def handle(event: orders.OrderPlaced) -> None:
        attempts.append((event.order_id, event.total_cents))
        if event.order_id == "a" and event.total_cents == 0 and broken:
            raise RuntimeError("not yet")
        handled.append((event.order_id, event.total_cents))

    client = Client(conn)
    async with svc.serving(service_conn) as running:
        await client.publish_batch([placed("a", n) for n in range(3)], subject=subject)
        await client.publish_batch([placed("b", n) for n in range(5)], subject=subject)
        await eventually(lambda: len(handled) == 5 and attempts.count(("a", 0)) >= 3)
        assert handled == [("b", n) for n in range(5)]  # b went on while a's first event failed
        stats = await srv_stats(conn, running)
        assert stats["ordered"]["waiting"] == 2  # a1 and a2 wait behind a0
        broken = False
        await eventually(lambda: len(handled) == 8)
        await eventually(lambda: not running._durables[0].inflight)
        info = await settled(conn, stream, svc.name, "handle")
    assert [e for e in handled if e[0] == "a"] == [("a", 0), ("a", 1), ("a", 2)]
    assert ("a", 1) not in attempts[: attempts.index(("a", 0), len(attempts) - 4)]
    assert info["num_redelivered"] == 0  # retried in place: never NAKed, never redelivered
    assert await DeadLetters(conn).list(svc.name) == []


async def test_after_the_last_attempt_the_event_is_dead_lettered_and_its_key_moves_on(
    conn: Connection, service_conn: Connection, eventually: Eventually, stream_subject: tuple[str, str]
) -> None:
    _stream, subject = stream_subject
    svc = Service(unique("dead"), version="1.0.0")
    attempts: list[int] = []

    @svc.subscribe(subject=subject, ordered_by="order_id", delivery=Durable(max_deliver=3, backoff=[0.05]))
    async def handle(event: orders.OrderPlaced) -> None:
        attempts.append(event.total_cents)
        if event.total_cents == 0:
            raise RuntimeError("card declined")

    dead = DeadLetters(conn)
    async with svc.serving(service_conn):
        await Client(conn).publish_batch([placed("a", n) for n in range(2)], subject=subject)
        await eventually(lambda: attempts == [0, 0, 0, 1])
        letters = await dead.list(svc.name)
    assert [(d.deliveries, d.reason, d.stream_seq) for d in letters] == [(3, "RuntimeError", 1)]


async def test_stopping_gives_waiting_events_back_in_order_to_the_next_instance(
    conn: Connection, service_conn: Connection, eventually: Eventually, stream_subject: tuple[str, str]
) -> None:
    _stream, subject = stream_subject
    name = unique("handover")
    handled: list[tuple[str, int]] = []
    first_started = asyncio.Event()

    def instance(fail_first: bool) -> Service:
        svc = Service(name, version="1.0.0")

        @svc.subscribe(subject=subject, ordered_by="order_id", delivery=Durable(backoff=[30.0]))
        async def handle(event: orders.OrderPlaced) -> None:
            if fail_first and event.total_cents == 0:
                first_started.set()
                raise RuntimeError("down")  # retried in 30 s: the stop comes first
            handled.append((event.order_id, event.total_cents))

        return svc

    async with instance(fail_first=True).serving(service_conn, drain_timeout=5) as running:
        await Client(conn).publish_batch([placed("a", n) for n in range(4)], subject=subject)
        await first_started.wait()
        lanes = running.event_stats["handle"].lanes
        assert lanes is not None
        await eventually(lambda: lanes.waiting == 3)
    assert handled == []  # the stop gave a0 back (NAK) and a1-a3 after it
    async with instance(fail_first=False).serving(service_conn):
        await eventually(lambda: len(handled) == 4)
    assert handled == [("a", n) for n in range(4)]


# --- crashes: an instance killed, a server restarted ------------------------------------------


class Log:
    """The consumer process's log of handled events (``order_id n`` lines)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> list[tuple[str, int]]:
        try:
            lines = self.path.read_text().splitlines()
        except FileNotFoundError:
            return []
        return [(key, int(n)) for key, n in (line.split() for line in lines if line.count(" ") == 1)]


@pytest_asyncio.fixture
async def own_conn(fresh_nats_server: NatsServer) -> AsyncIterator[Connection]:
    """A connection to the test's own server (file store), which the test may restart."""
    connection = await Connection(ConnectOptions.from_env(fresh_nats_server.url, environ={})).open()
    yield connection
    await connection.close()


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait()


def alive(process: subprocess.Popen[bytes]) -> bool:
    code = process.poll()
    assert code is None, f"the consumer process exited with code {code}"
    return True


KEYS = [f"order-{i}" for i in range(6)]
PER_KEY = 60


def interleaved() -> list[orders.OrderPlaced]:
    """Every key's events in order, keys shuffled together."""
    turns = [key for key in KEYS for _ in range(PER_KEY)]
    random.shuffle(turns)
    counters: dict[str, int] = defaultdict(int)
    events = []
    for key in turns:
        events.append(placed(key, counters[key]))
        counters[key] += 1
    return events


def assert_every_key_complete_and_in_order(handled: list[tuple[str, int]]) -> None:
    seen = first_seen_in_order(handled)
    assert sorted(seen) == KEYS
    for key in KEYS:
        assert seen[key] == list(range(PER_KEY)), f"{key}: {seen[key]}"


async def test_a_killed_instance_loses_nothing_and_keeps_each_keys_order(
    fresh_nats_server: NatsServer,
    own_conn: Connection,
    tmp_path: Path,
    eventually: Eventually,
    processes: list[subprocess.Popen[bytes]],
) -> None:
    stream, subject = "KILLORD", "killord.placed"
    await ensure_stream(own_conn, Stream(stream, ["killord.>"], storage="file"))
    log = Log(tmp_path / "handled.log")
    env = {
        **os.environ,
        "EVENTMICRO_NATS_URL": fresh_nats_server.url,
        "ORDERED_STREAM": stream,
        "ORDERED_SUBJECT": subject,
        "ORDERED_LOG": str(log.path),
        "PYTHONPATH": str(ROOT),
    }
    await Client(own_conn).publish_batch(interleaved(), subject=subject)

    def start() -> subprocess.Popen[bytes]:
        process = subprocess.Popen([sys.executable, str(CONSUMER)], env=env, cwd=ROOT)
        processes.append(process)
        return process

    first = start()
    await eventually(lambda: alive(first) and len(log.read()) >= 100, timeout=30)
    first.kill()  # SIGKILL: what it had in hand and in its lanes was never acked
    await asyncio.to_thread(first.wait, 10)
    at_kill = len(log.read())
    assert at_kill < len(KEYS) * PER_KEY, "it had finished: not a crash mid-stream"

    second = start()
    await eventually(lambda: alive(second) and len(set(log.read())) == len(KEYS) * PER_KEY, timeout=40)
    await settled(own_conn, stream, "ordered-consumer", "record")  # nothing more to come
    assert alive(second)
    assert_every_key_complete_and_in_order(log.read())


async def test_a_server_restart_loses_nothing_and_keeps_each_keys_order(
    fresh_nats_server: NatsServer, own_conn: Connection, eventually: Eventually
) -> None:
    stream, subject = "RESTORD", "restord.placed"
    await ensure_stream(own_conn, Stream(stream, ["restord.>"], storage="file"))
    await Client(own_conn).publish_batch(interleaved(), subject=subject)
    svc = Service(unique("restart"), version="1.0.0")
    handled: list[tuple[str, int]] = []

    @svc.subscribe(
        subject=subject,
        concurrency=8,
        ordered_by="order_id",
        delivery=Durable(stream=stream, ack_wait=2.0),
    )
    async def handle(event: orders.OrderPlaced) -> None:
        handled.append((event.order_id, event.total_cents))
        await asyncio.sleep(0.002)

    service_conn = await Connection(ConnectOptions.from_env(fresh_nats_server.url, environ={})).open()
    try:
        async with svc.serving(service_conn):
            await eventually(lambda: len(handled) >= 100, timeout=30)
            await fresh_nats_server.arestart()  # SIGTERM, the same port and store
            assert len(set(handled)) < len(KEYS) * PER_KEY, "it had finished: not mid-stream"
            await eventually(lambda: len(set(handled)) == len(KEYS) * PER_KEY, timeout=60)
    finally:
        await service_conn.close()
    assert_every_key_complete_and_in_order(handled)
