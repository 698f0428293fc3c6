"""Health: /healthz and /readyz over HTTP (200/503), and ``data.health`` in ``$SRV.STATS`` —
while serving, while draining with a handler still running, without a server, and with a
durable consumer gone."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import socket
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from eventmicro import Client, Connection, ConnectOptions, Durable, NatsServer, Service, Stream, discover
from eventmicro import health as em_health
from eventmicro.transport.jetstream import ensure_stream
from schemas.shop.orders.v1 import orders_pb2 as orders

Eventually = Callable[..., Awaitable[None]]
ROOT = Path(__file__).resolve().parents[2]


@dataclasses.dataclass
class Work:  # the shapes of tests/system/echo_service.py's request and reply (JSON)
    delay: float = 0.0


@dataclasses.dataclass
class Done:
    pid: int


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


async def fetch(url: str) -> tuple[int, bytes]:
    def blocking() -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    return await asyncio.to_thread(blocking)


async def get(endpoint: em_health.HttpEndpoint | str, path: str) -> tuple[int, dict[str, Any]]:
    base = endpoint if isinstance(endpoint, str) else endpoint.url
    status, body = await fetch(f"{base}{path}")
    document = json.loads(body)
    assert isinstance(document, dict)
    return status, document


async def stats_health(conn: Connection, name: str) -> dict[str, Any]:
    answers = await discover(conn, "STATS", name, window=0.3)
    assert len(answers) == 1
    found = answers[0]["data"]["health"]
    assert isinstance(found, dict)
    return found


async def test_ready_while_serving_and_not_ready_as_soon_as_drain_begins(
    conn: Connection, eventually: Eventually
) -> None:
    svc = Service(unique("health"), version="1.0.0")
    started = asyncio.Event()
    release = asyncio.Event()

    @svc.rpc
    async def slow(req: orders.PlaceOrder) -> orders.OrderAccepted:
        started.set()
        await release.wait()
        return orders.OrderAccepted(order_id="done")

    instances: list[Any] = []
    async with await em_health.serve(0, instances) as endpoint:
        status, body = await get(endpoint, "/readyz")
        assert (status, body["status"], body["instances"]) == (503, "unavailable", [])  # nothing serving yet
        assert (await get(endpoint, "/healthz"))[0] == 200

        serving = svc.serving(conn, drain_timeout=10)
        running = await serving.__aenter__()
        instances.append(running)
        status, body = await get(endpoint, "/readyz")
        assert status == 200
        (state,) = body["instances"]
        assert state == {
            "service": svc.name,
            "instance": running.id,
            "state": "serving",
            "live": True,
            "ready": True,
            "connected": True,
            "subscriptions": True,
            "consumers": {},
            "slow_consumers": {},
        }
        assert await stats_health(conn, svc.name) == state

        call = asyncio.create_task(
            Client(conn, source="/t").call(
                f"{svc.name}.slow", orders.PlaceOrder(), returns=orders.OrderAccepted, timeout=10
            )
        )
        await asyncio.wait_for(started.wait(), 5)
        stopping = asyncio.create_task(serving.__aexit__(None, None, None))
        await eventually(lambda: not running.accepting())

        status, body = await get(endpoint, "/readyz")  # the handler is still running
        assert status == 503
        assert body["instances"][0]["state"] == "stopping"
        assert body["instances"][0]["ready"] is False
        assert (await get(endpoint, "/healthz"))[0] == 200  # draining is not dead
        during = await stats_health(conn, svc.name)  # $SRV still answers while draining
        assert (during["ready"], during["state"], during["live"]) == (False, "stopping", True)
        assert not stopping.done()

        release.set()
        assert (await call).order_id == "done"  # the in-flight request finished
        await stopping
        assert (await get(endpoint, "/readyz"))[0] == 503


async def test_not_ready_while_the_server_is_away_and_ready_again_after(
    fresh_nats_server: NatsServer,
) -> None:
    options = ConnectOptions.from_env(fresh_nats_server.url, environ={}, reconnect_wait=0.1)
    svc = Service(unique("away"), version="1.0.0")

    @svc.rpc
    async def ping(req: orders.PlaceOrder) -> orders.OrderAccepted:
        return orders.OrderAccepted()

    async with (
        Connection(options) as conn,
        svc.serving(conn) as running,
        await em_health.serve(0, [running]) as endpoint,
    ):
        assert (await get(endpoint, "/readyz"))[0] == 200
        fresh_nats_server.stop()
        async with asyncio.timeout(10):
            while conn.is_connected:  # noqa: ASYNC110 - the disconnect has no event of ours
                await asyncio.sleep(0.02)
        status, body = await get(endpoint, "/readyz")
        assert status == 503
        assert body["instances"][0]["connected"] is False
        assert (await get(endpoint, "/healthz"))[0] == 200  # reconnecting: still alive
        fresh_nats_server.start()
        async with asyncio.timeout(15):
            while (await get(endpoint, "/readyz"))[0] != 200:  # noqa: ASYNC110 - polled, as a prober does
                await asyncio.sleep(0.1)
        assert em_health.check(running).subscriptions


async def test_a_lost_durable_consumer_makes_the_instance_not_ready(conn: Connection) -> None:
    stream = unique("H")
    await ensure_stream(conn, Stream(stream, [f"{stream}.>"]))
    svc = Service(unique("durhealth"), version="1.0.0")

    @svc.subscribe(subject=f"{stream}.placed", delivery=Durable(dead_letter=False))
    async def settle(event: orders.OrderPlaced) -> None:
        pass

    async with svc.serving(conn) as running, await em_health.serve(0, [running]) as endpoint:
        status, body = await get(endpoint, "/readyz")
        consumer = f"{svc.name}-settle"
        assert status == 200
        assert body["instances"][0]["consumers"] == {consumer: True}
        reply = await conn.request(f"$JS.API.CONSUMER.DELETE.{stream}.{consumer}", b"", timeout=5)
        assert json.loads(reply.data).get("success") is True
        status, body = await get(endpoint, "/readyz")  # asks the server: the consumer is gone
        assert status == 503
        assert body["instances"][0]["consumers"] == {consumer: False}
        assert (await stats_health(conn, svc.name))["consumers"] == {consumer: False}


async def test_service_run_serves_probes_metrics_and_json_logs_on_one_port(
    fresh_nats_server: NatsServer,
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "EVENTMICRO_NATS_URL": fresh_nats_server.url,
        "EVENTMICRO_HEALTH_PORT": str(port),
        "EVENTMICRO_METRICS_PORT": str(port),
        "EVENTMICRO_HTTP_HOST": "127.0.0.1",
        "EVENTMICRO_LOG_FORMAT": "json",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(ROOT / "tests/system/echo_service.py"),
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        async with asyncio.timeout(30):
            while True:
                try:
                    if (await get(base, "/readyz"))[0] == 200:
                        break
                except OSError:
                    pass  # not listening yet
                await asyncio.sleep(0.1)
        async with Connection(ConnectOptions.from_env(fresh_nats_server.url, environ={})) as conn:
            client = Client(conn, source="/t")
            await client.call("echo.work", Work(), returns=Done, timeout=10)
            status, metrics_text = await fetch(f"{base}/metrics")
            assert status == 200
            ok = 'eventmicro_handled_total{handler="work",kind="rpc",outcome="ok",service="echo"} 1.0'
            assert ok in metrics_text.decode()

            slow = asyncio.create_task(client.call("echo.work", Work(delay=1.5), returns=Done, timeout=10))
            in_flight = b'eventmicro_in_flight{handler="work",kind="rpc",service="echo"} 1.0'
            async with asyncio.timeout(10):
                while in_flight not in (await fetch(f"{base}/metrics"))[1]:  # noqa: ASYNC110 - scraped
                    await asyncio.sleep(0.05)
            process.send_signal(signal.SIGTERM)
            async with asyncio.timeout(10):
                while (await get(base, "/readyz"))[0] != 503:  # noqa: ASYNC110 - polled, as a prober does
                    await asyncio.sleep(0.05)
            assert not slow.done()  # not ready while the in-flight call still runs
            assert (await slow).pid == process.pid
        async with asyncio.timeout(30):
            _, err = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.communicate()
    assert process.returncode == 0
    lines = [json.loads(line) for line in err.decode().splitlines() if line.strip()]
    assert any(line["message"].startswith("service echo 1.0.0 serving") for line in lines)
    stopping = next(line for line in lines if line["message"] == "service echo stopping")
    assert stopping["service"] == "echo"
    assert stopping["instance"]
