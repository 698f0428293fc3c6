"""Peers: eventmicro beside raw nats-py, nats.micro and FastStream, in one run.

``python -m bench --suite peers`` (or ``python -m bench.peers``). For each peer, in each round
(peers in order, then in reverse order the next round), the serving side runs in a process of
its own (``bench/peers_service.py``) and this process drives it with that peer's own client:

- events: a burst of N ``OrderPlaced`` (~200 B protobuf, ``bench/sample.py``) published back to
  back, then the subscriber's count is polled until all N are in, or until it stops moving for
  ``QUIET`` seconds: what did not arrive is reported as lost (a slow consumer's drops show as a
  count, never as a hang). msgs/s is the events handled over the time from the first publish to
  the subscriber's last handled event (``time.monotonic()``, one clock for every process);
- RPC: ``calls`` sequential calls (p50, p99) and ``2 * calls`` with ``CONCURRENCY`` in flight
  (calls/s), a ``PlaceOrder`` (~100 B protobuf) answered by an ``OrderAccepted``;
- the serving process's CPU µs per event and per call (``/proc/PID/task/*/schedstat``, as
  ``bench/hotpath.py``), and this process's (the caller's) CPU µs per call at ``CONCURRENCY``
  in flight (``time.process_time``): which side bounds the throughput on two cores.

Peers (what each carries on the wire besides the same protobuf bodies):

- ``raw``: nats-py, no headers (``msg.respond``); the events without headers;
- ``raw_ce``: nats-py with hand-built CloudEvents headers both ways (seven ``ce-`` headers on an
  event, as ``bench/__main__.py`` builds them; six plus ``ce-timeoutms``/``ce-correlationid`` on
  a request and reply), ``ce-type`` checked, nothing validated;
- ``micro``: nats-py's ``nats.micro`` service (RPC only), called with plain ``nc.request``, no
  headers;
- ``faststream``: FastStream's ``NatsBroker`` on both sides (``bench/peers_faststream.py``), its
  ``content-type`` and ``correlation_id`` headers both ways; skipped, with a message, when
  FastStream is not installed (``pip install -e '.[bench]'``);
- ``eventmicro``: ``Client.publish`` -> ``@subscribe`` handler taking ``OrderPlaced``;
  ``Client.call`` -> ``@rpc`` endpoint; CloudEvents binary mode both ways, validated.

Medians of ``--repeat`` rounds; lost events are shown for the worst round.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Final, Protocol

import nats
from nats.aio.client import Client as Nats

from bench.hotpath import cpu_seconds, stop
from bench.peers_service import CONTROL, EVENT_PEERS, EVENT_SUBJECT, PEERS, RPC_SUBJECT
from bench.sample import handbuilt_event_headers, sample_event
from bench.services import REQUEST, ROOT, connect, handbuilt_headers, latencies, percentile
from eventmicro import Client, Connection, NatsServer
from schemas.shop.orders.v1 import orders_pb2 as orders

CONCURRENCY: Final = 64
QUIET: Final = 3.0  # seconds without a new event, after the burst, before the rest counts as lost
LIMIT: Final = 300.0  # seconds at most waiting for one burst, whatever happens
WARMUP: Final = 200  # untimed calls and events before each peer's figures
PENDING_SIZE: Final = 64 * 1024 * 1024  # every publisher's outgoing buffer (nats-py's default: 2 MiB)
LABELS: Final = {
    "raw": "raw nats-py",
    "raw_ce": "raw nats-py + hand-built CE",
    "micro": "nats.micro",
    "faststream": "FastStream",
    "eventmicro": "eventmicro",
}


class Peer(Protocol):
    """The calling and publishing side of one peer."""

    async def open(self) -> None: ...
    async def call(self) -> None: ...
    async def publish(self) -> None: ...
    async def flush(self) -> None: ...
    async def close(self) -> None: ...


class RawPeer:
    """nats-py: ``request`` and ``publish``, with hand-built CloudEvents headers or none."""

    def __init__(self, url: str, *, cloudevents: bool) -> None:
        self.url = url
        self.cloudevents = cloudevents
        self.event = sample_event()
        self.nc = Nats()

    async def open(self) -> None:
        self.nc = await nats.connect(self.url, pending_size=PENDING_SIZE)

    async def call(self) -> None:
        body = REQUEST.SerializeToString()
        if not self.cloudevents:
            orders.OrderAccepted.FromString((await self.nc.request(RPC_SUBJECT, body, timeout=10)).data)
            return
        headers = handbuilt_headers("shop.orders.v1.PlaceOrder", timeoutms="10000")
        msg = await self.nc.request(RPC_SUBJECT, body, timeout=10, headers=headers)
        if not msg.headers or msg.headers.get("ce-type") != "shop.orders.v1.OrderAccepted":
            raise RuntimeError("not the reply this benchmark expects")
        orders.OrderAccepted.FromString(msg.data)

    async def publish(self) -> None:
        headers = handbuilt_event_headers() if self.cloudevents else None
        await self.nc.publish(EVENT_SUBJECT, self.event.SerializeToString(), headers=headers)

    async def flush(self) -> None:
        await self.nc.flush()

    async def close(self) -> None:
        await self.nc.close()


class EventmicroPeer:
    """eventmicro: ``Client.call`` and ``Client.publish`` on a `Connection`."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.event = sample_event()
        self.conn: Connection | None = None
        self.client: Client | None = None

    async def open(self) -> None:
        self.conn = await connect(self.url)  # pending_size 64 MiB, as the others
        self.client = Client(self.conn, source="/bench/orders/instance-1")

    async def call(self) -> None:
        assert self.client is not None
        await self.client.call(RPC_SUBJECT, REQUEST, returns=orders.OrderAccepted, timeout=10)

    async def publish(self) -> None:
        assert self.client is not None
        await self.client.publish(self.event)

    async def flush(self) -> None:
        assert self.conn is not None
        await self.conn.flush()

    async def close(self) -> None:
        assert self.conn is not None
        await self.conn.close()


