"""Metrics overhead: the workloads of `bench.observability` with metrics off and on, in one run.

Variants (``VARIANTS``, in the shape of ``bench.observability.VARIANTS``, which ``python -m
bench --suite observability`` extends with them):

- ``metrics``: metrics enabled (``eventmicro.metrics.enable`` into a registry of its own)
  before the service starts; every RPC and event then adds to its handler's counters and
  histogram. The registry is scraped once after the workloads, so exposition is exercised
  but not timed;
- the disabled path is ``bench.observability``'s ``off`` (and ``off_again``, the A/A noise
  floor): with metrics off the runtime pays one ``stats.metrics is not None`` check per
  message, timed on its own by `disabled_check_ns`.

On its own (without the tracing variants, so without the otel packages)::

    .venv/bin/python -m bench.observability_metrics --repeat 5 --calls 2000 --events 10000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import timeit
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, generate_latest

from bench import observability
from eventmicro import NatsServer
from eventmicro import cloudevents_nats as binding
from eventmicro import metrics as em_metrics
from eventmicro.observability.stats import EndpointStats


@contextlib.contextmanager
def _metrics_on() -> Iterator[None]:
    registry = CollectorRegistry()
    em_metrics.enable(registry)
    try:
        yield
        generate_latest(registry)  # a scrape, untimed: the exposition works on what was counted
    finally:
        em_metrics.disable()


@contextlib.contextmanager
def _metrics_off() -> Iterator[None]:
    em_metrics.disable()
    yield


VARIANTS: dict[str, Callable[[], contextlib.AbstractContextManager[None]]] = {"metrics": _metrics_on}


def disabled_check_ns() -> float:
    """What metrics cost per message while off: the ``stats.metrics is not None`` check."""
    runs = timeit.repeat(
        "stats.metrics is not None", globals={"stats": EndpointStats()}, number=10**6, repeat=5
    )
    return min(runs) / 1_000_000 * 1e9


def enabled_cost_ns() -> dict[str, float]:
    """What metrics cost per message while on, without the network's noise: the hook of an RPC
    (outcome read from the reply) and of an event (outcome given)."""
    handler = em_metrics.HandlerMetrics("bench", "rpc", "work", em_metrics.DEFAULT_BUCKETS)
    reply = binding.NATSMessage({"ce-id": "1", "ce-type": "x"}, b"")
    out = {}
    for name, statement in (
        ("rpc_replied", "h.replied(1_234_567, reply)"),
        ("event_handled", "h.handled(1_234_567, 0)"),
    ):
        runs = timeit.repeat(statement, globals={"h": handler, "reply": reply}, number=10**6, repeat=5)
        out[name] = min(runs) / 1_000_000 * 1e9
    return out


def run(server: NatsServer, repeat: int, calls: int, events: int) -> dict[str, dict[str, list[float]]]:
    """``off`` (twice, as an A/A pair) and ``metrics``, interleaved: per variant, per workload,
    the figure of each round."""
    variants = {"off": _metrics_off, "off_again": _metrics_off, **VARIANTS}
    results: dict[str, dict[str, list[float]]] = {
        v: {w: [] for w in observability.WORKLOADS} for v in variants
    }
    for round_ in range(repeat):
        order = list(variants) if round_ % 2 == 0 else list(reversed(variants))
        for variant in order:
            with variants[variant]():
                figures = asyncio.run(observability._workloads(server.url, calls, events))
            for workload, value in figures.items():
                results[variant][workload].append(value)
        print(
            f"  round {round_ + 1}/{repeat}: "
            + "; ".join(
                f"{v} " + ", ".join(f"{results[v][w][-1]:,.0f}" for w in observability.WORKLOADS)
                for v in variants
            ),
            flush=True,
        )
    return results


def report(results: dict[str, dict[str, list[float]]]) -> dict[str, dict[str, float]]:
    medians = {v: {w: statistics.median(r) for w, r in by.items()} for v, by in results.items()}
    base = medians["off"]
    print(f"  {'variant':<14}" + "".join(f"{w:>24}" for w in observability.WORKLOADS))
    for variant, figures in medians.items():
        cells = "".join(
            f"{figures[w]:>14,.0f} (x{figures[w] / base[w]:.2f})" for w in observability.WORKLOADS
        )
        print(f"  {variant:<14}{cells}")
    check = disabled_check_ns()
    per_call_us = 1e6 / base["rpc_seq_per_s"]
    print(
        f"  metrics off costs one check per message: {check:.1f} ns,"
        f" {check / (per_call_us * 1000) * 100:.4f}% of a sequential call ({per_call_us:.0f} µs)"
    )
    enabled = enabled_cost_ns()
    print(
        "  metrics on, the hook per message: "
        + ", ".join(f"{name} {ns:.0f} ns" for name, ns in enabled.items())
        + f" ({enabled['rpc_replied'] / (per_call_us * 1000) * 100:.3f}% of a sequential call)"
    )
    return {**medians, "disabled_check_ns": {"ns": check}, "enabled_hook_ns": enabled}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--events", type=int, default=10_000)
    args = parser.parse_args()
    print(f"metrics off and on: {args.calls:,} calls (x2 for 64-way), {args.events:,} events", end="")
    print(f" ({args.repeat} rounds)")
    with NatsServer(jetstream=False) as server:
        report(run(server, args.repeat, args.calls, args.events))
    return 0


if __name__ == "__main__":
    sys.exit(main())
