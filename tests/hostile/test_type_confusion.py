"""An event or request of another type is not handled as the type a handler takes.

Before the fix a single-type handler never looked at ``ce-type``: a ``PaymentFailed`` event
was handled as an ``OrderPlaced`` with default fields (protobuf bytes of one type often parse
as another). Now a wrong type is a 400 for RPC, a counted error for a plain event handler,
and a dead letter for a durable one (`UnexpectedType` is terminal).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable

import pytest

from eventmicro import (
    BadRequest,
    Client,
    Connection,
    DeadLetters,
    Durable,
    Event,
    Service,
    Stream,
)
from eventmicro import cloudevents_nats as binding
from schemas.shop.billing.v1 import billing_pb2 as billing
from schemas.shop.orders.v1 import orders_pb2 as orders

Eventually = Callable[..., Awaitable[None]]


def _service() -> tuple[Service, list[object]]:
    svc = Service("strict", version="1.0.0")
    handled: list[object] = []

    @svc.rpc
    async def place(req: orders.PlaceOrder) -> orders.OrderAccepted:
        handled.append(req)
        return orders.OrderAccepted(order_id=req.customer_id)

    @svc.subscribe(subject="typed.orders")
    async def on_placed(event: orders.OrderPlaced) -> None:
        handled.append(event)

    return svc, handled


def _as(message: object, type_name: str) -> binding.NATSMessage:
    """``message``'s bytes, labelled with another CloudEvent type (what an attacker can send)."""
    return binding.to_binary(Event.of(message, source="/elsewhere", type=type_name), None)


async def test_a_request_of_another_type_is_a_400(
    service_conn: Connection, nats_connection: Connection
) -> None:
    svc, handled = _service()
    async with svc.serving(service_conn):
        wrong = _as(billing.PaymentFailed(order_id="o1", reason="declined"), "shop.billing.v1.PaymentFailed")
        reply = await nats_connection.request("strict.place", wrong.data, headers=wrong.headers, timeout=2)
        assert reply.headers is not None
        assert reply.headers["Nats-Service-Error-Code"] == "400"
        assert "shop.billing.v1.PaymentFailed" in reply.headers["Nats-Service-Error"]
        assert "shop.orders.v1.PlaceOrder" in reply.headers["Nats-Service-Error"]
        assert handled == []
        with pytest.raises(BadRequest):  # the same through the client, typed
            await Client(nats_connection).call(
                "strict.place",
                billing.PaymentFailed(order_id="o1"),
                returns=orders.OrderAccepted,
            )


async def test_a_huge_wrong_type_is_not_echoed_whole(
    service_conn: Connection, nats_connection: Connection
) -> None:
    svc, _ = _service()
    async with svc.serving(service_conn):
        wrong = _as(orders.PlaceOrder(customer_id="c"), "x" * 100_000)
        reply = await nats_connection.request("strict.place", wrong.data, headers=wrong.headers, timeout=2)
        assert reply.headers is not None
        assert reply.headers["Nats-Service-Error-Code"] == "400"
        assert len(reply.headers["Nats-Service-Error"]) < 400


async def test_an_event_of_another_type_is_counted_not_handled(
    service_conn: Connection, nats_connection: Connection, eventually: Eventually
) -> None:
    svc, handled = _service()
    client = Client(nats_connection)
    async with svc.serving(service_conn) as running:
        await client.publish(billing.PaymentFailed(order_id="o1", reason="declined"), subject="typed.orders")
        await client.publish(orders.OrderPlaced(order_id="o2"), subject="typed.orders")
        await eventually(lambda: len(handled) == 1 and running.event_stats["on_placed"].num_errors == 1)
        assert isinstance(handled[0], orders.OrderPlaced)
        assert handled[0].order_id == "o2"
        assert "shop.billing.v1.PaymentFailed" in running.event_stats["on_placed"].last_error


async def test_a_durable_event_of_another_type_is_dead_lettered_at_once(
    service_conn: Connection, nats_connection: Connection, eventually: Eventually
) -> None:
    """Terminal: no redelivery would make a PaymentFailed an OrderPlaced."""
    name = f"TYPED{uuid.uuid4().hex[:8].upper()}"
    svc = Service(f"strict-{name.lower()}", version="1.0.0", streams=[Stream(name, [f"{name}.>"])])
    handled: list[str] = []

    @svc.subscribe(subject=f"{name}.orders", delivery=Durable(max_deliver=5))
    async def on_placed(event: orders.OrderPlaced) -> None:
        handled.append(event.order_id)

    client = Client(nats_connection)
    dead = DeadLetters(nats_connection)
    async with svc.serving(service_conn):
        await client.publish(billing.PaymentFailed(order_id="p1"), subject=f"{name}.orders", durable=True)
        await client.publish(orders.OrderPlaced(order_id="o1"), subject=f"{name}.orders", durable=True)
        await eventually(lambda: handled == ["o1"])
        async with asyncio.timeout(10):
            while not (letters := await dead.list(svc.name)):  # noqa: ASYNC110 - polled through the API
                await asyncio.sleep(0.02)
        (letter,) = letters
        assert letter.event_type == "shop.billing.v1.PaymentFailed"
        assert letter.deliveries == 1  # dead-lettered on the first delivery, not retried
        assert letter.code == 400
        assert "shop.orders.v1.OrderPlaced" in letter.reason
    await nats_connection.request(f"$JS.API.STREAM.DELETE.{name}", b"", timeout=2)
