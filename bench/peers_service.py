"""The serving process of the peers benchmark: ``python -m bench.peers_service PEER URL``.

One peer per process, until SIGTERM: it answers ``PlaceOrder`` requests on ``RPC_SUBJECT`` with
an ``OrderAccepted`` and takes ``OrderPlaced`` events on ``EVENT_SUBJECT`` (parsed, counted),
each the way that peer is written:

- ``raw``: nats-py callbacks, the protobuf body only, ``msg.respond``;
- ``raw_ce``: the same, reading the request's and event's ``ce-type`` header and answering with
  hand-built CloudEvents headers (no validation);
- ``micro``: nats-py's ``nats.micro`` (``add_service``, ``add_endpoint``; ``Request.respond``),
  RPC only: it has no event subscriber;
- ``faststream``: a FastStream ``NatsBroker`` (``bench/peers_faststream.py``);
- ``eventmicro``: a ``Service`` with an ``@rpc`` endpoint and an ``@subscribe`` handler taking
  ``OrderPlaced``, served on an eventmicro ``Connection``.

Subscriptions keep each library's default pending limits: a subscriber that falls behind loses
what they do not hold, and the benchmark counts it. A separate plain nats-py connection answers
``CONTROL.<PEER>``: ``stats`` gives the events handled so far and the ``time.monotonic()`` of the
first and the last (one clock for every process of the machine), ``reset`` sets them to zero.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
from contextlib import AsyncExitStack
from dataclasses import asdict, dataclass
from typing import Final

import nats
from nats.aio.client import Client as Nats
from nats.aio.msg import Msg
from nats.micro import add_service
from nats.micro.request import Request
from nats.micro.service import EndpointConfig, ServiceConfig

from bench.sample import TYPE
from bench.services import handbuilt_headers
from eventmicro import Connection, ConnectOptions, Service
from schemas.shop.orders.v1 import orders_pb2 as orders

RPC_SUBJECT: Final = "benchpeers.work"  # eventmicro's subject for endpoint "work" of service "benchpeers"
EVENT_SUBJECT: Final = f"events.{TYPE}"  # eventmicro's default subject for OrderPlaced
CONTROL: Final = "benchpeers.control"
PEERS: Final = ("raw", "raw_ce", "micro", "faststream", "eventmicro")
EVENT_PEERS: Final = ("raw", "raw_ce", "faststream", "eventmicro")  # nats.micro has no subscriber


@dataclass(slots=True)
class Tally:
    """Events handled, and the monotonic time of the first and the last."""

    received: int = 0
    first: float = 0.0
    last: float = 0.0
    wrong: int = 0  # events whose ce-type was not the expected one (raw_ce)
    dropped: int = 0  # messages nats-py dropped as a slow consumer (raw, raw_ce, micro)

    def seen(self) -> None:
        now = asyncio.get_running_loop().time()  # time.monotonic(), without a second call
        if not self.received:
            self.first = now
        self.received += 1
        self.last = now


async def connect(url: str, tally: Tally) -> Nats:
    """A nats-py connection that counts slow-consumer drops instead of logging each one."""

    async def on_error(exc: Exception) -> None:
        if isinstance(exc, nats.errors.SlowConsumerError):
            tally.dropped += 1
        else:
            print(f"peers_service: nats error: {exc!r}", file=sys.stderr)

    return await nats.connect(url, error_cb=on_error)


def answer(request: orders.PlaceOrder) -> orders.OrderAccepted:
    return orders.OrderAccepted(order_id=request.customer_id, total_cents=len(request.items))


async def raw(url: str, tally: Tally, stack: AsyncExitStack, *, cloudevents: bool) -> None:
    nc = await connect(url, tally)
    stack.push_async_callback(nc.drain)

    async def on_request(msg: Msg) -> None:
        if cloudevents:
            if not msg.headers or msg.headers.get("ce-type") != "shop.orders.v1.PlaceOrder":
                raise RuntimeError("not the request this benchmark sends")
            reply = answer(orders.PlaceOrder.FromString(msg.data)).SerializeToString()
            headers = handbuilt_headers("shop.orders.v1.OrderAccepted", correlationid=msg.headers["ce-id"])
            await nc.publish(msg.reply, reply, headers=headers)
        else:
            await msg.respond(answer(orders.PlaceOrder.FromString(msg.data)).SerializeToString())

    async def on_event(msg: Msg) -> None:
        if cloudevents and (not msg.headers or msg.headers.get("ce-type") != TYPE):
            tally.wrong += 1
        orders.OrderPlaced.FromString(msg.data)
        tally.seen()

    await nc.subscribe(RPC_SUBJECT, cb=on_request)
    await nc.subscribe(EVENT_SUBJECT, cb=on_event)
    await nc.flush()


async def micro(url: str, tally: Tally, stack: AsyncExitStack) -> None:
    nc = await connect(url, tally)
    stack.push_async_callback(nc.drain)

    async def work(request: Request) -> None:
        await request.respond(answer(orders.PlaceOrder.FromString(request.data)).SerializeToString())

    service = await add_service(nc, ServiceConfig(name="benchmicro", version="1.0.0"))
    stack.push_async_callback(service.stop)
    await service.add_endpoint(EndpointConfig(name="work", handler=work, subject=RPC_SUBJECT))
    await nc.flush()


async def faststream(url: str, tally: Tally, stack: AsyncExitStack) -> None:
    from bench.peers_faststream import serving_broker

    broker = serving_broker(url, rpc_subject=RPC_SUBJECT, event_subject=EVENT_SUBJECT, seen=tally.seen)
    await broker.start()
    stack.push_async_callback(broker.stop)


async def eventmicro(url: str, tally: Tally, stack: AsyncExitStack) -> None:
    svc = Service("benchpeers", version="1.0.0")

    @svc.rpc
    async def work(req: orders.PlaceOrder) -> orders.OrderAccepted:
        return answer(req)

    @svc.subscribe
    async def on_placed(event: orders.OrderPlaced) -> None:
        tally.seen()

    conn = await Connection(ConnectOptions.from_env(url, environ={})).open()
    stack.push_async_callback(conn.close)
    await stack.enter_async_context(svc.serving(conn))


async def serve(peer: str, url: str) -> int:
    tally = Tally()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with AsyncExitStack() as stack:
        if peer in ("raw", "raw_ce"):
            await raw(url, tally, stack, cloudevents=peer == "raw_ce")
        elif peer == "micro":
            await micro(url, tally, stack)
        elif peer == "faststream":
            await faststream(url, tally, stack)
        elif peer == "eventmicro":
            await eventmicro(url, tally, stack)
        else:
            raise SystemExit(f"unknown peer {peer!r}: one of {', '.join(PEERS)}")
        control = await control_connection(url, peer, tally)  # last: answering means serving
        stack.push_async_callback(control.close)
        await stop.wait()
    return 0


async def control_connection(url: str, peer: str, tally: Tally) -> Nats:
    nc = await nats.connect(url)

    async def on_control(msg: Msg) -> None:
        if msg.data == b"reset":
            tally.received, tally.first, tally.last, tally.wrong, tally.dropped = 0, 0.0, 0.0, 0, 0
        await msg.respond(json.dumps(asdict(tally)).encode())

    await nc.subscribe(f"{CONTROL}.{peer}", cb=on_control)
    await nc.flush()
    return nc


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(asyncio.run(serve(sys.argv[1], sys.argv[2])))
