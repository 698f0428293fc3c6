"""Attacks found reviewing issue 12's edges, each over a real socket on a real nats-server.

A request body that trickles in after a complete head held its connection (and up to
``max_body`` of memory) for as long as the client kept sending a byte now and then: 200 such
connections cost the gateway 200 file descriptors and +180 MiB for good, and a body still
dripping after a 401 kept its connection open too. ``body_timeout`` bounds it.

A JSON body that does not fit an endpoint's protobuf request type was answered with protobuf's
own text: Python's words (``Bool value True``, ``Available Fields(except extensions):
"['sku', 'quantity', 'unitPriceCents']"``) and the sender's 4,300-digit number quoted back whole.

``eventmicro docs --discover`` printed what services answered to ``$SRV.INFO`` with C1 controls,
DEL and bidi overrides raw (JSON and YAML alike).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import sys
import unicodedata
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from eventmicro import Connection, NatsServer, Service
from eventmicro.gateway import GatewayConfig, create_app, serving
from eventmicro.transport.connection import Message
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


ROOT = Path(__file__).resolve().parents[2]
HOSTILE = "a\x1b[2Jb\x1b]0;owned\x07c\x9b31md\u202ee\x7ff\nfake line\rg\x07"


async def test_docs_discover_prints_what_services_answer_escaped(
    nats_server: NatsServer, nats_connection: Connection
) -> None:
    """A foreign responder answers $SRV.INFO with escape sequences in its description, metadata
    and endpoints; the AsyncAPI document on stdout holds none of them raw, and reads back
    (JSON and YAML) with the same text."""
    name = f"evil{uuid.uuid4().hex[:8]}"
    info = {
        "type": "io.nats.micro.v1.info_response",
        "name": name,
        "id": "one",
        "version": "1.0.0",
        "description": HOSTILE,
        "metadata": {f"k{HOSTILE}": HOSTILE, "eventmicro.subscribes": HOSTILE},
        "endpoints": [{"name": "e", "subject": f"{name}.e", "metadata": {"eventmicro.reply": HOSTILE}}],
    }

    async def answer(msg: Message) -> None:
        if msg.reply:
            await nats_connection.publish(msg.reply, json.dumps(info).encode())

    for subject in ("$SRV.INFO", f"$SRV.INFO.{name}"):
        await nats_connection.subscribe(subject, answer)
    await nats_connection.flush()
    for form, read in (("json", json.loads), ("yaml", yaml.safe_load)):
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "eventmicro", "docs", "--discover", "--url", nats_server.url,
            "--format", form, name,
            cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONIOENCODING": "utf-8"},
        )  # fmt: skip
        out, err = await asyncio.wait_for(process.communicate(), 60)
        assert process.returncode == 0, err.decode(errors="replace")
        text = out.decode("utf-8")
        raw = sorted({c for c in text if c != "\n" and unicodedata.category(c) in ("Cc", "Cf")})
        assert raw == [], f"{form}: raw control characters reached the terminal: {raw!r}"
        document = read(text)
        assert document["info"]["description"].startswith(HOSTILE), form


async def test_tail_shows_event_data_that_is_not_strict_json_as_bytes_never_drops_it(
    nats_server: NatsServer, nats_connection: Connection
) -> None:
    """Data labelled JSON that nests 100,000 deep was dropped without a word (the reader raised
    in the handler); NaN and a duplicate member name passed for JSON (the last one shown). Each
    is now shown, as the bytes it is, and the next event follows."""
    prefix = f"rawtail{uuid.uuid4().hex[:8]}"
    headers = {
        "ce-specversion": "1.0",
        "ce-source": "/x",
        "ce-type": "com.x",
        "content-type": "application/json",
    }
    bodies = {
        "deep": b"[" * 100_000 + b"]" * 100_000,
        "nan": b"NaN",
        "twice": b'{"a": 1, "a": 2}',
        "ok": b"{}",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "eventmicro", "tail", "--url", nats_server.url, f"{prefix}.>",
        "--count", str(len(bodies)), "--json",
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stderr is not None
    listening = await asyncio.wait_for(process.stderr.readline(), 60)  # once it is subscribed
    assert listening.startswith(b"listening on"), listening
    for name, body in bodies.items():
        await nats_connection.publish(f"{prefix}.{name}", body, headers={**headers, "ce-id": name})
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode(errors="replace")
    shown = {line["id"]: line for line in map(json.loads, out.splitlines())}
    assert list(shown) == list(bodies)
    for name in ("deep", "nan", "twice"):
        assert "data" not in shown[name]
        assert base64.b64decode(shown[name]["data_base64"]) == bodies[name]
    assert shown["ok"]["data"] == {}


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


async def test_a_subject_too_long_for_nats_is_400_and_the_gateway_keeps_its_connection(
    nats_connection: Connection,
) -> None:
    """An event type of 5,000 characters made the gateway publish on a subject longer than
    nats-server's protocol line: the server cut the connection, nats-py closed it for good, the
    request had been answered 202 (the event lost) and every later one 503 until a restart."""
    long_type = "com.example." + "a" * 5000
    structured = json.dumps({"specversion": "1.0", "id": "1", "source": "/x", "type": long_type})
    config = GatewayConfig(token=TOKEN)
    async with (
        serving(create_app(nats_connection, config), config=config) as url,
        httpx.AsyncClient(base_url=url, headers={"authorization": f"Bearer {TOKEN}"}) as http,
    ):
        json_type = {"content-type": "application/json"}
        refused = [
            await http.post(f"/events/{long_type}", content=b"{}", headers=json_type),
            await http.post(
                "/events", content=structured, headers={"content-type": "application/cloudevents+json"}
            ),
            await http.post(
                "/events/com.example.t", params={"subject": f"events.{long_type}"}, content=b"{}"
            ),
            await http.get("/dashboard/events", params={"subject": f"events.{long_type}"}),
        ]
        assert [answer.status_code for answer in refused] == [400] * 4, [a.text[:200] for a in refused]
        assert "at most 1024 characters" in refused[2].json()["error"]["detail"]
        received: asyncio.Queue[Message] = asyncio.Queue()
        subscription = await nats_connection.subscribe("events.com.example.after", received.put)
        await nats_connection.flush()
        try:
            answer = await http.post("/events/com.example.after", content=b"{}", headers=json_type)
            assert answer.status_code == 202
            assert (await asyncio.wait_for(received.get(), 10)).subject == "events.com.example.after"
            assert (await http.get("/healthz")).json() == {"nats": "connected"}
        finally:
            await subscription.unsubscribe()