def faststream_missing() -> str | None:
    """Why the FastStream peer cannot run here, or None when it can."""
    try:
        importlib.import_module("faststream.nats")
    except ImportError as exc:
        return f"FastStream is not installed ({exc}); pip install -e '.[bench]' (make bench does)"
    return None


def make_peer(name: str, url: str) -> Peer:
    if name in ("raw", "raw_ce", "micro"):
        return RawPeer(url, cloudevents=name == "raw_ce")
    if name == "eventmicro":
        return EventmicroPeer(url)
    from bench.peers_faststream import FastStreamPeer

    return FastStreamPeer(url, rpc_subject=RPC_SUBJECT, event_subject=EVENT_SUBJECT, event=sample_event())


# --- the serving process ------------------------------------------------------------------


@dataclass
class Serving:
    """A peer's serving process and this side's control connection to it."""

    peer: str
    process: subprocess.Popen[bytes]
    control: Nats = field(default_factory=Nats)

    async def stats(self, command: bytes = b"stats") -> dict[str, Any]:
        msg = await self.control.request(f"{CONTROL}.{self.peer}", command, timeout=10)
        loaded: dict[str, Any] = json.loads(msg.data)
        return loaded

    async def ready(self) -> None:
        async with asyncio.timeout(60):
            while True:
                if self.process.poll() is not None:
                    raise RuntimeError(f"{self.peer}: the serving process exited ({self.process.returncode})")
                try:
                    await self.stats()
                    return
                except (nats.errors.NoRespondersError, nats.errors.TimeoutError):
                    await asyncio.sleep(0.1)

    def cpu(self) -> float:
        return cpu_seconds(self.process.pid)


def start(peer: str, url: str) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, (str(ROOT), os.environ.get("PYTHONPATH")))),
    }
    command = [sys.executable, "-m", "bench.peers_service", peer, url]
    return subprocess.Popen(command, cwd=ROOT, env=env, stdin=subprocess.DEVNULL)


# --- one peer, one round --------------------------------------------------------------------


async def sequential(serving: Serving, call: Callable[[], Awaitable[None]], calls: int) -> dict[str, float]:
    before = serving.cpu()
    measured = await latencies(call, calls)
    return {
        "rpc_cpu_us": (serving.cpu() - before) / calls * 1e6,
        "rpc_p50_us": percentile(measured, 0.5),
        "rpc_p99_us": percentile(measured, 0.99),
    }


async def concurrent(serving: Serving, call: Callable[[], Awaitable[None]], total: int) -> dict[str, float]:
    remaining = total

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await call()

    before, ours, started = serving.cpu(), time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    elapsed = time.perf_counter() - started
    return {
        "rpc64_per_s": total / elapsed,
        "rpc64_cpu_us": (serving.cpu() - before) / total * 1e6,
        "rpc64_caller_cpu_us": (time.process_time() - ours) / total * 1e6,  # this process: the client side
    }


