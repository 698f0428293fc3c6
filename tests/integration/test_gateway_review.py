"""Review fixes of the HTTP gateway, each through a real HTTP client against uvicorn and a real NATS.

What a caller (or a service on the bus) could do that the gateway did not handle: endpoints
that advertise wildcard or system subjects, requests larger than NATS allows, malformed
``$SRV.INFO`` metadata, deeply nested JSON, binary-mode headers that are not percent-encoded,
a closed NATS connection, a mounted gateway with a token, the token in a repr, a non-ASCII
token, and SIGTERM with a live event stream open.
"""

from __future__ import annotations

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
import pytest
from openapi_spec_validator import validate
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.types import ASGIApp

from eventmicro import Connection, ConnectOptions, Message, NatsServer, Service
from eventmicro import cloudevents_nats as binding
from eventmicro.gateway import GatewayConfig, create_app, serving

Eventually = Callable[..., Awaitable[None]]
ROOT = Path(__file__).resolve().parents[2]
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@dataclasses.dataclass
class Note:
    text: str


def note_service(name: str) -> Service:
    svc = Service(name, version="1.0.0")

    @svc.rpc
    async def note(req: Note) -> Note:
        return Note(text=req.text[:10])

    @svc.rpc
    async def nested(req: list[Any]) -> str:
        return str(len(req))

    return svc


@asynccontextmanager
async def client_of(app: ASGIApp) -> AsyncIterator[httpx.AsyncClient]:
    """``app`` on a free port, and an HTTP client pointed at it."""
    async with serving(app) as base, httpx.AsyncClient(base_url=base, timeout=10) as client:
        yield client


def gateway(connection: Connection, config: GatewayConfig | None = None) -> Any:
    return client_of(create_app(connection, config))


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


def error_of(response: httpx.Response) -> dict[str, Any]:
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == response.status_code
    return error


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


@asynccontextmanager
async def foreign_service(
    connection: Connection, name: str, endpoints: list[dict[str, Any]]
) -> AsyncIterator[None]:
    """A service as NATS sees it: whatever ``$SRV.INFO`` answer it gives, and JSON replies on
    ``<name>.ok``."""
    info = {"type": "io.nats.micro.v1.info_response", "name": name, "id": "f1", "version": "0.1.0",
            "metadata": {}, "endpoints": endpoints}  # fmt: skip

    async def answer_info(msg: Message) -> None:
        await connection.publish(msg.reply, json.dumps(info).encode())

    async def answer(msg: Message) -> None:
        await connection.publish(msg.reply, b'{"ok": true}')

    subscriptions = [
        await connection.subscribe(f"$SRV.INFO.{name}", answer_info),
        await connection.subscribe("$SRV.INFO", answer_info),
        await connection.subscribe(f"{name}.ok", answer),
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
        foreign_service(nats_connection, name, endpoints),
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
        foreign_service(nats_connection, listed, list_metadata),
        foreign_service(nats_connection, numbers, number_metadata),
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
    base = {"ce-specversion": "1.0", "ce-source": "/http", "ce-type": "com.example.review"}
    async with received(nats_connection, subject) as messages, gateway(nats_connection) as http:
        utf8 = await http.post(
            "/events", content=b"{}", headers={**base, "ce-id": "u", "ce-subject": "café €".encode()}
        )
        quoted = await http.post(
            "/events", content=b"{}", headers={**base, "ce-id": "q", "ce-source": '"/a b"'}
        )
        bad_trace = await http.post(
            "/events", content=b"{}", headers={**base, "ce-id": "t", "traceparent": "bad"}
        )
        good_trace = await http.post(
            "/events", content=b"{}", headers={**base, "ce-id": "g", "traceparent": TRACEPARENT}
        )
        latin1 = await http.post(
            "/events", content=b"{}", headers={**base, "ce-id": "l", "ce-subject": b"caf\xe9"}
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
        right = await http.get("/openapi.json", headers={"authorization": "Bearer pässwört".encode()})
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
