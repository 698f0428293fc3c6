"""Subscriptions whose messages go from the reader to their handler (``direct=True``), on a real
nats-server: what reaches the handler, what a failing handler or a hostile header block does to
the connection, and that nothing arrives after unsubscribing."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from eventmicro import Connection, Message, NatsServer

sys.path.insert(0, str(Path(__file__).parents[1] / "hostile"))
from raw_nats import Raw


async def test_a_direct_handler_gets_subject_headers_reply_and_arrival(conn: Connection) -> None:
    got: asyncio.Queue[Message] = asyncio.Queue()

    async def handler(msg: Message) -> None:
        got.put_nowait(msg)

    await conn.subscribe("direct.basic", handler, direct=True)
    reply = conn.new_inbox()
    await conn.publish("direct.basic", b"body", headers={"ce-id": "1", "x-a": "b"}, reply=reply)
    msg = await asyncio.wait_for(got.get(), 5)
    assert (msg.subject, msg.data, msg.reply) == ("direct.basic", b"body", reply)
    assert msg.headers == {"ce-id": "1", "x-a": "b"}
    assert msg.received > 0.0


async def test_a_failing_direct_handler_does_not_stop_the_reader(conn: Connection) -> None:
    seen: list[bytes] = []

    async def handler(msg: Message) -> None:
        seen.append(msg.data)
        if msg.data == b"boom":
            raise RuntimeError("the handler's own bug")

    await conn.subscribe("direct.fails", handler, direct=True)
    await conn.publish("direct.fails", b"boom")
    await conn.publish("direct.fails", b"after")
    await conn.flush()
    async with asyncio.timeout(5):
        while seen != [b"boom", b"after"]:  # noqa: ASYNC110 - a list has no event to wait on
            await asyncio.sleep(0.01)
    # and the connection still answers requests: its reader runs
    await conn.subscribe("direct.echo", lambda m: conn.publish(m.reply, m.data), direct=True)
    assert (await conn.request("direct.echo", b"ping", timeout=5)).data == b"ping"


async def test_a_malformed_header_block_to_a_direct_subscription_is_dropped_and_counted(
    nats_server: NatsServer, conn: Connection
) -> None:
    seen: list[bytes] = []

    async def handler(msg: Message) -> None:
        seen.append(msg.data)

    await conn.subscribe("direct.hostile", handler, direct=True)
    before = conn.stats.malformed
    raw = await Raw.connect(nats_server)
    try:
        raw.hpub(b"direct.hostile", b"NATS/1.0 \xff\r\n\r\n", b"bad")
        raw.hpub(b"direct.hostile", b"NATS/1.0\r\nce-id: 2\r\n\r\n", b"good")
        await raw.round_trip()
    finally:
        await raw.close()
    await conn.flush()
    async with asyncio.timeout(5):
        while seen != [b"good"]:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    assert conn.stats.malformed == before + 1


async def test_nothing_reaches_a_direct_handler_after_unsubscribe(conn: Connection) -> None:
    seen: list[bytes] = []

    async def handler(msg: Message) -> None:
        seen.append(msg.data)

    subscription = await conn.subscribe("direct.gone", handler, direct=True)
    await conn.publish("direct.gone", b"1")
    await conn.flush()
    async with asyncio.timeout(5):
        while seen != [b"1"]:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    await subscription.unsubscribe()
    witness: asyncio.Queue[bytes] = asyncio.Queue()

    async def later(msg: Message) -> None:
        witness.put_nowait(msg.data)

    await conn.subscribe("direct.gone", later)  # a second subscriber sees what is sent next
    await conn.publish("direct.gone", b"2")
    assert await asyncio.wait_for(witness.get(), 5) == b"2"
    assert seen == [b"1"]
