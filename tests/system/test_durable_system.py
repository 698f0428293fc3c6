"""Durable events survive crashes: a consumer process SIGKILLed mid-stream, a nats-server restarted
(file storage, same store) while events are published and consumed. Each test runs its own
nats-server, so the session server's state plays no part; nothing is mocked.

The consumer (``durable_consumer.py``) writes the id of every event it handles to a log file
before its handler returns; the tests read that log. Delivery is at least once, so the tests
require every id at least once (zero lost) and count, print and allow duplicates.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from pathlib import Path

import pytest
import pytest_asyncio

from eventmicro import (
    Client,
    Connection,
    ConnectionClosed,
    ConnectOptions,
    Event,
    JetStreamError,
    NatsServer,
    NotStored,
    Stream,
    Timeout,
)
from eventmicro.transport.jetstream import ensure_stream, get_message
from eventmicro.wire.names import consumer_name

sys.path.insert(0, str(Path(__file__).parent))
from durable_consumer import HANDLER, SERVICE, Numbered

CONSUMER = Path(__file__).parent / "durable_consumer.py"
Eventually = Callable[..., Awaitable[None]]


@pytest.fixture
def server(fresh_nats_server: NatsServer) -> NatsServer:
    """The test's own nats-server (JetStream, file store in a temporary directory)."""
    return fresh_nats_server


@pytest_asyncio.fixture
async def conn(server: NatsServer) -> AsyncIterator[Connection]:
    connection = await Connection(ConnectOptions.from_env(server.url, environ={})).open()
    yield connection
    await connection.close()


class HandledLog:
    """The consumer's log of handled event ids, read incrementally."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.counts: Counter[str] = Counter()
        self._offset = 0
        self._partial = b""

    def read(self) -> Counter[str]:
        with contextlib.suppress(FileNotFoundError), self.path.open("rb") as file:
            file.seek(self._offset)
            chunk = file.read()
            self._offset += len(chunk)
            *lines, self._partial = (self._partial + chunk).split(b"\n")
            self.counts.update(line.decode() for line in lines)
        return self.counts

    def handled(self) -> int:
        return len(self.read())

    def missing(self, ids: Iterable[str]) -> set[str]:
        counts = self.read()
        return {i for i in ids if i not in counts}


class Consumers:
    """Starts consumer processes; every one is stopped (SIGTERM, then SIGKILL) at the end."""

    def __init__(self, url: str, stream: str, subject: str, log: Path) -> None:
        self.env = {
            **os.environ,
            "EVENTMICRO_NATS_URL": url,
            "DURABLE_STREAM": stream,
            "DURABLE_SUBJECT": subject,
            "DURABLE_LOG": str(log),
        }
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self) -> subprocess.Popen[bytes]:
        process = subprocess.Popen([sys.executable, str(CONSUMER)], env=self.env)
        self.processes.append(process)
        return process

    def stop_all(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()
            process.wait()


def alive(process: subprocess.Popen[bytes]) -> bool:
    """For wait conditions: a consumer that died fails the wait at once, not at its timeout."""
    code = process.poll()
    assert code is None, f"the consumer process exited with code {code}"
    return True


async def consumer_info(conn: Connection, stream: str) -> dict[str, object] | None:
    """The durable consumer's state, straight from the JetStream API (``None`` before it exists)."""
    name = consumer_name(SERVICE, HANDLER)
    reply = await conn.request(f"$JS.API.CONSUMER.INFO.{stream}.{name}", b"", timeout=5)
    info = json.loads(reply.data)
    assert isinstance(info, dict)
    return None if "error" in info else info


async def bound(conn: Connection, stream: str, process: subprocess.Popen[bytes]) -> None:
    """Wait until the consumer process has created (or bound) its durable consumer."""
    async with asyncio.timeout(30):
        while True:
            if alive(process) and await consumer_info(conn, stream) is not None:
                return
            await asyncio.sleep(0.05)


