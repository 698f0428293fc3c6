"""Cost of ``ordered_by=`` in the serving process: events/s and CPU µs per event, off and on.

``python -m bench --suite ordered`` (or ``python -m bench.ordered``). The service
(``bench/ordered_service.py``, a handler doing nothing) runs in its own process under
``eventmicro run``, once as a plain ``Shared()`` handler (off) and once with
``ordered_by="customer_id"`` (on); this process publishes ``PlaceOrder`` events with plain
nats-py and hand-built CloudEvents headers, spread over ``KEYS`` customer ids, and reads the
service's CPU time from ``/proc`` (`bench.hotpath.cpu_seconds`). The variants alternate in each
round, so machine noise hits both alike.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Final

import nats
from nats.aio.client import Client as Nats

from bench.hotpath import cpu_seconds, publish_events, stop, until_handled
from bench.services import REQUEST, ROOT
from eventmicro import NatsServer
from schemas.shop.orders.v1 import orders_pb2 as orders

SERVICE: Final = "benchordered"
KEYS: Final = 100  # customer ids the events are spread over
VARIANTS: Final = ("off", "on")


def start_service(url: str, variant: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "BENCH_ORDERED": variant}
    command = [sys.executable, "-m", "eventmicro", "run", "bench.ordered_service", "--url", url]
    return subprocess.Popen(command, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def handled(nc: Nats) -> int:
    """The service's count of events received, from ``$SRV.STATS`` (0 until it answers)."""
    try:
        msg = await nc.request(f"$SRV.STATS.{SERVICE}", b"", timeout=2)
    except (nats.errors.NoRespondersError, nats.errors.TimeoutError):
        return 0
    return int(json.loads(msg.data)["data"]["events"]["on_placed"]["received"])


def bodies() -> list[bytes]:
    """One PlaceOrder body per customer id (the key)."""
    made = []
    for key in range(KEYS):
        request = orders.PlaceOrder()
        request.CopyFrom(REQUEST)
        request.customer_id = f"cust-{key:06d}"
        made.append(request.SerializeToString())
    return made


async def measure(url: str, pid: int, count: int) -> dict[str, float]:
    nc = await nats.connect(url, pending_size=64 * 1024 * 1024)
    try:
        async with asyncio.timeout(60):  # ready: it answers $SRV.STATS
            while True:
                try:
                    await nc.request(f"$SRV.STATS.{SERVICE}", b"", timeout=1)
                    break
                except (nats.errors.NoRespondersError, nats.errors.TimeoutError):
                    await asyncio.sleep(0.1)
        keyed = bodies()
        await publish_events(nc, 500, keyed)  # warm up
        await until_handled(nc, 500, handled)
        before, started = cpu_seconds(pid), time.perf_counter()
        await publish_events(nc, count, keyed)
        await until_handled(nc, 500 + count, handled)
        return {
            "events_per_s": count / (time.perf_counter() - started),  # incl. STATS polling: rough
            "cpu_us": (cpu_seconds(pid) - before) / count * 1e6,
        }
    finally:
        await nc.close()


def run(server: NatsServer, repeat: int, count: int) -> dict[str, dict[str, list[float]]]:
    results: dict[str, dict[str, list[float]]] = {v: {} for v in VARIANTS}
    for round_ in range(repeat):
        order = VARIANTS if round_ % 2 == 0 else tuple(reversed(VARIANTS))
        for variant in order:
            process = start_service(server.url, variant)
            try:
                figures = asyncio.run(measure(server.url, process.pid, count))
            finally:
                stop(process)
            for key, value in figures.items():
                results[variant].setdefault(key, []).append(value)
            print(f"  round {round_ + 1}/{repeat} ordered_by {variant}:"
                  f" {figures['events_per_s']:,.0f} events/s, {figures['cpu_us']:,.1f} µs CPU/event",
                  flush=True)  # fmt: skip
    return results


def report(results: dict[str, dict[str, list[float]]]) -> dict[str, dict[str, float]]:
    medians = {v: {k: statistics.median(x) for k, x in figures.items()} for v, figures in results.items()}
    for variant, figures in medians.items():
        print(f"  ordered_by {variant}: ~{figures['events_per_s']:,.0f} events/s,"
              f" service CPU {figures['cpu_us']:,.1f} µs/event")  # fmt: skip
    return medians


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ordered", description=__doc__)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--events", type=int, default=20_000)
    args = parser.parse_args()
    with NatsServer(jetstream=False) as server:
        report(run(server, args.repeat, args.events))
    return 0


if __name__ == "__main__":
    sys.exit(main())
