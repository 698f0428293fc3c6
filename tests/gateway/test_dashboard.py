"""The dashboard's routes over real HTTP (uvicorn) and a real nats-server: the page, the service
overview, the live event stream (decoding, filters, bounds, heartbeats, unsubscribing)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import re
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import pytest_asyncio
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette

from eventmicro import BadRequest, Client, Connection, ConnectOptions, NatsServer, Service
from eventmicro import metrics as em_metrics
from eventmicro.gateway import GatewayConfig, create_app, serving
from eventmicro.gateway.dashboard import routes
from eventmicro.gateway.dashboard._feed import Feed, TypeFilter
from eventmicro.gateway.dashboard._routes import STATIC
from eventmicro.gateway.dashboard._stream import _chunk, within
from schemas.shop.inventory.v1 import inventory_pb2 as inventory
from schemas.shop.orders.v1 import orders_pb2 as orders

Events = AsyncIterator[tuple[str, Any]]


@pytest_asyncio.fixture
async def gateway_connection(nats_server: NatsServer) -> AsyncIterator[Connection]:
    """The gateway's own connection, named so the server's /connz can find its subscriptions."""
    name = f"dashboard-test-{uuid.uuid4().hex[:8]}"
    options = ConnectOptions.from_env(nats_server.url, environ={}, name=name, connect_attempts=3)
    async with Connection(options) as connection:
        yield connection


@pytest_asyncio.fixture
async def gateway(gateway_connection: Connection) -> AsyncIterator[str]:
    """The real gateway (create_app) with its dashboard, served over HTTP."""
    async with serving(create_app(gateway_connection, GatewayConfig())) as url:
        yield url


async def sse(response: httpx.Response) -> Events:
    """The Server-Sent Events of ``response``: ``("comment", text)`` or ``(event, parsed data)``."""
    kind, data = "message", []
    async for line in response.aiter_lines():
        if line.startswith(":"):
            yield "comment", line[1:].strip()
        elif line.startswith("event:"):
            kind = line.removeprefix("event:").strip()
        elif line.startswith("data:"):
            data.append(line.removeprefix("data:").strip())
        elif not line and data:
            yield kind, json.loads("\n".join(data))
            kind, data = "message", []


async def next_event(events: Events, kind: str = "message", timeout: float = 10) -> Any:
    """The data of the next ``kind`` event (comments and other kinds are skipped)."""
    async with asyncio.timeout(timeout):
        async for got, data in events:
            if got == kind:
                return data
    raise AssertionError(f"the stream ended before a {kind!r} event")


@contextlib.asynccontextmanager
async def event_stream(base: str, **params: str) -> AsyncIterator[Events]:
    """An open /dashboard/events stream whose NATS subscription is in place (``ready`` seen)."""
    async with (
        httpx.AsyncClient(base_url=base, timeout=10) as http,
        http.stream("GET", "/dashboard/events", params=params) as response,
    ):
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("text/event-stream")
        events = sse(response)
        ready = await next_event(events, "ready")
        assert ready["subject"] == params.get("subject", "events.>")
        yield events


def catalogue_service(name: str) -> Service:
    """A small service with a typed endpoint (and an error case), an event handler, an event type."""
    svc = Service(name, version="1.2.3", description="stock for the dashboard test",
                  publishes=[inventory.StockReserved])  # fmt: skip

    @svc.rpc
    async def get_stock(req: inventory.GetStockRequest) -> inventory.StockLevel:
        if req.sku == "unknown":
            raise BadRequest("no such sku")
        return inventory.StockLevel(sku=req.sku, available=7)

    @svc.subscribe(subject=f"events.{name}.cancelled")
    async def on_cancelled(event: orders.OrderCancelled) -> None:
        return None

    return svc


# --- the page -------------------------------------------------------------------------------


async def test_page_and_static_files_are_served_and_load_nothing_from_elsewhere(gateway: str) -> None:
    async with httpx.AsyncClient(base_url=gateway) as http:
        for path in ("/dashboard", "/dashboard/"):
            page = await http.get(path)
            assert page.status_code == 200
            assert page.headers["content-type"].startswith("text/html")
            assert 'src="/dashboard/static/app.js"' in page.text
            assert 'href="/dashboard/static/style.css"' in page.text
            assert "script-src 'self'" in page.headers["content-security-policy"]
        script = await http.get("/dashboard/static/app.js")
        assert script.status_code == 200
        assert "javascript" in script.headers["content-type"]
        style = await http.get("/dashboard/static/style.css")
        assert style.status_code == 200
        assert style.headers["content-type"].startswith("text/css")
        assert (await http.get("/dashboard/static/missing.js")).status_code == 404
    for file in STATIC.iterdir():  # offline users: no CDN, no external URL
        text = file.read_text().replace('"http://www.w3.org/2000/svg"', "")  # a name, never fetched
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", text), file.name
    assert sorted(p.name for p in STATIC.iterdir()) == ["app.js", "index.html", "style.css"]


async def test_page_honours_the_root_path_of_a_mounting_app(gateway_connection: Connection) -> None:
    from starlette.routing import Mount

    outer = Starlette(routes=[Mount("/ops", create_app(gateway_connection, GatewayConfig()))])
    async with serving(outer) as base, httpx.AsyncClient(base_url=base) as http:
        page = await http.get("/ops/dashboard/")
        assert page.status_code == 200
        assert 'data-root="/ops"' in page.text
        assert 'src="/ops/dashboard/static/app.js"' in page.text
        assert (await http.get("/ops/dashboard/static/app.js")).status_code == 200


async def test_the_token_guards_the_data_but_not_the_page(gateway_connection: Connection) -> None:
    app = create_app(gateway_connection, GatewayConfig(token="s3cret"))
    async with serving(app) as base, httpx.AsyncClient(base_url=base) as http:
        assert (await http.get("/dashboard")).status_code == 200
        assert (await http.get("/dashboard/static/app.js")).status_code == 200
        for path in ("/dashboard/services", "/dashboard/events"):
            refused = await http.get(path)
            assert refused.status_code == 401
            assert refused.json()["error"]["code"] == 401
        wrong = await http.get("/dashboard/services", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        allowed = await http.get("/dashboard/services", headers={"Authorization": "Bearer s3cret"})
        assert allowed.status_code == 200


# --- the service overview -------------------------------------------------------------------


async def test_services_show_instances_endpoints_types_events_and_live_stats(
    gateway: str, nats_connection: Connection
) -> None:
    name = f"dash-{uuid.uuid4().hex[:8]}"
    svc = catalogue_service(name)
    async with (
        svc.serving(nats_connection),
        svc.serving(nats_connection),
        httpx.AsyncClient(base_url=gateway) as http,
    ):
        client = Client(nats_connection)
        for sku in ("sku-1", "sku-2", "unknown"):
            with contextlib.suppress(BadRequest):
                await client.call(f"{name}.get_stock", inventory.GetStockRequest(sku=sku),
                                  returns=inventory.StockLevel)  # fmt: skip
        # the overview is reused for up to a second: wait for one taken after the calls
        async with asyncio.timeout(10):
            while True:
                response = await http.get("/dashboard/services")
                assert response.status_code == 200
                assert response.headers["cache-control"] == "no-store"
                found = [s for s in response.json()["services"] if s["name"] == name]
                if (
                    found
                    and sum(e["num_requests"] for i in found[0]["instances"] for e in i["endpoints"]) == 3
                ):
                    break
                await asyncio.sleep(0.1)
    service = found[0]
    assert service["version"] == "1.2.3"
    assert service["description"] == "stock for the dashboard test"
    assert service["publishes"] == ["shop.inventory.v1.StockReserved"]
    assert service["subscribes"] == ["shop.orders.v1.OrderCancelled"]
    [endpoint] = service["endpoints"]
    assert endpoint == {
        "name": "get_stock",
        "subject": f"{name}.get_stock",
        "queue_group": name,  # the default queue group: the service name
        "request": "shop.inventory.v1.GetStockRequest",
        "reply": "shop.inventory.v1.StockLevel",
        "request_type": "shop.inventory.v1.GetStockRequest",
        "reply_type": "shop.inventory.v1.StockLevel",
        "idempotent": False,
    }
    assert len(service["instances"]) == 2
    stats = [e for i in service["instances"] for e in i["endpoints"]]
    assert all(e["latency"] is None for e in stats)  # metrics off: the page shows the average
    assert sum(e["num_errors"] for e in stats) == 1
    assert any("no such sku" in e["last_error"] for e in stats)
    for instance in service["instances"]:
        assert instance["version"] == "1.2.3"
        assert instance["started"].endswith("Z")
        assert instance["health"]["ready"] is True
        assert "on_cancelled" in instance["events"]


@dataclasses.dataclass
class Quote:
    sku: str
    quantity: int = 1


@dataclasses.dataclass
class Price:
    sku: str
    cents: int


@pytest.fixture
def metrics_on() -> Iterator[None]:
    """Metrics on (a registry of the test's own) for the services started in the test."""
    em_metrics.enable(CollectorRegistry(), buckets=(0.001, 0.01, 0.1, 1.0))
    yield
    em_metrics.disable()


async def test_latency_histograms_and_json_schemas_reach_the_page(
    gateway: str, nats_connection: Connection, metrics_on: None
) -> None:
    name = f"quote-{uuid.uuid4().hex[:8]}"
    svc = Service(name, version="1.0.0")

    @svc.rpc
    async def quote(req: Quote) -> Price:
        return Price(sku=req.sku, cents=250 * req.quantity)

    async with svc.serving(nats_connection), httpx.AsyncClient(base_url=gateway, timeout=10) as http:
        for n in range(5):
            response = await http.post(f"/api/{name}/quote", json={"sku": f"s{n}", "quantity": 2})
            assert response.json() == {"sku": f"s{n}", "cents": 500}
        async with asyncio.timeout(10):  # the overview is reused for up to a second
            while True:
                found = [
                    s for s in (await http.get("/dashboard/services")).json()["services"] if s["name"] == name
                ]
                if found and found[0]["instances"][0]["endpoints"][0]["num_requests"] == 5:
                    break
                await asyncio.sleep(0.1)
        [stats] = found[0]["instances"][0]["endpoints"]
        assert stats["latency"]["le"] == [0.001, 0.01, 0.1, 1.0]
        assert sum(stats["latency"]["counts"]) == 5  # one per call: p50 and p99 are drawn from them
        # the dataclasses are described, not "any JSON": OpenAPI (what the page and its call form read)
        document = (await http.get("/openapi.json")).json()
        operation = document["paths"][f"/api/{name}/quote"]["post"]
        components = document["components"]["schemas"]
        request = operation["requestBody"]["content"]["application/json"]["schema"]
        reply = operation["responses"]["200"]["content"]["application/json"]["schema"]
        quote_schema = components[request["$ref"].rpartition("/")[2]]
        assert quote_schema["properties"]["sku"]["type"] == "string"
        assert quote_schema["required"] == ["sku"]
        assert components[reply["$ref"].rpartition("/")[2]]["properties"]["cents"]["type"] == "integer"
        timeout = next(p for p in operation["parameters"] if p["name"] == "X-Timeout")
        assert timeout["schema"]["minimum"] > 0


# --- the live event stream ------------------------------------------------------------------


async def test_events_arrive_decoded_and_malformed_messages_as_errors(
    gateway: str, nats_connection: Connection
) -> None:
    subject = f"events.dash{uuid.uuid4().hex[:8]}"
    async with event_stream(gateway, subject=f"{subject}.>") as events:
        client = Client(nats_connection, source="/dashboard-test")
        sent = await client.publish(
            orders.OrderCancelled(order_id="o-1", reason="changed my mind"), subject=f"{subject}.cancelled"
        )
        await nats_connection.publish(f"{subject}.junk", b"\xff\xfe not an event")
        await nats_connection.publish(
            f"{subject}.json", json.dumps({"specversion": "1.0", "id": "j-1", "source": "/js",
                                           "type": "test.json", "data": {"n": 1}}).encode()
        )  # fmt: skip
        first = await next_event(events)
        assert first["subject"] == f"{subject}.cancelled"
        assert first["id"] == sent.get_id()
        assert first["type"] == "shop.orders.v1.OrderCancelled"
        assert first["source"] == "/dashboard-test"
        assert first["time"].endswith("Z")
        assert first["datacontenttype"] == "application/protobuf"
        assert first["data"] == {"orderId": "o-1", "reason": "changed my mind"}  # protobuf -> JSON
        junk = await next_event(events)
        assert junk["subject"] == f"{subject}.junk"
        assert junk["error"].startswith("not a CloudEvent")
        assert junk["type"] is None
        assert "data_base64" in junk
        structured = await next_event(events)
        assert (structured["type"], structured["data"], structured["mode"]) == (
            "test.json",
            {"n": 1},
            "structured",
        )


async def test_the_type_filter_takes_an_exact_type_or_a_prefix(
    gateway: str, nats_connection: Connection
) -> None:
    subject = f"events.dash{uuid.uuid4().hex[:8]}"
    client = Client(nats_connection)

    async def publish_three() -> None:
        await client.publish(orders.OrderCancelled(order_id="c"), subject=f"{subject}.a")
        await client.publish(orders.OrderConfirmed(order_id="f"), subject=f"{subject}.b")
        await client.publish(inventory.StockRejected(order_id="r"), subject=f"{subject}.c")
        await nats_connection.publish(f"{subject}.d", b"not an event")  # no type: filtered out
        await client.publish(orders.OrderCancelled(order_id="last"), subject=f"{subject}.e")

    exact = "shop.orders.v1.OrderConfirmed"
    async with event_stream(gateway, subject=f"{subject}.>", type=exact) as events:
        await publish_three()
        assert (await next_event(events))["data"] == {"orderId": "f"}
    async with event_stream(gateway, subject=f"{subject}.>", type="shop.orders.*") as events:
        await publish_three()
        seen = [(await next_event(events))["data"]["orderId"] for _ in range(3)]
        assert seen == ["c", "f", "last"]


@pytest.mark.parametrize(
    ("params", "detail"),
    [
        ({"subject": "orders.place"}, "within 'events.>'"),
        ({"subject": "events"}, "within 'events.>'"),
        ({"subject": "events..x"}, "not a valid NATS subject"),
        ({"subject": "events.a b"}, "not a valid NATS subject"),
        ({"type": "shop.*.v1"}, "only at its end"),
        ({"type": "x" * 300}, "longer than"),
    ],
)
async def test_bad_filters_are_refused_with_the_gateway_error_body(
    gateway: str, params: dict[str, str], detail: str
) -> None:
    async with httpx.AsyncClient(base_url=gateway) as http:
        response = await http.get("/dashboard/events", params=params)
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["code"], error["id"]) == (400, "eventmicro.gateway.BadRequest")
    assert detail in error["detail"]


