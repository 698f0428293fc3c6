"""A responder process killed (SIGKILL) and started again: retries ride it out, a breaker opens,
probes and closes. Nothing is mocked; every wait is for a condition."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

from eventmicro import (
    BreakerPolicy,
    CircuitOpen,
    CircuitState,
    Client,
    Connection,
    ConnectOptions,
    NatsServer,
    NoResponders,
    RetryPolicy,
    Timeout,
)

sys.path.insert(0, str(Path(__file__).parent))
from echo_service import Done, Work

SERVICE = Path(__file__).parent / "echo_service.py"
Eventually = Callable[..., Awaitable[None]]  # the conftest fixture: wait for a condition


class Responder:
    """One echo_service process at a time: started, killed, started again."""

    def __init__(self, url: str) -> None:
        self.env = {**os.environ, "EVENTMICRO_NATS_URL": url}
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> int:
        self.process = subprocess.Popen([sys.executable, str(SERVICE)], env=self.env)
        return self.process.pid

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait()


@pytest.fixture
def responder(fresh_nats_server: NatsServer) -> Iterator[Responder]:
    made = Responder(fresh_nats_server.url)
    try:
        yield made
    finally:
        if made.process is not None and made.process.poll() is None:
            made.kill()


@pytest_asyncio.fixture
async def connection(fresh_nats_server: NatsServer) -> AsyncIterator[Connection]:
    opened = await Connection(ConnectOptions.from_env(fresh_nats_server.url, environ={})).open()
    yield opened
    await opened.close()


async def serving(conn: Connection, pid: int) -> None:
    """Until the process ``pid`` answers a call (a fresh client each time: no breaker, no retry)."""
    async with asyncio.timeout(30):
        while True:
            try:
                done = await Client(conn, retry=RetryPolicy.NEVER).call(
                    "echo.work", Work(), returns=Done, timeout=2
                )
            except (NoResponders, Timeout):
                await asyncio.sleep(0.05)  # not up yet
                continue
            if done.pid == pid:
                return


@pytest.mark.slow
async def test_a_killed_responder_opens_the_breaker_which_probes_and_closes_once_it_is_back(
    responder: Responder, connection: Connection, eventually: Eventually
) -> None:
    await serving(connection, responder.start())
    client = Client(connection, retry=RetryPolicy.NEVER, breaker=BreakerPolicy(failures=3, open_for=0.5))
    assert (await client.call("echo.work", Work(), returns=Done, timeout=5)).pid == responder.process.pid  # type: ignore[union-attr]
    responder.kill()
    failures: list[type[Exception]] = []
    async with asyncio.timeout(30):  # until the breaker fails fast: three failures, then open
        while True:
            try:
                await client.call("echo.work", Work(), returns=Done, timeout=2)
            except CircuitOpen:
                break
            except (NoResponders, Timeout) as exc:
                failures.append(type(exc))
    assert len(failures) == 3
    assert client.circuit("echo.work") is CircuitState.OPEN
    pid = responder.start()
    await serving(connection, pid)  # a client of its own: the breaker's client sent nothing
    await eventually(lambda: client.circuit("echo.work") is CircuitState.HALF_OPEN)  # a probe is due
    done = await client.call("echo.work", Work(), returns=Done, timeout=5)  # the probe closes it
    assert done.pid == pid
    assert client.circuits() == {"echo.work": "closed"}


@pytest.mark.slow
async def test_retries_ride_out_a_responder_restart(responder: Responder, connection: Connection) -> None:
    await serving(connection, responder.start())
    responder.kill()
    async with asyncio.timeout(30):  # the server has noticed: nobody serves echo.work
        while True:
            try:
                await Client(connection, retry=RetryPolicy.NEVER).call(
                    "echo.work", Work(), returns=Done, timeout=2
                )
            except NoResponders:
                break
            except Timeout:
                continue
    patient = RetryPolicy(attempts=100, backoff=0.05, max_backoff=0.5)
    # not idempotent: no responders means nothing ran, so it is retried all the same
    call = asyncio.create_task(
        Client(connection, retry=patient).call("echo.work", Work(), returns=Done, timeout=30)
    )
    pid = responder.start()
    assert (await call).pid == pid
