"""The benchmarks' sample event: an ``OrderPlaced`` of about 200 bytes, and its CloudEvents names.

Shared by ``python -m bench`` (the binding suite) and the peers suite (``bench/peers.py``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Final

from eventmicro.wire.clock import format_time, new_event_id
from schemas.shop.orders.v1 import orders_pb2 as orders

SOURCE: Final = "/bench/orders/instance-1"
TYPE: Final = "shop.orders.v1.OrderPlaced"
SCHEMA: Final = "type.googleapis.com/shop.orders.v1.OrderPlaced"


def sample_event() -> orders.OrderPlaced:
    """An OrderPlaced of about 200 bytes once serialized."""
    placed = orders.OrderPlaced(
        order_id="ord-0001234567",
        customer_id="cust-000042",
        currency="EUR",
        total_cents=123456,
        items=[orders.LineItem(sku=f"sku-{i:06d}", quantity=i + 1, unit_price_cents=1999) for i in range(8)],
    )
    placed.placed_at.GetCurrentTime()
    return placed


def handbuilt_event_headers() -> dict[str, str]:
    """The seven CloudEvents headers a hand-written nats-py publisher sends with the sample event
    (fresh id, fresh RFC 3339 time): the binding suite's ``raw_handbuilt_ce_headers``."""
    return {
        "ce-specversion": "1.0",
        "ce-id": new_event_id(),
        "ce-source": SOURCE,
        "ce-type": TYPE,
        "ce-time": format_time(datetime.now(UTC)),
        "ce-datacontenttype": "application/protobuf",
        "ce-dataschema": SCHEMA,
    }
