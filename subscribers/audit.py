"""The audit service: a durable wildcard subscriber that counts every event type of the shop,
in the key-value bucket ``audit`` (one counter per CloudEvent type)."""

from __future__ import annotations

from eventmicro import Context, Durable, RevisionConflict, Service
from schemas.shop.billing.v1 import billing_pb2 as billing
from schemas.shop.inventory.v1 import inventory_pb2 as inventory
from schemas.shop.orders.v1 import orders_pb2 as orders
from subscribers.shop import STREAM, main

svc = Service(
    "audit", version="1.0.0", description="Counts every event of the shop", streams=[STREAM], stores=["audit"]
)

ShopEvent = (
    orders.OrderPlaced
    | orders.OrderConfirmed
    | orders.OrderCancelled
    | inventory.StockReserved
    | inventory.StockRejected
    | inventory.StockReleased
    | billing.PaymentCaptured
    | billing.PaymentFailed
)


@svc.subscribe(subject="events.shop.>", delivery=Durable(idempotent=True))
async def record(event: ShopEvent, ctx: Context) -> None:
    counters = await ctx.store("audit", str)
    key = ctx.event.get_type()
    while True:
        entry = await counters.get(key)
        count = int(entry.value) if entry is not None and entry.value is not None else 0
        try:
            await counters.put(
                key, str(count + 1), expected_revision=entry.revision if entry is not None else 0
            )
        except RevisionConflict:
            continue
        return


if __name__ == "__main__":
    main(svc)
