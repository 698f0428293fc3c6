"""Attacks on the gateway's request bodies and pipelines, over real sockets on a real nats-server.

A request body that trickles in after a complete head held its connection (and up to
``max_body`` of memory) for as long as the client kept sending a byte now and then: 200 such
connections cost the gateway 200 file descriptors and +180 MiB for good, and a body still
dripping after a 401 kept its connection open too. ``body_timeout`` bounds it.

A JSON body that does not fit an endpoint's protobuf request type was answered with protobuf's
own text: Python's words (``Bool value True``, ``Available Fields(except extensions):
"['sku', 'quantity', 'unitPriceCents']"``) and the sender's 4,300-digit number quoted back whole.

Pipelined requests whose answers are never read are cut after ``MAX_PIPELINED``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from eventmicro import Connection, Service
from eventmicro.gateway import GatewayConfig, create_app, serving
from schemas.shop.orders.v1 import orders_pb2 as orders

TOKEN = "s3cret"


AUTH = b"Authorization: Bearer " + TOKEN.encode() + b"\r\n"


@contextlib.asynccontextmanager
async def gateway(connection: Connection, **limits: Any) -> AsyncIterator[tuple[str, int]]:
    config = GatewayConfig(token=TOKEN, **limits)
    async with serving(create_app(connection, config), config=config) as url:
        host, port = url.removeprefix("http://").rsplit(":", 1)
        yield host, int(port)


async def drip_body(address: tuple[str, int], head: bytes) -> bytes:
    """Send ``head`` (declaring a 1 MB body) and then the body a byte every 50 ms, for ever;
    everything the gateway answers until it closes the connection."""
    reader, writer = await asyncio.open_connection(*address)
    received = bytearray()

    async def receive() -> None:
        with contextlib.suppress(ConnectionError):
            while chunk := await reader.read(1 << 16):
                received.extend(chunk)

    receiving = asyncio.create_task(receive())
    try:
        writer.write(head + b"Content-Type: application/json\r\nContent-Length: 1000000\r\n\r\n{")
        while not receiving.done():
            try:
                writer.write(b" ")
                await writer.drain()
            except ConnectionError:
                break
            await asyncio.wait({receiving}, timeout=0.05)  # the attack's pace
        await receiving
    finally:
        receiving.cancel()
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    return bytes(received)


async def healthz(address: tuple[str, int]) -> bytes:
    reader, writer = await asyncio.open_connection(*address)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")
    try:
        return await reader.read()
    finally:
        writer.close()


async def test_a_body_that_trickles_in_is_408_and_closed(nats_connection: Connection) -> None:
    head = b"POST /api/orders/place HTTP/1.1\r\nHost: gw\r\n" + AUTH
    async with gateway(nats_connection, body_timeout=0.5) as address:
        raw = await drip_body(address, head)
        status_line, _, rest = raw.partition(b"\r\n")
        assert status_line == b"HTTP/1.1 408 Request Timeout", raw[:300]
        error = json.loads(rest.partition(b"\r\n\r\n")[2])["error"]
        assert error["id"] == "eventmicro.gateway.BodyTimeout"
        assert error["detail"] == "the request's body did not arrive within 0.5 s"
        assert (await healthz(address)).startswith(b"HTTP/1.1 200 OK")


async def test_a_body_still_trickling_after_a_401_does_not_hold_the_connection(
    nats_connection: Connection,
) -> None:
    """Unauthenticated: answered 401 at once; the body's bytes that keep coming are dropped and
    the connection is closed once the body is overdue (drip_body returns only on that close)."""
    async with gateway(nats_connection, body_timeout=0.5) as address:
        raw = await drip_body(address, b"POST /api/orders/place HTTP/1.1\r\nHost: gw\r\n")
        assert raw.startswith(b"HTTP/1.1 401 Unauthorized"), raw[:300]
        assert raw.count(b"HTTP/1.1") == 1


def placing_service(name: str) -> Service:
    svc = Service(name, version="1.0.0")

    @svc.rpc
    async def place(req: orders.PlaceOrder) -> orders.OrderAccepted:
        return orders.OrderAccepted(order_id="ord-1")

    return svc


def order(item: str) -> bytes:
    return b'{"customerId": "c1", "items": [' + item.encode() + b"]}"


UNFIT = [  # a PlaceOrder body that does not fit, what the 400 must say
    (order('{"sku": "a", "quantity": true}'), "items.quantity: a value of the wrong type or out of range"),
    (order('{"sku": "a", "quantity": 1.5}'), "items.quantity: a value of the wrong type or out of range"),
    (order('{"quantity": 18446744073709551616}'), "items.quantity: a value of the wrong type"),
    (order('{"unitPriceCents": ' + "9" * 4300 + "}"), "items.unitPriceCents: a value of the wrong type"),
    (order('{"sku": "a", "bogus": 1}'), "'items[0].bogus' is not a field of shop.orders.v1.PlaceOrder"),
    (order("null"), "items: a value of the wrong type or out of range"),
    (b'{"customerId": 5}', "customerId: a value of the wrong type or out of range"),
    (b'{"items": {"sku": "a"}}', "items: a value of the wrong type or out of range"),
]


@pytest.mark.parametrize(("body", "says"), UNFIT, ids=[f"{b[-40:]!r}" for b, _ in UNFIT])
async def test_a_body_that_does_not_fit_is_told_in_the_schemas_words(
    nats_connection: Connection, body: bytes, says: str
) -> None:
    name = f"fit{abs(hash(body)) % 10**8}"
    config = GatewayConfig(token=TOKEN)
    async with (
        placing_service(name).serving(nats_connection),
        serving(create_app(nats_connection, config), config=config) as url,
        httpx.AsyncClient(base_url=url, headers={"authorization": f"Bearer {TOKEN}"}) as http,
    ):
        json_type = {"content-type": "application/json"}
        answer = await http.post(f"/api/{name}/place", content=body, headers=json_type)
    assert answer.status_code == 400, answer.text
    detail = answer.json()["error"]["detail"]
    assert detail.startswith("the request does not fit shop.orders.v1.PlaceOrder: ")
    assert says in detail
    assert len(detail) < 200  # the sender's value is not quoted back
    for python in ("True", "Available Fields", "['", "Failed to parse", "Message type", "Couldn't"):
        assert python not in detail


async def pipelined(address: tuple[str, int], count: int) -> bytes:
    """``count`` GET /healthz pipelined on one connection, all written before a byte is read;
    everything answered until the gateway closes the connection (the last request asks it to)."""
    reader, writer = await asyncio.open_connection(*address)
    requests = b"GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n" * (count - 1)
    writer.write(requests + b"GET /healthz HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")
    received = bytearray()
    try:
        with contextlib.suppress(ConnectionError):
            await writer.drain()
            while chunk := await reader.read(1 << 16):
                received.extend(chunk)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    return bytes(received)


async def test_a_pipeline_whose_answers_are_not_read_is_cut(nats_connection: Connection) -> None:
    """uvicorn parses every pipelined request it reads and reads on after each answer: a client
    that writes requests and never reads grew the gateway by 2.7 GiB (20 connections). A
    connection with more than MAX_PIPELINED requests waiting is closed; a shallow pipeline is
    answered whole, and the gateway keeps answering."""
    from eventmicro.gateway._guard import MAX_PIPELINED

    async with gateway(nats_connection) as address:
        assert (await pipelined(address, 50)).count(b"HTTP/1.1 200 OK") == 50
        answered = (await pipelined(address, 20_000)).count(b"HTTP/1.1 200 OK")
        assert answered <= MAX_PIPELINED + 1  # then closed: the rest never parsed, never answered
        assert (await healthz(address)).startswith(b"HTTP/1.1 200 OK")