async def settled(conn: Connection, stream: str, timeout: float) -> None:
    """Wait until the consumer has nothing pending and nothing unacked: no redelivery is to come,
    so the duplicates counted afterwards are all there will be."""
    async with asyncio.timeout(timeout):
        while True:
            info = await consumer_info(conn, stream)
            assert info is not None
            if info["num_pending"] == 0 and info["num_ack_pending"] == 0:
                return
            await asyncio.sleep(0.1)


def duplicates(counts: Counter[str]) -> int:
    return sum(c - 1 for c in counts.values() if c > 1)


def report(capsys: pytest.CaptureFixture[str], text: str) -> None:
    with capsys.disabled():
        print(f"\n{text}")


# --- a consumer process killed with SIGKILL -------------------------------------------------

EVENTS = 10_000


@pytest.mark.slow
async def test_a_sigkilled_consumer_restarted_handles_every_event(
    server: NatsServer,
    conn: Connection,
    tmp_path: Path,
    eventually: Eventually,
    capsys: pytest.CaptureFixture[str],
) -> None:
    started = time.monotonic()
    stream, subject = "KILLED", "killed.numbered"
    await ensure_stream(conn, Stream(stream, ["killed.>"], storage="file"))
    log = HandledLog(tmp_path / "handled.log")
    consumers = Consumers(server.url, stream, subject, log.path)
    client = Client(conn, source="/durable-system")
    try:
        first = consumers.start()
        publishing = asyncio.create_task(
            client.publish_batch([Numbered(n) for n in range(EVENTS)], subject=subject, timeout=10)
        )
        try:
            await eventually(lambda: alive(first) and log.handled() >= 3000, timeout=40)
            first.kill()  # SIGKILL: its in-flight handlers and unsent acks die with it
            await asyncio.to_thread(first.wait, 10)
            at_kill = log.handled()
            published_at_kill = publishing.done()
            info = await consumer_info(conn, stream)
            assert info is not None
            unacked = info["num_ack_pending"]  # delivered to the killed process: to be redelivered
            events = await asyncio.wait_for(publishing, 30)
        finally:
            publishing.cancel()
        ids = {e.get_id() for e in events}
        assert len(ids) == EVENTS
        assert at_kill < EVENTS, "the consumer had finished before it was killed: not a mid-stream crash"

        second = consumers.start()
        await eventually(lambda: alive(second) and not log.missing(ids), timeout=40)
        await settled(conn, stream, timeout=20)
        assert alive(second)
    finally:
        await asyncio.to_thread(consumers.stop_all)
    counts = log.read()
    lost = ids - set(counts)
    extra = set(counts) - ids
    dups = duplicates(counts)
    report(
        capsys,
        f"SIGKILL mid-stream: {EVENTS} events, killed after {at_kill} handled "
        f"({'publishing done' if published_at_kill else 'while publishing'}), "
        f"{unacked} delivered but unacked at the kill; lost {len(lost)}, duplicates {dups}; "
        f"{time.monotonic() - started:.1f}s",
    )
    assert not lost, f"{len(lost)} events lost (duplicates {dups})"
    assert not extra, f"handled events that were never published: {sorted(extra)[:5]}"


# --- nats-server restarted while publishing and consuming -----------------------------------

PUBLISHED = 2_000
RETRIED = (NotStored, Timeout, ConnectionClosed, JetStreamError)  # what a durable publish may raise


