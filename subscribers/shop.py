"""What the reference shop's services share: the event stream, the catalogue, the failure rule.

The saga of one order::

    orders.place -> OrderPlaced -> inventory reserves -> StockReserved -> billing charges
                                        |                                     |
                                  StockRejected                PaymentCaptured | PaymentFailed
                                        |                              |             |
                              orders: CANCELLED            orders: CONFIRMED   orders: CANCELLED,
                                                                               inventory releases
                                                                               (StockReleased)

Every event is published durably into the stream ``SHOP`` and consumed by durable handlers, so
a service that restarts picks up where it stopped; ``audit`` records every event type. An order
never stays pending: ``orders.place`` refuses (400) what inventory could not reserve, inventory
rejects such an order all the same when another publisher sends it (``StockRejected``), and
orders cancels an order whose ``OrderPlaced`` inventory dead-lettered.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import sys
from collections.abc import Iterable
from typing import Final

from eventmicro import Service, Stream
from schemas.shop.orders.v1 import orders_pb2 as orders

STREAM: Final = Stream(
    "SHOP",
    ["events.shop.>"],
    storage="file",
    replicas=int(os.environ.get("SHOP_STREAM_REPLICAS", "1")),  # 3 on a cluster (compose.cluster.yaml)
    max_age=7 * 24 * 3600,
    description="the reference shop's domain events",
)
SKUS: Final = tuple(f"sku-{n:03d}" for n in range(1, 13))
INITIAL_STOCK: Final = 60  # units of each SKU before the first reservation
PRICE_CENTS: Final = 1250
OUT_OF_STOCK: Final = "not enough stock"  # the reason of a StockRejected for lack of stock

# What an order may hold: orders.place answers 400 beyond these, inventory rejects the same.
# With them the largest total (100 x 10,000 x 100,000,000) fits an int64 many times over.
SKU: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")  # a key of the ``stock`` bucket
MAX_ITEMS: Final = 100
MAX_QUANTITY: Final = 10_000
MAX_UNIT_PRICE_CENTS: Final = 100_000_000
FAIL_PERCENT: Final = int(os.environ.get("SHOP_PAYMENT_FAIL_PERCENT", "10"))
FLAKY_PERCENT: Final = int(os.environ.get("SHOP_GATEWAY_FLAKY_PERCENT", "5"))


def sku_problem(sku: str) -> str | None:
    """Why inventory cannot keep stock under ``sku`` (``None``: it can)."""
    if SKU.fullmatch(sku):
        return None
    shown = repr(sku if len(sku) <= 40 else sku[:40] + "...")
    return f"sku {shown} is not a SKU: 1 to 64 letters, digits, '-' or '_', not starting with '-' or '_'"


def items_problem(items: Iterable[orders.LineItem]) -> str | None:
    """Why an order of these lines cannot be taken (``None``: it can); one rule for
    ``orders.place`` and for inventory, so that an accepted order can always be reserved."""
    count = 0
    for count, item in enumerate(items, start=1):
        if count > MAX_ITEMS:
            return f"an order has at most {MAX_ITEMS} items"
        if problem := sku_problem(item.sku):
            return f"item {count}: {problem}"
        if not 1 <= item.quantity <= MAX_QUANTITY:
            return f"item {count}: quantity must be 1 to {MAX_QUANTITY:,}, not {item.quantity}"
        if not 0 <= item.unit_price_cents <= MAX_UNIT_PRICE_CENTS:
            return (
                f"item {count}: unitPriceCents must be 0 to {MAX_UNIT_PRICE_CENTS:,}, "
                f"not {item.unit_price_cents}"
            )
    return None if count else "an order needs at least one item"


def gateway_flaky(order_id: str) -> bool:
    """The deterministic share of charges whose first attempt times out at the payment gateway
    (retried by the durable consumer's backoff, so redeliveries are visible)."""
    digest = hashlib.sha256(b"gateway:" + order_id.encode()).digest()
    return int.from_bytes(digest[:4], "big") % 100 < FLAKY_PERCENT


def payment_declined(order_id: str) -> bool:
    """The deterministic share of declined payments: the same order always gets the same answer."""
    digest = hashlib.sha256(order_id.encode()).digest()
    return int.from_bytes(digest[:4], "big") % 100 < FAIL_PERCENT


def main(svc: Service) -> None:
    """Serve ``svc`` until SIGTERM (NATS from EVENTMICRO_NATS_URL / NATS_URL)."""
    logging.basicConfig(
        level=os.environ.get("SHOP_LOG_LEVEL", "WARNING"),
        format=f"%(asctime)s %(levelname)s {svc.name}[%(process)d] %(name)s: %(message)s",
    )
    sys.exit(svc.run())
