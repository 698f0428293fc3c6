"""A 3-node NATS cluster loses a node, and gets it back (issue 7, "cluster behaviour, proven").

Each test runs its own `NatsCluster(3)` (the ``nats_cluster`` fixture: loopback, full-mesh
routes, a JetStream file store per node). Services run as separate processes
(``cluster_service.py``), each attached to a chosen node: every connection is given ALL node
URLs with that node first and ``no_randomize=True``, so it starts there and fails over to the
others. Nodes are killed with SIGKILL, as a crash would. Nothing is mocked; every wait is a
condition with a timeout, and the figures are printed.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from eventmicro import (
    Client,
    Connection,
    ConnectionClosed,
    ConnectOptions,
    Durable,
    Event,
    EventMicroError,
    JetStreamError,
    NatsCluster,
    NatsServer,
    NotStored,
    Service,
    Stream,
    Timeout,
    discover,
)
from eventmicro.transport.jetstream import _js, ensure_stream
from eventmicro.wire.names import consumer_name

sys.path.insert(0, str(Path(__file__).parent))
from durable_consumer import HANDLER, SERVICE, Numbered
from echo_service import Done, Work

SCRIPT = Path(__file__).parent / "cluster_service.py"
Eventually = Callable[..., Awaitable[None]]

pytestmark = pytest.mark.slow


# --- attaching to nodes -----------------------------------------------------------------------


def urls_from(cluster: NatsCluster, first: int) -> str:
    """Every node's URL, node ``first`` first (and the others after it, in order)."""
    urls = cluster.urls
    return ",".join(urls[first:] + urls[:first])


def pinned(cluster: NatsCluster, first: int, name: str) -> ConnectOptions:
    return ConnectOptions.from_env(
        urls_from(cluster, first), environ={}, no_randomize=True, name=name, connect_attempts=3
    )


@contextlib.asynccontextmanager
async def connected(cluster: NatsCluster, first: int, name: str) -> AsyncIterator[Connection]:
    connection = await Connection(pinned(cluster, first, name)).open()
    try:
        assert connection.connected_url == cluster[first].url
        yield connection
    finally:
        await connection.close()


def monitoring(node: NatsServer, path: str) -> dict[str, object]:
    """A node's monitoring endpoint (``/connz``, ``/jsz``...), as JSON."""
    with urllib.request.urlopen(f"{node.monitor_url}{path}", timeout=2) as response:
        data = json.loads(response.read())
    assert isinstance(data, dict)
    return data


def connection_names(node: NatsServer) -> set[str]:
    """Names of the client connections a node holds."""
    connections = monitoring(node, "/connz?limit=4096").get("connections")
    assert isinstance(connections, list)
    return {c.get("name") or "" for c in connections}


def meta_healthy(cluster: NatsCluster) -> bool:
    """Whether every node sees the same JetStream meta leader, and that leader sees every
    other node as a current peer of the meta group (``/jsz``)."""
    metas = [monitoring(node, "/jsz").get("meta_cluster") for node in cluster]
    if not all(isinstance(m, dict) and m.get("cluster_size") == len(cluster) for m in metas):
        return False
    leaders = {m.get("leader") for m in metas if isinstance(m, dict)}
    names = [node.name for node in cluster]
    if len(leaders) != 1 or (leader := leaders.pop()) not in names:
        return False
    at_leader = metas[names.index(leader)]
    assert isinstance(at_leader, dict)
    current = {
        r.get("name") for r in at_leader.get("replicas") or [] if r.get("current") and not r.get("offline")
    }
    return current == set(names) - {leader}


