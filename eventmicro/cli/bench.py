"""``eventmicro bench``: eventmicro's pub/sub and RPC throughput and latency on a given NATS.

Like ``nats bench``, but through eventmicro's whole stack (CloudEvents envelopes, typed
payloads, a `Service` with bounded concurrency), so the figures are what an application sees.
The services and the clients run in this process, on separate connections.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import statistics
import time
import uuid

from eventmicro.cli.common import Subparsers, connect_options
from eventmicro.service.client import Client
from eventmicro.service.delivery import Durable
from eventmicro.service.service import Service
from eventmicro.transport.config import ConnectOptions
from eventmicro.transport.connection import Connection
from eventmicro.wire.codecs import event_type

EXAMPLES = """examples:
  eventmicro bench rpc                          # 5,000 calls, 32 concurrent, 128-byte payloads
  eventmicro bench rpc --msgs 20000 --clients 64 --size 1024
  eventmicro bench pubsub --msgs 50000          # events: Client.publish -> @subscribe handler
  eventmicro bench pubsub --durable --msgs 5000 # through a JetStream stream, acked handlers

NATS: --url, or EVENTMICRO_NATS_URL / NATS_URL (start one with `eventmicro server`).
"""


@event_type("eventmicro.bench.v1.Payload")
@dataclasses.dataclass
class Payload:
    """The benchmark's message: a JSON payload of about ``--size`` bytes."""

    n: int
    sent: float
    blob: str


def register(subparsers: Subparsers) -> None:
    """Add ``bench`` to the ``eventmicro`` parser."""
    parser = subparsers.add_parser(
        "bench",
        help="measure eventmicro's pub/sub and RPC throughput and latency",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("kind", choices=["rpc", "pubsub"])
    parser.add_argument("--msgs", type=int, default=5000, help="messages or calls (default 5000)")
    parser.add_argument("--size", type=int, default=128, help="payload bytes (default 128)")
    parser.add_argument("--clients", type=int, default=32, help="concurrent callers for rpc (default 32)")
    parser.add_argument("--durable", action="store_true", help="pubsub through a JetStream stream")
    parser.add_argument("--url", default=None, help="NATS URL (default: from the environment)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.msgs < 1 or args.size < 0 or args.clients < 1:
        print("eventmicro: --msgs and --clients must be at least 1, --size 0 or more")
        return 2
    options = connect_options(args)
    result = asyncio.run(_rpc(options, args) if args.kind == "rpc" else _pubsub(options, args))
    for label, value in result.items():
        print(f"  {label:<22} {value}")
    return 0


async def _rpc(options: ConnectOptions, args: argparse.Namespace) -> dict[str, str]:
    name = f"bench-{uuid.uuid4().hex[:8]}"
    svc = Service(name, version="1.0.0", description="eventmicro bench")

    @svc.rpc
    async def echo(request: Payload) -> Payload:
        return request

    blob = "x" * args.size
    latencies: list[float] = []
    async with Connection(options) as served, Connection(options) as calling, svc.serving(served):
        client = Client(calling, source="/eventmicro/bench")
        remaining = args.msgs

        async def caller() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                started = time.perf_counter()
                await client.call(
                    f"{name}.echo", Payload(remaining, started, blob), returns=Payload, timeout=30
                )
                latencies.append((time.perf_counter() - started) * 1e6)

        shape = f"{args.msgs} calls, {args.clients} concurrent, {args.size}-byte payloads"
        print(f"rpc: {shape} on {calling.connected_url}")
        started = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(args.clients)))
        elapsed = time.perf_counter() - started
    return {"calls/s": f"{args.msgs / elapsed:,.0f}", **_latency(latencies), "elapsed": f"{elapsed:.2f} s"}


async def _pubsub(options: ConnectOptions, args: argparse.Namespace) -> dict[str, str]:
    tag = uuid.uuid4().hex[:8]
    subject = f"bench.{tag}.events"
    streams = []
    if args.durable:
        from eventmicro.transport.jetstream import Stream

        streams = [Stream(f"BENCH_{tag}", [subject], storage="file", max_age=3600)]
    svc = Service(f"bench-{tag}", version="1.0.0", description="eventmicro bench", streams=streams)
    latencies: list[float] = []
    done = asyncio.Event()

    async def consume(event: Payload) -> None:
        latencies.append((time.time() - event.sent) * 1e6)
        if len(latencies) >= args.msgs:
            done.set()

    if args.durable:
        svc.subscribe(subject=subject, delivery=Durable(dead_letter=False))(consume)
    else:
        svc.subscribe(subject=subject)(consume)
    blob = "x" * args.size
    async with Connection(options) as consuming, Connection(options) as publishing, svc.serving(consuming):
        client = Client(publishing, source="/eventmicro/bench")
        mode = "durable (JetStream)" if args.durable else "core NATS"
        print(f"pubsub: {args.msgs} events, {mode}, {args.size}-byte payloads on {publishing.connected_url}")
        started = time.perf_counter()
        if args.durable:
            await client.publish_batch(
                [Payload(n, time.time(), blob) for n in range(args.msgs)], subject=subject
            )
        else:
            for n in range(args.msgs):
                await client.publish(Payload(n, time.time(), blob), subject=subject)
                if n % 500 == 499:
                    await asyncio.sleep(0)  # let the handler side run
        published = time.perf_counter() - started
        await asyncio.wait_for(done.wait(), timeout=max(60.0, args.msgs / 100))
        elapsed = time.perf_counter() - started
    return {
        "published/s": f"{args.msgs / published:,.0f}",
        "handled/s": f"{args.msgs / elapsed:,.0f}",
        **_latency(latencies),
        "elapsed": f"{elapsed:.2f} s",
    }


def _latency(values: list[float]) -> dict[str, str]:
    ordered = sorted(values)
    if not ordered:
        return {}
    p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
    return {"latency p50": f"{statistics.median(ordered):,.0f} µs", "latency p99": f"{p99:,.0f} µs"}
