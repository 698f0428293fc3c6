"""A service's published JSON Schema (``eventmicro.request_json_schema`` in ``$SRV.INFO``) is text
from another process: the gateway's OpenAPI document keeps it inside itself and bounded.

The hostile "service" is a plain NATS subscriber answering ``$SRV.INFO`` with what it likes.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest_asyncio

from eventmicro import Connection, Message
from eventmicro.gateway import GatewayConfig, create_app, serving
from eventmicro.wire.jsonschema import MAX_PUBLISHED

HOSTILE = {
    "elsewhere": json.dumps(
        {"type": "object", "properties": {"a": {"$ref": "https://attacker.example/s.json"}}}
    ),
    "huge": json.dumps({"description": "x" * (MAX_PUBLISHED * 4)}),
    "deep": "[" * 200_000,
    "not-an-object": "[1, 2, 3]",
    "nan": '{"type": "object", "default": NaN}',
}


@pytest_asyncio.fixture
async def hostile_service(nats_connection: Connection) -> AsyncIterator[str]:
    name = f"liar{uuid.uuid4().hex[:8]}"
    endpoints = [
        {
            "name": kind,
            "subject": f"{name}.{kind}",
            "queue_group": "q",
            "metadata": {
                "eventmicro.request": f"liar.{kind}",
                "eventmicro.reply": "none",
                "eventmicro.request_json_schema": text,
            },
        }
        for kind, text in HOSTILE.items()
    ]
    info = {"type": "io.nats.micro.v1.info_response", "name": name, "id": "x1", "version": "1.0.0",
            "metadata": {}, "description": "", "endpoints": endpoints}  # fmt: skip
    body = json.dumps(info).encode()

    async def answer(msg: Message) -> None:
        await nats_connection.publish(msg.reply, body)

    subscriptions = [await nats_connection.subscribe(s, answer) for s in ("$SRV.INFO", f"$SRV.INFO.{name}")]
    await nats_connection.flush()
    yield name
    for subscription in subscriptions:
        await subscription.unsubscribe()


async def test_hostile_published_schemas_stay_inside_the_openapi_document(
    hostile_service: str, nats_connection: Connection
) -> None:
    async with (
        serving(create_app(nats_connection, GatewayConfig())) as base,
        httpx.AsyncClient(base_url=base, timeout=10) as http,
    ):
        response = await http.get("/openapi.json")
    assert response.status_code == 200
    document: dict[str, Any] = response.json()
    text = response.text
    assert "attacker.example" not in text  # a reference elsewhere is dropped
    assert "x" * MAX_PUBLISHED not in text  # longer than the bound: not taken at all
    for kind in HOSTILE:
        operation = document["paths"][f"/api/{hostile_service}/{kind}"]["post"]
        schema = operation["requestBody"]["content"]["application/json"]["schema"]
        if kind == "elsewhere":
            lifted = document["components"]["schemas"][schema["$ref"].rpartition("/")[2]]
            assert lifted == {"type": "object", "properties": {"a": {}}}
        else:  # not a schema the gateway can read: described by its label, as before
            assert set(schema) == {"description"}, kind
            assert f"liar.{kind}" in schema["description"]
