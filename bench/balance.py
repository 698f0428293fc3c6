"""Load-aware intake (issue 16, item 4): one slow instance and one fast, with and without
``@svc.rpc(balance="room")``.

``python -m bench.balance`` (or ``python -m bench --suite balance``). Two processes serve
``benchbalance.work`` (`bench/balance_service.py`): one waits 50 ms a call, one 1 ms, 8 at a
time each. This process keeps ``IN_FLIGHT`` `Client.call` calls going until ``--calls`` are
done, then reports p50/p90/p99, calls/s, the share the slow instance served and the calls
that failed. Rounds alternate ``random`` (the queue group's own choice) and ``room``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from typing import Final

from bench.hotpath import stop
from bench.services import REQUEST, ROOT, percentile
from eventmicro import Client, Connection, ConnectOptions, EventMicroError, NatsServer
from schemas.shop.orders.v1 import orders_pb2 as orders

IN_FLIGHT: Final = 16
VARIANTS: Final = ("random", "room")
SLOW, FAST = 0.05, 0.001


def start(url: str, balance: str, label: str, delay: float) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "BENCH_BALANCE": balance, "BENCH_LABEL": label}
    env["BENCH_DELAY"] = str(delay)
    command = [sys.executable, "-m", "eventmicro", "run", "bench.balance_service", "--url", url]
    return subprocess.Popen(command, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def measure(url: str, calls: int) -> dict[str, float]:
    conn = await Connection(ConnectOptions.from_env(url, environ={})).open()
    client = Client(conn)
    try:
        async with asyncio.timeout(60):  # both instances up: each has answered once
            seen: set[str] = set()
            while seen != {"slow", "fast"}:
                try:
                    reply = await client.call(
                        "benchbalance.work", REQUEST, returns=orders.OrderAccepted, timeout=5
                    )
                    seen.add(reply.order_id)
                except EventMicroError:
                    await asyncio.sleep(0.1)
        latencies: list[float] = []
        served = {"slow": 0, "fast": 0}
        failed = 0
        remaining = calls

        async def caller() -> None:
            nonlocal remaining, failed
            while remaining > 0:
                remaining -= 1
                started = time.perf_counter()
                try:
                    reply = await client.call(
                        "benchbalance.work", REQUEST, returns=orders.OrderAccepted, timeout=5
                    )
                except EventMicroError:
                    failed += 1
                    continue
                latencies.append((time.perf_counter() - started) * 1e3)
                served[reply.order_id] += 1

        started = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(IN_FLIGHT)))
        elapsed = time.perf_counter() - started
    finally:
        await conn.close()
    return {
        "p50_ms": percentile(latencies, 0.5),
        "p90_ms": percentile(latencies, 0.9),
        "p99_ms": percentile(latencies, 0.99),
        "per_s": calls / elapsed,
        "slow_share": served["slow"] / max(1, sum(served.values())),
        "failed": failed,
    }


def run(server: NatsServer, repeat: int, calls: int) -> dict[str, dict[str, list[float]]]:
    results: dict[str, dict[str, list[float]]] = {variant: {} for variant in VARIANTS}
    for round_ in range(repeat):
        for variant in VARIANTS if round_ % 2 == 0 else tuple(reversed(VARIANTS)):
            processes = [start(server.url, variant, "slow", SLOW), start(server.url, variant, "fast", FAST)]
            try:
                figures = asyncio.run(measure(server.url, calls))
            finally:
                for process in processes:
                    stop(process)
            for key, value in figures.items():
                results[variant].setdefault(key, []).append(value)
            print(f"  round {round_ + 1}/{repeat} {variant:6}: {line(figures)}", flush=True)
    return results


def report(results: dict[str, dict[str, list[float]]]) -> dict[str, float]:
    medians = {
        f"{key}_{variant}": statistics.median(values)
        for variant, figures in results.items()
        for key, values in figures.items()
    }
    for variant in VARIANTS:
        print(
            f"  balance={variant!r:8} {line({key: medians[f'{key}_{variant}'] for key in results[variant]})}"
        )
    return medians


def line(figures: dict[str, float]) -> str:
    return (
        f"p50 {figures['p50_ms']:.1f} ms, p90 {figures['p90_ms']:.1f}, p99 {figures['p99_ms']:.1f},"
        f" {figures['per_s']:,.0f} calls/s, slow instance served {figures['slow_share']:.1%},"
        f" failed {figures['failed']:.0f}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.balance", description=__doc__)
    parser.add_argument("--repeat", type=int, default=4)
    parser.add_argument("--calls", type=int, default=3000)
    args = parser.parse_args()
    with NatsServer(jetstream=False) as server:
        report(run(server, args.repeat, args.calls))
    return 0


if __name__ == "__main__":
    sys.exit(main())
