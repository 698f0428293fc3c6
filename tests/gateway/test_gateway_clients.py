"""Gateway clients over a real HTTP socket against a real NATS: a token per client, its scopes
(endpoints, event types, discovery), its rate (429 with Retry-After), its id in logs and metrics."""

from __future__ import annotations

import asyncio
import base64
import gc
import json
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry

from eventmicro import ConfigurationError, Connection, Service
from eventmicro.gateway import (
    GatewayClient,
    GatewayConfig,
    create_app,
    load_clients,
    mint_token,
    serving,
    sign_jwt,
    token_digest,
)
from eventmicro.gateway._access import _Bucket
from eventmicro.pytest_plugin import capture
from schemas.shop.inventory.v1 import inventory_pb2 as inventory


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


def stock_service(name: str) -> Service:
    svc = Service(name, version="1.0.0", description="stock for the gateway client tests")

    @svc.rpc
    async def stock(req: inventory.GetStockRequest) -> inventory.StockLevel:
        return inventory.StockLevel(sku=req.sku, available=len(req.sku))

    @svc.rpc
    async def forget(req: inventory.GetStockRequest) -> None:
        return None

    return svc


@asynccontextmanager
async def gateway(connection: Connection, *clients: GatewayClient) -> AsyncIterator[httpx.AsyncClient]:
    """The gateway with ``clients`` on a free port, and an HTTP client pointed at it."""
    config = GatewayConfig(clients=clients)
    async with (
        serving(create_app(connection, config)) as base,
        httpx.AsyncClient(base_url=base, timeout=10) as http,
    ):
        yield http


def client(**scopes: object) -> tuple[GatewayClient, dict[str, str]]:
    """A client with a fresh token and ``scopes``, and the headers that present its token."""
    token, digest = mint_token()
    made = GatewayClient(id=unique("c-"), token_sha256=digest, **scopes)  # type: ignore[arg-type]
    return made, {"authorization": f"Bearer {token}"}


async def test_each_client_calls_only_the_endpoints_in_its_scope(nats_connection: Connection) -> None:
    name = unique("gwc")
    narrow, narrow_auth = client(services=(f"{name}.stock",))
    wide, wide_auth = client(services=(f"{name}.*",))
    async with stock_service(name).serving(nats_connection), gateway(nats_connection, narrow, wide) as http:
        allowed = await http.post(f"/api/{name}/stock", json={"sku": "abc"}, headers=narrow_auth)
        refused = await http.post(f"/api/{name}/forget", json={"sku": "abc"}, headers=narrow_auth)
        unknown = await http.post(f"/api/{name}x/stock", json={}, headers=narrow_auth)
        other = await http.post(f"/api/{name}/forget", json={"sku": "abc"}, headers=wide_auth)
    assert (allowed.status_code, allowed.json()) == (200, {"sku": "abc", "available": 3})
    assert refused.status_code == 403
    assert refused.json()["error"] == {
        "code": 403,
        "status": "Forbidden",
        "id": "eventmicro.gateway.Forbidden",
        "detail": f"client {narrow.id} may not call {name}.forget",
    }
    assert unknown.status_code == 403  # out of scope is refused before discovery: no 404 to probe with
    assert other.status_code == 204


async def test_a_missing_or_unknown_token_is_401_with_a_challenge(nats_connection: Connection) -> None:
    known, _ = client(services=("*",), discovery=True)
    async with gateway(nats_connection, known) as http:
        missing = await http.get("/openapi.json")
        unknown = await http.get("/openapi.json", headers={"authorization": f"Bearer {mint_token()[0]}"})
        basic = await http.get("/openapi.json", headers={"authorization": "Basic dXNlcjpwdw=="})
        page = await http.get("/dashboard/")
        health = await http.get("/healthz")
    for answer in (missing, unknown, basic):
        assert answer.status_code == 401
        assert answer.headers["www-authenticate"] == 'Bearer realm="eventmicro"'
        assert answer.json()["error"]["id"] == "eventmicro.gateway.Unauthorized"
    assert (page.status_code, health.status_code) == (200, 200)  # public: they carry no data


