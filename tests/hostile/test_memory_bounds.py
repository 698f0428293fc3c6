"""What a sender can make a service keep is bounded in bytes, not in entries.

The binding remembers the codings of values that repeat (type, source, content type) and the
names of extension headers. Before the fix those caches kept 4,096 entries of any size, so
requests with unique 900 KB ``ce-type`` values grew a service by 1.29 GB, kept for good. Each
attack here goes over a real socket to a service on a real nats-server; Python's own
allocation tracer measures what stays allocated afterwards.

A subscription's buffer is bounded in bytes too, header blocks included: nats-py counted
payload bytes only, so messages with an empty body and a huge header block were all kept.
"""

from __future__ import annotations

import asyncio
import gc
import sys
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest_asyncio

from eventmicro import Connection, ConnectOptions, NatsServer, Service
from eventmicro.transport.connection import Message
from schemas.shop.orders.v1 import orders_pb2 as orders

sys.path.insert(0, str(Path(__file__).parent))
from raw_nats import Raw, event_block

Eventually = Callable[..., Awaitable[None]]

MIB = 1024 * 1024
ATTACKS = 120
SIZE = 200 * 1024  # per unique value: 120 x 200 KiB = 23 MiB sent, several copies if kept


def _service() -> Service:
    svc = Service("frugal", version="1.0.0")

    @svc.rpc
    async def place(req: orders.PlaceOrder) -> orders.OrderAccepted:
        return orders.OrderAccepted(order_id=req.customer_id)

    return svc


def _headers(index: int, **extra: str) -> dict[str, str]:
    return {
        "ce-specversion": "1.0",
        "ce-id": f"attack-{index}",
        "ce-source": "/attacker",
        "ce-type": "shop.orders.v1.PlaceOrder",
        "ce-datacontenttype": "application/protobuf",
        **extra,
    }


async def _retained_after(caller: Connection, server: NatsServer, headers_of: list[dict[str, str]]) -> int:
    """Bytes still allocated once the service answered every attack request."""
    body = orders.PlaceOrder(customer_id="c").SerializeToString()
    conn = await Connection(ConnectOptions.from_env(server.url, environ={})).open()
    try:
        async with _service().serving(conn):
            await caller.request("frugal.place", body, headers=_headers(-1), timeout=5)  # warm up
            gc.collect()
            tracemalloc.start()
            try:
                before = tracemalloc.get_traced_memory()[0]
                for headers in headers_of:
                    reply = await caller.request("frugal.place", body, headers=headers, timeout=5)
                    assert reply.headers is not None  # answered (a reply or an error reply)
                gc.collect()
                return tracemalloc.get_traced_memory()[0] - before
            finally:
                tracemalloc.stop()
    finally:
        await conn.close()


async def test_unique_huge_attribute_values_are_not_kept(
    nats_connection: Connection, nats_server: NatsServer
) -> None:
    attacks = [
        _headers(i, **{"ce-source": f"/{i}/" + "s" * SIZE, "ce-subject": f"{i}" + "x" * SIZE})
        for i in range(ATTACKS)
    ]
    assert await _retained_after(nats_connection, nats_server, attacks) < 8 * MIB


async def test_unique_huge_type_values_are_not_kept(
    nats_connection: Connection, nats_server: NatsServer
) -> None:
    attacks = [_headers(i, **{"ce-type": f"t{i}." + "t" * SIZE}) for i in range(ATTACKS)]
    assert await _retained_after(nats_connection, nats_server, attacks) < 8 * MIB


async def test_unique_huge_extension_names_are_not_kept(
    nats_connection: Connection, nats_server: NatsServer
) -> None:
    attacks = [_headers(i, **{f"ce-{i}" + "e" * SIZE: "v"}) for i in range(ATTACKS)]
    assert await _retained_after(nats_connection, nats_server, attacks) < 8 * MIB


# --- header bytes count against a subscription's buffer -----------------------------------------


@pytest_asyncio.fixture
async def raw(nats_server: NatsServer) -> AsyncIterator[Raw]:
    client = await Raw.connect(nats_server)
    yield client
    await client.close()


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
    block = event_block(100_000)
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