class Processes:
    """Service processes, each attached to a node; all stopped (SIGTERM, then SIGKILL) at the end."""

    def __init__(self, cluster: NatsCluster, **env: str) -> None:
        self.cluster = cluster
        self.env = env
        self.started: list[tuple[str, int, subprocess.Popen[bytes]]] = []

    def start(self, kind: str, node: int, name: str) -> subprocess.Popen[bytes]:
        env = {
            **os.environ,
            **self.env,
            "EVENTMICRO_NATS_URL": urls_from(self.cluster, node),
            "EVENTMICRO_NATS_NAME": name,
        }
        process = subprocess.Popen([sys.executable, str(SCRIPT), kind], env=env)
        self.started.append((name, node, process))
        return process

    def alive(self) -> bool:
        """For wait conditions: a service that died fails the wait at once."""
        for name, _, process in self.started:
            code = process.poll()
            assert code is None, f"service {name} exited with code {code}"
        return True

    def attached(self, names: tuple[str, ...] = ()) -> bool:
        """Whether the processes (those ``names``, or all) are connected to the node they were
        started on."""
        return self.alive() and all(
            name in connection_names(self.cluster[node])
            for name, node, _ in self.started
            if not names or name in names
        )

    def stop_all(self) -> None:
        for _, _, process in self.started:
            if process.poll() is None:
                process.terminate()
        for _, _, process in self.started:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


async def echo_instances(conn: Connection) -> set[int]:
    """The pids of the echo instances that answer a call: enough calls to reach every one."""
    client = Client(conn)
    replies = await asyncio.gather(
        *(client.call("echo.work", Work(), returns=Done, timeout=5) for _ in range(60)),
        return_exceptions=True,
    )
    return {r.pid for r in replies if isinstance(r, Done)}


async def all_serving(
    conn: Connection, processes: Processes, pids: set[int], names: tuple[str, ...] = (), timeout: float = 30
) -> None:
    """Wait until the echo instances ``pids`` answer calls and the processes (``names``, or all)
    are attached to their nodes."""
    async with asyncio.timeout(timeout):
        while True:
            found = await discover(conn, "PING", "echo", window=0.2)
            if processes.attached(names) and len(found) >= len(pids) and await echo_instances(conn) >= pids:
                return
            await asyncio.sleep(0.05)


async def until(condition: Callable[[], Awaitable[bool]], timeout: float) -> None:
    """Wait until the async ``condition()`` holds (checked every 50 ms), failing after ``timeout`` s."""
    async with asyncio.timeout(timeout):
        while not await condition():  # noqa: ASYNC110 - the conditions are server state, with no event
            await asyncio.sleep(0.05)


def report(capsys: pytest.CaptureFixture[str], text: str) -> None:
    with capsys.disabled():
        print(f"\n{text}")


# --- JetStream state, read through the API --------------------------------------------------


async def js_api(conn: Connection, subject: str, timeout: float = 20) -> dict[str, object]:
    """A JetStream API answer, asked again while the cluster elects leaders (no answer, 503)."""
    async with asyncio.timeout(timeout):
        while True:
            try:
                reply = await conn.request(subject, b"", timeout=2)
            except EventMicroError:  # no responders or timeout during an election
                await asyncio.sleep(0.1)
                continue
            info = json.loads(reply.data)
            assert isinstance(info, dict)
            error = info.get("error")
            if isinstance(error, dict) and error.get("code") in (503, 408):
                await asyncio.sleep(0.1)
                continue
            return info


async def stream_info(conn: Connection, stream: str) -> dict[str, object]:
    return await js_api(conn, f"$JS.API.STREAM.INFO.{stream}")


async def consumer_info(conn: Connection, stream: str) -> dict[str, object] | None:
    info = await js_api(conn, f"$JS.API.CONSUMER.INFO.{stream}.{consumer_name(SERVICE, HANDLER)}")
    return None if "error" in info else info


def leader_of(info: dict[str, object], cluster: NatsCluster) -> int:
    """Index of the node leading a stream or consumer, from its info's ``cluster`` block."""
    block = info["cluster"]
    assert isinstance(block, dict)
    names = [node.name for node in cluster]
    return names.index(block["leader"])


def replicas_current(info: dict[str, object], peers: int) -> bool:
    """Whether a leader and ``peers`` other replicas are up, current and online."""
    block = info.get("cluster")
    if not isinstance(block, dict) or not block.get("leader"):
        return False
    replicas = block.get("replicas") or []
    return len(replicas) == peers and all(r.get("current") and not r.get("offline") for r in replicas)


