"""The inventory service: reserves stock for placed orders and gives it back on compensation.

Stock levels live in the key-value bucket ``stock`` (one ``StockLevel`` per SKU, created at
``INITIAL_STOCK`` on first use) and change only by compare-and-set, so the two instances of the
demo never lose an update. Each order's reservation is recorded in the bucket
``reservations`` so that a redelivered event neither reserves nor releases twice. An order it
cannot take (an unusable SKU, a quantity out of bounds: `subscribers.shop.items_problem`, the
rule ``orders.place`` applies too) is rejected with ``StockRejected``, never left unanswered.
"""

from __future__ import annotations

import dataclasses

from eventmicro import BadRequest, Context, Durable, RevisionConflict, Service, Store
from schemas.shop.billing.v1 import billing_pb2 as billing
from schemas.shop.inventory.v1 import inventory_pb2 as inventory
from schemas.shop.orders.v1 import orders_pb2 as orders
from subscribers.shop import INITIAL_STOCK, OUT_OF_STOCK, STREAM, items_problem, main, sku_problem

svc = Service(
    "inventory",
    version="1.0.0",
    description="Stock levels and reservations",
    streams=[STREAM],
    publishes=[inventory.StockReserved, inventory.StockRejected, inventory.StockReleased],
    stores=["stock", "reservations"],
)


@dataclasses.dataclass
class Reservation:
    """What one order holds: ``state`` is reserved, rejected, released or cancelled; a rejection
    keeps the SKU and the reason it announced."""

    state: str
    items: dict[str, int] = dataclasses.field(default_factory=dict)
    sku: str = ""
    reason: str = OUT_OF_STOCK


class Shortage(Exception):
    def __init__(self, sku: str) -> None:
        super().__init__(sku)
        self.sku = sku


@svc.rpc
async def get_stock(req: inventory.GetStockRequest, ctx: Context) -> inventory.StockLevel:
    if problem := sku_problem(req.sku):
        raise BadRequest(problem)
    entry = await (await ctx.store("stock", inventory.StockLevel)).get(req.sku)
    if entry is None or entry.value is None:
        return inventory.StockLevel(sku=req.sku, available=INITIAL_STOCK, reserved=0)
    return entry.value


@svc.subscribe(delivery=Durable(idempotent=True))
async def on_order_placed(event: orders.OrderPlaced, ctx: Context) -> None:
    reservations = await ctx.store("reservations", Reservation)
    held = await reservations.get(event.order_id)
    if held is not None:  # reserved, rejected or cancelled before: nothing to take again, but
        if held.value is not None and held.value.state == "reserved":  # the attempt that decided
            await _announce_reserved(ctx, event)  # may have died before announcing it
        elif held.value is not None and held.value.state == "rejected":
            await _announce_rejected(ctx, event.order_id, held.value)
        return
    if problem := items_problem(event.items):  # sent by another publisher than orders.place
        bad = next((item.sku for item in event.items if sku_problem(item.sku)), "")
        await _reject(
            ctx, reservations, event.order_id, Reservation("rejected", sku=bad[:64], reason=problem)
        )
        return
    wanted: dict[str, int] = {}
    for item in event.items:
        wanted[item.sku] = wanted.get(item.sku, 0) + item.quantity
    stock = await ctx.store("stock", inventory.StockLevel)
    taken: dict[str, int] = {}
    try:
        for sku, quantity in sorted(wanted.items()):
            await _change(stock, sku, -quantity)
            taken[sku] = quantity
    except Shortage as short:
        for sku, quantity in taken.items():
            await _change(stock, sku, quantity)
        await _reject(ctx, reservations, event.order_id, Reservation("rejected", sku=short.sku))
        return
    if not await _record(reservations, event.order_id, Reservation("reserved", taken)):
        for sku, quantity in taken.items():  # cancelled meanwhile: give it back
            await _change(stock, sku, quantity)
        return
    await _announce_reserved(ctx, event)


async def _reject(
    ctx: Context, reservations: Store[Reservation], order_id: str, rejection: Reservation
) -> None:
    if await _record(reservations, order_id, rejection):
        await _announce_rejected(ctx, order_id, rejection)


async def _announce_rejected(ctx: Context, order_id: str, rejection: Reservation) -> None:
    await ctx.publish(
        inventory.StockRejected(order_id=order_id, sku=rejection.sku, reason=rejection.reason), durable=True
    )


async def _announce_reserved(ctx: Context, event: orders.OrderPlaced) -> None:
    await ctx.publish(
        inventory.StockReserved(
            order_id=event.order_id,
            items=event.items,
            total_cents=event.total_cents,
            currency=event.currency,
            customer_id=event.customer_id,
        ),
        durable=True,
    )


@svc.subscribe(delivery=Durable(idempotent=True))
async def on_payment_failed(event: billing.PaymentFailed, ctx: Context) -> None:
    await _release(ctx, event.order_id)


@svc.subscribe(delivery=Durable(idempotent=True))
async def on_order_cancelled(event: orders.OrderCancelled, ctx: Context) -> None:
    await _release(ctx, event.order_id)


async def _release(ctx: Context, order_id: str) -> None:
    reservations = await ctx.store("reservations", Reservation)
    while True:
        entry = await reservations.get(order_id)
        if entry is None:  # cancelled before it was reserved: a later OrderPlaced is skipped
            if await _record(reservations, order_id, Reservation("cancelled")):
                return
            continue
        held = entry.value
        if held is None or held.state != "reserved":
            return  # nothing held (rejected, released or cancelled already)
        try:
            await reservations.put(
                order_id, Reservation("released", held.items), expected_revision=entry.revision
            )
        except RevisionConflict:
            continue
        break
    stock = await ctx.store("stock", inventory.StockLevel)
    for sku, quantity in held.items.items():
        await _change(stock, sku, quantity)
    await ctx.publish(
        inventory.StockReleased(
            order_id=order_id,
            items=[orders.LineItem(sku=sku, quantity=quantity) for sku, quantity in held.items.items()],
        ),
        durable=True,
    )


async def _change(stock: Store[inventory.StockLevel], sku: str, delta: int) -> None:
    """Add ``delta`` to the SKU's available units (compare-and-set); `Shortage` below zero."""
    while True:
        entry = await stock.get(sku)
        level = entry.value if entry is not None and entry.value is not None else None
        if level is None:
            level = inventory.StockLevel(sku=sku, available=INITIAL_STOCK, reserved=0)
        if level.available + delta < 0:
            raise Shortage(sku)
        level.available += delta
        level.reserved -= delta
        try:
            await stock.put(sku, level, expected_revision=entry.revision if entry is not None else 0)
        except RevisionConflict:
            continue
        return


async def _record(reservations: Store[Reservation], order_id: str, reservation: Reservation) -> bool:
    """Create the order's reservation record; False when one exists already."""
    try:
        await reservations.put(order_id, reservation, expected_revision=0)
    except RevisionConflict:
        return False
    return True


if __name__ == "__main__":
    main(svc)