class Publisher:
    """Publishes events one by one with ``Client.publish(event, durable=True)``; every failure is
    counted and the same `Event` is published again (``Client.publish`` sends an Event unchanged:
    same id, same ``Nats-Msg-Id``), so the stream stores it once even if the failed attempt
    had stored it. Before such a retry it looks whether the stream holds the event already."""

    def __init__(self, conn: Connection, stream: str, subject: str) -> None:
        self.client = Client(conn, source="/durable-system/publisher")
        self.stream = stream
        self.subject = subject
        self.ids: list[str] = []  # stored, in order
        self.failures: Counter[str] = Counter()  # failed publishes, each retried, by error
        self.stored_anyway = 0  # failed publishes whose event the stream had stored all the same

    async def run(self, count: int) -> None:
        for n in range(count):
            event = Event.of(Numbered(n), source=self.client.source)
            await self._store(event)
            self.ids.append(event.get_id())

    async def _store(self, event: Event) -> None:
        unsure = False  # the last attempt failed: the stream may have stored the event all the same
        for _ in range(30):
            if unsure:
                try:  # one publisher, one event at a time: if stored, it is the next sequence
                    found = await get_message(self.client.connection, self.stream, len(self.ids) + 1)
                except RETRIED:
                    continue  # the server is still away: look again
                unsure = False
                if found is not None:
                    assert found.headers.get("ce-id") == event.get_id()
                    self.stored_anyway += 1
            try:
                await self.client.publish(event, subject=self.subject, durable=True, timeout=3.0)
            except RETRIED as exc:
                self.failures[f"{type(exc).__name__}: {exc.message}"] += 1
                unsure = True
            else:
                return
        raise AssertionError(f"event {event.get_id()} not stored after 30 attempts: {self.failures}")


@pytest.mark.slow
async def test_a_nats_server_restart_while_publishing_and_consuming_loses_nothing(
    server: NatsServer,
    conn: Connection,
    tmp_path: Path,
    eventually: Eventually,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Two outages: a quick restart (SIGTERM, start again at once) at a third of the events, and
    at two thirds a stop that lasts until a publish has failed, so the retry path runs."""
    started = time.monotonic()
    stream, subject = "RESTARTED", "restarted.numbered"
    await ensure_stream(conn, Stream(stream, ["restarted.>"], storage="file"))
    log = HandledLog(tmp_path / "handled.log")
    consumers = Consumers(server.url, stream, subject, log.path)
    publisher = Publisher(conn, stream, subject)
    outages: list[str] = []

    def under_way(stored: int) -> Callable[[], bool]:
        return lambda: alive(consumer) and len(publisher.ids) >= stored and log.handled() > 0

    try:
        consumer = consumers.start()
        await bound(conn, stream, consumer)  # consuming from the start, so both are under way
        publishing = asyncio.create_task(publisher.run(PUBLISHED))
        try:
            await eventually(under_way(PUBLISHED // 3), timeout=30)
            outages.append(f"restart after {len(publisher.ids)} stored, {log.handled()} handled")
            down = time.monotonic()
            await server.arestart()  # SIGTERM, then the same port and store
            outages[-1] += f" ({time.monotonic() - down:.1f}s)"

            await eventually(under_way(2 * PUBLISHED // 3), timeout=30)
            outages.append(f"stop after {len(publisher.ids)} stored, {log.handled()} handled")
            down = time.monotonic()
            await server.astop()
            await eventually(lambda: sum(publisher.failures.values()) > 0, timeout=10)
            await server.astart()  # the same port and store
            outages[-1] += f" ({time.monotonic() - down:.1f}s down)"
            await asyncio.wait_for(publishing, 60)
        finally:
            publishing.cancel()
        ids = set(publisher.ids)
        assert len(ids) == PUBLISHED

        await eventually(lambda: alive(consumer) and not log.missing(ids), timeout=40)
        await settled(conn, stream, timeout=20)
        assert alive(consumer)
        # every retry was deduplicated: the stream holds each event once
        assert await get_message(conn, stream, PUBLISHED) is not None
        assert await get_message(conn, stream, PUBLISHED + 1) is None
    finally:
        await asyncio.to_thread(consumers.stop_all)
    counts = log.read()
    lost = ids - set(counts)
    dups = duplicates(counts)
    failed = sum(publisher.failures.values())
    report(
        capsys,
        f"nats-server outages: {PUBLISHED} events; {'; '.join(outages)}; {failed} publish failures, "
        f"all retried ({publisher.stored_anyway} of the failed ones had been stored all the same) "
        f"{dict(publisher.failures)}; lost {len(lost)}, duplicates {dups}; "
        f"{time.monotonic() - started:.1f}s",
    )
    assert not lost, f"{len(lost)} events lost (duplicates {dups}, publish failures retried {failed})"
    assert not set(counts) - ids, "handled events that were never published"