async def connz_subjects(server: NatsServer, connection_name: str) -> list[str]:
    """The subjects the server holds for the named connection (its monitoring /connz); none
    when no such connection is open."""
    async with httpx.AsyncClient() as http:
        report = (await http.get(f"{server.monitor_url}/connz", params={"subs": 1})).json()
    subjects: list[str] = []
    for entry in report.get("connections", []):
        if entry.get("name") == connection_name:
            subjects += entry.get("subscriptions_list", [])
    return subjects


async def test_the_nats_subscription_ends_when_the_browser_goes_away(
    gateway: str, gateway_connection: Connection, nats_server: NatsServer
) -> None:
    name = f"{gateway_connection.options.name} (event streams)"  # the streams' own connection
    subject = f"events.dash{uuid.uuid4().hex[:8]}.>"
    assert subject not in await connz_subjects(nats_server, name)
    async with event_stream(gateway, subject=subject):
        assert subject in await connz_subjects(nats_server, name)  # taken before "ready"
    async with asyncio.timeout(10):  # the client closed its connection: the server is told
        while subject in await connz_subjects(nats_server, name):  # noqa: ASYNC110 - polling the server
            await asyncio.sleep(0.05)


async def test_a_quiet_stream_sends_heartbeats(gateway_connection: Connection) -> None:
    app = Starlette(routes=routes(gateway_connection, GatewayConfig(), heartbeat=0.2))
    async with serving(app) as base, event_stream(base, subject="events.dash-quiet.>") as events:
        async with asyncio.timeout(5):
            beats = 0
            async for kind, text in events:
                if kind == "comment":
                    assert text == "heartbeat"
                    beats += 1
                if beats == 2:
                    break


