"""Review of the JetStream layer: each test pins a defect that was found and fixed (see the
names), against a real nats-server."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

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
)
from eventmicro import cloudevents_nats as binding
from eventmicro.cli.main import main
from eventmicro.transport.connection import headers_size
from eventmicro.transport.jetstream import _js, ensure_stream, publish
from schemas.shop.orders.v1 import orders_pb2 as orders

Eventually = Callable[..., Awaitable[None]]


@pytest_asyncio.fixture
async def conn(nats_server: NatsServer) -> AsyncIterator[Connection]:
    connection = await Connection(ConnectOptions.from_env(nats_server.url, environ={})).open()
    yield connection
    await connection.close()


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


def placed(order_id: str) -> orders.OrderPlaced:
    return orders.OrderPlaced(order_id=order_id, customer_id="c-1", total_cents=100)


async def durable_setup(conn: Connection) -> tuple[str, str]:
    name = unique("R")
    await ensure_stream(conn, Stream(name, [f"{name}.>"]))
    return name, f"{name}.placed"


def _nats_background_tasks() -> list[str]:
    names = (t.get_coro().__qualname__ for t in asyncio.all_tasks())  # type: ignore[union-attr]
    return [n for n in names if n.endswith(("activity_check", "check_flow_control_response"))]


# --- ordered consumers at stop ------------------------------------------------------------------


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


# --- durable handlers ---------------------------------------------------------------------------


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


# --- publishing and streams ---------------------------------------------------------------------


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


# --- the CLI ----------------------------------------------------------------------------------


def test_replay_all_of_a_service_as_the_help_shows(
    nats_server: NatsServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """``eventmicro deadletters replay --all billing`` (the help's example) was a usage error."""
    service = unique("cliall")

    async def make() -> None:
        async with Connection(ConnectOptions.from_env(nats_server.url, environ={})) as c:
            _stream, subject = await durable_setup(c)
            svc = Service(service, version="1.0.0")

            @svc.subscribe(subject=subject, delivery=Durable(terminal=[LookupError]))
            async def charge(event: orders.OrderPlaced) -> None:
                raise LookupError

            async with svc.serving(c):
                await Client(c).publish(placed("o-1"), subject=subject, durable=True)
                async with asyncio.timeout(10):
                    while not await DeadLetters(c).list(service):  # noqa: ASYNC110 - no event to wait on
                        await asyncio.sleep(0.02)

    asyncio.run(make())
    assert main(["deadletters", "--url", nats_server.url, "replay", "--all", service]) == 0
    assert "replayed 1 dead letter" in capsys.readouterr().out


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
