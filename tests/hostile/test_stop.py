"""A stop is bounded whatever the connection's state, and a second signal exits at once.

Each test runs ``eventmicro run stop_service`` (tests/hostile/stop_service.py: an RPC that
holds a request as long as asked, and a durable JetStream handler) against a nats-server of
its own, puts the connection in one state (connected with work in flight, server killed,
server stopping at the same moment, start never finishing) and sends SIGTERM. The process must
be gone before ``BOUND``: the drain timeout, the stop's margin for closing, and generous room
for a loaded machine; a stop that hangs (once: 88 minutes) is far past it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from eventmicro import Client, Connection, ConnectOptions, NatsServer, discover
from eventmicro.service.process import STOP_MARGIN

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
DRAIN = 2.0  # seconds in-flight work gets: far less than the request the tests keep in flight
BOUND = DRAIN + STOP_MARGIN + 15.0
FOREVER = 600.0  # what the held request asks for


class Served:
    """One ``eventmicro run stop_service`` process; its output is collected line by line."""

    def __init__(self, url: str, *, drain: float = DRAIN, workers: int = 1) -> None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join((str(HERE), str(ROOT)))}
        command = [sys.executable, "-m", "eventmicro", "run", "stop_service", "--url", url]
        command += ["--drain-timeout", str(drain), "--workers", str(workers)]
        self.process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self._changed:
                self.lines.append(line)
                self._changed.notify_all()
        with self._changed:  # the output ended: nobody waits for a line that cannot come
            self._changed.notify_all()

    @property
    def output(self) -> str:
        with self._changed:
            return "".join(self.lines)

    def said(self, text: str, count: int = 1) -> bool:
        with self._changed:
            return sum(text in line for line in self.lines) >= count

    def wait_for(self, text: str, count: int = 1, timeout: float = 60.0) -> None:
        """Wait until ``count`` lines contain ``text`` (failing with the output otherwise)."""
        with self._changed:
            self._changed.wait_for(lambda: self._seen(text, count) or not self._reader.is_alive(), timeout)
            if not self._seen(text, count):
                raise AssertionError(f"never said {text!r}:\n{''.join(self.lines)}")

    def _seen(self, text: str, count: int) -> bool:
        return sum(text in line for line in self.lines) >= count

    def signal(self, sig: int = signal.SIGTERM) -> None:
        self.process.send_signal(sig)

    def exit_code(self, within: float) -> int:
        """The exit code, which must come within ``within`` seconds."""
        try:
            code = self.process.wait(timeout=within)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"still running {within:g}s after SIGTERM:\n{self.output}") from None
        self._reader.join(timeout=10)
        return code

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        self._reader.join(timeout=10)
        if self.process.stdout is not None:
            self.process.stdout.close()


@pytest.fixture
def server() -> Iterator[NatsServer]:
    with NatsServer() as nats_server:
        yield nats_server


@pytest.fixture
def served(server: NatsServer) -> Iterator[Served]:
    process = Served(server.url)
    try:
        process.wait_for("serving stopper")
        yield process
    finally:
        process.close()


@contextlib.asynccontextmanager
async def _hold_a_request(url: str) -> AsyncIterator[None]:
    """A request in flight (the handler sleeps for ``FOREVER``) while the block runs."""
    options = ConnectOptions.from_env(url, environ={}, max_reconnect_attempts=0)
    async with Connection(options) as conn:
        call = asyncio.create_task(
            Client(conn).call("stopper.hold", {"seconds": FOREVER}, returns=dict, timeout=FOREVER)
        )
        async with asyncio.timeout(30):
            while not await _held(conn):
                pass
        try:
            yield
        finally:
            call.cancel()
            await asyncio.gather(call, return_exceptions=True)


async def _held(conn: Connection) -> bool:
    answers = await discover(conn, "STATS", "stopper", window=0.2)
    endpoints = [e for answer in answers for e in answer.get("endpoints", [])]
    return any(e["name"] == "hold" and e["num_requests"] >= 1 for e in endpoints)


async def test_sigterm_while_connected_cuts_in_flight_work_at_the_drain_timeout(
    served: Served, server: NatsServer
) -> None:
    async with _hold_a_request(server.url):
        served.signal()
        code = await asyncio.to_thread(served.exit_code, BOUND)
    assert code == 0, served.output
    assert served.said("stopping stopper")


async def test_sigterm_while_the_server_is_gone_stops_within_the_bound(
    served: Served, server: NatsServer
) -> None:
    async with _hold_a_request(server.url):
        server.kill()
        await asyncio.to_thread(served.wait_for, "disconnected from NATS")
        served.signal()
        code = await asyncio.to_thread(served.exit_code, BOUND)
    assert code == 0, served.output
    assert served.said("SIGTERM received")


async def test_sigterm_while_the_server_is_being_stopped_stops_within_the_bound(
    served: Served, server: NatsServer
) -> None:
    async with _hold_a_request(server.url):
        stopping = asyncio.create_task(asyncio.to_thread(server.stop))
        served.signal()  # the race of the 88-minute hang: both stop at the same moment
        code = await asyncio.to_thread(served.exit_code, BOUND)
        await stopping
    assert code in (0, 1), served.output  # 1: the server left mid-drain; the stop was cut at its bound
    assert served.said("SIGTERM received")


def test_sigterm_while_the_start_cannot_finish_abandons_it() -> None:
    """A "server" that accepts the TCP connection and never says a word: the connect retries."""
    with socket.create_server(("127.0.0.1", 0)) as silent:
        silent.settimeout(60)
        port = silent.getsockname()[1]
        process = Served(f"nats://127.0.0.1:{port}")
        try:
            held, _ = silent.accept()  # the service is connecting now
            with held:
                process.signal()
                code = process.exit_code(BOUND)
        finally:
            process.close()
    assert code == 0, process.output
    assert process.said("stopped before serving")
    assert not process.said("serving stopper")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_a_second_signal_exits_at_once(server: NatsServer, sig: signal.Signals) -> None:
    served = Served(server.url, drain=FOREVER)  # the graceful stop would wait for the held request
    try:
        await asyncio.to_thread(served.wait_for, "serving stopper")
        async with _hold_a_request(server.url):
            served.signal(sig)
            await asyncio.to_thread(served.wait_for, f"{sig.name} received: stopping")
            served.signal(sig)
            code = await asyncio.to_thread(served.exit_code, BOUND)  # far less than its drain timeout
    finally:
        served.close()
    assert code == 128 + sig, served.output
    assert served.said(f"{sig.name} received again: exiting at once")


async def test_a_second_sigterm_to_the_supervisor_ends_every_worker_at_once(server: NatsServer) -> None:
    served = Served(server.url, drain=FOREVER, workers=2)
    try:
        async with Connection(ConnectOptions.from_env(server.url, environ={})) as conn:
            async with asyncio.timeout(60):
                while len(await discover(conn, "PING", "stopper", window=0.3)) < 2:
                    pass
        async with _hold_a_request(server.url):
            served.signal()
            await asyncio.to_thread(served.wait_for, "SIGTERM received: stopping", 2)
            served.signal()
            code = await asyncio.to_thread(served.exit_code, BOUND)
    finally:
        served.close()
    assert code != 0, served.output
    assert served.said("signalled again")
