"""The service of the hot-path benchmark: ``eventmicro run bench.hotpath_service --url URL``.

``benchhot.work`` answers a ``PlaceOrder`` with an ``OrderAccepted`` and does no work of its own;
``on_placed`` takes ``PlaceOrder`` events and does nothing. With ``BENCH_COUNT_CALLS=1`` in the
environment the process counts every Python function call (``sys.setprofile``) and
``benchhot.calls`` answers the count so far (in ``total_cents``): Python calls per message.
"""

from __future__ import annotations

import os
import sys
from types import FrameType

from eventmicro import Service
from schemas.shop.orders.v1 import orders_pb2 as orders

svc = Service("benchhot", version="1.0.0", description="the hot-path benchmark's endpoint and handler")
_calls = [0]  # Python function calls so far (with BENCH_COUNT_CALLS=1)


def _count(frame: FrameType, event: str, arg: object) -> None:
    if event == "call":
        _calls[0] += 1


if os.environ.get("BENCH_COUNT_CALLS") == "1":
    sys.setprofile(_count)


@svc.rpc
async def work(req: orders.PlaceOrder) -> orders.OrderAccepted:
    return orders.OrderAccepted(order_id=req.customer_id, total_cents=len(req.items))


@svc.rpc
async def calls(req: orders.PlaceOrder) -> orders.OrderAccepted:
    return orders.OrderAccepted(total_cents=_calls[0])


@svc.subscribe
async def on_placed(event: orders.PlaceOrder) -> None:
    return None