async def test_streams_beyond_max_streams_are_refused_until_one_closes(
    gateway_connection: Connection,
) -> None:
    app = create_app(gateway_connection, GatewayConfig(max_streams=2))
    async with serving(app) as base, httpx.AsyncClient(base_url=base, timeout=10) as http:
        async with (
            event_stream(base, subject="events.dash-max.a"),
            event_stream(base, subject="events.dash-max.b"),
        ):
            refused = await http.get("/dashboard/events", params={"subject": "events.dash-max.c"})
            assert refused.status_code == 503
            assert refused.json()["error"]["id"] == "eventmicro.gateway.TooManyStreams"
        # both closed: the server saw the disconnects, so a new stream is let in
        async with asyncio.timeout(10):
            while True:
                async with http.stream(
                    "GET", "/dashboard/events", params={"subject": "events.dash-max.c"}
                ) as again:
                    if again.status_code == 200:
                        break
                    assert again.status_code == 503
                await asyncio.sleep(0.05)  # the server notices a closed stream on its next receive


async def test_a_slow_client_loses_the_oldest_events_and_is_told_how_many(
    gateway_connection: Connection, nats_connection: Connection
) -> None:
    subject, total = f"events.dash{uuid.uuid4().hex[:8]}", 20_000
    app = Starlette(routes=routes(gateway_connection, GatewayConfig(), max_queue=10))
    async with serving(app) as base:
        host, port = base.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        writer.write(f"GET /dashboard/events?subject={subject} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        try:
            async with asyncio.timeout(30):
                await reader.readuntil(b"event: ready")
                await reader.readuntil(b"\n\n")
                for n in range(total):  # while this client reads nothing
                    event = {
                        "specversion": "1.0",
                        "id": str(n),
                        "source": "/slow",
                        "type": "t",
                        "data": "x" * 500,
                    }
                    await nats_connection.publish(subject, json.dumps(event).encode())
                await nats_connection.flush()
                received, dropped, text = 0, 0, ""
                while received + dropped < total:  # every event arrives, or is counted as dropped
                    text += (await reader.read(1 << 16)).decode()
                    complete, _, text = text.rpartition("\n\n")
                    received += complete.count('"source":"/slow"')
                    dropped += sum(
                        int(n) for n in re.findall(r'event: dropped\ndata: \{"dropped":(\d+)\}', complete)
                    )
        finally:
            writer.close()
    assert (received + dropped, received > 0, dropped > 0) == (total, True, True)


async def test_without_nats_the_data_routes_answer_503_and_the_page_still_loads(
    nats_server: NatsServer,
) -> None:
    connection = await Connection(ConnectOptions.from_env(nats_server.url, environ={})).open()
    app = Starlette(routes=routes(connection, GatewayConfig()))
    await connection.close()
    async with serving(app) as base, httpx.AsyncClient(base_url=base) as http:
        assert (await http.get("/dashboard/")).status_code == 200
        for path in ("/dashboard/services", "/dashboard/events"):
            response = await http.get(path)
            assert response.status_code == 503
            error = response.json()["error"]
            assert (error["code"], error["id"]) == (503, "eventmicro.gateway.Unavailable")
            assert "Traceback" not in response.text
            assert "Error(" not in response.text  # no exception repr


# --- the bounded queue (pure parts of the stream) ------------------------------------------


def test_a_full_feed_drops_the_oldest_and_counts_them() -> None:
    feed = Feed(max_queue=3)
    for n in range(5):
        feed.put({"n": n})
    documents, dropped = feed.take()
    assert [d["n"] for d in documents] == [2, 3, 4]
    assert dropped == 2
    assert feed.take() == ([], 0)  # counted once
    chunk = _chunk(documents, dropped).decode()
    assert chunk.startswith('event: dropped\ndata: {"dropped":2}\n\n')
    assert chunk.count("\n\n") == 4


@pytest.mark.parametrize(
    ("pattern", "event_type", "passes"),
    [
        ("", "anything", True),
        ("*", "anything", True),
        ("a.b", "a.b", True),
        ("a.b", "a.bc", False),
        ("a.*", "a.bc", True),
        ("a.*", "b.a", False),
        ("a.*", None, False),
    ],
)
def test_type_filter(pattern: str, event_type: str | None, passes: bool) -> None:
    assert TypeFilter.parse(pattern).matches(event_type) is passes


@pytest.mark.parametrize(
    ("subject", "scope", "inside"),
    [
        ("events.>", "events.>", True),
        ("events.a.b", "events.>", True),
        ("events.*", "events.>", True),
        ("events", "events.>", False),
        (">", "events.>", False),
        ("events.a", "events.*", True),
        ("events.a.b", "events.*", False),
        ("events.>", "events.*", False),
        ("events.*", "events.a", False),
        ("events.a", "events.a", True),
    ],
)
def test_within(subject: str, scope: str, inside: bool) -> None:
    assert within(subject, scope) is inside
