"""A review of the core message path as an attacker would try it, over a raw NATS socket.

Each test sends the attack with a bare TCP client speaking the NATS protocol to a real
nats-server; the subscriber or service under attack runs on its own eventmicro connection.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import pytest_asyncio

from eventmicro import Connection, NatsServer, Service
from eventmicro.transport.connection import Message
from schemas.shop.orders.v1 import orders_pb2 as orders

Eventually = Callable[..., Awaitable[None]]


class Raw:
    """A bare NATS client on a TCP socket: what an attacker with network access has."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, server: NatsServer) -> Raw:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        assert (await reader.readline()).startswith(b"INFO ")
        writer.write(b'CONNECT {"verbose":false,"pedantic":false,"headers":true}\r\nPING\r\n')
        await writer.drain()
        assert await reader.readline() == b"PONG\r\n"
        return cls(reader, writer)

    def hpub(self, subject: bytes, header_block: bytes, payload: bytes = b"") -> None:
        size = len(header_block)
        self.writer.write(
            b"HPUB %s %d %d\r\n%s%s\r\n" % (subject, size, size + len(payload), header_block, payload)
        )

    async def round_trip(self) -> None:
        """PING/PONG: the server has processed (and routed) everything sent before."""
        self.writer.write(b"PING\r\n")
        await self.writer.drain()
        while (line := await self.reader.readline()) != b"PONG\r\n":
            assert line, "the server closed the raw connection"

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


@pytest_asyncio.fixture
async def raw(nats_server: NatsServer) -> AsyncIterator[Raw]:
    client = await Raw.connect(nats_server)
    yield client
    await client.close()


def _event_block(padding: int, ce_type: str = "shop.orders.v1.OrderPlaced") -> bytes:
    return (
        b"NATS/1.0\r\nce-specversion: 1.0\r\nce-id: 1\r\nce-source: /attacker\r\n"
        b"ce-datacontenttype: application/protobuf\r\nce-type: %s\r\nx-pad: %s\r\n\r\n"
        % (ce_type.encode(), b"p" * padding)
    )


async def test_header_bytes_count_against_a_subscriptions_buffer(
    service_conn: Connection, raw: Raw, eventually: Eventually
) -> None:
    """nats-py bounds a subscription's buffer by payload bytes only: messages with an empty
    body and a 100 KB header block were all buffered (3,000 of them grew a service by
    290 MiB, under a 128 MiB limit). Header blocks count now, so the limit holds."""
    release = asyncio.Event()
    handled: list[Message] = []

    async def stuck(msg: Message) -> None:
        await release.wait()
        handled.append(msg)

    limit = 1024 * 1024
    sub = await service_conn.subscribe("review.headers", stuck, pending_bytes_limit=limit)
    block = _event_block(100_000)
    for _ in range(40):  # 4 MB of header blocks, no payload, at a 1 MiB buffer
        raw.hpub(b"review.headers", block)
    await raw.round_trip()
    await service_conn.flush()
    await eventually(lambda: sub.dropped + sub.pending + len(handled) >= 39)  # the first is being handled
    assert sub.dropped > 0  # the buffer overflowed: dropped and counted, not kept
    assert sub.pending * len(block) <= limit
    release.set()
    await eventually(lambda: sub.pending == 0 and len(handled) + sub.dropped == 40)
    assert sub._sub.pending_bytes == 0  # what was handled was taken off the count again


async def test_a_flood_of_bad_events_costs_one_log_line_not_one_each(
    service_conn: Connection, raw: Raw, eventually: Eventually, caplog: pytest.LogCaptureFixture
) -> None:
    """Any client can send events a handler refuses (not a CloudEvent, another type): each
    wrote a warning, so 3,000 of them wrote 3,000 lines. They are counted; the log gets one
    line per 10 s per handler, saying how many it held back."""
    caplog.set_level(logging.WARNING, logger="eventmicro.service")
    svc = Service("review-log", version="1.0.0")
    handled: list[str] = []

    @svc.subscribe(subject="review.log.orders")
    async def on_placed(event: orders.OrderPlaced) -> None:
        handled.append(event.order_id)

    async with svc.serving(service_conn) as running:
        for index in range(300):
            if index % 2:
                raw.hpub(b"review.log.orders", b"NATS/1.0\r\nce-type: x\r\n\r\n", b"junk")  # no CloudEvent
            else:
                raw.hpub(b"review.log.orders", _event_block(0, "shop.billing.v1.PaymentFailed"))
        good = orders.OrderPlaced(order_id="o1").SerializeToString()
        raw.hpub(b"review.log.orders", _event_block(0), good)
        await raw.round_trip()
        stats = running.event_stats["on_placed"]
        await eventually(lambda: handled == ["o1"] and stats.num_errors == 300)
    lines = [r for r in caplog.records if "not handled by on_placed" in r.getMessage()]
    assert len(lines) == 1


async def test_a_reply_subject_seen_once_does_not_let_anyone_answer_the_next_call(
    service_conn: Connection, nats_connection: Connection, raw: Raw, eventually: Eventually
) -> None:
    """Any service a caller calls sees the caller's reply subject. Reply tokens came from a
    counter, so after one call the next token was known: a forged reply (or a forged
    ``503`` status, read as no responders) published there won the race against the real
    one. Tokens carry 64 random bits now."""
    seen: list[str] = []
    genuine = asyncio.Event()

    async def responder(msg: Message) -> None:
        seen.append(msg.reply)
        if len(seen) > 1:
            await genuine.wait()  # the second call is answered once the attacker has tried
        await nats_connection.publish(msg.reply, b"genuine")

    await nats_connection.subscribe("review.forge", responder)
    assert (await service_conn.request("review.forge", b"1", timeout=5)).data == b"genuine"
    prefix, _, token = seen[0].rpartition(".")
    second = asyncio.create_task(service_conn.request("review.forge", b"2", timeout=5))
    await eventually(lambda: len(seen) == 2)
    for step in range(1, 50):  # the next tokens as a counter would make them, plain and suffixed
        for guess in (f"{int(token, 16) + step:x}", f"{int(token[:-16] or '0', 16) + step:x}{token[-16:]}"):
            raw.hpub(f"{prefix}.{guess}".encode(), b"NATS/1.0\r\n\r\n", b"forged")
            raw.hpub(f"{prefix}.{guess}".encode(), b"NATS/1.0 503\r\n\r\n")
    await raw.round_trip()
    await service_conn.flush()
    genuine.set()
    assert (await second).data == b"genuine"
