"""Version-aware calls: v1 and v2 instances of one service side by side; a caller picks a major."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from eventmicro import (
    Client,
    ConfigurationError,
    Connection,
    ConnectOptions,
    NatsServer,
    NoResponders,
    Service,
    discover,
)
from eventmicro.service.client import _versioned


@dataclasses.dataclass
class Hello:
    name: str = "x"


@dataclasses.dataclass
class Greeting:
    version: str


def greeter(version: str) -> Service:
    svc = Service("greeter", version=version)

    @svc.rpc
    async def hello(req: Hello) -> Greeting:
        return Greeting(version)

    return svc


@asynccontextmanager
async def side_by_side(server: NatsServer) -> AsyncIterator[None]:
    """A 1.4.0 and a 2.0.1 instance, each on its own connection."""
    connections = [await Connection(ConnectOptions.from_env(server.url, environ={})).open() for _ in range(2)]
    try:
        async with greeter("1.4.0").serving(connections[0]), greeter("2.0.1").serving(connections[1]):
            yield
    finally:
        for connection in connections:
            await connection.close()


async def versions(client: Client, count: int, **options: Any) -> set[str]:
    return {
        (await client.call("greeter.hello", Hello(), returns=Greeting, **options)).version
        for _ in range(count)
    }


async def test_a_caller_asking_for_a_major_reaches_only_its_instances(
    nats_server: NatsServer, conn: Connection
) -> None:
    async with side_by_side(nats_server):
        client = Client(conn)
        assert await versions(client, 30, version=2) == {"2.0.1"}
        assert await versions(client, 30, version=1) == {"1.4.0"}
        with pytest.raises(NoResponders):
            await client.call("greeter.hello", Hello(), returns=Greeting, version=3)


async def test_unversioned_calls_still_reach_every_version(nats_server: NatsServer, conn: Connection) -> None:
    async with side_by_side(nats_server):
        assert await versions(Client(conn), 60) == {"1.4.0", "2.0.1"}  # 2**-59 that one would be missed


async def test_discovery_shows_which_version_serves_which_subject(
    nats_server: NatsServer, conn: Connection
) -> None:
    async with side_by_side(nats_server):
        infos = await discover(conn, "INFO", "greeter")
        served = {
            info["version"]: (endpoint["subject"], endpoint["metadata"]["eventmicro.versioned_subject"])
            for info in infos
            for endpoint in info["endpoints"]
        }
        assert served == {
            "1.4.0": ("greeter.hello", "greeter.v1.hello"),
            "2.0.1": ("greeter.hello", "greeter.v2.hello"),
        }


async def test_a_foreign_client_reaches_a_version_by_its_subject(
    nats_server: NatsServer, conn: Connection
) -> None:
    """Nothing but a subject: any NATS client (no eventmicro) picks a major the same way."""
    async with side_by_side(nats_server):
        for _ in range(10):
            reply = await conn.request("greeter.v1.hello", b'{"name": "x"}', timeout=2)
            assert json.loads(reply.data) == {"version": "1.4.0"}


def test_a_version_is_a_major_number_on_an_endpoint_name() -> None:
    for name, version in (("greeter.hello", -1), ("greeter.hello", "2"), ("greeter", 2), ("a.b.c", 1)):
        with pytest.raises(ConfigurationError, match="version"):
            _versioned(name, version)  # type: ignore[arg-type]


async def test_when_the_last_instance_of_a_major_stops_its_callers_get_no_responders(
    nats_server: NatsServer, conn: Connection
) -> None:
    """No silent fall-back to another major: a v2 caller is told nobody serves v2."""
    v2_connection = await Connection(ConnectOptions.from_env(nats_server.url, environ={})).open()
    try:
        async with greeter("1.4.0").serving(conn):
            async with greeter("2.0.1").serving(v2_connection):
                assert await versions(Client(conn), 5, version=2) == {"2.0.1"}
            client = Client(conn)
            with pytest.raises(NoResponders):
                await client.call("greeter.hello", Hello(), returns=Greeting, version=2, timeout=1)
            assert await versions(client, 5) == {"1.4.0"}
            assert await versions(client, 5, version=1) == {"1.4.0"}
    finally:
        await v2_connection.close()
