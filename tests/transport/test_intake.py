"""Subscriptions with ``concurrency``: workers, their bounded buffer and what it drops, on a real
nats-server."""

from __future__ import annotations

import asyncio

from eventmicro import Connection, Message


async def test_at_most_concurrency_handlers_run_and_they_start_in_arrival_order(conn: Connection) -> None:
    release = asyncio.Event()
    started: list[int] = []
    running = 0
    most = 0

    async def handler(msg: Message) -> None:
        nonlocal running, most
        started.append(int(msg.data))
        running += 1
        most = max(most, running)
        await release.wait()
        running -= 1

    subscription = await conn.subscribe("intake.order", handler, concurrency=3)
    for i in range(20):
        await conn.publish("intake.order", str(i).encode())
    await conn.flush()
    async with asyncio.timeout(5):
        while subscription.pending != 17:  # noqa: ASYNC110 - a counter has no event to wait on
            await asyncio.sleep(0.01)
    assert most == 3
    release.set()
    async with asyncio.timeout(5):
        while len(started) < 20:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    assert started == list(range(20))
    assert most == 3
    assert subscription.dropped == 0


async def test_a_full_buffer_drops_counts_and_keeps_what_fits(conn: Connection) -> None:
    release = asyncio.Event()
    handled: list[bytes] = []

    async def handler(msg: Message) -> None:
        await release.wait()
        handled.append(msg.data)

    subscription = await conn.subscribe(
        "intake.full", handler, concurrency=1, pending_msgs_limit=1000, pending_bytes_limit=10 * 1024
    )
    body = b"x" * 1024
    for _ in range(30):  # one runs, about nine fit in 10 KiB, the rest are dropped
        await conn.publish("intake.full", body)
    await conn.flush()
    async with asyncio.timeout(5):
        while subscription.pending + subscription.dropped < 29:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    assert subscription.dropped == 29 - subscription.pending
    assert 1 <= subscription.pending <= 10
    assert subscription.slow(60)
    assert conn.stats.slow_consumer >= subscription.dropped
    kept = subscription.pending
    release.set()
    async with asyncio.timeout(5):
        while len(handled) < 1 + kept:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    await conn.publish("intake.full", b"after")  # room again: nothing more is dropped
    async with asyncio.timeout(5):
        while handled[-1:] != [b"after"]:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    assert subscription.dropped == 29 - kept


async def test_drain_waits_for_buffered_messages_and_unsubscribe_drops_them(conn: Connection) -> None:
    gate = asyncio.Event()
    handled: list[bytes] = []

    async def handler(msg: Message) -> None:
        await gate.wait()
        handled.append(msg.data)

    draining = await conn.subscribe("intake.drain", handler, concurrency=1)
    for i in range(5):
        await conn.publish("intake.drain", b"%d" % i)
    await conn.flush()
    async with asyncio.timeout(5):
        while draining.pending != 4:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    drain = asyncio.create_task(draining.drain())
    await asyncio.sleep(0)  # the drain has begun and waits on the handler
    assert not drain.done()
    gate.set()
    await asyncio.wait_for(drain, 5)
    assert handled == [b"0", b"1", b"2", b"3", b"4"]

    stuck = asyncio.Event()
    dropped: list[bytes] = []

    async def slow(msg: Message) -> None:
        dropped.append(msg.data)
        await stuck.wait()

    cut = await conn.subscribe("intake.cut", slow, concurrency=1)
    for i in range(5):
        await conn.publish("intake.cut", b"%d" % i)
    await conn.flush()
    async with asyncio.timeout(5):
        while cut.pending != 4:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    await cut.unsubscribe()
    assert cut.pending == 0
    stuck.set()
    await conn.flush()
    assert dropped == [b"0"]  # only the one already running: the buffered four were never handled
