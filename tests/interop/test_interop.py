"""Interop on a real server: plain nats-py on one side, the binding on the other, both modes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import nats
import pytest
import pytest_asyncio
from nats.aio.client import Client
from nats.aio.msg import Msg

from eventmicro import Connection, Event, Message
from eventmicro import cloudevents_nats as binding
from schemas.shop.orders.v1 import orders_pb2 as orders


@pytest_asyncio.fixture
async def plain(nats_url: str) -> AsyncIterator[Client]:
    client = await nats.connect(nats_url)
    yield client
    await client.drain()


async def next_message(client: Client, subject: str) -> asyncio.Future[Msg]:
    future: asyncio.Future[Msg] = asyncio.get_running_loop().create_future()

    async def handler(msg: Msg) -> None:
        if not future.done():
            future.set_result(msg)

    await client.subscribe(subject, cb=handler)
    await settle(client)
    return future


async def settle(client: Client) -> None:
    """nats-py 2.16's flush() can PING before a buffered SUB is written (eventmicro's own
    Connection works around it, see _natspy.round_trip); push the buffer out first."""
    await client._flush_pending(force_flush=True)
    await client.flush()


@pytest.mark.parametrize("mode", ["binary", "structured"])
async def test_binding_sends_and_plain_nats_py_receives(
    nats_connection: Connection, plain: Client, mode: str
) -> None:
    placed = orders.OrderPlaced(order_id="o-42", total_cents=1999)
    event = Event.of(placed, source="/orders/1", subject="o-42")
    wire = binding.to_binary(event, None) if mode == "binary" else binding.to_structured(event, None)
    arrived = await next_message(plain, "interop.out")
    await nats_connection.publish("interop.out", wire.data, headers=wire.headers)
    msg = await asyncio.wait_for(arrived, 10)
    headers = msg.headers or {}
    if mode == "binary":
        assert headers["ce-type"] == "shop.orders.v1.OrderPlaced"
        assert headers["ce-datacontenttype"] == "application/protobuf"
        assert orders.OrderPlaced.FromString(msg.data) == placed
    else:
        assert headers == {"Content-Type": "application/cloudevents+json"}
        document = json.loads(msg.data)
        assert document["type"] == "shop.orders.v1.OrderPlaced"
        assert document["subject"] == "o-42"
        assert "data_base64" in document
    # and plain nats-py's Msg goes straight back into the binding
    assert binding.from_nats(msg, None).data_as(orders.OrderPlaced) == placed


async def test_plain_nats_py_sends_binary_with_hand_written_headers(
    nats_connection: Connection, plain: Client
) -> None:
    got: asyncio.Future[Message] = asyncio.get_running_loop().create_future()

    async def handler(msg: Message) -> None:
        got.set_result(msg)

    await nats_connection.subscribe("interop.in.binary", handler)
    await nats_connection.flush()
    headers = {
        "CE-SpecVersion": "1.0",  # any case
        "ce-id": "go-1",
        "ce-source": "urn:uuid:6e8bc430-9c3a-11d9-9669-0800200c9a66",
        "ce-type": "com.example.go.v1.Thing",
        "ce-time": "2026-11-28T10:00:00.123456789Z",  # RFC3339Nano, as Go writes it
        "content-type": "application/json",  # sdk-go's fallback instead of ce-datacontenttype
        "ce-subject": "Euro%20%E2%82%AC",
    }
    await plain.publish("interop.in.binary", b'{"name": "thing"}', headers=headers)
    event = binding.from_nats(await asyncio.wait_for(got, 10), None)
    assert event.get_id() == "go-1"
    assert event.get_subject() == "Euro €"
    assert event.get_datacontenttype() == "application/json"
    assert event.data_as(dict) == {"name": "thing"}


async def test_plain_nats_py_sends_structured_without_headers(
    nats_connection: Connection, plain: Client
) -> None:
    got: asyncio.Future[Message] = asyncio.get_running_loop().create_future()

    async def handler(msg: Message) -> None:
        got.set_result(msg)

    await nats_connection.subscribe("interop.in.structured", handler)
    await nats_connection.flush()
    document = {
        "specversion": "1.0",
        "id": "legacy-1",
        "source": "/legacy",
        "type": "com.example.legacy",
        "datacontenttype": "application/json",
        "data": {"n": [1, 2, 3]},
    }
    await plain.publish("interop.in.structured", json.dumps(document).encode())  # no headers at all
    msg = await asyncio.wait_for(got, 10)
    assert msg.headers is None
    event = binding.from_nats(msg, None)
    assert event.get_id() == "legacy-1"
    assert event.data_as(dict) == {"n": [1, 2, 3]}


async def test_request_reply_between_plain_nats_py_and_the_binding(
    nats_connection: Connection, plain: Client
) -> None:
    async def responder(msg: Msg) -> None:  # a foreign service speaking CloudEvents by hand
        request = binding.from_nats(msg, None).data_as(orders.PlaceOrder)
        reply = orders.OrderAccepted(order_id=f"for-{request.customer_id}", total_cents=5)
        headers = {
            "ce-specversion": "1.0",
            "ce-id": "r-1",
            "ce-source": "/foreign",
            "ce-type": "shop.orders.v1.OrderAccepted",
            "ce-datacontenttype": "application/protobuf",
        }
        await plain.publish(msg.reply, reply.SerializeToString(), headers=headers)

    await plain.subscribe("interop.place", cb=responder)
    await settle(plain)
    wire = binding.to_binary(Event.of(orders.PlaceOrder(customer_id="c-9"), source="/caller"), None)
    answer = await nats_connection.request("interop.place", wire.data, headers=wire.headers, timeout=5)
    accepted = binding.from_nats(answer, None).data_as(orders.OrderAccepted)
    assert accepted.order_id == "for-c-9"
