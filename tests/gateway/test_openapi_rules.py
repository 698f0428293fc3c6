"""The gateway's OpenAPI document says what the gateway checks: every value its schemas allow for
``/events/{type}``, ``?subject=`` and ``X-Timeout`` is accepted over HTTP, and the event types it
refuses are outside the schema (so an OpenAPI fuzzer's valid inputs are not turned away)."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest_asyncio

from eventmicro import Connection, Service
from eventmicro.gateway import GatewayConfig, create_app, serving


@pytest_asyncio.fixture
async def gateway(nats_connection: Connection) -> AsyncIterator[httpx.AsyncClient]:
    async with (
        serving(create_app(nats_connection, GatewayConfig())) as base,
        httpx.AsyncClient(base_url=base, timeout=10) as http,
    ):
        yield http


def parameter(operation: dict[str, Any], name: str) -> dict[str, Any]:
    found: dict[str, Any] = next(p for p in operation["parameters"] if p["name"] == name)
    return found


async def test_every_event_type_the_schema_allows_is_published_and_no_other(
    gateway: httpx.AsyncClient,
) -> None:
    document = (await gateway.get("/openapi.json")).json()
    publish = document["paths"]["/events/{type}"]["post"]
    schema = parameter(publish, "type")["schema"]
    allowed = re.compile(schema["pattern"])
    candidates = [f"t.{chr(c)}x" for c in range(0x20, 0x7F)] + ["a..b", ".a", "a.", "x" * schema["maxLength"]]
    for event_type in candidates:
        fits = bool(allowed.search(event_type)) and len(event_type) <= schema["maxLength"]
        response = await gateway.post(f"/events/{quote(event_type, safe='')}", json={"n": 1})
        assert (response.status_code == 202) == fits, (event_type, response.status_code, response.text)
    too_long = "x" * (schema["maxLength"] + 1)
    assert (await gateway.post(f"/events/{too_long}", json={})).status_code == 400
    subject = parameter(publish, "subject")["schema"]
    under = re.compile(subject["pattern"])
    for wanted in (
        "events.a",
        "events.a.b-c_d/e",
        "events.a.*",
        "events.>",
        "other.a",
        "events",
        "events..a",
    ):
        response = await gateway.post("/events/t.x", params={"subject": wanted}, json={})
        assert (response.status_code == 202) == bool(under.search(wanted)), (wanted, response.text)


async def test_the_smallest_timeout_the_schema_allows_leaves_time_for_a_reply(
    gateway: httpx.AsyncClient, nats_connection: Connection
) -> None:
    name = f"clock{uuid.uuid4().hex[:8]}"
    svc = Service(name, version="1.0.0")

    @svc.rpc
    async def now(req: str) -> str:
        return req

    async with svc.serving(nats_connection):
        document = (await gateway.get("/openapi.json")).json()
        operation = document["paths"][f"/api/{name}/now"]["post"]
        smallest = parameter(operation, "X-Timeout")["schema"]["minimum"]
        response = await gateway.post(f"/api/{name}/now", json="tick", headers={"X-Timeout": str(smallest)})
        assert response.status_code == 200, response.text
        assert response.json() == "tick"
