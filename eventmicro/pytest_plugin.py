"""pytest fixtures for code that talks to NATS: a real nats-server, never a mock.

Installed with eventmicro and registered through the ``pytest11`` entry point, so a project
that depends on eventmicro gets these fixtures without importing anything:

=====================  ========  =======================================================
fixture                scope     what it gives
=====================  ========  =======================================================
``nats_server``        session   a `NatsServer` with JetStream, shared by all tests
``fresh_nats_server``  function  a server of the test's own, to stop, kill or restart
``nats_cluster``       function  a 3-node `NatsCluster` with JetStream (R3 streams work)
``nats_url``           function  the session server's URL
``nats_connection``    function  an open `Connection` to the session server (async)
=====================  ========  =======================================================

``nats_connection`` is an async fixture and needs pytest-asyncio
(``pip install 'eventmicro[testing]'``). Share the session server by using subjects unique
to each test.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from eventmicro._adapter import Connection
from eventmicro._cluster import NatsCluster
from eventmicro._config import ConnectOptions
from eventmicro._server import NatsServer

__all__ = ["fresh_nats_server", "nats_cluster", "nats_connection", "nats_server", "nats_url"]


@pytest.fixture(scope="session")
def nats_server() -> Iterator[NatsServer]:
    """A nats-server with JetStream on a free loopback port, for the whole test session."""
    with NatsServer() as server:
        yield server


@pytest.fixture
def fresh_nats_server() -> Iterator[NatsServer]:
    """A nats-server for this test alone: stop, kill or restart it freely."""
    with NatsServer() as server:
        yield server


@pytest.fixture
def nats_cluster() -> Iterator[NatsCluster]:
    """A 3-node nats-server cluster with JetStream, for this test alone."""
    with NatsCluster(3) as cluster:
        yield cluster


@pytest.fixture
def nats_url(nats_server: NatsServer) -> str:
    """URL of the session server."""
    return nats_server.url


try:
    import pytest_asyncio
except ImportError:  # pragma: no cover - only without the testing extra
    pytest_asyncio = None  # type: ignore[assignment]

if pytest_asyncio is not None:

    @pytest_asyncio.fixture
    async def nats_connection(nats_server: NatsServer) -> AsyncIterator[Connection]:
        """An open connection to the session server, drained and closed after the test."""
        options = ConnectOptions.from_env(nats_server.url, environ={}, connect_attempts=3)
        async with Connection(options) as connection:
            yield connection
