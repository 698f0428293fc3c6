"""The reference shop against hostile orders (issue 12, item 14): ``orders.place`` answers 400
with a clear message for what inventory could not take, and no order stays pending, whoever
publishes the ``OrderPlaced`` and whatever inventory does with it.

Each test runs the shop's services on a nats-server of its own and talks to them over NATS:
the typed client, raw requests with JSON bodies (as the gateway's fuzzer sent them), and raw
durable publishes of ``OrderPlaced`` (as any other client may).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator

import pytest

from eventmicro import BadRequest, Client, Connection, ConnectOptions, DeadLetters, NatsServer, Store
from schemas.shop.inventory.v1 import inventory_pb2 as inventory
from schemas.shop.orders.v1 import orders_pb2 as orders
from schemas.shop.orders.v1.orders_micro import OrdersClient
from subscribers import audit, billing, shop
from subscribers import inventory as inventory_service
from subscribers import orders as orders_service

FINAL = (orders.ORDER_STATUS_CONFIRMED, orders.ORDER_STATUS_CANCELLED)
INT64_MAX = 2**63 - 1
INT32_MAX = 2**31 - 1


@contextlib.asynccontextmanager
async def running_shop(url: str) -> AsyncIterator[Client]:
    async with (
        Connection(ConnectOptions.from_env(url, environ={})) as conn,
        contextlib.AsyncExitStack() as stack,
    ):
        for module in (orders_service, inventory_service, billing, audit):
            await stack.enter_async_context(module.svc.serving(conn))
        yield Client(conn, source="/test-shop-input")


async def settled(client: Client, order_id: str) -> orders.Order:
    """The order once the saga has settled it (the orders bucket has no event to wait on)."""
    store = await Store.open(client.connection, "orders", orders.Order)
    async with asyncio.timeout(20):
        while True:
            entry = await store.get(order_id)
            if entry is not None and entry.value is not None and entry.value.status in FINAL:
                return entry.value
            await asyncio.sleep(0.02)


def line(sku: str = "sku-001", quantity: int = 1, price: int = shop.PRICE_CENTS) -> orders.LineItem:
    return orders.LineItem(sku=sku, quantity=quantity, unit_price_cents=price)


REFUSED = [
    # (what the fuzzer or a careless caller sent, what the 400 says)
    ([line(quantity=INT32_MAX, price=INT64_MAX)], "quantity must be 1 to 10,000, not 2147483647"),
    ([line(quantity=10, price=INT64_MAX)], "unitPriceCents must be 0 to 100,000,000"),
    ([line(sku="bad sku*")], "item 1: sku 'bad sku*' is not a SKU"),
    ([line(), line(sku="x" * 1000)], "item 2: sku 'xxxxxxxx"),
    ([line(sku="")], "item 1: sku '' is not a SKU"),
    ([line(sku="-x")], "is not a SKU"),
    ([line(sku="sku-001.b")], "is not a SKU"),
    ([line(price=-1)], "unitPriceCents must be 0 to 100,000,000, not -1"),
    ([line(price=-INT64_MAX)], "unitPriceCents must be 0 to"),
    ([line(quantity=0)], "quantity must be 1 to 10,000, not 0"),
    ([line(quantity=-5)], "quantity must be 1 to 10,000, not -5"),
    ([line()] * 101, "an order has at most 100 items"),
    ([], "an order needs at least one item"),
]


async def test_place_answers_400_for_what_inventory_could_not_take_and_stores_nothing(
    fresh_nats_server: NatsServer,
) -> None:
    async with running_shop(fresh_nats_server.url) as client:
        place = OrdersClient(client)
        for items, message in REFUSED:
            with pytest.raises(BadRequest) as refused:
                await place.place(orders.PlaceOrder(customer_id="c-1", items=items), timeout=5)
            assert message in refused.value.detail, (items[:1], refused.value.detail)
            assert len(refused.value.detail) < 200  # a 1,000-character SKU is not echoed back whole
        for request, message in [
            (orders.PlaceOrder(items=[line()]), "customerId must be 1 to 128 printable characters"),
            (orders.PlaceOrder(customer_id="c\x1b[2J", items=[line()]), "customerId must be"),
            (orders.PlaceOrder(customer_id="c-1", currency="euro", items=[line()]), "three capital letters"),
        ]:
            with pytest.raises(BadRequest, match=message):
                await place.place(request, timeout=5)
        store = await Store.open(client.connection, "orders", orders.Order)
        assert await store.keys() == []  # nothing refused was kept, so nothing waits for ever

        # the largest order allowed is taken, its total exact
        big = [line(sku=f"sku-{n:03d}", quantity=1, price=shop.MAX_UNIT_PRICE_CENTS) for n in range(100)]
        accepted = await place.place(orders.PlaceOrder(customer_id="c-2", items=big), timeout=5)
        assert accepted.total_cents == 100 * shop.MAX_UNIT_PRICE_CENTS
        assert (await settled(client, accepted.order_id)).status in FINAL


async def test_the_fuzzers_json_request_is_a_400_not_a_500(fresh_nats_server: NatsServer) -> None:
    """The request the OpenAPI fuzzer sent, as JSON in a raw request: an int64 total overflow."""
    body = {
        "customerId": "c-1",
        "items": [{"sku": "sku-001", "quantity": INT32_MAX, "unitPriceCents": str(INT64_MAX)}],
    }
    headers = {
        "ce-specversion": "1.0",
        "ce-id": uuid.uuid4().hex,
        "ce-source": "/fuzzer",
        "ce-type": "shop.orders.v1.PlaceOrder",
        "ce-datacontenttype": "application/json",
    }
    async with running_shop(fresh_nats_server.url) as client:
        reply = await client.connection.request(
            "orders.place", json.dumps(body).encode(), headers=headers, timeout=5
        )
    assert reply.headers is not None
    assert reply.headers["Nats-Service-Error-Code"] == "400"
    assert "quantity must be 1 to 10,000" in reply.headers["Nats-Service-Error"]


async def pending(client: Client, order_id: str, items: list[orders.LineItem]) -> None:
    """A pending order in the orders bucket, as orders.place of another version might keep it."""
    order = orders.Order(
        order_id=order_id, customer_id="c-1", items=items, status=orders.ORDER_STATUS_PENDING
    )
    await (await Store.open(client.connection, "orders", orders.Order)).put(order_id, order)


@pytest.mark.parametrize(
    ("items", "reason"),
    [
        ([line(sku="bad sku*")], "rejected: item 1: sku 'bad sku*' is not a SKU"),
        ([line(sku="sku-004", quantity=-30)], "rejected: item 1: quantity must be 1 to 10,000, not -30"),
    ],
)
async def test_an_order_placed_by_another_publisher_that_inventory_cannot_take_is_cancelled(
    fresh_nats_server: NatsServer, items: list[orders.LineItem], reason: str
) -> None:
    async with running_shop(fresh_nats_server.url) as client:
        order_id = f"ord-{uuid.uuid4().hex[:12]}"
        await pending(client, order_id, items)
        await client.publish(
            orders.OrderPlaced(order_id=order_id, customer_id="c-1", items=items), durable=True
        )
        order = await settled(client, order_id)
        assert order.status == orders.ORDER_STATUS_CANCELLED
        assert order.reason.startswith(reason)
        level = await client.call(
            "inventory.get_stock",
            inventory.GetStockRequest(sku="sku-004"),
            returns=inventory.StockLevel,
            timeout=5,
        )
        assert level.available == shop.INITIAL_STOCK  # a negative quantity added no stock
        assert await DeadLetters(client.connection).list("inventory") == []  # rejected, not dead


async def test_an_order_whose_event_inventory_dead_letters_is_cancelled(
    fresh_nats_server: NatsServer,
) -> None:
    async with running_shop(fresh_nats_server.url) as client:
        # another writer corrupted the stock of sku-005: inventory cannot read it, and gives up
        # on every order of that SKU at once (an undecodable value is not retried)
        await (await Store.open(client.connection, "stock", str)).put("sku-005", "\x00 not a level")
        accepted = await OrdersClient(client).place(
            orders.PlaceOrder(customer_id="c-1", items=[line(sku="sku-005", quantity=2)]), timeout=5
        )
        order = await settled(client, accepted.order_id)
        assert order.status == orders.ORDER_STATUS_CANCELLED
        assert order.reason == "inventory could not reserve it"
        letters = await DeadLetters(client.connection).list("inventory", "on_order_placed")
        assert [letter.event_type for letter in letters] == ["shop.orders.v1.OrderPlaced"]
