"""The endpoint of the balance benchmark: ``eventmicro run bench.balance_service --url URL``.

``benchbalance.work`` waits ``BENCH_DELAY`` seconds (I/O it waits for: 0.05 for the slow
instance, 0.001 for the fast one), 8 at a time, with ``BENCH_BALANCE`` (``random`` or ``room``)
as its ``@svc.rpc(balance=...)``; it answers with ``BENCH_LABEL`` in ``order_id`` so the caller
counts who served what.
"""

from __future__ import annotations

import asyncio
import os
from typing import Literal, cast

from eventmicro import Service
from schemas.shop.orders.v1 import orders_pb2 as orders

svc = Service("benchbalance", version="1.0.0", description="the balance benchmark's endpoint")
DELAY = float(os.environ.get("BENCH_DELAY", "0.001"))
LABEL = os.environ.get("BENCH_LABEL", "instance")
BALANCE = cast(Literal["random", "room"], os.environ.get("BENCH_BALANCE", "random"))


@svc.rpc(concurrency=8, balance=BALANCE)
async def work(req: orders.PlaceOrder) -> orders.OrderAccepted:
    await asyncio.sleep(DELAY)
    return orders.OrderAccepted(order_id=LABEL, total_cents=len(req.items))
