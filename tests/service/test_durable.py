"""Durable events on JetStream: streams, acknowledged publishing with dedupe, ack/nak/term,
backoff, dead letters and their replay, ordered consumers and their stop — against a real
nats-server with JetStream."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime

import pytest
import pytest_asyncio

from eventmicro import (
    Client,
    ConfigurationError,
    Connection,
    ConnectOptions,
    DeadLetter,
    DeadLetters,
    Durable,
    Event,
    Message,
    NatsServer,
    NotStored,
    Ordered,
    Service,
    Stream,
    StreamConflict,
)
from eventmicro import cloudevents_nats as binding
from eventmicro.transport.connection import headers_size
from eventmicro.transport.jetstream import _js, ensure_stream, get_message, message_id, publish
from schemas.shop.orders.v1 import orders_pb2 as orders

Eventually = Callable[..., Awaitable[None]]


@pytest_asyncio.fixture(autouse=True)
async def _empty_dead_letters(conn: Connection) -> AsyncIterator[None]:
    yield
    await DeadLetters(conn).purge()


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


def placed(order_id: str) -> orders.OrderPlaced:
    return orders.OrderPlaced(order_id=order_id, customer_id="c-1", total_cents=100)


async def wait_for_letters(dead: DeadLetters, service: str, count: int) -> None:
    """Poll the dead-letter stream (it has no event to wait on) until ``count`` letters are there."""
    async with asyncio.timeout(10):
        while len(await dead.list(service)) < count:  # noqa: ASYNC110
            await asyncio.sleep(0.02)


# --- streams and publishing -----------------------------------------------------------------


async def test_the_same_event_published_three_times_is_stored_once(conn: Connection) -> None:
    name = unique("S")
    await ensure_stream(conn, Stream(name, [f"{name}.>"]))
    event = Event.of(placed("o-1"), source="/orders/instance-1")
    wire = binding.to_binary(event, None)

    msg_id = message_id("/orders/instance-1", event.get_id())
    acks = [
        await publish(conn, f"{name}.placed", wire.data, dict(wire.headers), msg_id=msg_id) for _ in range(3)
    ]
    assert [a.duplicate for a in acks] == [False, True, True]
    assert {a.seq for a in acks} == {1}
    assert await get_message(conn, name, 2) is None  # nothing else was stored
    stored = await get_message(conn, name, 1)
    assert stored is not None
    assert stored.data == placed("o-1").SerializeToString()


async def test_a_durable_publish_no_stream_stores_is_an_error_not_a_loss(conn: Connection) -> None:
    client = Client(conn, source="/test")
    prefix = unique("nowhere")
    started = time.monotonic()
    with pytest.raises(NotStored) as caught:
        await client.publish(placed("o-2"), subject=f"{prefix}.x", durable=True, timeout=1.0)
    assert "no stream stores this subject" in caught.value.message
    assert time.monotonic() - started < 5
    event = caught.value.event
    assert isinstance(event, Event)  # the event that was not stored, to publish again
    await ensure_stream(conn, Stream(prefix, [f"{prefix}.>"]))
    again = await client.publish(event, subject=f"{prefix}.x", durable=True)
    assert again.get_id() == event.get_id()
    stored = await get_message(conn, prefix, 1)
    assert stored is not None
    assert orders.OrderPlaced.FromString(stored.data) == placed("o-2")


async def test_publish_batch_stores_every_event_once_and_in_order(conn: Connection) -> None:
    name = unique("B")
    await ensure_stream(conn, Stream(name, [f"{name}.>"]))
    client = Client(conn, source="/batch")
    events = await client.publish_batch([placed(f"o-{i}") for i in range(300)], subject=f"{name}.placed")
    assert len({e.get_id() for e in events}) == 300
    last = await get_message(conn, name, 300)
    assert last is not None
    assert await get_message(conn, name, 301) is None
    assert {orders.OrderPlaced.FromString(m.data).order_id for m in [last]} <= {f"o-{i}" for i in range(300)}


async def test_stream_declarations_are_created_updated_or_refused(
    conn: Connection, caplog: pytest.LogCaptureFixture
) -> None:
    name = unique("D")
    declared = Stream(name, [f"{name}.a"], max_age=3600)
    await ensure_stream(conn, declared)
    await ensure_stream(conn, declared)  # unchanged: nothing to do
    with caplog.at_level(logging.WARNING, logger="eventmicro.jetstream"):
        await ensure_stream(conn, Stream(name, [f"{name}.a", f"{name}.b"], max_age=7200))
    assert "updated" in caplog.text
    assert "subjects" in caplog.text
    assert "max_age" in caplog.text
    with pytest.raises(StreamConflict) as caught:
        await ensure_stream(conn, Stream(name, [f"{name}.a"], storage="memory"))
    assert caught.value.differences["storage"] == ("memory", "file")
    with pytest.raises(StreamConflict) as overlap:  # another stream already stores name.a
        await ensure_stream(conn, Stream(unique("D"), [f"{name}.a"]))
    assert "overlap" in overlap.value.message.lower()


def test_bad_declarations_fail_when_declared() -> None:
    with pytest.raises(ConfigurationError, match="stream name"):
        Stream("bad.name", ["x"])
    with pytest.raises(ConfigurationError, match="duplicate_window"):
        Stream("ok", ["x"], max_age=1, duplicate_window=120)
    svc = Service("decl", version="1.0.0")
    with pytest.raises(ConfigurationError, match="delivery= takes"):

        @svc.subscribe(delivery=Durable)  # type: ignore[call-overload,untyped-decorator]  # not a value
        async def both(event: orders.OrderPlaced) -> None: ...

    with pytest.raises(ConfigurationError, match="max_deliver"):

        @svc.subscribe(delivery=Durable(max_deliver=0))
        async def never(event: orders.OrderPlaced) -> None: ...


def test_a_deliverys_options_are_checked_when_it_is_written() -> None:
    """Options belong to their delivery value (``stream=`` or ``deliver=`` cannot reach a core
    subscription, where they were once ignored silently); wrong values fail at once."""
    with pytest.raises(ConfigurationError, match="start sequence"):
        Ordered(deliver=0)
    with pytest.raises(ConfigurationError, match="backoff"):
        Durable(backoff="1s")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="idempotent"):
        Durable(idempotent=0.01)
    with pytest.raises(ConfigurationError, match="terminal"):
        Durable(terminal=ValueError)  # type: ignore[arg-type]
    assert Durable(backoff=[1, 2]).backoff == (1.0, 2.0)  # normalised: the value is hashable
    assert Durable(idempotent=True).idempotent_ttl == 24 * 3600.0
    svc = Service("opts", version="1.0.0")
    with pytest.raises(ConfigurationError, match="delivery= takes"):

        @svc.subscribe(delivery="durable")  # type: ignore[call-overload,untyped-decorator]
        async def one(event: orders.OrderPlaced) -> None: ...


async def test_a_durable_publish_gives_up_within_its_timeout(conn: Connection) -> None:
    """Each attempt waited 2 s even when the whole publish had less: timeout=0.5 took 2 s."""
    subject = unique("noack.") + ".x"

    async def ignore(msg: Message) -> None:  # interest without a stream: the request times out
        return None

    await conn.subscribe(subject, ignore)
    started = time.monotonic()
    with pytest.raises(NotStored):
        await Client(conn).publish(placed("o-1"), subject=subject, durable=True, timeout=0.5)
    assert time.monotonic() - started < 1.2


async def test_updating_a_stream_keeps_the_settings_it_does_not_declare(conn: Connection) -> None:
    """An update sent only the declared fields, so it reset the others (here the per-subject
    limit an operator had set) to their defaults."""
    name = unique("U")
    js = _js(conn)
    await js.add_stream(name=name, subjects=[f"{name}.a"], max_msgs_per_subject=5)
    await ensure_stream(conn, Stream(name, [f"{name}.a"], max_age=3600))
    info = await js.stream_info(name)
    assert info.config.max_age == 3600
    assert info.config.max_msgs_per_subject == 5


# --- consuming --------------------------------------------------------------------------------


async def durable_setup(conn: Connection) -> tuple[str, str]:
    """A fresh stream and the subject its events go to."""
    name = unique("E")
    await ensure_stream(conn, Stream(name, [f"{name}.>"]))
    return name, f"{name}.placed"


async def test_acks_naks_and_terms_are_sent_as_the_protocol_says(
    conn: Connection, eventually: Eventually
) -> None:
    stream, subject = await durable_setup(conn)
    acks: list[tuple[str, bytes]] = []

    async def record(msg: Message) -> None:
        acks.append((msg.subject, msg.data))

    await conn.subscribe(f"$JS.ACK.{stream}.>", record)
    svc = Service(unique("acks"), version="1.0.0")
    seen: list[str] = []

    policy = Durable(max_deliver=2, backoff=[0.3], terminal=[PermissionError], dead_letter=False)

    @svc.subscribe(subject=subject, delivery=policy)
    async def handle(event: orders.OrderPlaced) -> None:
        seen.append(event.order_id)
        if event.order_id == "retry":
            raise RuntimeError("boom")
        if event.order_id == "fatal":
            raise PermissionError("no")

    client = Client(conn, source="/t")
    async with svc.serving(conn):
        for order in ("fine", "retry", "fatal"):
            await client.publish(placed(order), subject=subject, durable=True)
        await eventually(lambda: seen.count("retry") == 2 and "fatal" in seen and len(acks) >= 4)
    payloads = [data for _, data in acks]
    assert payloads.count(b"+ACK") + payloads.count(b"") == 1  # nats-py acks with an empty payload
    assert payloads.count(b"+TERM") == 2  # the terminal error, then the last failed attempt
    naks = [json.loads(p[len(b"-NAK ") :]) for p in payloads if p.startswith(b"-NAK")]
    assert naks == [{"delay": 300_000_000}]  # 0.3 s in nanoseconds, after the first failure
    assert all(s.startswith(f"$JS.ACK.{stream}.{svc.name}-handle.") for s, _ in acks)


async def test_a_handler_that_fails_k_times_succeeds_after_the_backoff(
    conn: Connection, eventually: Eventually
) -> None:
    _stream, subject = await durable_setup(conn)
    svc = Service(unique("flaky"), version="1.0.0")
    attempts: list[float] = []

    @svc.subscribe(subject=subject, delivery=Durable(max_deliver=5, backoff=[0.2, 0.4]))
    async def flaky(event: orders.OrderPlaced) -> None:
        attempts.append(time.monotonic())
        if len(attempts) <= 2:
            raise RuntimeError("not yet")

    async with svc.serving(conn) as running:
        await Client(conn).publish(placed("o-9"), subject=subject, durable=True)
        await eventually(lambda: len(attempts) == 3)
        await eventually(lambda: running.event_stats["flaky"].num_errors == 2)
    gaps = [b - a for a, b in itertools.pairwise(attempts)]
    assert gaps[0] >= 0.18
    assert gaps[1] >= 0.36
    assert await DeadLetters(conn).list(svc.name) == []


async def test_always_failing_ends_in_dead_letters_after_max_deliver_and_replay_works(
    conn: Connection, eventually: Eventually
) -> None:
    stream, subject = await durable_setup(conn)
    svc = Service(unique("dlq"), version="1.0.0")
    attempts: list[str] = []
    broken = True

    @svc.subscribe(subject=subject, delivery=Durable(max_deliver=3, backoff=[0.05]))
    async def charge(event: orders.OrderPlaced, ctx: object) -> None:
        attempts.append(event.order_id)
        if broken:
            raise RuntimeError("card declined for 4111-1111")  # its text must not be stored

    dead = DeadLetters(conn)
    async with svc.serving(conn):
        sent = await Client(conn, source="/shop").publish(placed("o-3"), subject=subject, durable=True)
        await eventually(lambda: len(attempts) == 3)
        await wait_for_letters(dead, svc.name, 1)
        letter = (await dead.list(svc.name, "charge"))[0]
        assert (letter.code, letter.reason, letter.deliveries) == (500, "RuntimeError", 3)
        assert (letter.subject, letter.stream, letter.stream_seq) == (subject, stream, 1)
        assert (letter.service, letter.handler) == (svc.name, "charge")
        assert letter.event_id == sent.get_id()
        original = letter.event()
        assert original.get_source() == "/shop"
        assert original.data_as(orders.OrderPlaced) == placed("o-3")
        assert "4111" not in json.dumps(dict(letter.headers)) + letter.reason
        assert len(attempts) == 3  # acked after dead-lettering: no fourth attempt

        broken = False
        await dead.replay(letter.seq)
        await eventually(lambda: len(attempts) == 4)
        assert await dead.list(svc.name) == []


async def test_terminal_errors_and_undecodable_events_are_dead_lettered_at_once(
    conn: Connection, eventually: Eventually
) -> None:
    _stream, subject = await durable_setup(conn)
    svc = Service(unique("term"), version="1.0.0")
    calls: list[str] = []

    @svc.subscribe(subject=subject, delivery=Durable(max_deliver=5, terminal=[PermissionError]))
    async def guard(event: orders.OrderPlaced) -> None:
        calls.append(event.order_id)
        raise PermissionError("refused")

    dead = DeadLetters(conn)
    async with svc.serving(conn):
        await Client(conn).publish(placed("o-4"), subject=subject, durable=True)

        await publish(conn, subject, b"\xff not a CloudEvent", {"ce-specversion": "1.0"}, msg_id="junk-1")

        await wait_for_letters(dead, svc.name, 2)
    letters = sorted(await dead.list(svc.name), key=lambda d: d.stream_seq)
    assert [(d.deliveries, d.code) for d in letters] == [(1, 500), (1, 400)]
    assert letters[0].reason == "PermissionError"
    assert "attribute 'id'" in letters[1].reason  # the envelope error names what is missing
    assert calls == ["o-4"]  # the undecodable one never reached the handler


async def test_instances_share_the_durable_consumer_and_nothing_is_handled_twice(
    nats_server: NatsServer, conn: Connection, eventually: Eventually
) -> None:
    _stream, subject = await durable_setup(conn)
    name = unique("shared")
    handled: dict[str, list[str]] = {"a": [], "b": []}

    def instance(label: str) -> Service:
        svc = Service(name, version="1.0.0")

        @svc.subscribe(subject=subject, concurrency=4, delivery=Durable())
        async def work(event: orders.OrderPlaced) -> None:
            handled[label].append(event.order_id)
            await asyncio.sleep(0.001)

        return svc

    other = await Connection(ConnectOptions.from_env(nats_server.url, environ={})).open()
    try:
        async with instance("a").serving(conn), instance("b").serving(other):
            await Client(conn).publish_batch([placed(f"o-{i}") for i in range(400)], subject=subject)
            await eventually(lambda: len(handled["a"]) + len(handled["b"]) >= 400)
    finally:
        await other.close()
    everything = handled["a"] + handled["b"]
    assert sorted(everything) == sorted(f"o-{i}" for i in range(400))  # each once
    assert handled["a"]
    assert handled["b"]


async def test_a_long_handler_is_kept_in_progress_and_not_redelivered(
    conn: Connection, eventually: Eventually
) -> None:
    _stream, subject = await durable_setup(conn)
    svc = Service(unique("long"), version="1.0.0")
    runs: list[int] = []

    @svc.subscribe(subject=subject, delivery=Durable(ack_wait=1.5))
    async def slow(event: orders.OrderPlaced) -> None:
        runs.append(1)
        await asyncio.sleep(4.5)  # three times ack_wait: only the +WPI heartbeats keep it

    async with svc.serving(conn) as running:
        await Client(conn).publish(placed("o-5"), subject=subject, durable=True)
        await eventually(lambda: running.event_stats["slow"].num_requests == 1)
        await eventually(lambda: not running._durables[0].inflight, timeout=10)
    assert runs == [1]


async def test_stop_lets_durable_work_finish_and_ack(conn: Connection, eventually: Eventually) -> None:
    _stream, subject = await durable_setup(conn)
    name = unique("drain")
    started, finished = asyncio.Event(), []

    def build() -> Service:
        svc = Service(name, version="1.0.0")

        @svc.subscribe(subject=subject, delivery=Durable())
        async def work(event: orders.OrderPlaced) -> None:
            started.set()
            await asyncio.sleep(0.3)
            finished.append(event.order_id)

        return svc

    async with build().serving(conn):
        await Client(conn).publish(placed("o-6"), subject=subject, durable=True)
        await asyncio.wait_for(started.wait(), 20)
    assert finished == ["o-6"]  # stop waited for it
    async with build().serving(conn) as again:  # a new instance: nothing left to redeliver
        await Client(conn).publish(placed("o-7"), subject=subject, durable=True)
        await eventually(lambda: "o-7" in finished)
        assert again.event_stats["work"].num_requests == 1
    assert finished == ["o-6", "o-7"]


async def test_the_same_event_three_times_is_stored_once_and_handled_once_with_the_guard(
    conn: Connection, eventually: Eventually
) -> None:
    _stream, subject = await durable_setup(conn)
    svc = Service(unique("once"), version="1.0.0")
    handled: list[str] = []

    @svc.subscribe(subject=subject, delivery=Durable(idempotent=60))
    async def pay(event: orders.OrderPlaced) -> None:
        handled.append(event.order_id)

    client = Client(conn, source="/checkout")
    event = Event.of(placed("o-8"), source="/checkout")
    async with svc.serving(conn) as running:
        for _ in range(3):  # the same event (source, id) three times: the stream keeps one
            await client.publish(event, subject=subject, durable=True)
        # past the stream's dedupe window, the same event is stored again (as another message id
        # would do): the guard still sees it was handled
        wire = binding.to_binary(event, None)
        for copy in range(2):
            await publish(conn, subject, wire.data, dict(wire.headers), msg_id=f"outside-window-{copy}")
        await eventually(lambda: running._durables[0].duplicates_skipped == 2)
        await client.publish(placed("o-9"), subject=subject, durable=True)
        await eventually(lambda: "o-9" in handled)
    assert handled == ["o-8", "o-9"]
    assert await get_message(conn, _stream, 4) is not None  # 1 + 2 copies + o-9: four stored
    assert await get_message(conn, _stream, 5) is None


async def test_without_the_guard_every_stored_copy_is_handled(
    conn: Connection, eventually: Eventually
) -> None:
    _stream, subject = await durable_setup(conn)
    svc = Service(unique("twice"), version="1.0.0")
    handled: list[str] = []

    @svc.subscribe(subject=subject, delivery=Durable())
    async def pay(event: orders.OrderPlaced) -> None:
        handled.append(event.order_id)

    wire = binding.to_binary(Event.of(placed("o-10"), source="/checkout"), None)
    async with svc.serving(conn):
        for copy in range(2):
            await publish(conn, subject, wire.data, dict(wire.headers), msg_id=f"copy-{copy}")
        await eventually(lambda: len(handled) == 2)
    assert handled == ["o-10", "o-10"]  # at least once: the guard is opt-in


async def test_a_handler_raising_cancelled_error_itself_is_a_failure_with_backoff(
    conn: Connection, eventually: Eventually
) -> None:
    """A CancelledError the handler raised (not stop's) left the message unsettled until
    ack_wait (30 s here) instead of naking it with the backoff."""
    _stream, subject = await durable_setup(conn)
    svc = Service(unique("cancel"), version="1.0.0")
    attempts: list[float] = []

    @svc.subscribe(subject=subject, delivery=Durable(backoff=[0.05], ack_wait=30))
    async def inner(event: orders.OrderPlaced) -> None:
        attempts.append(time.monotonic())
        if len(attempts) == 1:
            raise asyncio.CancelledError  # e.g. awaiting a task somebody else cancelled

    async with svc.serving(conn) as running:
        await Client(conn).publish(placed("o-1"), subject=subject, durable=True)
        await eventually(lambda: len(attempts) == 2, timeout=5)
        assert running.event_stats["inner"].num_errors == 1


async def test_the_guard_handles_two_copies_fetched_in_one_batch_once(
    conn: Connection, eventually: Eventually
) -> None:
    """Two stored copies of one event (outside the dedupe window) fetched together ran side by
    side: both passed the guard's check before either was recorded."""
    _stream, subject = await durable_setup(conn)
    wire = binding.to_binary(Event.of(placed("o-1"), source="/checkout"), None)
    for copy in range(2):
        await publish(conn, subject, wire.data, dict(wire.headers), msg_id=f"copy-{copy}")
    svc = Service(unique("guardrace"), version="1.0.0")
    handled: list[str] = []

    @svc.subscribe(subject=subject, delivery=Durable(idempotent=60))
    async def pay(event: orders.OrderPlaced) -> None:
        handled.append(event.order_id)
        await asyncio.sleep(0.2)  # the other copy arrives meanwhile

    async with svc.serving(conn) as running:
        await eventually(lambda: running._durables[0].duplicates_skipped == 1)
    assert handled == ["o-1"]


async def test_a_consumer_deleted_on_the_server_is_created_again(
    conn: Connection, eventually: Eventually, caplog: pytest.LogCaptureFixture
) -> None:
    stream, subject = await durable_setup(conn)
    svc = Service(unique("lost"), version="1.0.0")
    handled: list[str] = []

    @svc.subscribe(subject=subject, delivery=Durable())
    async def keep(event: orders.OrderPlaced) -> None:
        handled.append(event.order_id)

    client = Client(conn, source="/lost")
    async with svc.serving(conn):
        await client.publish(placed("before"), subject=subject, durable=True)
        await eventually(lambda: handled == ["before"])
        await _js(conn).delete_consumer(stream, f"{svc.name}-keep")  # an operator's mistake
        await client.publish(placed("after"), subject=subject, durable=True)
        await eventually(lambda: "after" in handled, timeout=20)
    assert "was gone from the server; created again" in caplog.text
    assert handled.count("after") == 1


async def test_a_dead_letter_too_large_with_its_failure_is_kept_without_its_body(
    conn: Connection, eventually: Eventually
) -> None:
    stream, subject = await durable_setup(conn)
    svc = Service(unique("big"), version="1.0.0")
    sizes: list[int] = []
    refuse = True

    @svc.subscribe(subject=subject, delivery=Durable(terminal=[ValueError]))
    async def take(event: bytes) -> None:
        sizes.append(len(event))
        if refuse:
            raise ValueError("too big to handle")

    client = Client(conn, source="/big")
    probe = binding.to_binary(Event.of(b"", source="/big", type="test.big.v1"), None)
    room = conn.max_payload - headers_size({**probe.headers, "Nats-Msg-Id": "x" * 40}) - 16
    dead = DeadLetters(conn)
    async with svc.serving(conn):
        await client.publish(b"x" * room, type="test.big.v1", subject=subject, durable=True)
        await eventually(lambda: sizes == [room])

        async def letters() -> list[DeadLetter]:
            return await dead.list(svc.name)

        async with asyncio.timeout(10):
            while not await letters():  # noqa: ASYNC110 - the dead-letter stream has no event to wait on
                await asyncio.sleep(0.02)
        (letter,) = await letters()
        assert letter.body_dropped
        assert letter.data == b""
        assert (letter.stream, letter.stream_seq, letter.reason) == (stream, 1, "ValueError")
        refuse = False
        await dead.replay(letter.seq)  # the body comes back from the original stream
        await eventually(lambda: sizes == [room, room])


# --- replay -----------------------------------------------------------------------------------


async def test_ordered_consumers_replay_the_stream_in_order_on_every_instance(
    nats_server: NatsServer, conn: Connection, eventually: Eventually
) -> None:
    _stream, subject = await durable_setup(conn)
    client = Client(conn, source="/replay")
    await client.publish_batch([placed(f"o-{i}") for i in range(50)], subject=subject, window=1)
    seen: dict[str, list[str]] = {"a": [], "b": []}
    name = unique("projection")

    def instance(label: str) -> Service:
        svc = Service(name, version="1.0.0")

        @svc.subscribe(subject=subject, delivery=Ordered())
        async def project(event: orders.OrderPlaced) -> None:
            seen[label].append(event.order_id)

        return svc

    other = await Connection(ConnectOptions.from_env(nats_server.url, environ={})).open()
    try:
        async with instance("a").serving(conn), instance("b").serving(other):
            await client.publish(placed("o-50"), subject=subject, durable=True)  # live events follow
            await eventually(lambda: len(seen["a"]) == 51 and len(seen["b"]) == 51)
    finally:
        await other.close()
    expected = [f"o-{i}" for i in range(51)]
    assert seen["a"] == expected  # every instance, every event, in stream order
    assert seen["b"] == expected


async def test_subscribers_start_from_a_sequence_or_a_time(conn: Connection, eventually: Eventually) -> None:
    _stream, subject = await durable_setup(conn)
    client = Client(conn, source="/replay")
    await client.publish_batch([placed(f"o-{i}") for i in range(10)], subject=subject, window=1)
    boundary = datetime.now(UTC)
    await client.publish_batch([placed(f"o-{i}") for i in range(10, 15)], subject=subject, window=1)
    svc = Service(unique("start"), version="1.0.0")
    from_seq: list[str] = []
    from_time: list[str] = []

    @svc.subscribe(subject=subject, delivery=Durable(deliver=8))
    async def durable_from_eight(event: orders.OrderPlaced) -> None:
        from_seq.append(event.order_id)

    @svc.subscribe(subject=subject, delivery=Ordered(deliver=boundary))
    async def ordered_from_time(event: orders.OrderPlaced) -> None:
        from_time.append(event.order_id)

    async with svc.serving(conn):
        await eventually(lambda: len(from_seq) == 8 and len(from_time) == 5)
    assert sorted(from_seq, key=lambda o: int(o[2:])) == [f"o-{i}" for i in range(7, 15)]
    assert from_time == [f"o-{i}" for i in range(10, 15)]

    with pytest.raises(ConfigurationError, match="deliver"):
        Ordered(deliver="yesterday")  # type: ignore[arg-type]


# --- ordered consumers at stop ------------------------------------------------------------------


def _nats_background_tasks() -> list[str]:
    names = (t.get_coro().__qualname__ for t in asyncio.all_tasks())  # type: ignore[union-attr]
    return [n for n in names if n.endswith(("activity_check", "check_flow_control_response"))]


async def test_a_stopped_ordered_consumer_leaves_no_heartbeat_task_to_recreate_it(
    conn: Connection, eventually: Eventually
) -> None:
    """Draining an ordered consumer left nats-py's heartbeat monitor running: 4-8 s after
    stop it re-subscribed and recreated the consumer, and closing the connection then waited
    the whole drain timeout (30 s) for messages nobody would handle."""
    _stream, subject = await durable_setup(conn)
    before = len(_nats_background_tasks())
    svc = Service(unique("zombie"), version="1.0.0")
    seen: list[str] = []

    @svc.subscribe(subject=subject, delivery=Ordered())
    async def project(event: orders.OrderPlaced) -> None:
        seen.append(event.order_id)

    async with svc.serving(conn):
        await Client(conn).publish(placed("o-1"), subject=subject, durable=True)
        await eventually(lambda: seen == ["o-1"])
    assert len(_nats_background_tasks()) == before


async def test_stop_bounds_an_ordered_consumers_drain_by_the_drain_timeout(
    conn: Connection, eventually: Eventually
) -> None:
    """The ordered consumer's drain waited for every message already received, however long."""
    _stream, subject = await durable_setup(conn)
    await Client(conn).publish_batch([placed(f"o-{i}") for i in range(30)], subject=subject, window=1)
    svc = Service(unique("slowreplay"), version="1.0.0")
    seen: list[str] = []

    @svc.subscribe(subject=subject, delivery=Ordered())
    async def project(event: orders.OrderPlaced) -> None:
        seen.append(event.order_id)
        await asyncio.sleep(0.5)

    running_cm = svc.serving(conn, drain_timeout=0.5)
    await running_cm.__aenter__()
    await eventually(lambda: len(seen) >= 1)
    started = time.monotonic()
    await running_cm.__aexit__(None, None, None)
    assert time.monotonic() - started < 3  # not 30 x 0.5 s
    assert len(seen) < 30
