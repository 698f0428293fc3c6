"""Dead letters always land: poison durable messages that nats-server stores but that eventmicro
could not dead-letter as they are (a header name its publisher refuses, headers at JetStream's
64 KiB limit, a failure text of 50 KB), sent over a raw socket to a real nats-server. Each ends
in the dead-letter stream with its reason, the consumer's ack floor past it and a bounded number
of deliveries; a dead-letter stream that refuses costs NAKs with a growing delay, not a loop."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import nats
import pytest
from nats.aio.msg import Msg
from nats.js.api import ConsumerInfo, DiscardPolicy, StreamConfig

from eventmicro import (
    Connection,
    ConnectOptions,
    DeadLetter,
    DeadLetters,
    Durable,
    NatsServer,
    Service,
    Stream,
)
from eventmicro.service.deadletters import DEAD_LETTER_MAX_AGE, DEAD_LETTER_MAX_BYTES, dead_letter_stream
from eventmicro.transport.jetstream import ensure_stream
from schemas.shop.orders.v1 import orders_pb2 as orders

Eventually = Callable[..., Awaitable[None]]
JS_HEADER_LIMIT = 65_535  # nats-server stores no message with a larger header block


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


def block(headers: list[tuple[str, str]]) -> bytes:
    lines = b"".join(f"{name}: {value}\r\n".encode() for name, value in headers)
    return b"NATS/1.0\r\n" + lines + b"\r\n"


def cloud_event(event_id: str, *extra: tuple[str, str]) -> list[tuple[str, str]]:
    return [
        ("ce-specversion", "1.0"),
        ("ce-id", event_id),
        ("ce-source", "/attacker"),
        ("ce-type", "shop.orders.v1.OrderPlaced"),
        ("content-type", "application/protobuf"),
        *extra,
    ]


async def raw_hpub(server: NatsServer, subject: str, header_block: bytes, body: bytes) -> int:
    """Publish over a raw socket (no client library checks anything) and return the stream
    sequence from the PubAck, so the message is known to be stored."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        assert (await reader.readline()).startswith(b"INFO ")
        inbox = f"_INBOX.{uuid.uuid4().hex}"
        writer.write(b'CONNECT {"verbose":false,"pedantic":false,"headers":true,"protocol":1}\r\n')
        writer.write(f"SUB {inbox} 1\r\n".encode())
        size = len(header_block)
        writer.write(f"HPUB {subject} {inbox} {size} {size + len(body)}\r\n".encode())
        writer.write(header_block + body + b"\r\n")
        await writer.drain()
        while not (line := await reader.readline()).startswith(b"MSG "):
            assert not line.startswith(b"-ERR"), line
        ack = json.loads(await reader.readexactly(int(line.split()[-1])))
        assert "error" not in ack, ack  # the server stored it: the attack is the message itself
        return int(ack["seq"])
    finally:
        writer.close()


async def settled(server: NatsServer, stream: str, name: str, seq: int) -> int:
    """Wait until the consumer's ack floor is at ``seq`` with nothing pending (from then on the
    server delivers the message no more); how many deliveries it took."""
    nc = await nats.connect(server.url)
    try:
        async with asyncio.timeout(20):
            while True:
                info: ConsumerInfo = await nc.jetstream().consumer_info(stream, name)
                floor = info.ack_floor.stream_seq if info.ack_floor else 0
                if floor == seq and not info.num_ack_pending and info.delivered is not None:
                    return int(info.delivered.consumer_seq or 0)  # one per delivery, redeliveries too
                await asyncio.sleep(0.05)
    finally:
        await nc.close()


async def letters_of(dead: DeadLetters, service: str, count: int = 1) -> list[DeadLetter]:
    async with asyncio.timeout(20):
        while len(found := await dead.list(service)) < count:  # noqa: ASYNC110 - no event to wait on
            await asyncio.sleep(0.02)
    return found


async def durable_stream(conn: Connection) -> tuple[str, str]:
    name = unique("H")
    await ensure_stream(conn, Stream(name, [f"{name}.>"]))
    return name, f"{name}.placed"


# --- header names the publisher refuses ---------------------------------------------------------


