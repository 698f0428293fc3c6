"""The billing service: charges reserved orders. A deterministic share of charges is declined
(``SHOP_PAYMENT_FAIL_PERCENT``, default 10) so that the saga's compensation is visible, and a
deterministic share of first attempts times out at the "gateway" (``SHOP_GATEWAY_FLAKY_PERCENT``,
default 5) so that redelivery with backoff is visible too."""

from __future__ import annotations

from eventmicro import Context, Durable, NotFound, RevisionConflict, Service
from schemas.shop.billing.v1 import billing_pb2 as billing
from schemas.shop.inventory.v1 import inventory_pb2 as inventory
from subscribers.shop import STREAM, gateway_flaky, main, payment_declined

svc = Service(
    "billing",
    version="1.0.0",
    description="Charges orders",
    streams=[STREAM],
    publishes=[billing.PaymentCaptured, billing.PaymentFailed],
    stores=["payments"],
)


@svc.rpc
async def get_payment(req: billing.GetPaymentRequest, ctx: Context) -> billing.Payment:
    entry = await (await ctx.store("payments", billing.Payment)).get(req.order_id)
    if entry is None or entry.value is None:
        raise NotFound(f"no payment for order {req.order_id}")
    return entry.value


class GatewayTimeout(Exception):
    """The payment gateway did not answer (transient: the event is redelivered after a backoff)."""


_timed_out: set[str] = set()  # orders whose first attempt already timed out, in this process


@svc.subscribe(delivery=Durable(backoff=[0.2, 1, 5], idempotent=True))
async def on_stock_reserved(event: inventory.StockReserved, ctx: Context) -> None:
    if gateway_flaky(event.order_id) and event.order_id not in _timed_out:
        _timed_out.add(event.order_id)
        raise GatewayTimeout
    payments = await ctx.store("payments", billing.Payment)
    declined = payment_declined(event.order_id)
    payment = billing.Payment(
        order_id=event.order_id,
        payment_id=f"pay-{event.order_id[4:]}",
        amount_cents=event.total_cents,
        captured=not declined,
        reason="card declined" if declined else "",
    )
    try:
        await payments.put(event.order_id, payment, expected_revision=0)
    except RevisionConflict:
        # charged before: announce that outcome again, since the attempt that charged may have
        # died before its event was stored (the order would wait for ever); duplicates are harmless
        entry = await payments.get(event.order_id)
        if entry is None or entry.value is None:
            raise
        payment = entry.value
    if not payment.captured:
        await ctx.publish(billing.PaymentFailed(order_id=event.order_id, reason=payment.reason), durable=True)
    else:
        await ctx.publish(
            billing.PaymentCaptured(
                order_id=event.order_id, payment_id=payment.payment_id, amount_cents=payment.amount_cents
            ),
            durable=True,
        )


if __name__ == "__main__":
    main(svc)