async def burst(serving: Serving, peer: Peer, count: int) -> dict[str, float]:
    """Publish ``count`` events back to back; wait for them, boundedly; count what arrived."""
    await serving.stats(b"reset")
    before = serving.cpu()
    started = time.monotonic()
    for i in range(count):
        await peer.publish()
        if i % 1000 == 999:
            await asyncio.sleep(0)  # as the other suites: let the client's flusher run
    await peer.flush()
    published = time.monotonic()
    latest: dict[str, Any] = {"received": 0, "last": 0.0, "wrong": 0}
    moved, limit = published, started + LIMIT
    while True:
        try:
            stats = await serving.stats()
        except (nats.errors.TimeoutError, nats.errors.NoRespondersError):  # busy, or gone: no progress
            stats = latest
        now = time.monotonic()
        if stats["received"] != latest["received"]:
            moved = now
        latest = stats
        if latest["received"] >= count or now - moved > QUIET or now > limit:
            break
        await asyncio.sleep(0.05)
    cpu = serving.cpu() - before
    if latest["wrong"]:
        raise RuntimeError(f"{serving.peer}: {latest['wrong']} events without the expected ce-type")
    received: int = latest["received"]
    last = latest["last"] if received else now
    return {
        "per_s": received / max(last - started, 1e-9),
        "lost": float(count - received),
        "cpu_us": cpu / max(received, 1) * 1e6,
        "pub_per_s": count / (published - started),
    }


async def measure_peer(name: str, url: str, calls: int, bursts: Sequence[int]) -> dict[str, float]:
    process = start(name, url)
    serving = Serving(name, process)
    peer = make_peer(name, url)
    out: dict[str, float] = {}
    try:
        serving.control = await nats.connect(url)
        await serving.ready()
        await peer.open()
        for _ in range(WARMUP):
            await peer.call()
        out.update(await sequential(serving, peer.call, calls))
        out.update(await concurrent(serving, peer.call, 2 * calls))
        if name in EVENT_PEERS:
            await burst(serving, peer, WARMUP)
            for count in bursts:
                out.update(
                    {f"ev{count}_{key}": value for key, value in (await burst(serving, peer, count)).items()}
                )
        await peer.close()
    finally:
        await serving.control.close()
        stop(process)
    return out


# --- rounds, medians, the table -------------------------------------------------------------


def run(
    server: NatsServer, repeat: int, calls: int, bursts: Sequence[int], peers: Sequence[str]
) -> dict[str, Any]:
    """Every round: each peer measured in turn, forward then backward; per-round figures."""
    skipped: dict[str, str] = {}
    if "faststream" in peers and (why := faststream_missing()):
        skipped["faststream"] = why
        print(f"  faststream: skipped: {why}", flush=True)
    chosen = [p for p in peers if p not in skipped]
    rounds: dict[str, list[float]] = {}
    for round_ in range(repeat):
        order = chosen if round_ % 2 == 0 else list(reversed(chosen))
        for name in order:
            figures = asyncio.run(measure_peer(name, server.url, calls, bursts))
            for key, value in figures.items():
                rounds.setdefault(f"{key}_{name}", []).append(value)
            print(f"  round {round_ + 1}/{repeat} {name:10s} {summary(figures, bursts)}", flush=True)
    return {"peers": chosen, "skipped": skipped, "bursts": list(bursts), "calls": calls, "rounds": rounds}


def summary(figures: dict[str, float], bursts: Sequence[int]) -> str:
    shown = [f"p50 {figures['rpc_p50_us']:,.0f} µs", f"{figures['rpc64_per_s']:,.0f} calls/s"]
    for n in bursts:
        if f"ev{n}_per_s" in figures:
            shown.append(f"{figures[f'ev{n}_per_s']:,.0f} events/s, lost {figures[f'ev{n}_lost']:,.0f}/{n:,}")
    return ", ".join(shown)