async def test_a_header_name_eventmicro_cannot_publish_is_dead_lettered_after_max_deliver(
    nats_server: NatsServer, conn: Connection, eventually: Eventually
) -> None:
    """Was: `x/y` made every dead-letter publish fail, so the message was NAKed forever (61
    deliveries of 2 messages in 15 s, the ack floor never moved)."""
    stream, subject = await durable_stream(conn)
    svc = Service(unique("slash"), version="1.0.0")
    seen: list[str] = []
    broken = True

    @svc.subscribe(subject=subject, delivery=Durable(max_deliver=2, backoff=[0.05]))
    async def charge(event: orders.OrderPlaced) -> None:
        seen.append(event.order_id)
        if broken:
            raise RuntimeError("poison")

    body = orders.OrderPlaced(order_id="o-1").SerializeToString()
    dead = DeadLetters(conn)
    async with svc.serving(conn):
        seq = await raw_hpub(nats_server, subject, block(cloud_event("e-1", ("x/y", "1"))), body)
        (letter,) = await letters_of(dead, svc.name)
        deliveries = await settled(nats_server, stream, f"{svc.name}-charge", seq)
        assert deliveries == 2  # max_deliver, then dead-lettered and acked
        assert (letter.code, letter.reason, letter.deliveries) == (500, "RuntimeError", 2)
        assert (letter.stream, letter.stream_seq, letter.subject) == (stream, seq, subject)
        assert letter.headers["x/y"] == "1"  # kept as it came
        assert letter.event().get_id() == "e-1"
        assert letter.event().data_as(orders.OrderPlaced).order_id == "o-1"

        broken = False
        replayed = await dead.replay(letter.seq)
        await eventually(lambda: seen == ["o-1", "o-1", "o-1"])
        assert any("'x/y'" in note for note in replayed.lost)  # said, not silently dropped
        assert await dead.list(svc.name) == []


async def test_a_message_without_a_decodable_envelope_is_dead_lettered_once_not_looped(
    nats_server: NatsServer, conn: Connection
) -> None:
    stream, subject = await durable_stream(conn)
    svc = Service(unique("junk"), version="1.0.0")
    calls: list[str] = []

    @svc.subscribe(subject=subject, delivery=Durable(max_deliver=3, idempotent=60))
    async def take(event: orders.OrderPlaced) -> None:
        calls.append(event.order_id)

    dead = DeadLetters(conn)
    async with svc.serving(conn):
        header_block = block([("x/y", "1"), ("ce-specversion", "1.0"), ("ce-id", "\x01")])
        seq = await raw_hpub(nats_server, subject, header_block, b"\xff\xfe not an event")
        (letter,) = await letters_of(dead, svc.name)
        deliveries = await settled(nats_server, stream, f"{svc.name}-take", seq)
    assert deliveries == 1  # undecodable is terminal: dead-lettered at once
    assert letter.code == 400
    assert letter.reason  # the envelope error, readable
    assert letter.data == b"\xff\xfe not an event"
    assert letter.headers["x/y"] == "1"
    assert calls == []


# --- sizes --------------------------------------------------------------------------------------


def padded(event_id: str, total: int) -> tuple[bytes, str]:
    """A CloudEvent header block of exactly ``total`` bytes, and its big ``X-Padding`` value."""
    padding = "p" * (total - len(block(cloud_event(event_id, ("X-Padding", "")))))
    return block(cloud_event(event_id, ("X-Padding", padding))), padding


