"""A message no one should be able to send must not make a service deaf.

Each attack is sent with a raw TCP socket speaking the NATS protocol to a real nats-server;
the service under attack runs on its own eventmicro connection. Before the fix one such
message stopped the connection's reader for good: every instance answered nothing while
its health said ready.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import pytest_asyncio

from eventmicro import Client, Connection, ConnectOptions, NatsServer, Service
from eventmicro.observability.health import check
from schemas.shop.orders.v1 import orders_pb2 as orders

Eventually = Callable[..., Awaitable[None]]

BAD_HEADER_BLOCKS = [
    b"NATS/1.0 \xff\xfe\xfd\r\n\r\n",  # the status line is not UTF-8
    b"NATS/1.0",  # a bare version line
    b"NATS/1.0\r\n",  # not terminated
    b"HTTP/1.1 200 OK\r\n\r\n",  # another protocol's version line
    b"NATS/1.0 503 \x80\r\n\r\n",
    b"NATS/1.0\r\n\xff\xfe: x\r\nce-type\r\n: \r\n\r\n",  # junk lines (skipped, message kept)
]


class RawNats:
    """A bare NATS client on a TCP socket: what an attacker with network access has."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, server: NatsServer) -> RawNats:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        info = await reader.readline()
        assert info.startswith(b"INFO ")
        writer.write(b'CONNECT {"verbose":false,"pedantic":false,"headers":true,"no_responders":true}\r\n')
        writer.write(b"PING\r\n")
        await writer.drain()
        assert await reader.readline() == b"PONG\r\n"  # the server took the CONNECT
        return cls(reader, writer)

    async def hpub(
        self, subject: bytes, header_block: bytes, payload: bytes = b"", reply: bytes = b""
    ) -> None:
        total = len(header_block) + len(payload)
        line = (
            b"HPUB " + subject + (b" " + reply if reply else b"") + b" %d %d\r\n" % (len(header_block), total)
        )
        self.writer.write(line + header_block + payload + b"\r\n")
        await self.round_trip()

    async def pub(self, subject: bytes, payload: bytes) -> None:
        self.writer.write(b"PUB " + subject + b" %d\r\n" % len(payload) + payload + b"\r\n")
        await self.round_trip()

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
async def raw(nats_server: NatsServer) -> AsyncIterator[RawNats]:
    client = await RawNats.connect(nats_server)
    yield client
    await client.close()


def _service() -> Service:
    svc = Service("steady", version="1.0.0")

    @svc.rpc
    async def place(req: orders.PlaceOrder) -> orders.OrderAccepted:
        return orders.OrderAccepted(order_id=req.customer_id)

    @svc.subscribe(subject="hostile.events.>")
    async def seen(event: orders.OrderPlaced) -> None:
        received.append(event.order_id)

    received: list[str] = []
    svc.received = received  # type: ignore[attr-defined]
    return svc


async def _ping(conn: Connection) -> dict[str, object]:
    reply = await conn.request("$SRV.PING.steady", b"", timeout=2)
    answer: dict[str, object] = json.loads(reply.data)
    return answer


@pytest.mark.parametrize("block", BAD_HEADER_BLOCKS, ids=range(len(BAD_HEADER_BLOCKS)))
async def test_a_malformed_header_block_is_dropped_and_the_service_keeps_answering(
    nats_server: NatsServer, nats_connection: Connection, raw: RawNats, block: bytes, eventually: Eventually
) -> None:
    svc = _service()
    service_conn = await Connection(ConnectOptions.from_env(nats_server.url, environ={})).open()
    try:
        async with svc.serving(service_conn) as running:
            client = Client(nats_connection)
            # aimed at discovery, at an endpoint (with a reply subject) and at an event handler
            await raw.hpub(b"$SRV.PING", block)
            await raw.hpub(b"steady.place", block, b"x", reply=b"attacker.inbox")
            await raw.hpub(b"hostile.events.a", block, b"\x00")
            # a call right after succeeds, discovery answers, events still arrive
            reply = await client.call(
                "steady.place", orders.PlaceOrder(customer_id="c1"), returns=orders.OrderAccepted, timeout=2
            )
            assert reply.order_id == "c1"
            assert (await _ping(nats_connection))["name"] == "steady"
            await client.publish(orders.OrderPlaced(order_id="o1"), subject="hostile.events.b")
            await nats_connection.flush()
            await eventually(lambda: "o1" in svc.received)  # type: ignore[attr-defined]
            assert check(running).ready
            assert service_conn.stats.reader_restarts == 0  # nothing stopped the reader
    finally:
        await service_conn.close()


async def test_malformed_messages_are_counted(
    nats_server: NatsServer, nats_connection: Connection, raw: RawNats
) -> None:
    svc = _service()
    service_conn = await Connection(ConnectOptions.from_env(nats_server.url, environ={})).open()
    try:
        async with svc.serving(service_conn):
            unreadable = [BAD_HEADER_BLOCKS[0], BAD_HEADER_BLOCKS[1], BAD_HEADER_BLOCKS[3]]
            for block in unreadable:
                await raw.hpub(b"$SRV.PING", block)
            await _ping(nats_connection)  # processed in order after the attack
            await service_conn.flush()
            assert service_conn.stats.malformed == len(unreadable)
    finally:
        await service_conn.close()


