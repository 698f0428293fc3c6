"""The endpoint of the overload benchmark: ``eventmicro run bench.overload_service --url URL``.

``benchbusy.work``: a handler that sleeps 100 ms (I/O it waits for), at most 8 at a time, so
the endpoint's capacity is 80 requests per second (issue 12, item 5). The backlog is the
default of the code under test (none before the overload work: nats-py's buffer).
"""

from __future__ import annotations

import asyncio

from eventmicro import Service
from schemas.shop.orders.v1 import orders_pb2 as orders

svc = Service("benchbusy", version="1.0.0", description="the overload benchmark's endpoint")
HANDLER_SECONDS = 0.1
CONCURRENCY = 8


@svc.rpc(concurrency=CONCURRENCY)
async def work(req: orders.PlaceOrder) -> orders.OrderAccepted:
    await asyncio.sleep(HANDLER_SECONDS)
    return orders.OrderAccepted(order_id=req.customer_id, total_cents=len(req.items))
