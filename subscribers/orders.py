"""The orders service: takes orders over RPC and settles them as the saga's events arrive.

Orders live in the key-value bucket ``orders`` (shared by every instance); a status changes
only by compare-and-set, so two instances never overwrite each other. ``place`` answers 400 for
an order inventory could not reserve (`subscribers.shop.items_problem`), and an order whose
``OrderPlaced`` inventory dead-lettered anyway is cancelled: no order stays pending for ever.
"""

from __future__ import annotations

import re
import uuid
from typing import Final

from eventmicro import BadRequest, Conflict, Context, Durable, NotFound, RevisionConflict, Service, Store
from schemas.shop.billing.v1 import billing_pb2 as billing
from schemas.shop.inventory.v1 import inventory_pb2 as inventory
from schemas.shop.orders.v1 import orders_pb2 as orders
from subscribers.shop import OUT_OF_STOCK, STREAM, items_problem, main

svc = Service(
    "orders",
    version="1.0.0",
    description="Takes orders and settles them",
    streams=[STREAM],
    publishes=[orders.OrderPlaced, orders.OrderConfirmed, orders.OrderCancelled],
    stores=["orders"],
)
FINAL = (orders.ORDER_STATUS_CONFIRMED, orders.ORDER_STATUS_CANCELLED)
CURRENCY: Final = re.compile(r"[A-Z]{3}")  # ISO 4217
MAX_CUSTOMER_ID: Final = 128
# where inventory's dead letters of OrderPlaced land (deadletter.<service>.<handler>, stream DEADLETTERS)
INVENTORY_DEAD_LETTERS: Final = "deadletter.inventory.on_order_placed"


async def _orders(ctx: Context) -> Store[orders.Order]:
    return await ctx.store("orders", orders.Order)


@svc.rpc
async def place(req: orders.PlaceOrder, ctx: Context) -> orders.OrderAccepted:
    if problem := items_problem(req.items):
        raise BadRequest(problem)
    if not req.customer_id or len(req.customer_id) > MAX_CUSTOMER_ID or not req.customer_id.isprintable():
        raise BadRequest(f"customerId must be 1 to {MAX_CUSTOMER_ID} printable characters")
    if req.currency and not CURRENCY.fullmatch(req.currency):
        raise BadRequest("currency must be three capital letters (ISO 4217), or empty for EUR")
    order = orders.Order(
        order_id=f"ord-{uuid.uuid4().hex[:12]}",
        customer_id=req.customer_id,
        items=req.items,
        total_cents=sum(item.quantity * item.unit_price_cents for item in req.items),
        currency=req.currency or "EUR",
        status=orders.ORDER_STATUS_PENDING,
    )
    order.placed_at.GetCurrentTime()
    await (await _orders(ctx)).put(order.order_id, order, expected_revision=0)
    await ctx.publish(
        orders.OrderPlaced(
            order_id=order.order_id,
            customer_id=order.customer_id,
            items=order.items,
            total_cents=order.total_cents,
            currency=order.currency,
            placed_at=order.placed_at,
        ),
        durable=True,
    )
    return orders.OrderAccepted(order_id=order.order_id, total_cents=order.total_cents)


@svc.rpc
async def get(req: orders.GetOrder, ctx: Context) -> orders.Order:
    entry = await (await _orders(ctx)).get(req.order_id)
    if entry is None or entry.value is None:
        raise NotFound(f"no order {req.order_id}")
    return entry.value


@svc.rpc
async def cancel(req: orders.CancelOrder, ctx: Context) -> orders.Order:
    order = await _settle(ctx, req.order_id, orders.ORDER_STATUS_CANCELLED, req.reason or "cancelled")
    if order is None:
        raise Conflict(f"order {req.order_id} is already settled")
    return order


@svc.subscribe(delivery=Durable(idempotent=True))
async def on_payment_captured(event: billing.PaymentCaptured, ctx: Context) -> None:
    await _settle(ctx, event.order_id, orders.ORDER_STATUS_CONFIRMED, "", again=True)


@svc.subscribe(delivery=Durable(idempotent=True))
async def on_payment_failed(event: billing.PaymentFailed, ctx: Context) -> None:
    await _settle(
        ctx, event.order_id, orders.ORDER_STATUS_CANCELLED, f"payment failed: {event.reason}", again=True
    )


@svc.subscribe(delivery=Durable(idempotent=True))
async def on_stock_rejected(event: inventory.StockRejected, ctx: Context) -> None:
    reason = f"out of stock: {event.sku}" if event.reason == OUT_OF_STOCK else f"rejected: {event.reason}"
    await _settle(ctx, event.order_id, orders.ORDER_STATUS_CANCELLED, reason, again=True)


@svc.subscribe(subject=INVENTORY_DEAD_LETTERS, delivery=Durable(stream="DEADLETTERS", idempotent=True))
async def on_reservation_dead_lettered(event: orders.OrderPlaced, ctx: Context) -> None:
    """Inventory gave up on an order's ``OrderPlaced`` (its dead letter keeps the event): it
    will never reserve nor reject it, so the order is cancelled instead of pending for ever.
    A replay of that dead letter later finds the reservation cancelled and does nothing."""
    await _settle(
        ctx, event.order_id, orders.ORDER_STATUS_CANCELLED, "inventory could not reserve it", again=True
    )


async def _settle(
    ctx: Context, order_id: str, status: int, reason: str, *, again: bool = False
) -> orders.Order | None:
    """Move a pending order to its final ``status`` and announce it; ``None`` if it was settled.

    ``again``: an order already settled with this ``status`` is announced again (an event
    delivered again may come from an attempt that stored the status but died before its event
    was stored); duplicates of the announcement are harmless downstream.
    """
    store = await _orders(ctx)
    while True:
        entry = await store.get(order_id)
        if entry is None or entry.value is None:
            raise NotFound(f"no order {order_id}")  # not retried for ever: dead-lettered
        order = entry.value
        if order.status in FINAL:
            if not again or order.status != status:
                return None
            reason = order.reason
            break
        order.status = status  # type: ignore[assignment]
        order.reason = reason
        try:
            await store.put(order_id, order, expected_revision=entry.revision)
        except RevisionConflict:
            continue  # another instance changed it meanwhile: read again
        break
    if status == orders.ORDER_STATUS_CONFIRMED:
        await ctx.publish(orders.OrderConfirmed(order_id=order_id), durable=True)
    else:
        await ctx.publish(orders.OrderCancelled(order_id=order_id, reason=reason), durable=True)
    return order


if __name__ == "__main__":
    main(svc)
