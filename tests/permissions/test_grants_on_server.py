"""The grants the shop does not exercise, on a real nats-server: a service calling another
(``calls=``), an ordered replay (``Ordered``), a durable handler on a stream named in
``Durable(stream=...)``, and a key-value store read, listed, watched and written, all under
users configured from `for_service` alone, with no refusal anywhere.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import nkeys
import pytest_asyncio

from eventmicro import (
    Client,
    Connection,
    ConnectOptions,
    Context,
    Durable,
    NatsServer,
    Ordered,
    Service,
    Store,
    Stream,
)
from eventmicro.service.permissions import Permissions, admin, for_service
from eventmicro.service.serverconf import render
from schemas.shop.inventory.v1 import inventory_pb2 as inventory
from schemas.shop.orders.v1 import orders_pb2 as orders

Eventually = Callable[..., Awaitable[None]]
LEDGER = Stream("LEDGER", ["events.shop.orders.>"])
seen_in_order: list[str] = []
reserved: list[str] = []

stock = Service("stock", version="1.0.0", stores=["levels"])


@stock.rpc
async def level(req: inventory.GetStockRequest, ctx: Context) -> inventory.StockLevel:
    levels = await ctx.store("levels", inventory.StockLevel)
    entry = await levels.get(req.sku)
    return entry.value if entry is not None and entry.value is not None else inventory.StockLevel(sku=req.sku)


ledger = Service(
    "ledger",
    version="1.0.0",
    streams=[LEDGER],
    publishes=[orders.OrderPlaced],
    calls=["stock"],
    stores=["books"],
)


@ledger.rpc
async def record(req: orders.PlaceOrder, ctx: Context) -> orders.OrderAccepted:
    sku = req.items[0].sku
    found = await ctx.call("stock.level", inventory.GetStockRequest(sku=sku), returns=inventory.StockLevel)
    books = await ctx.store("books", inventory.StockLevel)
    await books.put(req.customer_id, found)
    assert req.customer_id in await books.keys()
    assert len(await books.history(req.customer_id)) >= 1
    await ctx.publish(orders.OrderPlaced(order_id=req.customer_id, customer_id=req.customer_id), durable=True)
    return orders.OrderAccepted(order_id=req.customer_id, total_cents=found.available)


@ledger.subscribe(delivery=Ordered(stream="LEDGER"))
async def replay(event: orders.OrderPlaced) -> None:
    seen_in_order.append(event.order_id)


@ledger.subscribe(name="reserve", delivery=Durable(stream="LEDGER"))
async def reserve(event: orders.OrderPlaced) -> None:
    reserved.append(event.order_id)


def seed_file(folder: Path, user: str) -> tuple[Path, str]:
    seed = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
    path = folder / f"{user}.nk"
    path.write_bytes(seed)
    return path, nkeys.from_seed(bytearray(seed)).public_key.decode()


@pytest_asyncio.fixture
async def users(tmp_path: Path) -> AsyncIterator[tuple[NatsServer, dict[str, tuple[Path, Permissions]]]]:
    grants = [for_service(stock), for_service(ledger), admin("ops")]
    keyed = {grant.user: (seed_file(tmp_path, grant.user), grant) for grant in grants}
    text = render("APP", [(grant, public) for (_, public), grant in keyed.values()])
    server = await NatsServer(extra_config=text).astart()
    try:
        yield server, {user: (seed, grant) for user, ((seed, _), grant) in keyed.items()}
    finally:
        await asyncio.to_thread(server.close)


def connection(server: NatsServer, seed: Path, grant: Permissions) -> Connection:
    return Connection(
        ConnectOptions.from_env(
            server.url, environ={}, nkey_seed_file=str(seed), inbox_prefix=grant.inbox, connect_attempts=1
        )
    )


async def test_calls_replays_durables_and_stores_work_with_exactly_their_grants(
    users: tuple[NatsServer, dict[str, tuple[Path, Permissions]]], eventually: Eventually
) -> None:
    server, by_user = users
    seen_in_order.clear()
    reserved.clear()
    async with (
        connection(server, *by_user["stock"]) as stock_conn,
        connection(server, *by_user["ledger"]) as ledger_conn,
        connection(server, *by_user["ops"]) as ops,
        stock.serving(stock_conn),
        ledger.serving(ledger_conn),
    ):
        client = Client(ops, source="/ops")
        async with asyncio.timeout(20):
            for n in range(3):
                item = orders.LineItem(sku="sku-1", quantity=1)
                request = orders.PlaceOrder(customer_id=f"c-{n}", items=[item])
                await client.call("ledger.record", request, returns=orders.OrderAccepted, timeout=5)
        await eventually(lambda: len(seen_in_order) == 3 and len(reserved) == 3)
        assert seen_in_order == ["c-0", "c-1", "c-2"]
        assert sorted(reserved) == ["c-0", "c-1", "c-2"]
        books = await Store.open(ledger_conn, "books", inventory.StockLevel)  # as the ledger's user
        async with books.watch() as updates:
            first = await anext(aiter(updates))
            await books.put("c-9", inventory.StockLevel(sku="sku-9"))
            async with asyncio.timeout(10):
                async for entry in updates:
                    if entry.key == "c-9":
                        break
        assert first.key.startswith("c-")
        for conn in (stock_conn, ledger_conn):
            assert (conn.stats.denied_publish, conn.stats.denied_subscribe) == (0, 0)