async def test_each_client_publishes_only_the_event_types_in_its_scope(nats_connection: Connection) -> None:
    family = unique("com.example.t")
    publisher, auth = client(events=(f"{family}.allowed.*",))
    batch = [
        {"specversion": "1.0", "id": "b-1", "source": "/t", "type": f"{family}.allowed.one"},
        {"specversion": "1.0", "id": "b-2", "source": "/t", "type": f"{family}.secret"},
    ]
    async with (
        capture(nats_connection, f"events.{family}.>") as captured,
        gateway(nats_connection, publisher) as http,
    ):
        refused = await http.post(f"/events/{family}.secret", json={"n": 1}, headers=auth)
        half = await http.post(
            "/events",
            content=json.dumps(batch).encode(),
            headers={**auth, "content-type": "application/cloudevents-batch+json"},
        )
        elsewhere = await http.post(
            f"/events/{family}.allowed.one?subject=events.{family}.secret.x", json={"n": 3}, headers=auth
        )
        allowed = await http.post(
            f"/events/{family}.allowed.one?subject=events.{family}.allowed.o-1", json={"n": 2}, headers=auth
        )
        await captured.wait_for(count=1)
    assert refused.status_code == 403
    assert (
        refused.json()["error"]["detail"]
        == f"client {publisher.id} may not publish events of type {family}.secret"
    )
    assert half.status_code == 403  # one event out of scope: the whole batch is refused, none sent
    assert elsewhere.status_code == 403  # an allowed type, but on a subject out of scope
    assert elsewhere.json()["error"]["detail"].endswith(
        f"may not publish on the subject events.{family}.secret.x"
    )
    assert allowed.status_code == 202
    # the refused ones were asked first on the same connection: had they been sent, they would be here
    assert [event.data_as(dict) for event in captured.events] == [{"n": 2}]


async def test_discovery_and_the_dashboard_data_need_the_discovery_scope(nats_connection: Connection) -> None:
    name = unique("gwc")
    caller, caller_auth = client(services=("*",))
    reader, reader_auth = client(discovery=True)
    paths = ("/openapi.json", "/dashboard/services")
    async with stock_service(name).serving(nats_connection), gateway(nats_connection, caller, reader) as http:
        refused = [await http.get(path, headers=caller_auth) for path in paths]
        allowed = [await http.get(path, headers=reader_auth) for path in paths]
        calls = await http.post(f"/api/{name}/stock", json={}, headers=reader_auth)
    assert [answer.status_code for answer in refused] == [403, 403]
    assert (
        refused[0].json()["error"]["detail"] == f"client {caller.id} may not read discovery (/openapi.json)"
    )
    assert [answer.status_code for answer in allowed] == [200, 200]
    assert calls.status_code == 403  # discovery is not calling
    document = allowed[0].json()
    assert document["security"] == [{"bearer": []}]
    responses = document["paths"][f"/api/{name}/stock"]["post"]["responses"]
    assert {"401", "403", "429"} <= set(responses)  # the document says what a client may meet


async def raw_status(base: str, authorization: bytes) -> int:
    """The status of GET /openapi.json with ``authorization`` sent as raw bytes (no client
    library tidies it)."""
    url = httpx.URL(base)
    reader, writer = await asyncio.open_connection(url.host, url.port)
    try:
        writer.write(
            b"GET /openapi.json HTTP/1.1\r\nhost: x\r\nauthorization: " + authorization + b"\r\n\r\n"
        )
        status_line = await reader.readline()
    finally:
        writer.close()
    return int(status_line.split()[1])


async def test_hostile_authorization_headers_are_401_never_a_crash(nats_connection: Connection) -> None:
    known, _ = client(services=("*",), discovery=True)
    hostile = [
        b"Bearer",
        b"Bearer ",
        b"bearer \t ",
        b"Bearer " + b"A" * 12_000,  # under the gateway's 16 KiB head
        b"Bearer a b c",
        b"Bearer \xff\xfe\x80",
        f"Bearer {known.token_sha256}".encode(),  # the hash is not the token
    ]
    async with serving(create_app(nats_connection, GatewayConfig(clients=(known,)))) as base:
        statuses = [await raw_status(base, value) for value in hostile]
        control = await raw_status(base, b"Bearer \x01\x7f")
    assert statuses == [401] * len(hostile)
    assert control == 400  # control characters: the HTTP parser refuses the request before any route


