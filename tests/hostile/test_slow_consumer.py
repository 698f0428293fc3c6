"""Nothing is dropped silently.

A burst beyond what a subscription may buffer makes nats-py drop messages (a slow consumer).
Before the fix eventmicro's plain subscriptions buffered 8x less than nats-py's default, a
burst lost 45% of its events while ``$SRV.STATS`` said ``errors 0``, readiness stayed true
and the log got one line per dropped message. Now drops are counted per handler in
``$SRV.STATS`` and metrics, readiness is false for a while, and one warning is logged.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import pytest_asyncio
from nats.aio.subscription import DEFAULT_SUB_PENDING_BYTES_LIMIT, DEFAULT_SUB_PENDING_MSGS_LIMIT
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from eventmicro import Client, Connection, ConnectOptions, NatsServer, Service
from eventmicro import metrics as em_metrics
from eventmicro.observability.health import check
from eventmicro.transport.connection import MessageHandler, Subscription
from schemas.shop.orders.v1 import orders_pb2 as orders

Eventually = Callable[..., Awaitable[None]]
BUFFER = 50
BURST = 200


class SmallBuffers(Connection):
    """A connection whose subscriptions buffer 50 messages, so a test can overflow them."""

    async def subscribe(self, subject: str, handler: MessageHandler, **options: Any) -> Subscription:
        options.setdefault("pending_msgs_limit", BUFFER)
        return await super().subscribe(subject, handler, **options)


@pytest_asyncio.fixture
async def small(nats_server: NatsServer) -> AsyncIterator[Connection]:
    connection = await SmallBuffers(ConnectOptions.from_env(nats_server.url, environ={})).open()
    yield connection
    await connection.close()


def test_subscriptions_buffer_at_least_what_nats_py_does() -> None:
    defaults = inspect.signature(Connection.subscribe).parameters
    assert defaults["pending_msgs_limit"].default >= DEFAULT_SUB_PENDING_MSGS_LIMIT
    assert defaults["pending_bytes_limit"].default >= DEFAULT_SUB_PENDING_BYTES_LIMIT


async def test_dropped_events_are_counted_reported_and_logged_once(
    small: Connection,
    nats_connection: Connection,
    eventually: Eventually,
    caplog: pytest.LogCaptureFixture,
    metrics_registry: CollectorRegistry,
) -> None:
    svc = Service("laggard", version="1.0.0")
    gate = asyncio.Event()
    handled: list[str] = []

    @svc.subscribe(subject="burst.orders", concurrency=1)
    async def on_placed(event: orders.OrderPlaced) -> None:
        await gate.wait()
        handled.append(event.order_id)

    client = Client(nats_connection)
    caplog.set_level(logging.WARNING, logger="eventmicro.connection")
    async with svc.serving(small) as running:
        for i in range(BURST):
            await client.publish(orders.OrderPlaced(order_id=str(i)), subject="burst.orders")
        await nats_connection.flush()
        stats = running.event_stats["on_placed"]
        await eventually(lambda: stats.dropped >= BURST - BUFFER - 2)
        # visible: $SRV.STATS, readiness, metrics' source, and one log line
        reply = await nats_connection.request("$SRV.STATS.laggard", b"", timeout=2)
        data = json.loads(reply.data)["data"]
        assert data["events"]["on_placed"]["dropped"] == stats.dropped
        assert data["events"]["on_placed"]["errors"] >= stats.dropped
        health = check(running)
        assert not health.ready
        assert health.slow_consumers == {"burst.orders": stats.dropped}
        exposition = em_metrics.active().exposition()[0].decode()  # type: ignore[union-attr]
        samples = {
            sample.labels["reason"]: sample.value
            for family in text_string_to_metric_families(exposition)
            if family.name == "eventmicro_not_handled"
            for sample in family.samples
            if sample.labels.get("handler") == "on_placed"
        }
        assert samples["slow_consumer"] == stats.dropped
        warnings = [r for r in caplog.records if "slow consumer" in r.getMessage()]
        assert len(warnings) == 1
        gate.set()
        await eventually(lambda: len(handled) + stats.dropped == BURST)  # each one handled or counted