@pytest.mark.parametrize("body_size", ["small", "the rest of max_payload"])
async def test_headers_at_jetstreams_limit_are_dead_lettered_and_replayed(
    nats_server: NatsServer, conn: Connection, eventually: Eventually, body_size: str
) -> None:
    """Was: the dead letter's own headers pushed the block over JetStream's 64 KiB, the stream
    refused it, and the message was NAKed forever."""
    stream, subject = await durable_stream(conn)
    svc = Service(unique("wide"), version="1.0.0")
    seen: list[str] = []
    refuse = True

    @svc.subscribe(subject=subject, delivery=Durable(terminal=[ValueError]))
    async def take(event: orders.OrderPlaced) -> None:
        seen.append(event.order_id)
        if refuse:
            raise ValueError("refused")

    header_block, padding = padded("e-big", JS_HEADER_LIMIT - 20)
    room = 0 if body_size == "small" else conn.max_payload - len(header_block) - 32
    body = orders.OrderPlaced(order_id="o-big", customer_id="c" * room).SerializeToString()
    dead = DeadLetters(conn)
    async with svc.serving(conn):
        seq = await raw_hpub(nats_server, subject, header_block, body)
        (letter,) = await letters_of(dead, svc.name)
        deliveries = await settled(nats_server, stream, f"{svc.name}-take", seq)
        assert deliveries == 1
        assert (letter.reason, letter.stream_seq) == ("ValueError", seq)
        assert letter.headers["X-Padding"] == padding
        assert letter.event_id == "e-big"
        assert letter.body_dropped == (body_size != "small")  # the original stream keeps it
        assert letter.data == (b"" if letter.body_dropped else body)

        refuse = False
        replayed = await dead.replay(letter.seq)
        await eventually(lambda: seen == ["o-big", "o-big"])
    # the replay needs its own Nats-Msg-Id, which the padding leaves no room for
    assert replayed.lost == ("headers over JetStream's 64 KiB header limit: 'X-Padding'",)


async def test_a_50_kb_failure_text_is_kept_cut_to_1000_characters(
    nats_server: NatsServer, conn: Connection
) -> None:
    """The envelope error quotes the bad specversion: 50 KB of it next to 50 KB of original
    headers would not fit in one header block."""
    stream, subject = await durable_stream(conn)
    svc = Service(unique("long"), version="1.0.0")

    @svc.subscribe(subject=subject, delivery=Durable())
    async def take(event: orders.OrderPlaced) -> None:
        raise AssertionError("never decoded")

    version = "9" * 50_000
    dead = DeadLetters(conn)
    async with svc.serving(conn):
        header_block = block(
            [("ce-specversion", version), ("ce-id", "e-1"), ("ce-source", "/a"), ("ce-type", "t")]
        )
        seq = await raw_hpub(nats_server, subject, header_block, b"")
        (letter,) = await letters_of(dead, svc.name)
        deliveries = await settled(nats_server, stream, f"{svc.name}-take", seq)
    assert deliveries == 1
    assert letter.code == 400
    assert len(letter.reason) == 1000
    assert letter.reason.startswith("unsupported CloudEvents specversion '999")
    assert letter.reason.endswith("…")
    assert letter.headers["ce-specversion"] == version


# --- a dead-letter stream that cannot store -----------------------------------------------------


async def test_a_refusing_dead_letter_stream_costs_naks_with_a_growing_delay_then_the_letter_lands(
    fresh_nats_server: NatsServer, caplog: pytest.LogCaptureFixture
) -> None:
    """The dead letter cannot be stored (here the operator capped the stream's message size):
    the message stays, NAKed with a delay that doubles, one log line for several deliveries;
    once the stream takes it again the dead letter lands and the message is acked."""
    server = fresh_nats_server
    async with Connection(ConnectOptions.from_env(server.url, environ={})) as conn:
        stream, subject = await durable_stream(conn)
        svc = Service(unique("refused"), version="1.0.0")

        @svc.subscribe(subject=subject, delivery=Durable(max_deliver=1, backoff=[0.05]))
        async def take(event: orders.OrderPlaced) -> None:
            raise RuntimeError("poison")

        naks: list[int] = []

        async def record(msg: Msg) -> None:
            if msg.data.startswith(b"-NAK"):
                naks.append(json.loads(msg.data[len(b"-NAK ") :])["delay"])

        admin = await nats.connect(server.url)
        js = admin.jetstream()
        await admin.subscribe(f"$JS.ACK.{stream}.>", cb=record)
        caplog.set_level(logging.ERROR, "eventmicro.durable")
        async with svc.serving(conn):
            config = (await js.stream_info("DEADLETTERS")).config
            await js.update_stream(StreamConfig.evolve(config, max_msg_size=64))
            seq = await raw_hpub(server, subject, block(cloud_event("e-1")), b"")
            async with asyncio.timeout(20):
                while len(naks) < 2:  # noqa: ASYNC110 - no event to wait on
                    await asyncio.sleep(0.02)
            await js.update_stream(StreamConfig.evolve(config, max_msg_size=-1))
            (letter,) = await letters_of(DeadLetters(conn), svc.name)
            deliveries = await settled(server, stream, f"{svc.name}-take", seq)
        await admin.close()
    assert naks[:2] == [1_000_000_000, 2_000_000_000]  # 1 s, then doubled: never a hot loop
    assert deliveries == len(naks) + 1
    assert letter.reason == "RuntimeError"
    not_stored = [r for r in caplog.records if "not stored" in r.getMessage()]
    assert len(not_stored) == 1 < len(naks)


