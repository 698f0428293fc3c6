"""A responder process for the queue-group benchmark: ``python bench/responder.py MODE URL``.

MODE ``raw`` answers ``bench.raw`` with plain nats-py in queue group ``q``; MODE ``eventmicro``
serves ``bench.work`` as an eventmicro service; MODE ``eventmicro-5ms`` serves ``benchslow.work``,
a handler that awaits 5 ms. All run until SIGTERM.
"""

from __future__ import annotations

import asyncio
import signal
import sys

import nats
from nats.aio.msg import Msg

from eventmicro import ConnectOptions, Service
from schemas.shop.orders.v1 import orders_pb2 as orders

svc = Service("bench", version="1.0.0")


@svc.rpc
async def work(req: orders.PlaceOrder) -> orders.OrderAccepted:
    return orders.OrderAccepted(order_id=req.customer_id, total_cents=len(req.items))


slow = Service("benchslow", version="1.0.0")


@slow.rpc(name="work")
async def slow_work(req: orders.PlaceOrder) -> orders.OrderAccepted:
    await asyncio.sleep(0.005)  # an I/O-bound handler
    return orders.OrderAccepted(order_id=req.customer_id, total_cents=len(req.items))


async def raw(url: str) -> int:
    nc = await nats.connect(url)

    async def answer(msg: Msg) -> None:
        request = orders.PlaceOrder.FromString(msg.data)
        await nc.publish(
            msg.reply,
            orders.OrderAccepted(
                order_id=request.customer_id, total_cents=len(request.items)
            ).SerializeToString(),
        )

    await nc.subscribe("bench.raw", queue="q", cb=answer)
    await nc._flush_pending(force_flush=True)  # SUB before PING (see eventmicro.transport.connection)
    await nc.flush()
    await nc.publish("bench.ready", b"raw")
    await nc.flush()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await nc.drain()
    return 0


if __name__ == "__main__":
    mode, address = sys.argv[1], sys.argv[2]
    if mode == "raw":
        sys.exit(asyncio.run(raw(address)))
    service = slow if mode == "eventmicro-5ms" else svc
    sys.exit(service.run(options=ConnectOptions.from_env(address, environ={})))
