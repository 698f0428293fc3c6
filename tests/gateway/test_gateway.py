"""The HTTP gateway through a real HTTP client (httpx) against uvicorn, real services, a real NATS.

Every status of the mapping has a test: service errors (400, 404, 409, 418, 500), no
responders (503), timeouts (504), unknown service or endpoint (404), bad JSON and bodies that
do not fit the type (400), limits (413, 415, 406), authentication (401) and CORS.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
from openapi_spec_validator import validate
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.types import ASGIApp

from eventmicro import (
    BadRequest,
    BreakerPolicy,
    Conflict,
    Connection,
    ConnectOptions,
    Message,
    NatsServer,
    NotFound,
    Service,
    ServiceError,
    Stream,
)
from eventmicro import cloudevents_nats as binding
from eventmicro.gateway import GatewayConfig, create_app, serving
from schemas.shop.inventory.v1 import inventory_pb2 as inventory
from schemas.shop.orders.v1 import orders_pb2 as orders

Eventually = Callable[..., Awaitable[None]]
SECRET = "db password=hunter2"
ROOT = Path(__file__).resolve().parents[2]
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@dataclasses.dataclass
class Note:
    text: str
    stars: int = 0


def stock_service(name: str) -> Service:
    svc = Service(name, version="2.0.0", description="stock for the gateway tests")

    @svc.rpc
    async def stock(req: inventory.GetStockRequest) -> inventory.StockLevel:
        match req.sku:
            case "missing":
                raise NotFound(f"no sku {req.sku}")
            case "taken":
                raise Conflict("reserved by another order")
            case "":
                raise BadRequest("sku is required")
            case "boom":
                raise RuntimeError(SECRET)
            case "teapot":
                raise ServiceError("short and stout", code=418)
            case "odd":
                raise ServiceError("not an HTTP error", code=200)
            case "slow":
                await asyncio.sleep(3)
        return inventory.StockLevel(sku=req.sku, available=len(req.sku))

    @svc.rpc
    async def forget(req: inventory.GetStockRequest) -> None:
        return None

    @svc.rpc
    async def note(req: Note) -> Note:
        return Note(text=req.text.upper(), stars=req.stars + 1)

    return svc


@asynccontextmanager
async def gateway(
    connection: Connection, config: GatewayConfig | None = None
) -> AsyncIterator[httpx.AsyncClient]:
    """The gateway on a free port, and an HTTP client pointed at it."""
    async with (
        serving(create_app(connection, config)) as base,
        httpx.AsyncClient(base_url=base, timeout=10) as client,
    ):
        yield client


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


async def test_json_call_returns_the_reply_as_json(nats_connection: Connection) -> None:
    name = unique("gw")
    async with stock_service(name).serving(nats_connection), gateway(nats_connection) as http:
        response = await http.post(f"/api/{name}/stock", json={"sku": "apple"})
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"
        assert response.json() == {"sku": "apple", "available": 5}

        response = await http.post(f"/api/{name}/note", json={"text": "hi", "stars": 2})
        assert (response.status_code, response.json()) == (200, {"text": "HI", "stars": 3})

        response = await http.post(f"/api/{name}/forget", json={"sku": "x"})
        assert (response.status_code, response.content) == (204, b"")


async def test_protobuf_in_and_out(nats_connection: Connection) -> None:
    name = unique("gw")
    body = inventory.GetStockRequest(sku="pear").SerializeToString()
    async with stock_service(name).serving(nats_connection), gateway(nats_connection) as http:
        response = await http.post(
            f"/api/{name}/stock",
            content=body,
            headers={"content-type": "application/protobuf", "accept": "application/protobuf"},
        )
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/protobuf"
        assert inventory.StockLevel.FromString(response.content) == inventory.StockLevel(
            sku="pear", available=4
        )

        as_json = await http.post(
            f"/api/{name}/stock", content=body, headers={"content-type": "application/protobuf"}
        )
        assert as_json.json() == {"sku": "pear", "available": 4}  # protobuf in, JSON out by default

        broken = await http.post(
            f"/api/{name}/stock", content=b"\xff\xff\xff", headers={"content-type": "application/protobuf"}
        )
        assert broken.status_code == 400
        assert "not a protobuf shop.inventory.v1.GetStockRequest" in broken.json()["error"]["detail"]

        # a JSON endpoint cannot take or give protobuf
        wrong = await http.post(
            f"/api/{name}/note", content=b"\x0a\x01x", headers={"content-type": "application/protobuf"}
        )
        assert wrong.status_code == 415
        refused = await http.post(
            f"/api/{name}/note", json={"text": "a"}, headers={"accept": "application/protobuf"}
        )
        assert refused.status_code == 406


def error_of(response: httpx.Response) -> dict[str, Any]:
    document = response.json()
    assert set(document) == {"error"}
    error: dict[str, Any] = document["error"]
    assert error["code"] == response.status_code
    return error


@pytest.mark.parametrize(
    ("sku", "status", "error_id", "detail"),
    [
        ("missing", 404, "eventmicro.NotFound", "no sku missing"),
        ("taken", 409, "eventmicro.Conflict", "reserved by another order"),
        ("", 400, "eventmicro.BadRequest", "sku is required"),
        ("teapot", 418, "eventmicro.ServiceError", "short and stout"),
        ("odd", 500, "eventmicro.ServiceError", "not an HTTP error"),  # a code that is no HTTP error
        ("boom", 500, "eventmicro.InternalError", "Internal Server Error"),  # nothing of the exception
    ],
)
async def test_service_errors_map_to_http_statuses(
    nats_connection: Connection, sku: str, status: int, error_id: str, detail: str
) -> None:
    name = unique("gw")
    async with stock_service(name).serving(nats_connection), gateway(nats_connection) as http:
        response = await http.post(f"/api/{name}/stock", json={"sku": sku})
    assert response.status_code == status
    error = error_of(response)
    assert (error["id"], error["detail"]) == (error_id, detail)
    assert "hunter2" not in response.text
    assert "Traceback" not in response.text


async def test_unknown_service_and_endpoint_are_404_with_the_reason(nats_connection: Connection) -> None:
    name = unique("gw")
    async with stock_service(name).serving(nats_connection), gateway(nats_connection) as http:
        nobody = await http.post("/api/nosuchservice/get", json={})
        endpoint = await http.post(f"/api/{name}/nosuch", json={})
        route = await http.get("/nowhere")
        method = await http.get(f"/api/{name}/stock")
    assert nobody.status_code == 404
    assert error_of(nobody)["detail"] == "no service named 'nosuchservice' answers"
    assert endpoint.status_code == 404
    assert (
        error_of(endpoint)["detail"]
        == f"service {name!r} has no endpoint 'nosuch' (its endpoints: forget, note, stock)"
    )
    assert (route.status_code, error_of(route)["id"]) == (404, "eventmicro.gateway.NotFound")
    assert (method.status_code, error_of(method)["id"]) == (405, "eventmicro.gateway.MethodNotAllowed")


@pytest.mark.parametrize(
    ("content", "content_type", "detail"),
    [
        (b"{not json", "application/json", "the body is not valid JSON"),
        (b'{"sku": 5}', "application/json", "the request does not fit shop.inventory.v1.GetStockRequest"),
        (
            b'{"colour": "red"}',
            "application/json",
            "the request does not fit shop.inventory.v1.GetStockRequest",
        ),
        (
            b"[1, 2]",
            "application/json",
            "for shop.inventory.v1.GetStockRequest must be a JSON object, not an array",
        ),
    ],
)
async def test_bodies_that_do_not_fit_are_400_with_the_reason(
    nats_connection: Connection, content: bytes, content_type: str, detail: str
) -> None:
    name = unique("gw")
    async with stock_service(name).serving(nats_connection), gateway(nats_connection) as http:
        response = await http.post(
            f"/api/{name}/stock", content=content, headers={"content-type": content_type}
        )
        stats = await http.get("/healthz")
    assert response.status_code == 400
    assert detail in error_of(response)["detail"]
    assert stats.status_code == 200


async def test_a_json_endpoint_rejects_a_body_its_type_refuses(nats_connection: Connection) -> None:
    name = unique("gw")
    async with stock_service(name).serving(nats_connection), gateway(nats_connection) as http:
        response = await http.post(f"/api/{name}/note", json={"stars": 1})  # text is required
    assert response.status_code == 400  # the service's own check, answered as BadRequest
    assert error_of(response)["id"] == "eventmicro.BadRequest"


async def test_no_responders_is_503_and_a_slow_service_504_within_the_capped_timeout(
    nats_connection: Connection,
) -> None:
    name = unique("gw")
    config = GatewayConfig(max_timeout=0.3, default_timeout=0.3, discovery_ttl=60)
    async with gateway(nats_connection, config) as http:
        async with stock_service(name).serving(nats_connection):
            assert (await http.post(f"/api/{name}/stock", json={"sku": "a"})).status_code == 200
            slow = await http.post(f"/api/{name}/stock", json={"sku": "slow"}, headers={"x-timeout": "60"})
            assert slow.status_code == 504
            assert error_of(slow)["detail"] == f"{name}.stock did not answer within 0.3s"  # capped
            bad_timeout = await http.post(
                f"/api/{name}/stock", json={"sku": "a"}, headers={"x-timeout": "-1"}
            )
            assert bad_timeout.status_code == 400
        # the service stopped; the gateway still knows its endpoints (discovery_ttl), nobody answers
        gone = await http.post(f"/api/{name}/stock", json={"sku": "a"})
        assert gone.status_code == 503
        assert error_of(gone)["id"] == "eventmicro.gateway.NoResponders"
        again = await http.post(f"/api/{name}/stock", json={"sku": "a"})
        assert again.status_code == 404  # forgotten after no responders: discovery asked again


async def test_an_open_circuit_is_503_with_retry_after_and_nothing_is_called(
    nats_connection: Connection,
) -> None:
    name = unique("gw")
    config = GatewayConfig(breaker=BreakerPolicy(failures=2, open_for=60))
    async with (
        stock_service(name).serving(nats_connection) as running,
        gateway(nats_connection, config) as http,
    ):
        for _ in range(2):
            assert (await http.post(f"/api/{name}/stock", json={"sku": "boom"})).status_code == 500
        handled = running.stats["stock"].num_requests
        failing_fast = await http.post(f"/api/{name}/stock", json={"sku": "a"})
        assert failing_fast.status_code == 503
        assert error_of(failing_fast)["id"] == "eventmicro.gateway.CircuitOpen"
        assert 1 <= int(failing_fast.headers["retry-after"]) <= 60
        assert running.stats["stock"].num_requests == handled  # not called
        other = await http.post(f"/api/{name}/note", json={"text": "hi"})  # a circuit per endpoint
        assert other.status_code == 200


async def test_limits_body_size_and_media_type(nats_connection: Connection) -> None:
    name = unique("gw")
    config = GatewayConfig(max_body=64)
    async with stock_service(name).serving(nats_connection), gateway(nats_connection, config) as http:
        large = await http.post(f"/api/{name}/stock", json={"sku": "x" * 100})

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: checked while reading
            for _ in range(10):
                yield b'{"sku": "xxxxxxxxxx"}'

        chunked = await http.post(f"/api/{name}/stock", content=chunks())
        text = await http.post(f"/api/{name}/stock", content=b"sku=a", headers={"content-type": "text/plain"})
        ok = await http.post(f"/api/{name}/stock", json={"sku": "x"})
    assert (large.status_code, error_of(large)["id"]) == (413, "eventmicro.gateway.BodyTooLarge")
    assert chunked.status_code == 413
    assert text.status_code == 415
    assert ok.status_code == 200


async def test_bearer_token_guards_data_routes_only(nats_connection: Connection) -> None:
    name = unique("gw")
    config = GatewayConfig(token="s3cret-token")
    async with stock_service(name).serving(nats_connection), gateway(nats_connection, config) as http:
        missing = await http.post(f"/api/{name}/stock", json={"sku": "a"})
        wrong = await http.post(
            f"/api/{name}/stock", json={"sku": "a"}, headers={"authorization": "Bearer nope"}
        )
        right = await http.post(
            f"/api/{name}/stock", json={"sku": "a"}, headers={"authorization": "Bearer s3cret-token"}
        )
        document = await http.get("/openapi.json")
        page = await http.get("/dashboard/")
        health = await http.get("/healthz")
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"].startswith("Bearer")
    assert wrong.status_code == 401
    assert "s3cret" not in wrong.text
    assert right.status_code == 200
    assert document.status_code == 401
    assert page.status_code == 200
    assert "<html" in page.text.lower()
    assert health.status_code == 200


async def test_cors_allows_configured_origins_only(nats_connection: Connection) -> None:
    config = GatewayConfig(cors_origins=("https://app.example.com",), token="t")
    async with gateway(nats_connection, config) as http:
        preflight = {
            "access-control-request-method": "POST",
            "access-control-request-headers": "authorization",
        }
        allowed = await http.options("/api/x/y", headers={"origin": "https://app.example.com", **preflight})
        other = await http.options("/api/x/y", headers={"origin": "https://evil.example.com", **preflight})
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "https://app.example.com"
    assert "access-control-allow-origin" not in other.headers


async def test_without_cors_configured_no_cors_headers(nats_connection: Connection) -> None:
    async with gateway(nats_connection) as http:
        response = await http.get("/healthz", headers={"origin": "https://app.example.com"})
    assert "access-control-allow-origin" not in response.headers


async def test_openapi_document_is_valid_and_describes_discovered_endpoints(
    nats_connection: Connection,
) -> None:
    name = unique("gw")
    async with stock_service(name).serving(nats_connection), gateway(nats_connection) as http:
        document = (await http.get("/openapi.json")).json()
    validate(document)  # openapi-spec-validator: the OpenAPI 3.1 schema
    operation = document["paths"][f"/api/{name}/stock"]["post"]
    request_schema = operation["requestBody"]["content"]["application/json"]["schema"]
    reply_schema = operation["responses"]["200"]["content"]["application/json"]["schema"]
    assert request_schema == {"$ref": "#/components/schemas/shop.inventory.v1.GetStockRequest"}
    assert reply_schema == {"$ref": "#/components/schemas/shop.inventory.v1.StockLevel"}
    level = document["components"]["schemas"]["shop.inventory.v1.StockLevel"]
    assert set(level["properties"]) == {"sku", "available", "reserved"}
    assert "204" in document["paths"][f"/api/{name}/forget"]["post"]["responses"]
    assert {"404", "503", "504"} <= set(operation["responses"])
    assert "/events/{type}" in document["paths"]


async def test_a_validator_rejects_a_broken_openapi_document(nats_connection: Connection) -> None:
    async with gateway(nats_connection) as http:
        document = (await http.get("/openapi.json")).json()
    validate(document)
    del document["info"]
    with pytest.raises(Exception, match="info"):
        validate(document)


# --- events -------------------------------------------------------------------------------


@asynccontextmanager
async def received(connection: Connection, subject: str) -> AsyncIterator[list[Message]]:
    messages: list[Message] = []

    async def collect(msg: Message) -> None:
        messages.append(msg)

    subscription = await connection.subscribe(subject, collect)
    await connection.flush()
    try:
        yield messages
    finally:
        await subscription.unsubscribe()


async def test_plain_json_becomes_a_protobuf_cloudevent(
    nats_connection: Connection, eventually: Eventually
) -> None:
    subject = "events.shop.orders.v1.OrderCancelled"
    async with received(nats_connection, subject) as messages, gateway(nats_connection) as http:
        response = await http.post(
            "/events/shop.orders.v1.OrderCancelled", json={"orderId": "o-1", "reason": "changed my mind"}
        )
        assert response.status_code == 202
        answer = response.json()
        await eventually(lambda: len(messages) == 1)
    event = binding.from_nats(messages[0], None)
    assert (event.get_id(), event.get_type(), answer["subject"]) == (answer["id"], answer["type"], subject)
    assert event.data_as(orders.OrderCancelled) == orders.OrderCancelled(
        order_id="o-1", reason="changed my mind"
    )


async def test_plain_json_of_an_unknown_type_travels_as_json(
    nats_connection: Connection, eventually: Eventually
) -> None:
    async with (
        received(nats_connection, "events.com.example.note") as messages,
        gateway(nats_connection) as http,
    ):
        response = await http.post("/events/com.example.note", json={"text": "hi"})
        bad = await http.post(
            "/events/com.example.note", content=b"{nope", headers={"content-type": "application/json"}
        )
        assert response.status_code == 202
        assert bad.status_code == 400
        await eventually(lambda: len(messages) == 1)
    assert messages[0].headers is not None
    assert messages[0].headers["ce-datacontenttype"] == "application/json"
    assert json.loads(messages[0].data) == {"text": "hi"}


async def test_binary_mode_cloudevent_is_forwarded_unchanged(
    nats_connection: Connection, eventually: Eventually
) -> None:
    headers = {
        "ce-specversion": "1.0",
        "ce-id": "http-1",
        "ce-source": "/http/producer",
        "ce-type": "com.example.sensor.read",
        "ce-time": "2026-11-28T10:00:00Z",
        "ce-subject": "sensor%2042",  # percent-encoded, as the HTTP binding writes it
        "ce-partitionkey": "sensor-42",
        "content-type": "application/json",
    }
    body = b'{"celsius": 21.5}'
    async with (
        received(nats_connection, "events.com.example.sensor.read") as messages,
        gateway(nats_connection) as http,
    ):
        response = await http.post("/events/com.example.sensor.read", content=body, headers=headers)
        assert response.status_code == 202
        await eventually(lambda: len(messages) == 1)
    forwarded = messages[0]
    assert forwarded.data == body
    assert forwarded.headers is not None
    for name, value in headers.items():
        if name != "content-type":
            assert forwarded.headers[name] == value
    assert forwarded.headers["ce-datacontenttype"] == "application/json"  # the NATS binding's header
    event = binding.from_nats(forwarded, None)
    assert (event.get_subject(), event.get_extension("partitionkey")) == ("sensor 42", "sensor-42")


async def test_structured_and_batch_cloudevents_are_forwarded(
    nats_connection: Connection, eventually: Eventually
) -> None:
    one = {
        "specversion": "1.0",
        "id": "s-1",
        "source": "/http",
        "type": "com.example.batch",
        "data": {"n": 1},
    }
    two = {**one, "id": "s-2", "data": {"n": 2}}
    body = json.dumps(one).encode()
    async with (
        received(nats_connection, "events.com.example.batch") as messages,
        gateway(nats_connection) as http,
    ):
        single = await http.post(
            "/events", content=body, headers={"content-type": "application/cloudevents+json"}
        )
        batch = await http.post(
            "/events/com.example.batch",
            content=json.dumps([one, two]).encode(),
            headers={"content-type": "application/cloudevents-batch+json"},
        )
        assert (single.status_code, batch.status_code) == (202, 202)
        assert [e["id"] for e in batch.json()["events"]] == ["s-1", "s-2"]
        await eventually(lambda: len(messages) == 3)
    assert messages[0].data == body  # structured mode: the bytes as they came
    assert [binding.from_nats(m, None).get_id() for m in messages] == ["s-1", "s-1", "s-2"]


async def test_invalid_cloudevents_are_400_and_never_published(
    nats_connection: Connection, eventually: Eventually
) -> None:
    async with received(nats_connection, "events.>") as messages, gateway(nats_connection) as http:
        no_id = await http.post(
            "/events/com.example.x",
            content=b"{}",
            headers={"ce-specversion": "1.0", "ce-source": "/x", "ce-type": "com.example.x"},
        )
        wrong_version = await http.post(
            "/events",
            content=json.dumps({"specversion": "0.3", "id": "1", "source": "/x", "type": "t"}).encode(),
            headers={"content-type": "application/cloudevents+json"},
        )
        other_type = await http.post(
            "/events/com.example.x",
            content=b"{}",
            headers={"ce-specversion": "1.0", "ce-id": "1", "ce-source": "/x", "ce-type": "com.example.y"},
        )
        half_batch = await http.post(  # the second event is broken: none is published
            "/events",
            content=json.dumps(
                [{"specversion": "1.0", "id": "1", "source": "/x", "type": "t"}, {"id": "2"}]
            ).encode(),
            headers={"content-type": "application/cloudevents-batch+json"},
        )
        plain_without_type = await http.post("/events", json={"a": 1})
        outside = await http.post("/events/com.example.x?subject=orders.place", json={})
        wildcard = await http.post("/events/com.example.*", json={})
        # a marker published after them all: once it arrives, anything sent before it has too
        marker = await http.post("/events/com.example.marker", json={})
        assert marker.status_code == 202
        await eventually(lambda: len(messages) >= 1)
    assert error_of(no_id)["detail"].startswith("not a valid CloudEvent")
    assert no_id.status_code == 400
    assert wrong_version.status_code == 400
    assert other_type.status_code == 400
    assert "is not the path's" in error_of(other_type)["detail"]
    assert half_batch.status_code == 400
    assert plain_without_type.status_code == 400
    assert outside.status_code == 400
    assert "under events." in error_of(outside)["detail"]
    assert wildcard.status_code == 400
    assert [binding.from_nats(m, None).get_type() for m in messages] == ["com.example.marker"]


async def test_durable_publish_answers_with_the_stream_sequence(nats_connection: Connection) -> None:
    stream_name = unique("GW").upper()
    event_type = f"com.example.{stream_name.lower()}"
    storing = Service(
        unique("store"), version="1.0.0", streams=[Stream(stream_name, subjects=[f"events.{event_type}"])]
    )
    async with storing.serving(nats_connection), gateway(nats_connection) as http:
        body = json.dumps({"specversion": "1.0", "id": "d-1", "source": "/http", "type": event_type}).encode()
        headers = {"content-type": "application/cloudevents+json"}
        first = await http.post("/events?durable=true", content=body, headers=headers)
        again = await http.post("/events?durable=true", content=body, headers=headers)  # same identity
        unstored = await http.post("/events/com.example.nostream?durable=true", json={})
    assert first.status_code == 201
    assert (first.json()["stream"], first.json()["duplicate"]) == (stream_name, False)
    assert (again.json()["seq"], again.json()["duplicate"]) == (first.json()["seq"], True)
    assert unstored.status_code == 503
    assert error_of(unstored)["id"] == "eventmicro.gateway.NotStored"


async def test_an_event_larger_than_nats_allows_is_413(nats_connection: Connection) -> None:
    config = GatewayConfig(max_body=4 * 1024 * 1024)  # above the server's 1 MiB max_payload
    async with gateway(nats_connection, config) as http:
        response = await http.post(
            "/events/com.example.big",
            content=b'"' + b"x" * (1024 * 1024 + 10) + b'"',
            headers={"content-type": "application/json"},
        )
    assert response.status_code == 413


def foreign_service(connection: Connection, name: str, metadata: dict[str, str]) -> Any:
    """A service in another language with one endpoint ``get`` that answers bytes of no type."""
    endpoint = {"name": "get", "subject": f"{name}.get", "queue_group": "q", "metadata": metadata}
    return advertising_service(connection, name, [endpoint], answering="get", reply=b"\xff\xfe not protobuf")


async def test_a_type_the_gateway_lacks_is_501_and_an_undecodable_reply_502(
    nats_connection: Connection,
) -> None:
    missing, broken = unique("foreign"), unique("foreign")
    lacking = {
        "eventmicro.request_schema": "type.googleapis.com/acme.v1.Unknown",
        "eventmicro.request": "acme",
    }
    declared = {
        "eventmicro.request_schema": "type.googleapis.com/shop.inventory.v1.GetStockRequest",
        "eventmicro.reply_schema": "type.googleapis.com/shop.inventory.v1.StockLevel",
    }
    async with (
        foreign_service(nats_connection, missing, lacking),
        foreign_service(nats_connection, broken, declared),
        gateway(nats_connection) as http,
    ):
        not_installed = await http.post(f"/api/{missing}/get", json={})
        undecodable = await http.post(f"/api/{broken}/get", json={"sku": "a"})
    assert not_installed.status_code == 501
    assert "acme.v1.Unknown is not installed" in error_of(not_installed)["detail"]
    assert undecodable.status_code == 502
    assert error_of(undecodable)["detail"] == f"the reply of {broken}.get could not be decoded"


async def test_concurrent_calls_share_one_discovery_request(nats_connection: Connection) -> None:
    name = unique("gw")
    asked: list[Message] = []

    async def spy(msg: Message) -> None:
        asked.append(msg)

    spying = await nats_connection.subscribe(f"$SRV.INFO.{name}", spy)
    try:
        async with stock_service(name).serving(nats_connection), gateway(nats_connection) as http:
            responses = await asyncio.gather(
                *(http.post(f"/api/{name}/stock", json={"sku": f"s{i}"}) for i in range(20))
            )
    finally:
        await spying.unsubscribe()
    assert [r.json()["available"] for r in responses] == [len(f"s{i}") for i in range(20)]
    assert len(asked) == 1


async def test_asyncapi_document_of_the_discovered_services(nats_connection: Connection) -> None:
    spec_file = (
        Path(__file__).parents[1] / "interop/js/node_modules/@asyncapi/specs/schemas/3.0.0-without-$id.json"
    )
    if not spec_file.is_file():
        pytest.skip("the AsyncAPI schema comes from npm: run `npm ci` in tests/interop/js (make test does)")
    schema = json.loads(spec_file.read_text(encoding="utf-8"))
    name = unique("gw")
    async with stock_service(name).serving(nats_connection), gateway(nats_connection) as http:
        document = (await http.get("/asyncapi.json")).json()
    assert list(jsonschema.Draft7Validator(schema).iter_errors(document)) == []
    assert document["asyncapi"] == "3.0.0"
    operation = document["operations"][f"{name}.stock"]
    assert operation["reply"] is not None  # the RPC endpoint is a request/reply operation
    reply = document["components"]["messages"][f"{name}.stock.reply"]
    assert reply["payload"] == {"$ref": "#/components/schemas/shop.inventory.v1.StockLevel"}


async def test_concurrent_document_requests_share_one_discovery_round(nats_connection: Connection) -> None:
    asked: list[Message] = []

    async def spy(msg: Message) -> None:
        asked.append(msg)

    spying = await nats_connection.subscribe("$SRV.INFO", spy)
    try:
        async with gateway(nats_connection) as http:
            documents = await asyncio.gather(*(http.get("/openapi.json") for _ in range(10)))
    finally:
        await spying.unsubscribe()
    assert [d.status_code for d in documents] == [200] * 10
    assert len(asked) == 1


# --- review fixes: what a caller, or a service on the bus, could do that was not handled --------
# endpoints advertising wildcard or system subjects, requests larger than NATS allows, malformed
# $SRV.INFO metadata, deeply nested JSON, binary-mode headers that are not percent-encoded, a
# closed NATS connection, a mounted gateway with a token, the token in a repr, a non-ASCII
# token, SIGTERM with a live event stream open.


@dataclasses.dataclass
class ShortNote:
    text: str


def note_service(name: str) -> Service:
    svc = Service(name, version="1.0.0")

    @svc.rpc
    async def note(req: ShortNote) -> ShortNote:
        return ShortNote(text=req.text[:10])

    @svc.rpc
    async def nested(req: list[Any]) -> str:
        return str(len(req))

    return svc


@asynccontextmanager
async def client_of(app: ASGIApp) -> AsyncIterator[httpx.AsyncClient]:
    """``app`` on a free port, and an HTTP client pointed at it."""
    async with serving(app) as base, httpx.AsyncClient(base_url=base, timeout=10) as client:
        yield client


@asynccontextmanager
async def advertising_service(
    connection: Connection,
    name: str,
    endpoints: list[dict[str, Any]],
    *,
    answering: str = "ok",
    reply: bytes = b'{"ok": true}',
) -> AsyncIterator[None]:
    """A service as NATS sees it: whatever ``$SRV.INFO`` answer it gives, and ``reply`` to requests
    on ``<name>.<answering>``."""
    info = {"type": "io.nats.micro.v1.info_response", "name": name, "id": "f1", "version": "0.1.0",
            "metadata": {}, "endpoints": endpoints}  # fmt: skip

    async def answer_info(msg: Message) -> None:
        await connection.publish(msg.reply, json.dumps(info).encode())

    async def answer(msg: Message) -> None:
        await connection.publish(msg.reply, reply)

    subscriptions = [
        await connection.subscribe(f"$SRV.INFO.{name}", answer_info),
        await connection.subscribe("$SRV.INFO", answer_info),
        await connection.subscribe(f"{name}.{answering}", answer),
    ]
    await connection.flush()
    try:
        yield
    finally:
        for subscription in subscriptions:
            await subscription.unsubscribe()


# --- /api ---------------------------------------------------------------------------------------


async def test_an_endpoint_advertising_a_wildcard_or_system_subject_gets_no_request(
    nats_connection: Connection, eventually: Eventually
) -> None:
    name, victim = unique("rogue"), unique("victim")
    endpoints = [
        {"name": "jsapi", "subject": "$JS.API.INFO", "queue_group": "q", "metadata": {}},
        {"name": "wild", "subject": f"{victim}.*", "queue_group": "q", "metadata": {}},
        {"name": "all", "subject": ">", "queue_group": "q", "metadata": {}},
        {"name": "space", "subject": f"{victim}.a b", "queue_group": "q", "metadata": {}},
        {"name": "ok", "subject": f"{name}.ok", "queue_group": "q", "metadata": {}},
    ]
    async with (
        received(nats_connection, f"{victim}.>") as reached,
        advertising_service(nats_connection, name, endpoints),
        gateway(nats_connection) as http,
    ):
        answers = {e: await http.post(f"/api/{name}/{e}", json={}) for e in ("jsapi", "wild", "all", "space")}
        fine = await http.post(f"/api/{name}/ok", json={})
        await nats_connection.publish(f"{victim}.marker", b"")  # once it arrives, earlier ones have too
        await eventually(lambda: len(reached) >= 1)
    for endpoint, answer in answers.items():
        assert answer.status_code == 502, (endpoint, answer.text)
        assert error_of(answer)["id"] == "eventmicro.gateway.BadEndpoint"
        assert "which the gateway does not call" in error_of(answer)["detail"]
    assert "account" not in answers["jsapi"].text  # no JetStream API answer came back
    assert [m.subject for m in reached] == [f"{victim}.marker"]
    assert (fine.status_code, fine.json()) == (200, {"ok": True})


async def test_a_request_within_max_body_but_over_the_nats_max_payload_is_413(
    nats_connection: Connection,
) -> None:
    name = unique("gw")
    limit = 1024 * 1024  # the body may be as large as the server's max_payload, headers come on top
    body = b'{"text": "' + b"x" * (limit - 12) + b'"}'
    assert len(body) == limit
    async with note_service(name).serving(nats_connection), gateway(nats_connection) as http:
        response = await http.post(
            f"/api/{name}/note", content=body, headers={"content-type": "application/json"}
        )
        small = await http.post(f"/api/{name}/note", json={"text": "hello"})
    assert response.status_code == 413
    assert error_of(response)["id"] == "eventmicro.gateway.BodyTooLarge"
    assert "max_payload" in error_of(response)["detail"]
    assert (small.status_code, small.json()) == (200, {"text": "hello"})


async def test_malformed_srv_info_metadata_neither_breaks_calls_nor_the_openapi_document(
    nats_connection: Connection,
) -> None:
    listed, numbers = unique("foreign"), unique("foreign")
    list_metadata = [{"name": "ok", "subject": f"{listed}.ok", "queue_group": "q", "metadata": ["x"]}]
    number_metadata = [
        {"name": "ok", "subject": f"{numbers}.ok", "queue_group": "q",
         "metadata": {"eventmicro.request_schema": 5, "eventmicro.reply": None}},
    ]  # fmt: skip
    async with (
        advertising_service(nats_connection, listed, list_metadata),
        advertising_service(nats_connection, numbers, number_metadata),
        gateway(nats_connection) as http,
    ):
        first = await http.post(f"/api/{listed}/ok", json={})
        second = await http.post(f"/api/{numbers}/ok", json={})
        document = await http.get("/openapi.json")
    assert (first.status_code, first.json()) == (200, {"ok": True})
    assert (second.status_code, second.json()) == (200, {"ok": True})
    assert document.status_code == 200
    validate(document.json())
    assert {f"/api/{listed}/ok", f"/api/{numbers}/ok"} <= set(document.json()["paths"])


@pytest.mark.parametrize("depth", [300, 100_000])  # the first parses, then failed to encode
async def test_deeply_nested_json_is_a_400_everywhere(
    nats_connection: Connection, eventually: Eventually, depth: int
) -> None:
    name = unique("gw")
    deep = b"[" * depth + b"]" * depth
    json_type = {"content-type": "application/json"}
    async with (
        received(nats_connection, "events.com.example.deep") as published,
        note_service(name).serving(nats_connection),
        gateway(nats_connection) as http,
    ):
        call = await http.post(f"/api/{name}/nested", content=deep, headers=json_type)
        event = await http.post("/events/com.example.deep", content=deep, headers=json_type)
        batch = await http.post(
            "/events",
            content=b"[" + deep + b"]",
            headers={"content-type": "application/cloudevents-batch+json"},
        )
        shallow = await http.post(f"/api/{name}/nested", json=[[[1]], 2])
        marker = await http.post("/events/com.example.deep", json={"marker": True})
        assert marker.status_code == 202
        await eventually(lambda: len(published) >= 1)
    for response in (call, event, batch):
        assert response.status_code == 400, response.text
        assert "nested deeper than 100 levels" in error_of(response)["detail"]
    assert (shallow.status_code, shallow.json()) == (200, "2")
    assert [json.loads(m.data) for m in published] == [{"marker": True}]


# --- /events --------------------------------------------------------------------------------------


async def test_binary_mode_headers_reach_nats_as_the_nats_binding_writes_them(
    nats_connection: Connection, eventually: Eventually
) -> None:
    subject = "events.com.example.review"
    base = {b"ce-specversion": b"1.0", b"ce-source": b"/http", b"ce-type": b"com.example.review"}
    async with received(nats_connection, subject) as messages, gateway(nats_connection) as http:
        utf8 = await http.post(
            "/events", content=b"{}", headers={**base, b"ce-id": b"u", b"ce-subject": "café €".encode()}
        )
        quoted = await http.post(
            "/events", content=b"{}", headers={**base, b"ce-id": b"q", b"ce-source": b'"/a b"'}
        )
        bad_trace = await http.post(
            "/events", content=b"{}", headers={**base, b"ce-id": b"t", b"traceparent": b"bad"}
        )
        good_trace = await http.post(
            "/events", content=b"{}", headers={**base, b"ce-id": b"g", b"traceparent": TRACEPARENT.encode()}
        )
        latin1 = await http.post(
            "/events", content=b"{}", headers={**base, b"ce-id": b"l", b"ce-subject": b"caf\xe9"}
        )
        assert [r.status_code for r in (utf8, quoted, bad_trace, good_trace)] == [202] * 4
        await eventually(lambda: len(messages) == 4)
    assert latin1.status_code == 400
    assert "the ce-subject header is not UTF-8" in error_of(latin1)["detail"]
    headers = {m.headers["ce-id"]: m.headers for m in messages if m.headers is not None}
    events = {e.get_id(): e for e in (binding.from_nats(m, None) for m in messages)}
    # what a client that does not percent-decode (sdk-go) reads is what the producer meant
    assert headers["u"]["ce-subject"] == "caf%C3%A9%20%E2%82%AC"
    assert events["u"].get_subject() == "café €"
    assert headers["q"]["ce-source"] == "/a%20b"
    assert events["q"].get_source() == "/a b"
    assert "traceparent" not in headers["t"]
    assert headers["g"]["traceparent"] == TRACEPARENT
    assert all(m.data == b"{}" for m in messages)


# --- the app as a whole ------------------------------------------------------------------------


async def test_without_nats_the_data_routes_answer_503_not_500(nats_server: NatsServer) -> None:
    connection = Connection(ConnectOptions.from_env(nats_server.url, environ={}))
    await connection.open()
    async with gateway(connection) as http:
        await connection.close()
        answers = [
            await http.post("/api/orders/place", json={}),
            await http.post("/events/com.example.x", json={}),
            await http.get("/openapi.json"),
            await http.get("/asyncapi.json"),
        ]
        health = await http.get("/healthz")
    for answer in answers:
        assert answer.status_code == 503, answer.text
        assert error_of(answer) == {
            "code": 503,
            "status": "Service Unavailable",
            "id": "eventmicro.gateway.Unavailable",
            "detail": "the gateway is not connected to NATS",
        }
    assert health.status_code == 503


async def test_a_mounted_gateway_keeps_its_page_public_and_its_data_guarded(
    nats_connection: Connection,
) -> None:
    outer = Starlette(routes=[Mount("/ops", create_app(nats_connection, GatewayConfig(token="s3cret")))])
    async with client_of(outer) as http:
        home = await http.get("/ops/")
        page = await http.get("/ops/dashboard/")
        script = await http.get("/ops/dashboard/static/app.js")
        health = await http.get("/ops/healthz")
        document = await http.get("/ops/openapi.json")
        services = await http.get("/ops/dashboard/services")
        allowed = await http.get("/ops/openapi.json", headers={"authorization": "Bearer s3cret"})
    assert (home.status_code, home.headers["location"]) == (307, "/ops/dashboard/")
    assert (page.status_code, script.status_code, health.status_code) == (200, 200, 200)
    assert 'data-root="/ops"' in page.text
    assert (document.status_code, services.status_code) == (401, 401)
    assert allowed.status_code == 200


async def test_the_root_of_a_mounted_gateway_leads_to_its_dashboard(nats_connection: Connection) -> None:
    outer = Starlette(routes=[Mount("/ops", create_app(nats_connection))])
    async with client_of(outer) as http:
        home = await http.get("/ops/")
        followed = await http.get("/ops/", follow_redirects=True)
    assert (home.status_code, home.headers["location"]) == (307, "/ops/dashboard/")
    assert (followed.status_code, followed.url.path) == (200, "/ops/dashboard/")


def test_the_token_stays_out_of_the_config_repr() -> None:
    config = GatewayConfig(token="s3cret-token")
    assert "s3cret-token" not in repr(config)
    assert "s3cret-token" not in repr(config.replace(max_body=10))


async def test_a_non_ascii_token_can_be_presented(nats_connection: Connection) -> None:
    async with gateway(nats_connection, GatewayConfig(token="pässwört")) as http:
        right = await http.get("/openapi.json", headers={b"authorization": "Bearer pässwört".encode()})
        wrong = await http.get("/openapi.json", headers={"authorization": "Bearer passwort"})
    assert right.status_code == 200
    assert wrong.status_code == 401


def test_sigterm_stops_the_gateway_while_a_browser_holds_an_event_stream(nats_url: str) -> None:
    """uvicorn waits for open responses to end; an event stream never does, so it needs a bound."""
    with subprocess.Popen(
        [sys.executable, "-m", "eventmicro", "dashboard", "--port", "0", "--url", nats_url,
         "--timeout", "1", "--max-timeout", "1"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("EVENTMICRO_GATEWAY")},
    ) as process:  # fmt: skip
        try:
            assert process.stdout is not None
            line = process.stdout.readline()
            assert line.startswith("eventmicro dashboard ready: http://127.0.0.1:"), line
            base = line.split()[3].removesuffix("/dashboard/")
            opened, ended = threading.Event(), threading.Event()

            def browser() -> None:
                try:
                    with httpx.stream("GET", f"{base}/dashboard/events", timeout=None) as stream:
                        for chunk in stream.iter_text():
                            if "event: ready" in chunk:
                                opened.set()
                except httpx.HTTPError:
                    pass  # the server cut the stream: what this test waits for
                ended.set()

            reader = threading.Thread(target=browser, daemon=True)
            reader.start()
            assert opened.wait(30)
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=60) == 0
            assert ended.wait(30)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()


@pytest.mark.parametrize("port", ["70000", "-1"])
def test_a_port_out_of_range_is_a_one_line_error(nats_url: str, port: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "eventmicro", "gateway", "--url", nats_url, "--port", port],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}: bind(): port must be 0-65535" in result.stderr
    assert "Traceback" not in result.stderr
