"""The demo: a real round trip on an embedded (or given) NATS, with the CloudEvents binding.

An "orders" responder answers ``orders.place`` requests (CloudEvents in binary mode, protobuf
payloads) and publishes an ``OrderPlaced`` event for each order; an audit subscriber receives
every event, in binary and structured mode. A malformed request shows the error path: the
responder replies with NATS service error headers instead of letting the caller time out.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from dataclasses import dataclass, field

from eventmicro import cloudevents_nats as binding
from eventmicro._adapter import Connection, Message
from eventmicro._config import ConnectOptions
from eventmicro._errors import EventMicroError
from eventmicro._event import Event
from eventmicro._server import NatsServer
from schemas.shop.orders.v1 import orders_pb2 as orders

SOURCE = "/eventmicro/demo/orders"
CLIENT = "/eventmicro/demo/client"
EVENTS = "events.shop.orders.v1.OrderPlaced"


def say(text: str) -> None:
    print(text, flush=True)


@dataclass
class Shop:
    """The demo's responder and subscriber, and what they saw."""

    service: Connection
    expected_events: int
    events: list[tuple[str, orders.OrderPlaced]] = field(default_factory=list)
    placed: int = 0
    all_events: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self) -> None:
        await self.service.subscribe("orders.place", self.place, queue="orders")
        await self.service.subscribe("events.shop.orders.>", self.audit, queue="audit")
        await self.service.flush()

    async def place(self, msg: Message) -> None:
        try:
            event = binding.from_nats(msg, None)
            request = event.data_as(orders.PlaceOrder)
        except EventMicroError as exc:
            body = json.dumps({"code": exc.code, "status": "Bad Request", "detail": exc.message})
            error = {"Nats-Service-Error": exc.message, "Nats-Service-Error-Code": str(exc.code)}
            await self.service.publish(msg.reply, body.encode(), headers=error)
            return
        total = sum(item.quantity * item.unit_price_cents for item in request.items)
        self.placed += 1
        order_id = f"ord-{self.placed:04d}"
        placed = orders.OrderPlaced(
            order_id=order_id,
            customer_id=request.customer_id,
            items=request.items,
            total_cents=total,
            currency=request.currency,
        )
        placed.placed_at.GetCurrentTime()
        out = binding.to_binary(Event.of(placed, source=SOURCE, subject=order_id), None)
        await self.service.publish(EVENTS, out.data, headers=out.headers)
        accepted = orders.OrderAccepted(order_id=order_id, total_cents=total)
        reply = binding.to_binary(Event.of(accepted, source=SOURCE), None)
        await self.service.publish(msg.reply, reply.data, headers=reply.headers)

    async def audit(self, msg: Message) -> None:
        event = binding.from_nats(msg, None)
        self.events.append((binding.detect_mode(msg.headers).value, event.data_as(orders.OrderPlaced)))
        if len(self.events) >= self.expected_events:
            self.all_events.set()


async def run_demo(url: str | None, *, orders_count: int = 5) -> int:
    """Run the demo; returns the process exit code (0 when every step did what it should)."""
    server = None
    if url is None:
        say("starting an embedded nats-server with JetStream ...")
        server = await NatsServer().astart()
        url = server.url
        say(f"  nats-server listening on {url} (store {server.store_dir})")
    try:
        return await _round_trip(url, orders_count)
    finally:
        if server is not None:
            await asyncio.to_thread(server.close)
            say("embedded nats-server stopped")


async def _round_trip(url: str, count: int) -> int:
    options = ConnectOptions.from_env(url, connect_attempts=3)
    latencies: list[float] = []
    async with Connection(options) as service, Connection(options) as client:
        shop = Shop(service, expected_events=count + 1)  # one per order, one in structured mode
        await shop.start()
        say("service 'orders' answers orders.place; subscriber 'audit' listens on events.shop.orders.>")
        for n in range(1, count + 1):
            request = orders.PlaceOrder(
                customer_id=f"cust-{n}",
                currency="EUR",
                items=[orders.LineItem(sku=f"sku-{n}", quantity=n, unit_price_cents=250)],
            )
            msg = binding.to_binary(Event.of(request, source=CLIENT), None)
            started = time.perf_counter()
            answer = await client.request("orders.place", msg.data, headers=msg.headers, timeout=5)
            latencies.append((time.perf_counter() - started) * 1000)
            accepted = binding.from_nats(answer, None).data_as(orders.OrderAccepted)
            say(f"  call orders.place #{n}: {accepted.order_id} total {accepted.total_cents / 100:.2f} EUR")

        late = orders.OrderPlaced(order_id="ord-structured", customer_id="cust-x")
        structured = binding.to_structured(Event.of(late, source=SOURCE), None)
        await client.publish(EVENTS, structured.data, headers=structured.headers)
        say("  published one OrderPlaced in structured mode")

        bad = await client.request("orders.place", b"not a cloudevent", timeout=5)
        headers = bad.headers or {}
        error = f"{headers.get('Nats-Service-Error-Code')} {headers.get('Nats-Service-Error')}"
        say(f"  malformed request answered with a service error: {error}")

        try:
            await asyncio.wait_for(shop.all_events.wait(), timeout=10)
        except TimeoutError:
            say(f"  only {len(shop.events)} of {shop.expected_events} events arrived")
    return _summary(count, latencies, shop, error_code=headers.get("Nats-Service-Error-Code"))


def _summary(count: int, latencies: list[float], shop: Shop, *, error_code: str | None) -> int:
    binary = sum(1 for mode, _ in shop.events if mode == "binary")
    say("")
    say("summary")
    say(f"  calls answered      {len(latencies)}/{count}")
    if latencies:
        say(f"  call latency        median {statistics.median(latencies):.2f} ms")
    say(
        f"  events received     {len(shop.events)}/{shop.expected_events} "
        f"(binary {binary}, structured {len(shop.events) - binary})"
    )
    say(f"  malformed request   error code {error_code} (expected 400)")
    ok = len(latencies) == count and len(shop.events) == shop.expected_events and error_code == "400"
    say("  result              " + ("OK" if ok else "FAILED"))
    return 0 if ok else 1
