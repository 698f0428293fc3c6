"""Generated code on a real nats-server: skeleton subclasses served, called through generated clients."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from eventmicro import BadRequest, Client, Connection, Context, NotFound, Timeout
from schemas.shop.inventory.v1 import inventory_pb2 as inventory
from schemas.shop.inventory.v1.inventory_micro import INVENTORY_SERVICE, InventoryBase, InventoryClient
from schemas.shop.orders.v1 import orders_pb2 as orders
from schemas.shop.orders.v1.orders_micro import ORDERS_SERVICE, OrdersBase, OrdersClient

SLOW = "o-slow"  # orders.get of this order takes longer than any caller waits


class Orders(OrdersBase):
    """An in-memory orders service; records the budget and correlation id each get saw."""

    def __init__(self) -> None:
        self.orders: dict[str, orders.Order] = {}
        self.gets: list[tuple[float | None, str | None]] = []
        self.slow_started = asyncio.Event()

    async def place(self, request: orders.PlaceOrder, ctx: Context) -> orders.OrderAccepted:
        if not request.items:
            raise BadRequest("an order needs items")
        order_id = f"o-{len(self.orders) + 1}"
        total = sum(item.quantity * item.unit_price_cents for item in request.items)
        self.orders[order_id] = orders.Order(
            order_id=order_id,
            customer_id=request.customer_id,
            items=request.items,
            total_cents=total,
            status=orders.ORDER_STATUS_PENDING,
        )
        return orders.OrderAccepted(order_id=order_id, total_cents=total)

    async def get(self, request: orders.GetOrder, ctx: Context) -> orders.Order:
        self.gets.append((ctx.remaining(), ctx.correlation_id))
        if request.order_id == SLOW:
            self.slow_started.set()
            await asyncio.sleep(5)
        if request.order_id not in self.orders:
            raise NotFound(f"no order {request.order_id}")
        return self.orders[request.order_id]

    async def cancel(self, request: orders.CancelOrder, ctx: Context) -> orders.Order:
        order = await self.get(orders.GetOrder(order_id=request.order_id), ctx)
        order.status = orders.ORDER_STATUS_CANCELLED
        order.reason = request.reason
        return order


class Inventory(InventoryBase):
    """Stock "of an order" (its sku is an order id): asks orders through the client built on ctx."""

    def __init__(self) -> None:
        self.correlation_ids: list[str | None] = []

    async def get_stock(self, request: inventory.GetStockRequest, ctx: Context) -> inventory.StockLevel:
        self.correlation_ids.append(ctx.correlation_id)
        order = await OrdersClient(ctx).get(orders.GetOrder(order_id=request.sku))
        return inventory.StockLevel(sku=request.sku, reserved=sum(i.quantity for i in order.items))


@pytest_asyncio.fixture
async def served(nats_connection: Connection) -> AsyncIterator[tuple[Orders, Inventory, Client]]:
    orders_impl, inventory_impl = Orders(), Inventory()
    async with (
        orders_impl.service(version="1.0.0", description="orders, generated").serving(nats_connection),
        inventory_impl.service(version="1.0.0").serving(nats_connection),
    ):
        yield orders_impl, inventory_impl, Client(nats_connection)


PLACE = orders.PlaceOrder(
    customer_id="c-1",
    items=[orders.LineItem(sku="apple", quantity=3, unit_price_cents=50)],
    currency="EUR",
)


async def test_typed_round_trip(served: tuple[Orders, Inventory, Client]) -> None:
    _, _, client = served
    assert (ORDERS_SERVICE, INVENTORY_SERVICE) == ("orders", "inventory")
    shop = OrdersClient(client)
    accepted = await shop.place(PLACE, timeout=2)
    assert isinstance(accepted, orders.OrderAccepted)
    assert (accepted.order_id, accepted.total_cents) == ("o-1", 150)
    order = await shop.get(orders.GetOrder(order_id=accepted.order_id))
    assert isinstance(order, orders.Order)
    assert (order.customer_id, list(order.items), order.status) == (
        "c-1",
        list(PLACE.items),
        orders.ORDER_STATUS_PENDING,
    )
    cancelled = await shop.cancel(orders.CancelOrder(order_id="o-1", reason="changed my mind"))
    assert (cancelled.status, cancelled.reason) == (orders.ORDER_STATUS_CANCELLED, "changed my mind")


async def test_service_errors_come_back_typed(served: tuple[Orders, Inventory, Client]) -> None:
    _, _, client = served
    shop = OrdersClient(client)
    with pytest.raises(NotFound, match="no order o-404") as not_found:
        await shop.get(orders.GetOrder(order_id="o-404"))
    assert not_found.value.code == 404
    with pytest.raises(BadRequest, match="an order needs items"):
        await shop.place(orders.PlaceOrder(customer_id="c-1"))
    # through a second hop: the error orders raised inside inventory's handler reaches the caller
    with pytest.raises(NotFound, match="no order o-405"):
        await InventoryClient(client).get_stock(inventory.GetStockRequest(sku="o-405"))


async def test_a_client_on_ctx_passes_the_deadline_and_correlation_on(
    served: tuple[Orders, Inventory, Client],
) -> None:
    orders_impl, inventory_impl, client = served
    accepted = await OrdersClient(client).place(PLACE)
    stock = await InventoryClient(client).get_stock(
        inventory.GetStockRequest(sku=accepted.order_id), timeout=1.0
    )
    assert (stock.sku, stock.reserved) == (accepted.order_id, 3)
    [(budget, correlation)] = orders_impl.gets
    assert budget is not None
    assert 0 < budget <= 1.0  # what was left of the caller's 1 s, not the 5 s default of a new call
    assert correlation is not None
    assert correlation == inventory_impl.correlation_ids[0]


async def test_the_callers_deadline_bounds_the_nested_call(served: tuple[Orders, Inventory, Client]) -> None:
    orders_impl, _, client = served
    started = time.monotonic()
    with pytest.raises(Timeout):  # the caller's own deadline; the inner call gave up with it
        await InventoryClient(client).get_stock(inventory.GetStockRequest(sku=SLOW), timeout=0.4)
    assert time.monotonic() - started < 2
    assert orders_impl.slow_started.is_set()
    [(budget, _)] = orders_impl.gets
    assert budget is not None
    assert budget <= 0.4
