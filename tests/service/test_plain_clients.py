"""Plain NATS clients (``nats req``, plain nats-py, other frameworks) are answered.

A request with no CloudEvent is read as the endpoint's declared type and answered in kind:
no ``ce-*`` headers, the request's encoding. CloudEvents in either mode work as before.
Also: a handler returning a value of another type than it declares is a 500 logged on the
service's side, not a content-type mismatch at the caller.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

import nats
import pytest
import pytest_asyncio
from nats.aio.client import Client as PlainClient

from eventmicro import Client, Connection, Event, InternalError, Service, event_type
from eventmicro import cloudevents_nats as binding
from schemas.shop.orders.v1 import orders_pb2 as orders


@event_type("com.example.plain.Greeting")
@dataclass
class Greeting:
    name: str


@dataclass
class Reply:
    text: str


def _service() -> Service:
    svc = Service("plainly", version="1.0.0")

    @svc.rpc
    async def place(req: orders.PlaceOrder) -> orders.OrderAccepted:
        return orders.OrderAccepted(order_id=f"for-{req.customer_id}", total_cents=len(req.items))

    @svc.rpc
    async def greet(req: Greeting) -> Reply:
        return Reply(text=f"hello {req.name}")

    return svc


@pytest_asyncio.fixture
async def plain(nats_url: str) -> AsyncIterator[PlainClient]:
    client = await nats.connect(nats_url)
    yield client
    await client.drain()


def _no_cloudevent_headers(headers: dict[str, str] | None) -> bool:
    return not any(name.lower().startswith("ce-") for name in headers or {})


async def test_a_bare_protobuf_request_gets_a_bare_protobuf_reply(
    service_conn: Connection, plain: PlainClient
) -> None:
    async with _service().serving(service_conn) as running:
        request = orders.PlaceOrder(customer_id="c1", items=[orders.LineItem(sku="s", quantity=1)])
        reply = await plain.request("plainly.place", request.SerializeToString(), timeout=5)
        assert orders.OrderAccepted.FromString(reply.data) == orders.OrderAccepted(
            order_id="for-c1", total_cents=1
        )
        assert _no_cloudevent_headers(reply.headers)
        assert (reply.headers or {})["Content-Type"] == "application/protobuf"
        assert running.stats["place"].plain == 1
        assert running.stats["place"].num_errors == 0
        stats = json.loads((await plain.request("$SRV.STATS.plainly", b"", timeout=5)).data)
        (place,) = [e for e in stats["endpoints"] if e["name"] == "place"]
        assert place["data"]["plain"] == 1  # visible to operators in $SRV.STATS


async def test_a_json_body_on_a_protobuf_endpoint_is_read_and_answered_as_json(
    service_conn: Connection, plain: PlainClient
) -> None:
    """``nats req plainly.place '{"customerId": "c2"}'``, with or without a Content-Type."""
    async with _service().serving(service_conn) as running:
        for headers in (None, {"Content-Type": "application/json"}):
            reply = await plain.request("plainly.place", b'{"customerId": "c2"}', headers=headers, timeout=5)
            assert json.loads(reply.data) == {"orderId": "for-c2"}
            assert (reply.headers or {})["Content-Type"] == "application/json"
            assert _no_cloudevent_headers(reply.headers)
        assert running.stats["place"].plain == 2


async def test_a_bare_json_request_on_a_dataclass_endpoint(
    service_conn: Connection, plain: PlainClient
) -> None:
    async with _service().serving(service_conn):
        reply = await plain.request("plainly.greet", b'{"name": "Ada"}', timeout=5)
        assert json.loads(reply.data) == {"text": "hello Ada"}
        assert _no_cloudevent_headers(reply.headers)


async def test_a_bare_request_that_does_not_fit_gets_a_400_naming_the_type(
    service_conn: Connection, plain: PlainClient
) -> None:
    async with _service().serving(service_conn) as running:
        for subject, body in (("plainly.greet", b'{"nom": "Ada"}'), ("plainly.place", b"\xff\xff\xff")):
            reply = await plain.request(subject, body, timeout=5)
            headers = reply.headers or {}
            assert headers["Nats-Service-Error-Code"] == "400"
            assert "Traceback" not in headers["Nats-Service-Error"]
            assert json.loads(reply.data)["code"] == 400
        assert "com.example.plain.Greeting" in running.stats["greet"].last_error
        assert "shop.orders.v1.PlaceOrder" in running.stats["place"].last_error


async def test_cloudevents_in_both_modes_still_get_cloudevent_replies(
    service_conn: Connection, nats_connection: Connection
) -> None:
    async with _service().serving(service_conn) as running:
        reply = await Client(nats_connection).call(
            "plainly.place", orders.PlaceOrder(customer_id="b"), returns=orders.OrderAccepted
        )
        assert reply.order_id == "for-b"  # binary mode, through the client
        event = Event.of(orders.PlaceOrder(customer_id="s"), source="/sdk-go")
        structured = binding.to_structured(event, None)
        for headers in (structured.headers, None):  # sdk-go sends no Content-Type
            raw = await nats_connection.request("plainly.place", structured.data, headers=headers, timeout=5)
            answer = binding.from_nats(raw, None)
            assert answer.get_type() == "shop.orders.v1.OrderAccepted"
            assert answer.data_as(orders.OrderAccepted).order_id == "for-s"
        assert running.stats["place"].plain == 0


async def test_bare_events_reach_a_plain_subscription(service_conn: Connection, plain: PlainClient) -> None:
    svc = Service("plain-events", version="1.0.0")
    got: asyncio.Queue[object] = asyncio.Queue()

    @svc.subscribe(subject="plain.orders.placed")
    async def on_placed(event: orders.OrderPlaced) -> None:
        await got.put(event)

    @svc.subscribe(subject="plain.greetings")
    async def on_greeting(event: Greeting) -> None:
        await got.put(event)

    async with svc.serving(service_conn) as running:
        await plain.publish("plain.orders.placed", orders.OrderPlaced(order_id="o9").SerializeToString())
        assert await asyncio.wait_for(got.get(), 10) == orders.OrderPlaced(order_id="o9")
        await plain.publish("plain.greetings", b'{"name": "Bo"}')
        assert await asyncio.wait_for(got.get(), 10) == Greeting(name="Bo")
        assert running.event_stats["on_placed"].plain == 1
        assert running.event_stats["on_greeting"].plain == 1


async def test_a_reply_of_the_wrong_type_is_a_logged_500(
    service_conn: Connection, nats_connection: Connection, caplog: pytest.LogCaptureFixture
) -> None:
    svc = Service("sloppy", version="1.0.0")

    @svc.rpc
    async def place(req: orders.PlaceOrder) -> orders.OrderAccepted:
        return orders.OrderPlaced(order_id="oops")  # type: ignore[return-value]  # the mistake

    async with svc.serving(service_conn):
        with (
            caplog.at_level(logging.ERROR, logger="eventmicro.service"),
            pytest.raises(InternalError) as error,
        ):
            await Client(nats_connection).call(
                "sloppy.place", orders.PlaceOrder(customer_id="c"), returns=orders.OrderAccepted
            )
    assert error.value.code == 500
    assert "OrderPlaced" not in str(error.value)  # the caller learns nothing about the code
    (line,) = [r.getMessage() for r in caplog.records if "declared reply type" in r.getMessage()]
    assert "place" in line
    assert "OrderPlaced" in line
    assert "OrderAccepted" in line