def table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Print ``rows`` under ``head``: the first column left-aligned, the others right-aligned."""
    widths = [max(len(row[i]) for row in (head, *rows)) for i in range(len(head))]
    for row in (head, *rows):
        cells = [row[0].ljust(widths[0])] + [
            cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True)
        ]
        print("  " + "  ".join(cells))


def report(results: dict[str, Any]) -> dict[str, Any]:
    """Medians, the worst round's losses and eventmicro's ratios; printed as tables."""
    rounds: dict[str, list[float]] = results["rounds"]
    medians = {key: statistics.median(values) for key, values in rounds.items()}
    worst = {key: max(values) for key, values in rounds.items() if "_lost_" in key}
    peers: list[str] = results["peers"]
    for n in results["bursts"]:
        print(f"\n  events, a burst of {n:,}: publisher (this process) and subscriber in separate processes")
        head: Sequence[str] = (
            "peer",
            "msgs/s",
            "lost (worst round)",
            "subscriber CPU µs/event",
            "published/s",
        )
        rows: list[Sequence[str]] = [
            (LABELS[name], f"{medians[f'ev{n}_per_s_{name}']:,.0f}", f"{worst[f'ev{n}_lost_{name}']:,.0f}",
             f"{medians[f'ev{n}_cpu_us_{name}']:,.1f}", f"{medians[f'ev{n}_pub_per_s_{name}']:,.0f}")
            for name in peers
            if name in EVENT_PEERS
        ]  # fmt: skip
        table(head, rows)
    print(f"\n  RPC, responder in its own process: sequential, and {CONCURRENCY} calls in flight")
    head = ("peer", "p50 µs", "p99 µs", "responder CPU µs/call", f"{CONCURRENCY}-way calls/s", "CPU µs/call",
            "caller CPU µs/call")  # fmt: skip
    table(head, [
        (LABELS[name], f"{medians[f'rpc_p50_us_{name}']:,.0f}", f"{medians[f'rpc_p99_us_{name}']:,.0f}",
         f"{medians[f'rpc_cpu_us_{name}']:,.1f}", f"{medians[f'rpc64_per_s_{name}']:,.0f}",
         f"{medians[f'rpc64_cpu_us_{name}']:,.1f}", f"{medians[f'rpc64_caller_cpu_us_{name}']:,.1f}")
        for name in peers
    ])  # fmt: skip
    ratios = ratio_table(medians, peers, results["bursts"])
    if ratios:
        print(
            "\n  eventmicro / peer: msgs/s, calls/s above 1 = eventmicro faster; p50, CPU above 1 = costlier"
        )
        others = [name for name in peers if name != "eventmicro"]
        rows = [
            [figure] + [f"x{row[n]:.2f}" if n in row else "-" for n in others]
            for figure, row in ratios.items()
        ]
        table(["figure", *(f"vs {n}" for n in others)], rows)
    return {"medians": medians, "lost_worst": worst, "ratios": ratios}


def ratio_table(
    medians: dict[str, float], peers: Sequence[str], bursts: Sequence[int]
) -> dict[str, dict[str, float]]:
    """eventmicro's median over each other peer's, per figure."""
    if "eventmicro" not in peers:
        return {}
    figures = [(f"events {n:,} msgs/s", f"ev{n}_per_s") for n in bursts]
    figures += [(f"events {n:,} CPU µs/event", f"ev{n}_cpu_us") for n in bursts]
    figures += [
        ("RPC p50", "rpc_p50_us"),
        ("RPC CPU µs/call", "rpc_cpu_us"),
        (f"RPC {CONCURRENCY}-way calls/s", "rpc64_per_s"),
        (f"RPC {CONCURRENCY}-way CPU µs/call", "rpc64_cpu_us"),
    ]
    table: dict[str, dict[str, float]] = {}
    for label, key in figures:
        ours = medians.get(f"{key}_eventmicro")
        if ours is None:
            continue
        row = {
            n: ours / medians[f"{key}_{n}"] for n in peers if n != "eventmicro" and medians.get(f"{key}_{n}")
        }
        if row:
            table[label] = row
    return table


def describe(peers: Sequence[str]) -> dict[str, str]:
    """The versions the run used."""
    out = {"nats-py": version("nats-py"), "eventmicro": version("eventmicro")}
    if "faststream" in peers:
        try:
            out["faststream"] = version("faststream")
        except PackageNotFoundError:
            out["faststream"] = "not installed"
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--peer-events",
        type=int,
        nargs="+",
        default=[50_000],
        metavar="N",
        help="peers suite: events per burst, one burst of each size per peer and round"
        " (default 50000; --peer-events 50000 100000 adds the 100k burst)",
    )
    parser.add_argument(
        "--peers",
        default=",".join(PEERS),
        help=f"peers suite: which peers, comma-separated (default {','.join(PEERS)})",
    )


def peer_list(text: str) -> list[str]:
    chosen = [p.strip() for p in text.split(",") if p.strip()]
    unknown = sorted(set(chosen) - set(PEERS))
    if unknown:
        raise SystemExit(f"--peers: unknown {', '.join(unknown)}; choose from {', '.join(PEERS)}")
    return chosen


def suite(args: argparse.Namespace) -> dict[str, Any]:
    """``--suite peers`` of ``python -m bench``: run, print, and return what ``--json`` writes."""
    peers = peer_list(args.peers)
    versions = describe(peers)
    print(
        f"\n(i) peers: {', '.join(peers)}; bursts of {', '.join(f'{n:,}' for n in args.peer_events)} events,"
        f" {args.calls:,} sequential calls and {2 * args.calls:,} at {CONCURRENCY} in flight per peer"
        f" ({args.repeat} rounds); " + ", ".join(f"{name} {v}" for name, v in versions.items())
    )
    load = [os.getloadavg()[0]]
    with NatsServer(jetstream=False) as server:
        results = run(server, args.repeat, args.calls, args.peer_events, peers)
    load.append(os.getloadavg()[0])
    print(f"  load average (1 min) before and after: {load[0]:.2f}, {load[1]:.2f}")
    return results | report(results) | {"versions": versions, "loadavg_1min": load}


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.peers", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--json", type=Path, default=None)
    add_arguments(parser)
    args = parser.parse_args()
    results = suite(args)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"peers": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