async def consumer_bound(conn: Connection, stream: str, processes: Processes) -> bool:
    return processes.attached() and await consumer_info(conn, stream) is not None


async def stream_current(conn: Connection, stream: str) -> bool:
    return replicas_current(await stream_info(conn, stream), peers=2)


async def settled(conn: Connection, stream: str, timeout: float) -> None:
    """Nothing pending and nothing unacked: no redelivery is to come."""
    async with asyncio.timeout(timeout):
        while True:
            info = await consumer_info(conn, stream)
            if info is not None and info["num_pending"] == 0 and info["num_ack_pending"] == 0:
                return
            await asyncio.sleep(0.1)


class HandledLog:
    """The durable consumers' log of handled event ids (one line each), read incrementally."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.counts: Counter[str] = Counter()
        self.first_seen: dict[str, float] = {}
        self._offset = 0
        self._partial = b""

    def read(self) -> Counter[str]:
        with contextlib.suppress(FileNotFoundError), self.path.open("rb") as file:
            file.seek(self._offset)
            chunk = file.read()
            self._offset += len(chunk)
            *lines, self._partial = (self._partial + chunk).split(b"\n")
            now = time.monotonic()
            for line in lines:
                self.first_seen.setdefault(line.decode(), now)
            self.counts.update(line.decode() for line in lines)
        return self.counts

    def handled(self) -> int:
        return len(self.read())

    async def follow(self) -> None:
        """Read every 20 ms (until cancelled), so ``first_seen`` is accurate to that."""
        while True:
            self.read()
            await asyncio.sleep(0.02)

    def missing(self, ids: set[str]) -> set[str]:
        return ids - set(self.read())


def duplicates(counts: Counter[str]) -> int:
    return sum(c - 1 for c in counts.values() if c > 1)


# --- 1. a node killed under a steady RPC load --------------------------------------------------

RATE = 100  # calls started per second, spread over three client connections (one per node)
WORK = 0.05  # seconds each call takes in its handler: about 5 calls in flight at any time
DEADLINE = 2.0  # each call's timeout
MARGIN = 0.5  # how late past its deadline a call may end (a loaded 2-core machine)
BEFORE, AFTER = 4.0, 8.0  # seconds of load before and after the kill
RESUME_BOUND = 10.0  # seconds within which calls through the killed node's client resume
FAILED_BOUND = 0.02  # at most this share of the calls may fail


@dataclass(frozen=True, slots=True)
class CallRecord:
    client: int  # the node its client connection started on
    idempotent: bool
    started: float
    ended: float
    outcome: str  # "ok" or the error's type
    pid: int = 0


async def test_killing_a_node_under_rpc_load(
    nats_cluster: NatsCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    """Three echo instances and three clients, one of each per node; node 0 is SIGKILLed."""
    began = time.monotonic()
    cluster, victim = nats_cluster, 0
    processes = Processes(cluster)
    pids = {processes.start("echo", node, f"echo-{node}").pid: node for node in range(3)}
    try:
        async with (
            connected(cluster, 0, "client-0") as c0,
            connected(cluster, 1, "client-1") as c1,
            connected(cluster, 2, "client-2") as c2,
        ):
            conns = [c0, c1, c2]
            clients = [Client(c) for c in conns]
            await all_serving(c1, processes, set(pids))
            victim_pid = next(pid for pid, node in pids.items() if node == victim)
            records: list[CallRecord] = []

            async def one(index: int, idempotent: bool) -> None:
                started = time.monotonic()
                try:
                    done = await clients[index].call(
                        "echo.work",
                        Work(delay=WORK),
                        returns=Done,
                        timeout=DEADLINE,
                        idempotent=idempotent,
                        attempt_timeout=0.5 if idempotent else None,
                    )
                except EventMicroError as exc:
                    records.append(
                        CallRecord(index, idempotent, started, time.monotonic(), type(exc).__name__)
                    )
                else:
                    records.append(CallRecord(index, idempotent, started, time.monotonic(), "ok", done.pid))

            tasks: list[asyncio.Task[None]] = []
            start = time.monotonic()
            killed_at = start + BEFORE
            kill_done: float | None = None
            k = 0
            while (now := time.monotonic()) < start + BEFORE + AFTER:
                if kill_done is None and now >= killed_at:
                    killed_at = time.monotonic()
                    await asyncio.to_thread(cluster[victim].kill)  # SIGKILL, and reaped
                    kill_done = time.monotonic()
                tasks.append(asyncio.create_task(one(k % 3, (k // 3) % 2 == 1)))
                k += 1
                await asyncio.sleep(max(0.0, start + k / RATE - time.monotonic()))
            await asyncio.gather(*tasks)
            assert kill_done is not None

            # the clients reconnected: the one on the killed node is now on another one
            assert all(c.is_connected for c in conns)
            assert c0.connected_url in (cluster[1].url, cluster[2].url)
            # the echo instance of the killed node reconnected and serves again
            assert processes.alive()
            assert await echo_instances(c1) == set(pids)
    finally:
        await asyncio.to_thread(processes.stop_all)

    failed = [r for r in records if r.outcome != "ok"]
    slowest = max(r.ended - r.started for r in records)
    gaps = {}
    for index in range(3):
        ok = sorted(r.ended for r in records if r.client == index and r.outcome == "ok")
        before = max((t for t in ok if t < killed_at), default=start)
        after = min((t for t in ok if t >= killed_at), default=float("inf"))
        gaps[index] = after - before
    victim_back = min(
        (r.ended for r in records if r.pid == victim_pid and r.ended >= killed_at), default=float("inf")
    )
    report(
        capsys,
        f"RPC under a node kill: {len(records)} calls at {RATE}/s (deadline {DEADLINE:g}s), node {victim} "
        f"SIGKILLed after {BEFORE:g}s; failed {len(failed)} "
        f"({len([r for r in failed if not r.idempotent])} plain, {len([r for r in failed if r.idempotent])} "
        f"idempotent-with-retries; {dict(Counter(r.outcome for r in failed))}); "
        f"recovery gap (last success before the kill -> first after) per client: "
        f"{', '.join(f'node {i}: {g:.3f}s' for i, g in gaps.items())}; the killed node's echo instance "
        f"served again {victim_back - killed_at:.2f}s after the kill; slowest call {slowest:.3f}s; "
        f"{time.monotonic() - began:.1f}s",
    )
    assert slowest <= DEADLINE + MARGIN, f"a call took {slowest:.2f}s: past its {DEADLINE:g}s deadline"
    assert max(gaps.values()) < RESUME_BOUND, gaps
    assert len(failed) <= FAILED_BOUND * len(records), Counter(r.outcome for r in failed)
    assert victim_back - killed_at < RESUME_BOUND


# --- 2. a node killed during durable publish and consume on an R3 stream ------------------------

EVENTS = 3_000
RETRIED = (NotStored, Timeout, ConnectionClosed, JetStreamError)  # what a durable publish may raise


class Publisher:
    """``Client.publish(event, durable=True)`` one event at a time; a failure is retried with
    the same event (`NotStored.event`: same id, same ``Nats-Msg-Id``), so it is stored once."""

    def __init__(self, conn: Connection) -> None:
        self.client = Client(conn, source="/cluster-system/publisher")
        self.ids: list[str] = []  # stored, in order
        self.failures: Counter[str] = Counter()
        self.longest_stall = 0.0  # seconds from the first attempt to the storing of an event that failed

    async def run(self, count: int, subject: str, first: int = 0) -> None:
        for n in range(first, first + count):
            event = Event.of(Numbered(n), source=self.client.source)
            first_attempt, failed = time.monotonic(), False
            async with asyncio.timeout(60):
                while True:
                    try:
                        await self.client.publish(event, subject=subject, durable=True, timeout=3.0)
                    except RETRIED as exc:
                        self.failures[type(exc).__name__] += 1
                        failed = True
                        if isinstance(exc, NotStored) and isinstance(exc.event, Event):
                            event = exc.event  # the same event: the stream deduplicates it
                        await asyncio.sleep(0.05)
                        continue
                    break
            if failed:
                self.longest_stall = max(self.longest_stall, time.monotonic() - first_attempt)
            self.ids.append(event.get_id())


async def test_killing_a_node_during_durable_publish_and_consume_loses_nothing(
    nats_cluster: NatsCluster, tmp_path: Path, eventually: Eventually, capsys: pytest.CaptureFixture[str]
) -> None:
    """The stream's leader node is SIGKILLed; the publisher and the consumer were attached to it."""
    began = time.monotonic()
    cluster = nats_cluster
    stream, subject = "CLUSTERED", "clustered.numbered"
    log = HandledLog(tmp_path / "handled.log")
    processes = Processes(cluster, DURABLE_STREAM=stream, DURABLE_SUBJECT=subject, DURABLE_LOG=str(log.path))
    try:
        async with connected(cluster, 1, "admin") as admin:
            await ensure_stream(admin, Stream(stream, ["clustered.>"], storage="file", replicas=3))
            info = await stream_info(admin, stream)
            victim = leader_of(info, cluster)
            processes.start("durable", victim, "consumer")
            await until(lambda: consumer_bound(admin, stream, processes), timeout=30)
            async with connected(cluster, victim, "publisher") as pub_conn:
                publisher = Publisher(pub_conn)
                publishing = asyncio.create_task(publisher.run(EVENTS, subject))
                following = asyncio.create_task(log.follow())
                try:
                    await eventually(
                        lambda: processes.alive() and len(publisher.ids) >= EVENTS // 3 and log.handled() > 0,
                        timeout=40,
                    )
                    at_kill = (len(publisher.ids), log.handled())
                    killed_at = time.monotonic()
                    await asyncio.to_thread(cluster[victim].kill)
                    await asyncio.wait_for(publishing, 60)
                    await eventually(lambda: log.handled() > at_kill[1], timeout=30)
                finally:
                    publishing.cancel()
                    following.cancel()
                assert pub_conn.connected_url != cluster[victim].url
            ids = set(publisher.ids)
            assert len(ids) == EVENTS
            await eventually(lambda: processes.alive() and not log.missing(ids), timeout=40)
            await settled(admin, stream, timeout=20)
            after = await stream_info(admin, stream)
            new_leader = leader_of(after, cluster)
            state = after["state"]
            assert isinstance(state, dict)
            stored = state["messages"]
            assert processes.alive()
    finally:
        await asyncio.to_thread(processes.stop_all)
    counts = log.read()
    lost = ids - set(counts)
    dups = duplicates(counts)
    handled_after = [killed_at, *sorted(t for t in log.first_seen.values() if t >= killed_at)]
    consume_stall = max(b - a for a, b in itertools.pairwise(handled_after))
    report(
        capsys,
        f"durable R3 under a node kill: {EVENTS} events; the stream leader (node {victim}, also the "
        f"publisher's and the consumer's node) SIGKILLed after {at_kill[0]} stored, {at_kill[1]} handled; "
        f"new leader node {new_leader}; publish failures retried {sum(publisher.failures.values())} "
        f"{dict(publisher.failures)}, longest publish stall {publisher.longest_stall:.2f}s; longest pause "
        f"in handling new events after the kill {consume_stall:.2f}s; stream holds {stored}; "
        f"lost {len(lost)}, duplicates {dups}; {time.monotonic() - began:.1f}s",
    )
    assert new_leader != victim
    assert stored == EVENTS, "a retried publish was stored twice"
    assert not lost, f"{len(lost)} events lost (duplicates {dups})"
    assert not set(counts) - ids, "handled events that were never published"