async def test_a_burst_over_the_rate_gets_429_with_retry_after_then_succeeds(
    nats_connection: Connection,
) -> None:
    name = unique("gwc")
    limited, auth = client(services=("*",), rate=1.0, burst=2)
    other, other_auth = client(services=("*",), rate=1.0, burst=2)
    async with stock_service(name).serving(nats_connection), gateway(nats_connection, limited, other) as http:

        async def call(headers: dict[str, str]) -> httpx.Response:
            return await http.post(f"/api/{name}/stock", json={"sku": "a"}, headers=headers)

        burst = [await call(auth) for _ in range(2)]
        answers = [await call(auth) for _ in range(10)]  # 1 per second: a 429 comes long before 10 are done
        neighbour = await call(other_auth)
        refused = next(answer for answer in answers if answer.status_code == 429)
        async with asyncio.timeout(10):  # a client that waits as told gets through
            later = await call(auth)
            while later.status_code == 429:
                await asyncio.sleep(int(later.headers["retry-after"]))
                later = await call(auth)
    assert [answer.status_code for answer in burst] == [200, 200]
    assert refused.headers["retry-after"] == "1"  # whole seconds, rounded up: a token every second
    assert refused.json()["error"]["id"] == "eventmicro.gateway.RateLimited"
    assert neighbour.status_code == 200  # each client has a bucket of its own
    assert later.status_code == 200


async def test_each_request_is_logged_with_the_client_id_and_never_the_token(
    nats_connection: Connection, caplog: pytest.LogCaptureFixture
) -> None:
    name = unique("gwc")
    token, digest = mint_token()
    known = GatewayClient(id=unique("shop-web-"), token_sha256=digest, services=(f"{name}.stock",))
    wrong = mint_token()[0]
    caplog.set_level(logging.INFO, logger="eventmicro.gateway")
    async with stock_service(name).serving(nats_connection), gateway(nats_connection, known) as http:
        ok = await http.post(
            f"/api/{name}/stock", json={"sku": "a"}, headers={"authorization": f"Bearer {token}"}
        )
        refused = await http.post(
            f"/api/{name}/forget", json={}, headers={"authorization": f"Bearer {token}"}
        )
        stranger = await http.post(
            f"/api/{name}/stock", json={}, headers={"authorization": f"Bearer {wrong}"}
        )
    lines = [record.getMessage() for record in caplog.records if record.name == "eventmicro.gateway.access"]
    assert lines == [
        f"gateway: client {known.id} POST /api/{name}/stock: 200",
        f"gateway: client {known.id} POST /api/{name}/forget: 403",
        f"gateway: client - POST /api/{name}/stock: 401",
    ]
    everything = caplog.text + ok.text + refused.text + stranger.text
    assert token not in everything
    assert wrong not in everything
    assert digest not in everything


async def test_outcomes_are_counted_per_client_in_the_metrics(
    nats_connection: Connection, metrics_registry: CollectorRegistry
) -> None:
    name = unique("gwc")
    counted, auth = client(services=(f"{name}.stock",), rate=1.0, burst=1)

    def count(who: str, outcome: str) -> float | None:
        return metrics_registry.get_sample_value(
            "eventmicro_gateway_requests_total", {"client": who, "outcome": outcome}
        )

    async with stock_service(name).serving(nats_connection), gateway(nats_connection, counted) as http:
        gc.collect()  # the gateways of earlier tests, whose counts of "-" would vanish midway
        nobody_before = count("-", "unauthorized") or 0
        answers = [await http.post(f"/api/{name}/stock", json={"sku": "a"}, headers=auth) for _ in range(10)]
        await http.post(f"/api/{name}/stock", json={})
        assert answers[0].status_code == 200
        assert 429 in {answer.status_code for answer in answers}
        async with asyncio.timeout(10):  # waits as told until the bucket has room: then out of scope
            forbidden = await http.post(f"/api/{name}/forget", json={}, headers=auth)
            while forbidden.status_code == 429:
                await asyncio.sleep(int(forbidden.headers["retry-after"]))
                forbidden = await http.post(f"/api/{name}/forget", json={}, headers=auth)
        assert forbidden.status_code == 403
        statuses = [answer.status_code for answer in answers]
        assert count(counted.id, "ok") == statuses.count(200)
        assert count(counted.id, "forbidden") == 1
        assert (count(counted.id, "rate_limited") or 0) >= statuses.count(429)
        assert count("-", "unauthorized") == nobody_before + 1


