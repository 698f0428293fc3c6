"""``eventmicro run --workers N``: 64-way RPC calls/s with 1 worker process and with 2.

``python -m bench --suite workers`` (or ``python -m bench.workers``). The service
(``bench/hotpath_service.py``) runs under ``eventmicro run --workers N``; each worker is a process
with its own connection, its instances sharing the endpoint's queue group. One load process
(plain nats-py, hand-built CloudEvents headers, 64 calls in flight) drives it; figures per round:
calls/s, and the CPU µs per call of the whole process tree serving it (supervisor and workers,
``/proc/PID/task/*/schedstat``). Rounds alternate 1, 2, 2, 1 workers so that machine noise
hits both alike.

What it can show depends on the machine: the workers, the load process and nats-server share
its cores. On a 2-core machine the load process and the server already take about a core, so
a second worker has little to add; ``os.cpu_count()`` is printed beside the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Final

import nats
from nats.aio.client import Client as Nats

from bench.hotpath import CONCURRENCY, SERVICE, call, cpu_seconds, rate, stop
from bench.services import ROOT
from eventmicro import NatsServer

WORKERS: Final = (1, 2)


def start(url: str, workers: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "eventmicro", "run", "bench.hotpath_service", "--url", url]
    command += ["--workers", str(workers)]
    return subprocess.Popen(command, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def tree(pid: int) -> list[int]:
    """``pid`` and its descendants (the supervisor and its workers)."""
    found = [pid]
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
            continue
        if parent == pid:
            found += tree(int(entry.name))
    return found


def tree_cpu(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            total += cpu_seconds(pid)
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


async def instances(nc: Nats) -> int:
    """How many instances of the service answer ``$SRV.PING`` within 0.3 s."""
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox)
    await nc.publish(f"$SRV.PING.{SERVICE}", b"", reply=inbox)
    count = 0
    try:
        while True:
            msg = await sub.next_msg(timeout=0.3)
            if not (msg.headers and msg.headers.get("Status") == "503"):  # the server's "no responders"
                count += 1
    except nats.errors.TimeoutError:
        return count
    finally:
        await sub.unsubscribe()


async def measure(url: str, pid: int, workers: int, calls: int) -> dict[str, float]:
    nc = await nats.connect(url, pending_size=64 * 1024 * 1024)
    try:
        async with asyncio.timeout(60):
            while await instances(nc) < workers:  # noqa: ASYNC110 - polling the service's PING
                await asyncio.sleep(0.1)
        for _ in range(400):  # warm up every worker
            await call(nc)
        pids = tree(pid)
        out: dict[str, float] = {}
        before = tree_cpu(pids)
        await rate(lambda: call(nc), calls, pid, out, "c64")
        out["c64_cpu_us"] = (tree_cpu(pids) - before) / calls * 1e6
        return out
    finally:
        await nc.close()


def run(server: NatsServer, repeat: int, calls: int) -> dict[int, dict[str, list[float]]]:
    results: dict[int, dict[str, list[float]]] = {n: {} for n in WORKERS}
    for round_ in range(repeat):
        order = WORKERS if round_ % 2 == 0 else tuple(reversed(WORKERS))
        for workers in order:
            process = start(server.url, workers)
            try:
                figures = asyncio.run(measure(server.url, process.pid, workers, calls))
            finally:
                stop(process)
            for key, value in figures.items():
                results[workers].setdefault(key, []).append(value)
            print(
                f"  round {round_ + 1}/{repeat}, {workers} worker(s): {figures['c64_per_s']:,.0f} calls/s,"
                f" {figures['c64_cpu_us']:,.1f} µs CPU per call (all worker processes)",
                flush=True,
            )
    return results


def report(results: dict[int, dict[str, list[float]]]) -> dict[str, float]:
    medians = {
        f"{key}_{workers}w": statistics.median(values)
        for workers, figures in results.items()
        for key, values in figures.items()
    }
    one, two = medians["c64_per_s_1w"], medians["c64_per_s_2w"]
    print(
        f"  {CONCURRENCY}-way RPC, {os.cpu_count()} CPUs: 1 worker {one:,.0f} calls/s,"
        f" 2 workers {two:,.0f} calls/s (x{two / one:.2f});"
        f" CPU per call {medians['c64_cpu_us_1w']:,.1f} / {medians['c64_cpu_us_2w']:,.1f} µs"
    )
    medians["ratio_2w_1w"] = two / one
    return medians


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.workers", description=__doc__)
    parser.add_argument("--repeat", type=int, default=4)
    parser.add_argument("--calls", type=int, default=8000)
    args = parser.parse_args()
    with NatsServer(jetstream=False) as server:
        started = time.perf_counter()
        report(run(server, args.repeat, args.calls))
        print(f"  ({time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
