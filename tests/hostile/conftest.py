"""Fixtures of the attack tests: the service under attack gets a connection of its own, so the
attacker's traffic (on ``nats_connection`` or a raw socket) never shares its reader."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio

from eventmicro import Connection, ConnectOptions, NatsServer


@pytest_asyncio.fixture
async def service_conn(nats_server: NatsServer) -> AsyncIterator[Connection]:
    """A connection for the service under attack, closed after the test."""
    connection = await Connection(ConnectOptions.from_env(nats_server.url, environ={})).open()
    yield connection
    await connection.close()
