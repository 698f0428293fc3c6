"""The gateway while its nats-server is down: 503 on every data route, never 404 or 504; back
to normal once the server is back. A request that would make nats-server cut the gateway's
connection (a subject longer than its protocol line) is a 400 instead, and the connection stays."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable

import httpx

from eventmicro import Connection, ConnectOptions, NatsServer, Service
from eventmicro.gateway import GatewayConfig, create_app, serving
from eventmicro.transport.connection import Message
from schemas.shop.inventory.v1 import inventory_pb2 as inventory

Eventually = Callable[..., Awaitable[None]]

TOKEN = "s3cret"


def stock() -> Service:
    svc = Service("outagestock", version="1.0.0")

    @svc.rpc
    async def level(req: inventory.GetStockRequest) -> inventory.StockLevel:
        return inventory.StockLevel(sku=req.sku, available=7)

    return svc


async def test_during_a_nats_outage_the_data_routes_answer_503(
    fresh_nats_server: NatsServer, eventually: Eventually
) -> None:
    options = ConnectOptions.from_env(fresh_nats_server.url, environ={}, reconnect_wait=0.1)
    async with (
        Connection(options) as gateway_connection,
        Connection(options) as service_connection,
        stock().serving(service_connection),
        serving(create_app(gateway_connection, GatewayConfig(discovery_ttl=60))) as base,
        httpx.AsyncClient(base_url=base, timeout=10) as http,
    ):
        call = {"sku": "apple"}
        before = await http.post("/api/outagestock/level", json=call)
        assert (before.status_code, before.json()) == (200, {"sku": "apple", "available": 7})

        await fresh_nats_server.astop()
        await eventually(lambda: not gateway_connection.is_connected)
        answers = {
            "known service": await http.post("/api/outagestock/level", json=call),  # its $SRV.INFO cached
            "other service": await http.post("/api/nosuchservice/level", json=call),
            "event": await http.post("/events/com.example.outage", json={"n": 1}),
            "durable event": await http.post("/events/com.example.outage?durable=true", json={"n": 1}),
            "openapi": await http.get("/openapi.json"),
            "asyncapi": await http.get("/asyncapi.json"),
            "dashboard services": await http.get("/dashboard/services"),
            "health": await http.get("/healthz"),
        }
        for route, answer in answers.items():
            assert answer.status_code == 503, (route, answer.text)
            if route != "health":
                assert answer.json()["error"] == {
                    "code": 503,
                    "status": "Service Unavailable",
                    "id": "eventmicro.gateway.Unavailable",
                    "detail": "the gateway is not connected to NATS",
                }, route

        await fresh_nats_server.astart()
        await eventually(lambda: gateway_connection.is_connected and service_connection.is_connected)
        after = await http.post("/api/outagestock/level", json=call)
        assert (after.status_code, after.json()) == (200, {"sku": "apple", "available": 7})


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