async def test_the_shared_token_is_still_the_simple_default(
    nats_connection: Connection, caplog: pytest.LogCaptureFixture
) -> None:
    name = unique("gwc")
    caplog.set_level(logging.INFO, logger="eventmicro.gateway")
    config = GatewayConfig(token="s3cret-shared")
    async with (
        stock_service(name).serving(nats_connection),
        serving(create_app(nats_connection, config)) as base,
        httpx.AsyncClient(base_url=base, timeout=10) as http,
    ):
        auth = {"authorization": "Bearer s3cret-shared"}
        calls = [await http.post(f"/api/{name}/stock", json={"sku": "a"}, headers=auth) for _ in range(20)]
        document = await http.get("/openapi.json", headers=auth)
        event = await http.post("/events/com.example.anything", json={}, headers=auth)
        missing = await http.post(f"/api/{name}/stock", json={"sku": "a"})
    assert {answer.status_code for answer in calls} == {200}  # every scope, no rate limit
    assert (document.status_code, event.status_code, missing.status_code) == (200, 202, 401)
    assert f"gateway: client shared POST /api/{name}/stock: 200" in caplog.text
    assert "s3cret-shared" not in caplog.text


# --- the clients file ----------------------------------------------------------------------


def test_a_clients_file_is_read_with_its_scopes_and_rates(tmp_path: Path) -> None:
    path = tmp_path / "clients.toml"
    path.write_text(
        f"""
[[client]]
id = "shop-web"
token_sha256 = "{token_digest("t-1")}"
services = ["orders.*", "inventory.get_stock"]
events = ["shop.orders.v1.*"]
discovery = true
rate = 10
burst = 20

[[client]]
id = "batch"
token_sha256 = "{token_digest("t-2")}"
services = ["*"]
rate = 0.5
""",
        encoding="utf-8",
    )
    web, batch = load_clients(path)
    assert (web.id, web.rate, web.burst, web.discovery) == ("shop-web", 10.0, 20, True)
    assert web.may_call("orders", "place")
    assert web.may_call("inventory", "get_stock")
    assert not web.may_call("inventory", "reserve")
    assert not web.may_call("ordersx", "place")
    assert web.may_publish("shop.orders.v1.OrderPlaced")
    assert not web.may_publish("shop.billing.v1.Paid")
    assert (batch.rate, batch.burst, batch.discovery, batch.events) == (0.5, 1, False, ())
    assert token_digest("t-1") not in repr(web)


@pytest.mark.parametrize(
    ("entry", "says"),
    [
        ('id = "a"\ntoken_sha256 = "abc"', "token_sha256 is 64 lower-case hex digits"),
        ('id = "a"\ntoken_sha256 = "{d}"\nservics = ["x.*"]', "unknown keys ['servics']"),
        ('id = "a"\ntoken_sha256 = "{d}"\nservices = ["orders"]', "'orders.*' for all of them"),
        ('id = "a"\ntoken_sha256 = "{d}"\nevents = ["a..b"]', "is not a dotted name"),
        ('id = "a"\ntoken_sha256 = "{d}"\nrate = -1', "rate is a positive number"),
        ('id = "a"\ntoken_sha256 = "{d}"\nrate = 1\nburst = 0', "burst is a whole number"),
        ('id = "a"\ntoken_sha256 = "{d}"\nburst = 5', "burst without rate"),
        ('id = "a b"\ntoken_sha256 = "{d}"', "a client id is"),
        ('token_sha256 = "{d}"', "id and token_sha256 are required"),
        ('id = "a"\ntoken_sha256 = "{d}"\n[[client]]\nid = "a"\ntoken_sha256 = "{e}"', "the same id"),
        ('id = "a"\ntoken_sha256 = "{d}"\ndiscovery = "yes"', "discovery is true or false"),
    ],
)
def test_a_wrong_clients_file_is_refused_with_a_clear_error(tmp_path: Path, entry: str, says: str) -> None:
    path = tmp_path / "clients.toml"
    text = entry.replace("{d}", token_digest("one")).replace("{e}", token_digest("two"))
    path.write_text(f"[[client]]\n{text}\n", encoding="utf-8")
    with pytest.raises(ConfigurationError, match=re.escape(says)):
        load_clients(path)


