"""An event or request of another type is not handled as the type a handler takes.

Before the fix a single-type handler never looked at ``ce-type``: a ``PaymentFailed`` event
was handled as an ``OrderPlaced`` with default fields (protobuf bytes of one type often parse
as another). Now a wrong type is a 400 for RPC, a counted error for a plain event handler,
and a dead letter for a durable one (`UnexpectedType` is terminal). A flood of such events
(or of messages that are not CloudEvents) costs one log line per 10 s, not one each.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import pytest_asyncio

from eventmicro import (
    BadRequest,
    Client,
    Connection,
    DeadLetters,
    Durable,
    Event,
    NatsServer,
    Service,
    Stream,
)
from eventmicro import cloudevents_nats as binding
from schemas.shop.billing.v1 import billing_pb2 as billing
from schemas.shop.orders.v1 import orders_pb2 as orders

sys.path.insert(0, str(Path(__file__).parent))
from raw_nats import Raw, event_block

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


@pytest_asyncio.fixture
async def raw(nats_server: NatsServer) -> AsyncIterator[Raw]:
    client = await Raw.connect(nats_server)
    yield client
    await client.close()


async def test_a_flood_of_bad_events_costs_one_log_line_not_one_each(
    service_conn: Connection, raw: Raw, eventually: Eventually, caplog: pytest.LogCaptureFixture
) -> None:
    """Any client can send events a handler refuses (not a CloudEvent, another type): each
    wrote a warning, so 3,000 of them wrote 3,000 lines. They are counted; the log gets one
    line per 10 s per handler, saying how many it held back."""
    caplog.set_level(logging.WARNING, logger="eventmicro.service")
    svc = Service("review-log", version="1.0.0")
    handled: list[str] = []

    @svc.subscribe(subject="review.log.orders")
    async def on_placed(event: orders.OrderPlaced) -> None:
        handled.append(event.order_id)

    async with svc.serving(service_conn) as running:
        for index in range(300):
            if index % 2:
                raw.hpub(b"review.log.orders", b"NATS/1.0\r\nce-type: x\r\n\r\n", b"junk")  # no CloudEvent
            else:
                raw.hpub(b"review.log.orders", event_block(0, "shop.billing.v1.PaymentFailed"))
        good = orders.OrderPlaced(order_id="o1").SerializeToString()
        raw.hpub(b"review.log.orders", event_block(0), good)
        await raw.round_trip()
        stats = running.event_stats["on_placed"]
        await eventually(lambda: handled == ["o1"] and stats.num_errors == 300)
    lines = [r for r in caplog.records if "not handled by on_placed" in r.getMessage()]
    assert len(lines) == 1
