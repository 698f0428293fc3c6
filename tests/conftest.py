"""Shared test configuration. The NATS fixtures come from eventmicro's own pytest plugin."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import pytest
import pytest_asyncio
from prometheus_client import CollectorRegistry

from eventmicro import Connection, ConnectOptions, NatsServer
from eventmicro import metrics as em_metrics

pytest_plugins = ("pytester",)

Eventually = Callable[..., Awaitable[None]]


async def _eventually(condition: Callable[[], bool], timeout: float = 10) -> None:
    """Wait until ``condition()`` holds (checked every 10 ms), failing after ``timeout`` s."""
    async with asyncio.timeout(timeout):
        while not condition():  # noqa: ASYNC110 - some conditions (counters) have no event to wait on
            await asyncio.sleep(0.01)


@pytest.fixture
def eventually() -> Eventually:
    """``await eventually(lambda: ...)``: wait for a condition that has no event of its own."""
    return _eventually


@pytest.fixture
def metrics_registry() -> Iterator[CollectorRegistry]:
    """Metrics on, in a registry of the test's own; off again afterwards."""
    registry = CollectorRegistry()
    em_metrics.enable(registry)
    yield registry
    em_metrics.disable()


@pytest_asyncio.fixture
async def conn(nats_server: NatsServer) -> AsyncIterator[Connection]:
    """An open connection to the session server; closed after."""
    connection = await Connection(ConnectOptions.from_env(nats_server.url, environ={})).open()
    yield connection
    await connection.close()


@pytest_asyncio.fixture
async def service_conn(nats_server: NatsServer) -> AsyncIterator[Connection]:
    """A second connection to the session server, for a service under test, so the test's own
    traffic (on ``nats_connection`` or a raw socket) never shares its reader; closed after."""
    connection = await Connection(ConnectOptions.from_env(nats_server.url, environ={})).open()
    yield connection
    await connection.close()


@pytest.fixture
def prometheus_registry() -> Iterator[CollectorRegistry]:
    """Metrics on (``eventmicro.metrics.enable``), in a registry of the test's own; off after."""
    from eventmicro import metrics

    registry = CollectorRegistry()
    metrics.enable(registry)
    yield registry
    metrics.disable()