def test_a_shared_token_and_clients_together_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="not both"):
        GatewayConfig(token="t", clients=(GatewayClient(id="a", token_sha256=token_digest("x")),))
    path = tmp_path / "clients.toml"
    path.write_text("[[client]\n", encoding="utf-8")
    with pytest.raises(ConfigurationError, match="is not TOML"):
        load_clients(path)


def test_the_token_bucket_gives_a_burst_then_the_rate() -> None:
    """The bucket's arithmetic on a clock of the test's own (the socket tests cannot pick times)."""
    bucket = _Bucket(rate=0.4, burst=3, now=100.0)
    assert [bucket.take(100.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(100.0) == pytest.approx(2.5)  # a token every 2.5 s: Retry-After 3
    assert bucket.take(101.0) == pytest.approx(1.5)  # a refused request takes nothing
    assert bucket.take(102.5) == 0.0
    assert bucket.take(1_000.0) == 0.0  # a long pause refills to the burst, not beyond
    assert [bucket.take(1_000.0) for _ in range(3)][-1] > 0


# --- HS256 JWTs naming a client --------------------------------------------------------------

JWT_SECRET = "a-secret-of-the-gateway-only-32-bytes-or-more"


async def test_an_hs256_jwt_naming_a_client_acts_as_that_client(
    nats_connection: Connection, caplog: pytest.LogCaptureFixture
) -> None:
    name = unique("gwc")
    known, _ = client(services=(f"{name}.stock",))
    now = time.time()
    good = sign_jwt({"sub": known.id, "exp": now + 300}, JWT_SECRET)
    header, payload, signature = good.split(".")
    forged_payload = sign_jwt({"sub": known.id, "exp": now + 300, "x": 1}, JWT_SECRET).split(".")[1]
    unsigned = base64.urlsafe_b64encode(b'{"alg":"none"}').rstrip(b"=").decode()
    refused = {
        "expired": sign_jwt({"sub": known.id, "exp": now - 3600}, JWT_SECRET),
        "not yet": sign_jwt({"sub": known.id, "exp": now + 7200, "nbf": now + 3600}, JWT_SECRET),
        "no exp": sign_jwt({"sub": known.id}, JWT_SECRET),
        "other secret": sign_jwt({"sub": known.id, "exp": now + 300}, "another-secret-" * 3),
        "unknown client": sign_jwt({"sub": "nobody", "exp": now + 300}, JWT_SECRET),
        "alg none": f"{unsigned}.{payload}.",
        "tampered": f"{header}.{forged_payload}.{signature}",
        "garbage": "a.b.c",
        "huge exp": sign_jwt({"sub": known.id, "exp": 10**400}, JWT_SECRET),
    }
    caplog.set_level(logging.INFO, logger="eventmicro.gateway")
    config = GatewayConfig(clients=(known,), jwt_secret=JWT_SECRET)
    async with (
        stock_service(name).serving(nats_connection),
        serving(create_app(nats_connection, config)) as base,
        httpx.AsyncClient(base_url=base, timeout=10) as http,
    ):

        async def call(token: str, endpoint: str = "stock") -> int:
            answer = await http.post(
                f"/api/{name}/{endpoint}", json={}, headers={"authorization": f"Bearer {token}"}
            )
            return answer.status_code

        assert (await call(good), await call(good, "forget")) == (200, 403)  # the client's own scopes
        statuses = {why: await call(token) for why, token in refused.items()}
    assert statuses == dict.fromkeys(refused, 401)
    assert f"gateway: client {known.id} POST /api/{name}/stock: 200" in caplog.text
    assert good not in caplog.text
    assert signature not in caplog.text


def test_scopes_given_as_one_string_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="services is a tuple of patterns"):
        GatewayClient(id="a", token_sha256=token_digest("x"), services="orders.*")  # type: ignore[arg-type]
    listed = GatewayClient(id="a", token_sha256=token_digest("x"), events=["shop.*"])  # type: ignore[arg-type]
    assert listed.events == ("shop.*",)


def test_a_jwt_secret_needs_clients_and_256_bits() -> None:
    known = GatewayClient(id="a", token_sha256=token_digest("x"))
    with pytest.raises(ConfigurationError, match="at least 32 bytes"):
        GatewayConfig(clients=(known,), jwt_secret="short")
    with pytest.raises(ConfigurationError, match="needs clients"):
        GatewayConfig(jwt_secret=JWT_SECRET)
