"""Dashboard event streams flooded with large events cannot take ``/api`` down with them.

Eight browsers stream ``events.>`` and stop reading while a producer floods large events. The
streams read NATS on a connection of their own, with bounded buffers: at worst that connection
is cut as a slow consumer by the server and comes back, its browsers told how many events they
lost; the connection ``/api`` calls over is never touched, so every call keeps answering.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx

from eventmicro import Connection, ConnectOptions, NatsServer, Service
from eventmicro.gateway import GatewayConfig, create_app, serving
from eventmicro.gateway.dashboard._feed import Feed
from eventmicro.gateway.dashboard._stream import _chunk
from schemas.shop.inventory.v1 import inventory_pb2 as inventory

Eventually = Callable[..., Awaitable[None]]
EVENT_DATA = json.dumps({"blob": "x" * 200_000}).encode()


def stock() -> Service:
    svc = Service("floodstock", version="1.0.0")

    @svc.rpc
    async def level(req: inventory.GetStockRequest) -> inventory.StockLevel:
        return inventory.StockLevel(sku=req.sku, available=3)

    return svc


@contextlib.asynccontextmanager
async def idle_stream(base: str) -> AsyncIterator[AsyncIterator[str]]:
    """An event stream whose reader, once the stream is ready, reads nothing more (a stalled
    browser) until the caller reads the lines it yields."""
    async with (
        httpx.AsyncClient(base_url=base, timeout=30) as http,
        http.stream("GET", "/dashboard/events") as response,
    ):
        assert response.status_code == 200
        lines = response.aiter_lines()
        async for line in lines:
            if line == "event: ready":
                break
        yield lines


async def flood(connection: Connection, count: int) -> None:
    for i in range(count):
        headers = {
            "ce-specversion": "1.0",
            "ce-id": f"flood-{i}",
            "ce-source": "/flood",
            "ce-type": "com.example.flood",
            "content-type": "application/json",
        }
        await connection.publish("events.flood", EVENT_DATA, headers=headers)
    await connection.flush()


async def test_flooded_streams_do_not_cut_the_api_connection() -> None:
    # a small outbound buffer per client (64 MiB by default) makes the server cut slow readers soon
    with NatsServer(jetstream=False, extra_config="max_pending: 4MB") as server:
        options = ConnectOptions.from_env(server.url, environ={}, reconnect_wait=0.1)
        async with (
            Connection(options) as gateway_connection,
            Connection(options) as service_connection,
            Connection(options) as producer,
            stock().serving(service_connection),
            serving(create_app(gateway_connection, GatewayConfig())) as base,
            httpx.AsyncClient(base_url=base, timeout=30) as http,
            contextlib.AsyncExitStack() as streams,
        ):
            stalled = [await streams.enter_async_context(idle_stream(base)) for _ in range(8)]
            producing = asyncio.create_task(flood(producer, 600))
            answers = []
            while not producing.done():
                answers.append((await http.post("/api/floodstock/level", json={"sku": "a"})).status_code)
            await producing
            answers.append((await http.post("/api/floodstock/level", json={"sku": "a"})).status_code)
            assert answers == [200] * len(answers)
            assert gateway_connection.is_connected
            assert len(stalled) == 8


def test_a_stream_queue_is_bounded_in_bytes() -> None:
    """However few events a stalled browser's queue holds, it holds at most max_bytes of them;
    the oldest go first, and the browser is told how many."""
    feed = Feed(max_queue=1000, max_bytes=8 << 20)
    for n in range(10):
        feed.put({"n": n}, 3 << 20)  # 3 MiB events: two fit
    documents, dropped = feed.take()
    assert (documents, dropped) == ([{"n": 8}, {"n": 9}], 8)
    assert "event: dropped" in _chunk(documents, dropped).decode()
