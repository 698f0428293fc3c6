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
a service that restarts picks up where it stopped; ``audit`` records every event type.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
from typing import Final

from eventmicro import Service, Stream

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
FAIL_PERCENT: Final = int(os.environ.get("SHOP_PAYMENT_FAIL_PERCENT", "10"))
FLAKY_PERCENT: Final = int(os.environ.get("SHOP_GATEWAY_FLAKY_PERCENT", "5"))


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
