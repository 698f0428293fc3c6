"""The reference shop's saga in one process on a fresh server: confirmation, rejection for lack
of stock, and the compensation of a declined payment (the stock comes back)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from eventmicro import BadRequest, Client, Connection, ConnectOptions, NatsServer, Store
from schemas.shop.inventory.v1 import inventory_pb2 as inventory
from schemas.shop.inventory.v1.inventory_micro import InventoryClient
from schemas.shop.orders.v1 import orders_pb2 as orders
from schemas.shop.orders.v1.orders_micro import OrdersClient
from subscribers import (
    audit,
    billing,
    notifications,
    shop,
)
from subscribers import (
    inventory as inventory_service,
)
from subscribers import (
    orders as orders_service,
)

FINAL = (orders.ORDER_STATUS_CONFIRMED, orders.ORDER_STATUS_CANCELLED)


@contextlib.asynccontextmanager
async def running_shop(url: str) -> AsyncIterator[Client]:
    async with (
        Connection(ConnectOptions.from_env(url, environ={})) as conn,
        contextlib.AsyncExitStack() as stack,
    ):
        for module in (orders_service, inventory_service, billing, notifications, audit):
            await stack.enter_async_context(module.svc.serving(conn))
        yield Client(conn, source="/test-shop")


async def settled(client: Client, order_id: str) -> orders.Order:
    """The order once the saga has settled it (the orders bucket has no event to wait on)."""
    store = await Store.open(client.connection, "orders", orders.Order)
    async with asyncio.timeout(20):
        while True:
            entry = await store.get(order_id)
            if entry is not None and entry.value is not None and entry.value.status in FINAL:
                return entry.value
            await asyncio.sleep(0.02)


def item(sku: str, quantity: int) -> orders.LineItem:
    return orders.LineItem(sku=sku, quantity=quantity, unit_price_cents=shop.PRICE_CENTS)


async def test_orders_are_confirmed_rejected_or_compensated(
    fresh_nats_server: NatsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shop, "FAIL_PERCENT", 0)
    async with running_shop(fresh_nats_server.url) as client:
        place, stock = OrdersClient(client), InventoryClient(client)
        with pytest.raises(BadRequest):
            await place.place(orders.PlaceOrder(customer_id="c-0"))

        confirmed = await place.place(orders.PlaceOrder(customer_id="c-1", items=[item("sku-001", 5)]))
        order = await settled(client, confirmed.order_id)
        assert order.status == orders.ORDER_STATUS_CONFIRMED
        level = await stock.get_stock(inventory.GetStockRequest(sku="sku-001"))
        assert (level.available, level.reserved) == (shop.INITIAL_STOCK - 5, 5)

        too_many = await place.place(orders.PlaceOrder(customer_id="c-2", items=[item("sku-002", 999)]))
        order = await settled(client, too_many.order_id)
        assert order.status == orders.ORDER_STATUS_CANCELLED
        assert order.reason == "out of stock: sku-002"
        assert (
            await stock.get_stock(inventory.GetStockRequest(sku="sku-002"))
        ).available == shop.INITIAL_STOCK

        monkeypatch.setattr(shop, "FAIL_PERCENT", 100)  # every payment is declined from here on
        declined = await place.place(orders.PlaceOrder(customer_id="c-3", items=[item("sku-003", 7)]))
        order = await settled(client, declined.order_id)
        assert order.status == orders.ORDER_STATUS_CANCELLED
        assert order.reason == "payment failed: card declined"

        async def released() -> bool:
            level = await stock.get_stock(inventory.GetStockRequest(sku="sku-003"))
            return level.available == shop.INITIAL_STOCK and level.reserved == 0

        async with asyncio.timeout(20):
            while not await released():  # noqa: ASYNC110 - the compensation has no event of its own here
                await asyncio.sleep(0.05)
        assert (
            await place.get(orders.GetOrder(order_id=declined.order_id))
        ).reason == "payment failed: card declined"
