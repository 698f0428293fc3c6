"""The reference shop's saga in one process on a fresh server: confirmation, rejection for lack
of stock, and the compensation of a declined payment (the stock comes back).

A handler delivered again after it changed state but before its event was stored (a crash, or a
failed durable publish) still announces the event, otherwise the order waits for ever."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from eventmicro import BadRequest, Client, Connection, ConnectOptions, NatsServer, Store
from eventmicro.transport.jetstream import subject_counts
from schemas.shop.billing.v1 import billing_pb2 as billing
from schemas.shop.inventory.v1 import inventory_pb2 as inventory
from schemas.shop.inventory.v1.inventory_micro import InventoryClient
from schemas.shop.orders.v1 import orders_pb2 as orders
from schemas.shop.orders.v1.orders_micro import OrdersClient
from subscribers import (
    audit,
    notifications,
    shop,
)
from subscribers import (
    billing as billing_service,
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
        for module in (orders_service, inventory_service, billing_service, notifications, audit):
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


async def stored(client: Client, event_type: str, at_least: int = 1) -> int:
    """How many events of ``event_type`` the SHOP stream holds, once there are ``at_least``."""
    async with asyncio.timeout(10):
        while True:
            counts = await subject_counts(client.connection, "SHOP")
            if counts.get(f"events.{event_type}", 0) >= at_least:
                return counts[f"events.{event_type}"]
            await asyncio.sleep(0.05)


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


# --- a handler delivered again after it changed state but before its event was stored ----------


def pending_order(order_id: str) -> orders.Order:
    return orders.Order(
        order_id=order_id,
        customer_id="c-1",
        items=[orders.LineItem(sku="sku-001", quantity=2, unit_price_cents=shop.PRICE_CENTS)],
        total_cents=2 * shop.PRICE_CENTS,
        currency="EUR",
        status=orders.ORDER_STATUS_PENDING,
    )


async def test_billing_announces_a_payment_recorded_by_an_attempt_that_died(
    fresh_nats_server: NatsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shop, "FAIL_PERCENT", 0)
    async with running_shop(fresh_nats_server.url) as client:
        order = pending_order("ord-crashed0001")
        await (await Store.open(client.connection, "orders", orders.Order)).put(order.order_id, order)
        payments = await Store.open(client.connection, "payments", billing.Payment)
        # the first attempt stored the payment, then died before PaymentCaptured was stored
        await payments.put(
            order.order_id,
            billing.Payment(order_id=order.order_id, payment_id="pay-1", amount_cents=2500, captured=True),
        )
        await client.publish(
            inventory.StockReserved(order_id=order.order_id, items=order.items, total_cents=2500),
            durable=True,
        )
        assert await stored(client, "shop.billing.v1.PaymentCaptured") == 1
        assert (await settled(client, order.order_id)).status == orders.ORDER_STATUS_CONFIRMED


async def test_orders_announce_a_settlement_stored_by_an_attempt_that_died(
    fresh_nats_server: NatsServer,
) -> None:
    async with running_shop(fresh_nats_server.url) as client:
        order = pending_order("ord-crashed0002")
        order.status = orders.ORDER_STATUS_CONFIRMED  # settled, but OrderConfirmed never stored
        await (await Store.open(client.connection, "orders", orders.Order)).put(order.order_id, order)
        await client.publish(
            billing.PaymentCaptured(order_id=order.order_id, payment_id="pay-2", amount_cents=2500),
            durable=True,
        )
        assert await stored(client, "shop.orders.v1.OrderConfirmed") == 1


async def test_inventory_announces_a_reservation_stored_by_an_attempt_that_died(
    fresh_nats_server: NatsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shop, "FAIL_PERCENT", 0)
    async with running_shop(fresh_nats_server.url) as client:
        order = pending_order("ord-crashed0003")
        await (await Store.open(client.connection, "orders", orders.Order)).put(order.order_id, order)
        stock = await Store.open(client.connection, "stock", inventory.StockLevel)
        await stock.put(
            "sku-001", inventory.StockLevel(sku="sku-001", available=shop.INITIAL_STOCK - 2, reserved=2)
        )
        reservations = await Store.open(client.connection, "reservations", inventory_service.Reservation)
        await reservations.put(order.order_id, inventory_service.Reservation("reserved", {"sku-001": 2}))
        await client.publish(
            orders.OrderPlaced(
                order_id=order.order_id, customer_id="c-1", items=order.items, total_cents=2500
            ),
            durable=True,
        )
        assert await stored(client, "shop.inventory.v1.StockReserved") == 1
        level = await stock.get("sku-001")
        assert level is not None
        assert level.value is not None
        assert level.value.available == shop.INITIAL_STOCK - 2  # not taken twice