# --- 3. the killed node restarted: it rejoins, and everything works through it -------------------

AFTER_RESTART = 500


async def test_a_restarted_node_rejoins_and_the_services_keep_working(
    nats_cluster: NatsCluster, tmp_path: Path, eventually: Eventually, capsys: pytest.CaptureFixture[str]
) -> None:
    began = time.monotonic()
    cluster, victim = nats_cluster, 1
    stream, subject = "REJOIN", "rejoin.numbered"
    log = HandledLog(tmp_path / "handled.log")
    processes = Processes(cluster, DURABLE_STREAM=stream, DURABLE_SUBJECT=subject, DURABLE_LOG=str(log.path))
    try:
        async with connected(cluster, 0, "admin") as admin:
            await ensure_stream(admin, Stream(stream, ["rejoin.>"], storage="file", replicas=3))
            pids = {processes.start("echo", node, f"echo-{node}").pid for node in range(3)}
            processes.start("durable", victim, "consumer")
            await all_serving(admin, processes, pids)
            publisher = Publisher(admin)
            await publisher.run(200, subject)  # consumed across the cluster before the kill
            await eventually(lambda: not log.missing(set(publisher.ids)), timeout=30)

            await asyncio.to_thread(cluster[victim].kill)
            await publisher.run(200, subject, first=200)  # during the outage: two nodes of three
            await eventually(lambda: processes.alive() and not log.missing(set(publisher.ids)), timeout=30)
            assert await echo_instances(admin) == pids  # the killed node's instance moved over

            restarted = time.monotonic()
            # start() returns once the node answers, /healthz (JetStream meta and its streams
            # current) is ok and it has routes to both peers
            await asyncio.to_thread(cluster[victim].start, 30)
            await asyncio.to_thread(cluster.wait_formed, 30)
            rejoined = time.monotonic() - restarted
            assert all(node.connected_peers() == 2 for node in cluster)
            await eventually(lambda: meta_healthy(cluster), timeout=30)
            await until(lambda: stream_current(admin, stream), timeout=30)
            caught_up = time.monotonic() - restarted

            # through a connection to the restarted node: calls and durable events
            async with connected(cluster, victim, "after-restart") as back:
                assert await echo_instances(back) == pids
                late = processes.start("echo", victim, "echo-late")  # a new instance on that node
                await all_serving(back, processes, {*pids, late.pid}, names=("echo-late",))
                later = Publisher(back)
                await later.run(AFTER_RESTART, subject, first=400)
                assert not later.failures, later.failures
            ids = set(publisher.ids) | set(later.ids)
            await eventually(lambda: processes.alive() and not log.missing(ids), timeout=30)
            await settled(admin, stream, timeout=20)
            info = await stream_info(admin, stream)
            state = info["state"]
            assert isinstance(state, dict)
            assert state["messages"] == len(ids) == 900
            assert replicas_current(info, peers=2)
    finally:
        await asyncio.to_thread(processes.stop_all)
    counts = log.read()
    report(
        capsys,
        f"node {victim} restarted: routes up and /healthz ok after {rejoined:.2f}s, JetStream meta group "
        f"and its stream replica current after {caught_up:.2f}s; {len(ids)} events (200 during the "
        f"outage), lost {len(ids - set(counts))}, duplicates {duplicates(counts)}; calls through the "
        f"restarted node reached all {len(pids) + 1} instances; {time.monotonic() - began:.1f}s",
    )
    assert not ids - set(counts)


async def test_the_dead_letter_stream_is_replicated_on_a_cluster(nats_cluster: NatsCluster) -> None:
    svc = Service("replicated", version="1.0.0", streams=[Stream("REPL", ["repl.>"], replicas=3)])

    @svc.subscribe(subject="repl.events", delivery=Durable())
    async def handle(event: bytes) -> None: ...

    options = ConnectOptions.from_env(nats_cluster.urls, environ={})
    async with Connection(options) as conn, svc.serving(conn):
        info = await _js(conn).stream_info("DEADLETTERS")
    assert info.config.num_replicas == 3  # a node's loss does not stop services from starting
