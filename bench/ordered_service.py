"""The service of the ordered_by benchmark: ``eventmicro run bench.ordered_service --url URL``.

``BENCH_ORDERED=off`` (default): ``on_placed`` is a plain ``Shared()`` handler of ``PlaceOrder``
events doing nothing; ``BENCH_ORDERED=on``: the same with ``ordered_by="customer_id"``.
"""

from __future__ import annotations

import os

from eventmicro import Service
from schemas.shop.orders.v1 import orders_pb2 as orders

svc = Service("benchordered", version="1.0.0", description="the ordered_by benchmark's handler")
ORDERED = os.environ.get("BENCH_ORDERED", "off") == "on"


async def on_placed(event: orders.PlaceOrder) -> None:
    return None


# off passes no ordered_by at all, so the same file runs on a version without it (the baseline)
if ORDERED:
    svc.subscribe(ordered_by="customer_id")(on_placed)
else:
    svc.subscribe(on_placed)
