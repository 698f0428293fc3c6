"""The plugin's test helpers: `capture` / `wait_for` on a real server, and `TestContext` /
`call_handler` for calling handlers directly with their calls and publishes replaced."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from eventmicro import Client, Connection, Context, Event, NoResponders, Service
from eventmicro.pytest_plugin import TestContext, call_handler, capture
from schemas.shop.inventory.v1 import inventory_pb2 as inventory
from schemas.shop.orders.v1 import orders_pb2 as orders


def _shop() -> tuple[Service, list[str]]:
    svc = Service("helpers", version="1.0.0")
    seen: list[str] = []

    @svc.rpc
    async def place(req: orders.PlaceOrder, ctx: Context) -> orders.OrderAccepted:
        stock = await ctx.call(
            "inventory.get_stock", inventory.GetStockRequest(sku="s-1"), returns=inventory.StockLevel
        )
        if stock.available < 1:
            raise ValueError("out of stock")
        await ctx.publish(orders.OrderPlaced(order_id="o-1", customer_id=req.customer_id))
        return orders.OrderAccepted(order_id="o-1")

    @svc.subscribe
    async def placed(event: orders.OrderPlaced) -> None:
        seen.append(event.order_id)

    return svc, seen


async def test_capture_waits_for_events_by_type_name_and_by_class(nats_connection: Connection) -> None:
    prefix = f"cap.{uuid.uuid4().hex[:8]}"
    client = Client(nats_connection)
    async with capture(nats_connection, f"{prefix}.>") as events:
        await client.publish(orders.OrderPlaced(order_id="a"), subject=f"{prefix}.one")
        await nats_connection.publish(f"{prefix}.raw", b"not an event")
        waiting = asyncio.ensure_future(events.wait_for(type="shop.orders.v1.OrderPlaced", count=2))
        await client.publish(orders.OrderCancelled(order_id="x"), subject=f"{prefix}.two")
        await client.publish(orders.OrderPlaced(order_id="b"), subject=f"{prefix}.three")
        found = await waiting
        assert [e.data_as(orders.OrderPlaced).order_id for e in found] == ["a", "b"]
        assert all(isinstance(e, Event) for e in found)
        (cancelled,) = await events.wait_for(type=orders.OrderCancelled)
        assert cancelled == orders.OrderCancelled(order_id="x")
        assert [m.data for m in events.undecodable] == [b"not an event"]


async def test_wait_for_says_what_arrived_when_it_gives_up(nats_connection: Connection) -> None:
    subject = f"cap.{uuid.uuid4().hex[:8]}"
    async with capture(nats_connection, subject) as events:
        await Client(nats_connection).publish(orders.OrderCancelled(order_id="x"), subject=subject)
        await events.wait_for()
        with pytest.raises(AssertionError, match=r"OrderPlaced.*got \['shop.orders.v1.OrderCancelled'\]"):
            await events.wait_for(type=orders.OrderPlaced, timeout=0.2)


async def test_a_handler_runs_with_its_calls_faked_and_its_publishes_recorded() -> None:
    svc, _ = _shop()
    ctx = TestContext(svc, calls={"inventory.get_stock": lambda req: inventory.StockLevel(available=3)})
    reply = await call_handler(svc, "place", orders.PlaceOrder(customer_id="c-1"), ctx)
    assert reply == orders.OrderAccepted(order_id="o-1")
    assert ctx.messages(orders.OrderPlaced) == [orders.OrderPlaced(order_id="o-1", customer_id="c-1")]
    assert ctx.published_to == ["events.shop.orders.v1.OrderPlaced"]
    assert ctx.calls == [("inventory.get_stock", inventory.GetStockRequest(sku="s-1"))]


async def test_an_async_fake_and_a_missing_or_wrong_fake() -> None:
    svc, _ = _shop()

    async def empty(req: inventory.GetStockRequest) -> inventory.StockLevel:
        return inventory.StockLevel(available=0)

    with pytest.raises(ValueError, match="out of stock"):
        await call_handler(
            svc, "place", orders.PlaceOrder(), TestContext(svc, calls={"inventory.get_stock": empty})
        )
    with pytest.raises(NoResponders):  # as if the inventory service were not running
        await call_handler(svc, "place", orders.PlaceOrder())
    wrong = TestContext(svc, calls={"inventory.get_stock": lambda req: orders.OrderAccepted()})
    with pytest.raises(TypeError, match="OrderAccepted, not StockLevel"):
        await call_handler(svc, "place", orders.PlaceOrder(), wrong)


async def test_with_a_connection_the_publishes_are_sent_too(nats_connection: Connection) -> None:
    svc, seen = _shop()
    ctx = TestContext(
        svc,
        connection=nats_connection,
        calls={"inventory.get_stock": lambda req: inventory.StockLevel(available=1)},
    )
    async with capture(nats_connection, orders.OrderPlaced) as events:
        await call_handler(svc, "place", orders.PlaceOrder(customer_id="c-9"), ctx)
        (placed,) = await events.wait_for(type=orders.OrderPlaced)
    assert placed.customer_id == "c-9"
    await call_handler(svc, "placed", placed)  # an event handler without a context
    assert seen == ["o-1"]


async def test_an_unknown_handler_name_lists_the_known_ones() -> None:
    svc, _ = _shop()
    with pytest.raises(LookupError, match="has no handler 'plaec' \\(it has place, placed\\)"):
        await call_handler(svc, "plaec", orders.PlaceOrder())
