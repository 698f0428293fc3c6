"""What a sender can make a service keep is bounded in bytes, not in entries.

The binding remembers the codings of values that repeat (type, source, content type) and the
names of extension headers. Before the fix those caches kept 4,096 entries of any size, so
requests with unique 900 KB ``ce-type`` values grew a service by 1.29 GB, kept for good. Each
attack here goes over a real socket to a service on a real nats-server; Python's own
allocation tracer measures what stays allocated afterwards.
"""

from __future__ import annotations

import gc
import tracemalloc

from eventmicro import Connection, ConnectOptions, NatsServer, Service
from schemas.shop.orders.v1 import orders_pb2 as orders

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
