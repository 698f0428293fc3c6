"""``python -m bench``: the CloudEvents binding against raw nats-py, in one run.

(a) encode + decode of one ~200-byte protobuf event in binary mode, per event, through
    eventmicro's binding and through the cloudevents SDK's generic HTTP binding (reference);
(b) publish -> receive throughput of N events over a real nats-server (started here):
    raw nats-py without headers, raw nats-py with hand-built CloudEvents headers, the binding
    over plain nats-py, and the binding over eventmicro's Connection (size check included);
(c) services: RPC, queue groups, events, I/O-bound handlers, beside raw nats-py (bench/services.py);
(d) durable: JetStream publishing (sequential and pipelined) and consuming with acks, beside raw
    nats-py JetStream, on a server with JetStream and file storage (bench/durable.py);
(e) observability, only with ``--suite observability``: RPC and events with tracing off and on
    (bench/observability.py; needs the otel packages of the dev extra);
(f) gateway: one RPC endpoint over raw nats-py, eventmicro's Client and HTTP through the gateway,
    service and gateway in processes of their own (bench/gateway.py);
(g) hotpath: CPU µs and Python calls per RPC and per event in a service process of its own
    (bench/hotpath.py);
(h) overload, only with ``--suite overload``: an endpoint offered ten times its capacity, what
    the callers get and how soon it answers normally again (bench/overload.py);
(i) peers: events and RPC through raw nats-py, nats.micro, FastStream and eventmicro, each serving
    side in a process of its own, with its CPU per message (bench/peers.py; FastStream is the
    ``bench`` extra, skipped with a message when it is not installed);
(j) workers, only with ``--suite workers``: 64-way RPC calls/s under ``eventmicro run --workers 1``
    and ``--workers 2`` (bench/workers.py);
(k) balance, only with ``--suite balance``: a slow and a fast instance of one endpoint, with
    ``balance="random"`` and ``balance="room"`` (bench/balance.py);
(l) ordered, only with ``--suite ordered``: events/s and the service's CPU per event with
    ``ordered_by=`` off and on (bench/ordered.py).

Every figure is the median of ``--repeat`` runs; the variants are interleaved in each round
so that machine noise hits them alike. Results go to stdout and, with ``--json``, to a file.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import time
import timeit
from collections.abc import Awaitable, Callable
from importlib.metadata import version
from pathlib import Path

import nats
from cloudevents.core.bindings import http as sdk_http
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent as SdkCloudEvent
from nats.aio.msg import Msg

import eventmicro
from bench import balance, durable, gateway, hotpath, overload, peers, services, workers
from bench.sample import SCHEMA, SOURCE, TYPE, handbuilt_event_headers, sample_event
from eventmicro import cloudevents_nats as binding
from schemas.shop.orders.v1 import orders_pb2 as orders

# --- (a) encode + decode per event -------------------------------------------------------


def codec_round_trips(repeat: int, number: int) -> dict[str, float]:
    message = sample_event()

    def eventmicro_binding() -> None:
        wire = binding.to_binary(eventmicro.Event.of(message, source=SOURCE), None)
        binding.from_nats(wire, None).data_as(orders.OrderPlaced)

    fmt = JSONFormat()

    def sdk_generic() -> None:
        event = SdkCloudEvent(
            {"type": TYPE, "source": SOURCE, "datacontenttype": "application/protobuf", "dataschema": SCHEMA},
            message.SerializeToString(),
        )
        wire = sdk_http.to_binary(event, fmt)
        orders.OrderPlaced.FromString(sdk_http.from_binary(wire, fmt).get_data())  # type: ignore[arg-type]

    def protobuf_only() -> None:
        orders.OrderPlaced.FromString(message.SerializeToString())

    results = {}
    for name, fn in (
        ("protobuf_only", protobuf_only),
        ("eventmicro_binding", eventmicro_binding),
        ("sdk_http_binding", sdk_generic),
    ):
        runs = timeit.repeat(fn, number=number, repeat=repeat)
        results[name] = statistics.median(runs) / number * 1e6
    return results


# --- (b) throughput ------------------------------------------------------------------------

Publisher = Callable[[int], Awaitable[None]]


async def measure(url: str, count: int, variant: str) -> float:
    """Messages per second from the first publish to the last receive."""
    pub = await nats.connect(url, pending_size=64 * 1024 * 1024)
    sub = await nats.connect(url)
    conn = eventmicro.Connection(eventmicro.ConnectOptions(servers=(url,), pending_size=64 * 1024 * 1024))
    await conn.open()
    subject = f"bench.{variant}"
    message = sample_event()
    body = message.SerializeToString()
    done = asyncio.Event()
    received = 0
    errors = 0

    async def on_raw(msg: Msg) -> None:
        nonlocal received
        orders.OrderPlaced.FromString(msg.data)
        received += 1
        if received == count:
            done.set()

    async def on_headers(msg: Msg) -> None:
        nonlocal received, errors
        headers = msg.headers or {}
        if headers.get("ce-type") != TYPE:
            errors += 1
        orders.OrderPlaced.FromString(msg.data)
        received += 1
        if received == count:
            done.set()

    async def on_binding(msg: Msg) -> None:
        nonlocal received
        binding.from_nats(msg, None).data_as(orders.OrderPlaced)
        received += 1
        if received == count:
            done.set()

    async def publish_raw(i: int) -> None:
        await pub.publish(subject, message.SerializeToString())

    async def publish_headers(i: int) -> None:
        await pub.publish(subject, message.SerializeToString(), headers=handbuilt_event_headers())

    async def publish_binding(i: int) -> None:
        wire = binding.to_binary(eventmicro.Event.of(message, source=SOURCE), None)
        await pub.publish(subject, wire.data, headers=wire.headers)

    async def publish_connection(i: int) -> None:
        wire = binding.to_binary(eventmicro.Event.of(message, source=SOURCE), None)
        await conn.publish(subject, wire.data, headers=wire.headers)

    handlers: dict[str, tuple[Callable[[Msg], Awaitable[None]], Publisher]] = {
        "raw_no_headers": (on_raw, publish_raw),
        "raw_handbuilt_ce_headers": (on_headers, publish_headers),
        "eventmicro_binding": (on_binding, publish_binding),
        "eventmicro_connection": (on_binding, publish_connection),
    }
    on_message, publish = handlers[variant]
    assert len(body) > 150
    subscription = await sub.subscribe(subject, cb=on_message, pending_msgs_limit=count + 10)
    await sub.flush()
    started = time.perf_counter()
    for i in range(count):
        await publish(i)
        if i % 1000 == 999:
            await asyncio.sleep(0)  # let the subscriber run, as a real process would
    await pub.flush()
    await asyncio.wait_for(done.wait(), timeout=300)
    elapsed = time.perf_counter() - started
    await subscription.unsubscribe()
    await conn.close()
    await pub.close()
    await sub.close()
    if errors:
        raise RuntimeError(f"{variant}: {errors} messages lost their headers")
    return count / elapsed


VARIANTS = ("raw_no_headers", "raw_handbuilt_ce_headers", "eventmicro_binding", "eventmicro_connection")


async def throughput(count: int, repeat: int) -> dict[str, list[float]]:
    rates: dict[str, list[float]] = {v: [] for v in VARIANTS}
    with eventmicro.NatsServer(jetstream=False) as server:
        for round_ in range(repeat):
            order = VARIANTS if round_ % 2 == 0 else tuple(reversed(VARIANTS))
            for variant in order:
                rates[variant].append(await measure(server.url, count, variant))
            print(
                f"  round {round_ + 1}/{repeat}: "
                + ", ".join(f"{v} {rates[v][-1]:,.0f}/s" for v in VARIANTS),
                flush=True,
            )
    return rates


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=100_000, help="events per throughput run")
    parser.add_argument("--repeat", type=int, default=5, help="repetitions (medians are reported)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument(
        "--suite",
        choices=(
            "all",
            "binding",
            "services",
            "durable",
            "gateway",
            "hotpath",
            "peers",
            "observability",
            "overload",
            "workers",
            "balance",
            "ordered",
        ),
        default="all",
        help="all = binding, services, durable, gateway, hotpath, peers; observability (tracing on/off),"
        " overload, workers (eventmicro run --workers 1 and 2) and balance (a slow and a fast instance,"
        " balance='random' and 'room') and ordered (ordered_by= off and on) run only when named",
    )
    parser.add_argument("--calls", type=int, default=3000, help="RPC calls per services scenario")
    parser.add_argument("--events", type=int, default=30_000, help="events per services event scenario")
    parser.add_argument(
        "--durable-count",
        type=int,
        default=None,
        help="events per durable scenario (default: --count, at most 20,000)",
    )
    overload.add_arguments(parser)
    peers.add_arguments(parser)
    args = parser.parse_args()

    print(
        f"machine: {platform.machine()}, {platform.processor() or 'cpu'}, Python {platform.python_version()}"
    )
    print(
        f"nats-py {version('nats-py')}, cloudevents {version('cloudevents')}, protobuf {version('protobuf')}"
    )
    print(f"event: {TYPE}, {len(sample_event().SerializeToString())} bytes serialized\n")

    results: dict[str, object] = {}
    if args.suite in ("all", "binding"):
        results.update(binding_suite(args))
    if args.suite in ("all", "services"):
        print(f"\n(c) services: RPC, queue groups, events, I/O-bound handlers ({args.repeat} rounds)")
        with eventmicro.NatsServer(jetstream=False) as server:
            figures = services.run(server, args.repeat, args.calls, args.events)
        results["services"] = {"rounds": figures, "medians": services.report(figures)}
    if args.suite in ("all", "durable"):
        count = args.durable_count if args.durable_count is not None else min(args.count, 20_000)
        print(
            f"\n(d) durable (JetStream, file storage): {count:,} events per scenario ({args.repeat} rounds),"
            f" publish window {durable.WINDOW}, raw fetch batch {durable.FETCH_BATCH}"
        )
        with eventmicro.NatsServer(jetstream=True) as server:
            rounds = durable.run(server, args.repeat, count)
        results["durable"] = {
            "count": count,
            "window": durable.WINDOW,
            "fetch_batch": durable.FETCH_BATCH,
            "rounds": rounds,
            "medians": durable.report(rounds),
        }
    if args.suite in ("all", "gateway"):
        print(
            f"\n(f) gateway: up to {args.calls:,} calls or {gateway.SECONDS:g} s per variant, sequential and"
            f" {gateway.CONCURRENCY} in flight ({args.repeat} rounds)"
        )
        with eventmicro.NatsServer(jetstream=False) as server:
            rounds = gateway.run(server, args.repeat, args.calls)
        results["gateway"] = {"rounds": rounds, "medians": gateway.report(rounds)}
    if args.suite in ("all", "hotpath"):
        print(
            f"\n(g) hotpath: service CPU per message, {args.calls:,} calls"
            f" (x2 for {hotpath.CONCURRENCY}-way) and {args.events:,} events per round ({args.repeat} rounds)"
        )
        with eventmicro.NatsServer(jetstream=False) as server:
            rounds = hotpath.run(server, args.repeat, args.calls, args.events)
        results["hotpath"] = {"rounds": rounds, "medians": hotpath.report(rounds)}
    if args.suite in ("all", "peers"):
        results["peers"] = peers.suite(args)
    if args.suite == "overload":
        print(
            f"\n(h) overload: {args.rate:g} requests/s for {args.seconds:g} s from {args.callers} caller"
            f" processes, {args.timeout:g} s caller timeouts ({args.repeat} rounds)"
        )
        with eventmicro.NatsServer(jetstream=False) as server:
            burst = overload.run(
                server,
                args.repeat,
                rate=args.rate,
                seconds=args.seconds,
                timeout=args.timeout,
                callers=args.callers,
            )
        results["overload"] = {"rounds": burst, "medians": overload.report(burst)}
    if args.suite == "balance":
        print(
            f"\n(k) balance: a slow (50 ms) and a fast (1 ms) instance, {balance.IN_FLIGHT} calls in flight,"
            f" {args.calls:,} calls per variant ({args.repeat} rounds)"
        )
        with eventmicro.NatsServer(jetstream=False) as server:
            shares = balance.run(server, args.repeat, args.calls)
        results["balance"] = {"rounds": shares, "medians": balance.report(shares)}
    if args.suite == "ordered":
        from bench import ordered

        print(f"\n(l) ordered: ordered_by= off and on, {args.events:,} events each ({args.repeat} rounds)")
        with eventmicro.NatsServer(jetstream=False) as server:
            spent = ordered.run(server, args.repeat, args.events)
        results["ordered"] = {"rounds": spent, "medians": ordered.report(spent)}
    if args.suite == "workers":
        print(
            f"\n(j) workers: {args.calls:,} calls {hotpath.CONCURRENCY} in flight, eventmicro run --workers 1"
            f" and 2, {os.cpu_count()} CPUs ({args.repeat} rounds)"
        )
        with eventmicro.NatsServer(jetstream=False) as server:
            spread = workers.run(server, args.repeat, args.calls)
        results["workers"] = {"rounds": spread, "medians": workers.report(spread)}
    if args.suite == "observability":
        from bench import observability, observability_metrics

        observability.VARIANTS.update(observability_metrics.VARIANTS)  # metrics on, beside tracing
        print(
            f"\n(e) observability: tracing off and on, {args.calls:,} calls (x2 for 64-way) and"
            f" {args.events:,} events per variant ({args.repeat} rounds)"
        )
        with eventmicro.NatsServer(jetstream=False) as server:
            observed = observability.run(server, args.repeat, args.calls, args.events)
        results["observability"] = {"rounds": observed, "medians": observability.report(observed)}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
    return 0


def binding_suite(args: argparse.Namespace) -> dict[str, object]:
    print("(a) encode + decode of one event, binary mode (median of runs, µs per event)")
    codec = codec_round_trips(repeat=args.repeat, number=20_000)
    for name, micros in codec.items():
        print(f"  {name:24s} {micros:8.2f} µs")

    print(f"\n(b) publish -> receive of {args.count:,} events over nats-server ({args.repeat} rounds)")
    rates = asyncio.run(throughput(args.count, args.repeat))
    medians = {v: statistics.median(r) for v, r in rates.items()}
    base = medians["raw_handbuilt_ce_headers"]
    for variant in VARIANTS:
        print(
            f"  {variant:26s} {medians[variant]:>10,.0f} msgs/s"
            f"   x{medians[variant] / base:.2f} of hand-built"
        )
    return {"codec_us": codec, "rates": rates, "medians": medians}


if __name__ == "__main__":
    sys.exit(main())