async def test_a_subject_that_is_not_utf8_does_not_stop_a_wildcard_subscriber(
    nats_server: NatsServer, nats_connection: Connection, raw: RawNats, eventually: Eventually
) -> None:
    svc = _service()
    service_conn = await Connection(ConnectOptions.from_env(nats_server.url, environ={})).open()
    try:
        async with svc.serving(service_conn):
            await raw.pub(b"hostile.events.\xff\xfe", b"data")
            await raw.pub(b"hostile.events.\xc3", b"data")
            client = Client(nats_connection)
            await client.publish(orders.OrderPlaced(order_id="after"), subject="hostile.events.c")
            await eventually(lambda: "after" in svc.received)  # type: ignore[attr-defined]
            await service_conn.flush()
            assert service_conn.stats.malformed == 2
    finally:
        await service_conn.close()


async def test_a_reply_with_a_malformed_header_block_does_not_stop_the_caller(
    nats_server: NatsServer, nats_connection: Connection
) -> None:
    """A hostile responder answers with a bad header block: that call times out, the next works."""
    raw = await RawNats.connect(nats_server)
    try:
        raw.writer.write(b"SUB hostile.rpc 1\r\n")
        await raw.round_trip()
        caller = Client(nats_connection)
        call = asyncio.ensure_future(nats_connection.request("hostile.rpc", b"q", timeout=1))
        line = await raw.reader.readline()  # MSG hostile.rpc 1 <reply> 1
        inbox = line.split()[3]
        await raw.reader.readexactly(1 + 2)
        await raw.hpub(inbox, b"NATS/1.0 \xff\r\n\r\n", b"answer")
        with pytest.raises(TimeoutError):
            await call
        svc = _service()
        async with svc.serving(nats_connection):
            reply = await caller.call(
                "steady.place", orders.PlaceOrder(customer_id="c2"), returns=orders.OrderAccepted, timeout=2
            )
            assert reply.order_id == "c2"
    finally:
        await raw.close()


async def test_a_reader_that_dies_reconnects_at_once_and_is_not_ready_meanwhile(
    nats_server: NatsServer, nats_connection: Connection, eventually: Eventually
) -> None:
    """Whatever stops the reader (here a fault injected into nats-py's parser on one
    message), the connection reconnects instead of staying deaf."""
    svc = _service()
    service_conn = await Connection(ConnectOptions.from_env(nats_server.url, environ={})).open()
    nc = service_conn._client
    parse, reconnect = nc._ps.parse, nc._process_op_err
    ready_while_reconnecting: list[bool] = []

    async def faulty(data: bytes = b"") -> None:
        if b"poison-pill" in data:
            raise RuntimeError("injected parser fault")
        await parse(data)

    try:
        async with svc.serving(service_conn) as running:

            async def observed(error: Exception) -> None:
                await reconnect(error)
                ready_while_reconnecting.append(check(running).ready)

            nc._ps.parse = faulty  # type: ignore[method-assign]
            nc._process_op_err = observed  # type: ignore[method-assign,assignment]
            await nats_connection.publish("hostile.events.x", b"poison-pill")
            await eventually(lambda: service_conn.stats.reader_restarts == 1)
            assert ready_while_reconnecting == [False]
            await eventually(lambda: check(running).ready)
            client = Client(nats_connection)
            reply = await client.call(
                "steady.place", orders.PlaceOrder(customer_id="c3"), returns=orders.OrderAccepted, timeout=5
            )
            assert reply.order_id == "c3"
    finally:
        await service_conn.close()


async def test_a_cancelled_reader_is_not_taken_for_a_crash(nats_server: NatsServer) -> None:
    """Cancelling the reader (what closing or tearing down a loop does) is no reason to reconnect."""
    conn = await Connection(ConnectOptions.from_env(nats_server.url, environ={})).open()
    try:
        reader = conn._client._reading_task
        assert reader is not None
        reader.cancel()
        with pytest.raises(asyncio.CancelledError):
            await reader
        assert conn.stats.reader_restarts == 0
    finally:
        await conn.close()


async def test_a_subject_the_server_would_choke_on_is_refused_before_sending(
    nats_connection: Connection,
) -> None:
    """nats-server cuts a connection whose protocol line is over 4 KiB, and nats-py then closes
    it for good: a service publishing an event with a huge type must not lose its connection."""
    client = Client(nats_connection)
    with pytest.raises(ValueError, match="nothing was sent"):
        await client.publish(orders.OrderPlaced(order_id="x"), subject="events." + "t" * 5000)
    with pytest.raises(ValueError, match="nothing was sent"):
        await nats_connection.request("q." + "t" * 5000, b"", timeout=1)
    assert nats_connection.is_connected
    await nats_connection.flush()  # the connection still works
