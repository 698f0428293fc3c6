"""Malformed traffic against a running service: every request is answered, every event
reported, and the service keeps serving."""

from __future__ import annotations

import asyncio
import random
import string
from collections.abc import Awaitable, Callable

from eventmicro import Client, Connection, Event, Service
from eventmicro import cloudevents_nats as binding
from schemas.shop.orders.v1 import orders_pb2 as orders

PIECES = [
    "1.0",
    "0.3",
    "%",
    "%C0%A0",
    "",
    " ",
    "\u00e9",
    "ce-",
    "application/protobuf",
    "application/json",
    "t",
]


def malformed(rng: random.Random, valid: binding.NATSMessage) -> tuple[bytes, dict[str, str] | None]:
    headers = dict(valid.headers)
    body = bytearray(valid.data)
    choice = rng.randrange(5)
    if choice == 0:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(50))), None
    if choice == 1 and headers:
        headers[rng.choice(list(headers))] = rng.choice(PIECES) + rng.choice(string.ascii_letters)
    elif choice == 2:
        headers.pop(rng.choice(list(headers)))
    elif choice == 3:
        body = body[: rng.randrange(len(body) + 1)] + bytes(rng.randrange(256) for _ in range(3))
    else:
        headers["ce-type"] = rng.choice(["shop.orders.v1.OrderAccepted", "nope", "shop.orders.v1.PlaceOrder"])
        headers["ce-datacontenttype"] = rng.choice(["application/json", "text/plain", "application/protobuf"])
    return bytes(body), headers


async def test_ten_thousand_malformed_requests_and_events(
    conn: Connection, eventually: Callable[..., Awaitable[None]]
) -> None:
    svc = Service("sturdy", version="1.0.0")

    @svc.rpc
    async def place(req: orders.PlaceOrder) -> orders.OrderAccepted:
        return orders.OrderAccepted(order_id=req.customer_id)

    @svc.subscribe
    async def placed(event: orders.OrderPlaced) -> None:
        return None

    rng = random.Random(2026)
    request = binding.to_binary(Event.of(orders.PlaceOrder(customer_id="c"), source="/fuzz"), None)
    event = binding.to_binary(Event.of(orders.OrderPlaced(order_id="o"), source="/fuzz"), None)
    async with svc.serving(conn) as running:
        answered = {"ok": 0, "error": 0}

        async def one() -> None:
            body, headers = malformed(rng, request)
            reply = await conn.request("sturdy.place", body, headers=headers, timeout=30)
            answered["error" if reply.headers and "Nats-Service-Error-Code" in reply.headers else "ok"] += 1

        for _ in range(50):
            await asyncio.gather(*(one() for _ in range(100)))
        for _ in range(5000):
            body, headers = malformed(rng, event)
            await conn.publish("events.shop.orders.v1.OrderPlaced", body, headers=headers)
        await conn.flush()
        await eventually(lambda: running.event_stats["placed"].num_requests >= 5000, timeout=60)
        # still serving, correctly
        reply = await Client(conn).call(
            "sturdy.place", orders.PlaceOrder(customer_id="x"), returns=orders.OrderAccepted
        )
        assert reply.order_id == "x"
    assert answered["ok"] + answered["error"] == 5000  # every request answered
    assert answered["error"] > 1000  # and most of them with an error reply, not a crash
    assert running.stats["place"].num_requests == 5001
    assert running.event_stats["placed"].num_errors > 0  # bad events were reported