# --- the dead-letter stream's limits ------------------------------------------------------------


async def test_the_dead_letter_stream_is_bounded_and_a_declared_override_wins(
    fresh_nats_server: NatsServer,
) -> None:
    server = fresh_nats_server
    async with Connection(ConnectOptions.from_env(server.url, environ={})) as conn:
        _stream, subject = await durable_stream(conn)
        svc = Service(unique("limits"), version="1.0.0")

        @svc.subscribe(subject=subject, delivery=Durable(max_deliver=1))
        async def take(event: orders.OrderPlaced) -> None:
            raise RuntimeError("poison")

        admin = await nats.connect(server.url)
        js = admin.jetstream()
        async with svc.serving(conn):
            config = (await js.stream_info("DEADLETTERS")).config
        assert (config.max_bytes, config.max_age, config.discard) == (
            DEAD_LETTER_MAX_BYTES,
            DEAD_LETTER_MAX_AGE,
            DiscardPolicy.OLD,
        )

        overridden = Service(
            svc.name,
            version="1.0.0",
            streams=[dead_letter_stream(max_bytes=1 << 20, max_age=3600, max_msgs=2)],
        )
        overridden.subscribe(subject=subject, delivery=Durable(max_deliver=1))(take)
        async with overridden.serving(conn):
            for i in range(3):
                await raw_hpub(server, subject, block(cloud_event(f"e-{i}")), b"")
            async with asyncio.timeout(20):
                while (await js.stream_info("DEADLETTERS")).state.last_seq < 3:  # noqa: ASYNC110 - no event to wait on
                    await asyncio.sleep(0.02)
            config = (await js.stream_info("DEADLETTERS")).config
            letters = await DeadLetters(conn).list(svc.name)
        await admin.close()
    assert (config.max_bytes, config.max_age, config.max_msgs) == (1 << 20, 3600, 2)
    assert [letter.event_id for letter in letters] == ["e-1", "e-2"]  # the oldest was discarded


async def test_an_existing_dead_letter_stream_is_adopted_as_it_is(fresh_nats_server: NatsServer) -> None:
    server = fresh_nats_server
    admin = await nats.connect(server.url)
    js = admin.jetstream()
    await js.add_stream(name="DEADLETTERS", subjects=["deadletter.>"], max_age=7200)
    async with Connection(ConnectOptions.from_env(server.url, environ={})) as conn:
        _stream, subject = await durable_stream(conn)
        svc = Service(unique("adopt"), version="1.0.0")

        @svc.subscribe(subject=subject, delivery=Durable())
        async def take(event: orders.OrderPlaced) -> None:
            pass

        async with svc.serving(conn):
            config = (await js.stream_info("DEADLETTERS")).config
    await admin.close()
    assert (config.max_age, config.max_bytes) == (7200, -1)  # the operator's settings stay


async def test_a_small_jetstream_store_still_gets_a_dead_letter_stream(tmp_path: Path) -> None:
    """The 1 GiB default is reserved in the store: a server with less gets the stream
    without a byte limit (a warning says so) rather than no dead letters at all."""
    small = f'jetstream {{ store_dir: "{tmp_path}", max_file_store: 64MB }}'
    with NatsServer(jetstream=False, extra_config=small) as server:
        conn = await Connection(ConnectOptions.from_env(server.url, environ={})).open()
        try:
            await ensure_stream(conn, Stream("SMALL", ["small.>"]))
            svc = Service(unique("small"), version="1.0.0")

            @svc.subscribe(subject="small.orders", delivery=Durable())
            async def on_placed(event: orders.OrderPlaced) -> None: ...

            async with svc.serving(conn):
                reply = await conn.request("$JS.API.STREAM.INFO.DEADLETTERS", b"", timeout=2)
                config = json.loads(reply.data)["config"]
                assert config["max_bytes"] == -1
                assert config["max_age"] > 0
        finally:
            await conn.close()
