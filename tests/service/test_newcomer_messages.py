"""The error texts a newcomer meets first say what came and what was expected (issue 15).

A form body sent to the gateway (``curl -d``) is answered 415 naming the media type it got; a
call's timeout reads as the caller wrote it; a wrong ``returns=`` names the reply's type and
the expected one; a handler of an untyped dataclass is told about ``@event_type``; a stream
whose subjects overlap another's names that stream.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass

import httpx
import pytest

from eventmicro import Client, ConfigurationError, Connection, Service, Stream, StreamConflict, Timeout
from eventmicro._errors import PayloadError
from eventmicro.gateway import create_app, serving
from eventmicro.transport.jetstream import ensure_stream
from schemas.shop.inventory.v1 import inventory_pb2 as inventory
from schemas.shop.orders.v1 import orders_pb2 as orders


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


@dataclass
class Untyped:
    text: str


def replies(name: str, stop: asyncio.Event) -> Service:
    svc = Service(name, version="1.0.0")

    @svc.rpc
    async def place(req: orders.PlaceOrder) -> orders.OrderAccepted:
        return orders.OrderAccepted(order_id="o-1")

    @svc.rpc
    async def stuck(req: orders.GetOrder) -> orders.Order:
        await stop.wait()  # answers only after the caller gave up
        return orders.Order()

    @svc.rpc
    async def stock(req: inventory.GetStockRequest) -> inventory.StockLevel:
        return inventory.StockLevel(sku=req.sku)

    return svc


async def test_a_form_body_is_answered_415_naming_its_media_type(nats_connection: Connection) -> None:
    name = unique("nm")
    stop = asyncio.Event()
    async with (
        replies(name, stop).serving(nats_connection),
        serving(create_app(nats_connection)) as base,
        httpx.AsyncClient(base_url=base, timeout=10) as http,
    ):
        form = await http.post(f"/api/{name}/stock", data={"sku": "a"})  # what curl -d sends
        event = await http.post(
            "/events/shop.orders.v1.OrderCancelled", content=b"x", headers={"content-type": "text/csv"}
        )
        ok = await http.post(
            f"/api/{name}/stock", content=b'{"sku": "a"}', headers={"content-type": "application/json"}
        )
    assert form.status_code == 415
    detail = form.json()["error"]["detail"]
    assert "not application/x-www-form-urlencoded" in detail
    assert "-H 'content-type: application/json'" in detail
    assert event.status_code == 415
    assert "not text/csv" in event.json()["error"]["detail"]
    assert ok.status_code == 200


async def test_timeout_and_wrong_returns_say_what_happened(nats_connection: Connection) -> None:
    name = unique("nm")
    stop = asyncio.Event()
    async with replies(name, stop).serving(nats_connection):
        client = Client(nats_connection)
        with pytest.raises(Timeout) as timed_out:
            await client.call(f"{name}.stuck", orders.GetOrder(order_id="o"), returns=orders.Order, timeout=1)
        stop.set()
        with pytest.raises(PayloadError) as wrong:
            await client.call(f"{name}.place", orders.PlaceOrder(customer_id="c"), returns=orders.Order)
        with pytest.raises(PayloadError) as untyped:
            await client.call(f"{name}.place", orders.PlaceOrder(customer_id="c"), returns=Untyped)
    assert str(timed_out.value) == f"no reply on '{name}.stuck' within 1s"
    assert str(wrong.value) == (
        f"the reply of {name}.place is a shop.orders.v1.OrderAccepted (application/protobuf), "
        "not the shop.orders.v1.Order that returns= expects"
    )
    assert "is a shop.orders.v1.OrderAccepted" in str(untyped.value)
    assert "Untyped that returns= expects" in str(untyped.value)


def test_subscribing_to_an_untyped_dataclass_names_event_type() -> None:
    svc = Service(unique("nm"), version="1.0.0")
    with pytest.raises(
        ConfigurationError, match=r"Untyped has no CloudEvent type; decorate the class with @event_type"
    ):

        @svc.subscribe
        async def handle(event: Untyped) -> None: ...


async def test_an_overlapping_stream_names_the_other_stream(nats_connection: Connection) -> None:
    prefix = unique("nm")
    await ensure_stream(nats_connection, Stream(f"{prefix}_A", [f"{prefix}.>"]))
    with pytest.raises(StreamConflict) as caught:
        await ensure_stream(nats_connection, Stream(f"{prefix}_B", [f"{prefix}.orders.*"]))
    assert f"stream {prefix}_A stores {prefix}.>" in str(caught.value)
