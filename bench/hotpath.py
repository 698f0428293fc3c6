"""Hot-path cost in the serving process: CPU µs and Python calls per RPC and per event.

``python -m bench --suite hotpath`` (or ``python -m bench.hotpath``). The service
(``bench/hotpath_service.py``: ``benchhot.work``, an RPC endpoint doing no work, and a
``PlaceOrder`` event handler doing nothing) runs in its own process under ``eventmicro run``;
this process drives it with plain nats-py and hand-built CloudEvents headers, so the load
generator's own code is the same whatever eventmicro version the service runs. Figures:

- sequential RPC: p50 and the service process's CPU µs per call (``/proc/PID/task/*/schedstat``);
- ``CONCURRENCY`` calls in flight: calls/s and the service's CPU µs per call;
- events: ``events`` published back to back, the service's CPU µs per event once its
  ``$SRV.STATS`` counts them all handled;
- Python calls per RPC and per event: a second service process with ``BENCH_COUNT_CALLS=1``
  (``sys.setprofile`` counts every function call; the count is deterministic, not timed).

CPU time per message is the figure that holds up on a shared machine: a throughput or a
latency moves with whatever else runs, the service's CPU per message much less.
To compare two versions of eventmicro, run this from a checkout (``git worktree``) of each:
the service process imports eventmicro from the checkout the benchmark runs from.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Final

import nats
from nats.aio.client import Client as Nats

from bench.services import REQUEST, ROOT, handbuilt_headers, percentile
from eventmicro import NatsServer
from schemas.shop.orders.v1 import orders_pb2 as orders

SERVICE: Final = "benchhot"
CONCURRENCY: Final = 64
EVENT_SUBJECT: Final = "events.shop.orders.v1.PlaceOrder"
REPLY_TYPE: Final = "shop.orders.v1.OrderAccepted"
KEYS: Final = ("seq_p50_us", "seq_cpu_us", "c64_per_s", "c64_cpu_us", "event_cpu_us", "events_per_s")


def cpu_seconds(pid: int) -> float:
    """CPU seconds process ``pid``'s threads have run (``/proc/PID/task/*/schedstat``, ns resolution)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):  # a thread that just ended
            total += int((task / "schedstat").read_text().split()[0])
    return total / 1e9


def start_service(url: str, *, count_calls: bool = False) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "BENCH_COUNT_CALLS": "1" if count_calls else "0"}
    command = [sys.executable, "-m", "eventmicro", "run", "bench.hotpath_service", "--url", url]
    return subprocess.Popen(command, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


async def call(nc: Nats, endpoint: str = "work") -> int:
    headers = handbuilt_headers("shop.orders.v1.PlaceOrder", timeoutms="10000")
    msg = await nc.request(f"{SERVICE}.{endpoint}", REQUEST.SerializeToString(), timeout=10, headers=headers)
    if not msg.headers or msg.headers.get("ce-type") != REPLY_TYPE:
        raise RuntimeError(f"not the reply this benchmark expects: {msg.headers} {msg.data!r}")
    return orders.OrderAccepted.FromString(msg.data).total_cents


async def handled_events(nc: Nats) -> int:
    """The service's count of handled events, from its ``$SRV.STATS`` answer."""
    msg = await nc.request(f"$SRV.STATS.{SERVICE}", b"", timeout=10)
    events = json.loads(msg.data)["data"]["events"]
    return sum(int(counts["received"]) for counts in events.values())


async def wait_ready(nc: Nats) -> None:
    async with asyncio.timeout(60):
        while True:
            try:
                await call(nc)
                return
            except (nats.errors.NoRespondersError, nats.errors.TimeoutError):
                await asyncio.sleep(0.1)


async def publish_events(nc: Nats, count: int, bodies: Sequence[bytes] = ()) -> None:
    """``count`` PlaceOrder events, taking turns over ``bodies`` (default: the one REQUEST)."""
    turns = list(bodies) or [REQUEST.SerializeToString()]
    for i in range(count):
        headers = handbuilt_headers("shop.orders.v1.PlaceOrder")
        await nc.publish(EVENT_SUBJECT, turns[i % len(turns)], headers=headers)
        if i % 1000 == 999:
            await asyncio.sleep(0)
    await nc.flush()


async def until_handled(
    nc: Nats, total: int, counted: Callable[[Nats], Awaitable[int]] = handled_events
) -> None:
    async with asyncio.timeout(300):
        while await counted(nc) < total:  # noqa: ASYNC110 - polling the service's STATS
            await asyncio.sleep(0.05)


async def measure_round(url: str, pid: int, calls: int, event_count: int) -> dict[str, float]:
    nc = await nats.connect(url, pending_size=64 * 1024 * 1024)
    out: dict[str, float] = {}
    try:
        await wait_ready(nc)
        for _ in range(200):  # warm up
            await call(nc)
        before = cpu_seconds(pid)
        measured = []
        for _ in range(calls):
            started = time.perf_counter()
            await call(nc)
            measured.append((time.perf_counter() - started) * 1e6)
        out["seq_cpu_us"] = (cpu_seconds(pid) - before) / calls * 1e6
        out["seq_p50_us"] = percentile(measured, 0.5)
        done = await rate(lambda: call(nc), 2 * calls, pid, out, "c64")
        assert done
        already = await handled_events(nc)
        before, started = cpu_seconds(pid), time.perf_counter()
        await publish_events(nc, event_count)
        await until_handled(nc, already + event_count)
        out["events_per_s"] = event_count / (time.perf_counter() - started)  # incl. STATS polling: rough
        out["event_cpu_us"] = (cpu_seconds(pid) - before) / event_count * 1e6
    finally:
        await nc.close()
    return out


async def rate(
    fn: Callable[[], Awaitable[object]], total: int, pid: int, out: dict[str, float], key: str
) -> int:
    remaining = total

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await fn()

    before, started = cpu_seconds(pid), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    out[f"{key}_per_s"] = total / (time.perf_counter() - started)
    out[f"{key}_cpu_us"] = (cpu_seconds(pid) - before) / total * 1e6
    return total


async def count_calls(url: str, calls: int, event_count: int) -> dict[str, float]:
    """Python function calls per RPC and per event in the service process (deterministic)."""
    nc = await nats.connect(url, pending_size=64 * 1024 * 1024)
    try:
        await wait_ready(nc)
        for _ in range(50):
            await call(nc)
        first = await call(nc, "calls")
        for _ in range(calls):
            await call(nc)
        second = await call(nc, "calls")
        # each probe is itself a call: subtract one probe's worth, measured
        third = await call(nc, "calls")
        per_probe = third - second
        rpc = (second - first - per_probe) / calls
        already = await handled_events(nc)
        start = await call(nc, "calls")
        await publish_events(nc, event_count)
        await until_handled(nc, already + event_count)
        end = await call(nc, "calls")
        # the STATS polls are counted too: a few per run, small beside event_count events
        per_event = (end - start - per_probe) / event_count
    finally:
        await nc.close()
    return {"py_calls_per_rpc": rpc, "py_calls_per_event": per_event}


def run(server: NatsServer, repeat: int, calls: int, event_count: int) -> dict[str, list[float]]:
    results: dict[str, list[float]] = {}
    for round_ in range(repeat):
        process = start_service(server.url)
        try:
            figures = asyncio.run(measure_round(server.url, process.pid, calls, event_count))
        finally:
            stop(process)
        for key, value in figures.items():
            results.setdefault(key, []).append(value)
        shown = ", ".join(f"{key} {figures[key]:,.1f}" for key in KEYS)
        print(f"  round {round_ + 1}/{repeat}: {shown}", flush=True)
    process = start_service(server.url, count_calls=True)
    try:
        counted = asyncio.run(count_calls(server.url, min(calls, 500), min(event_count, 2000)))
    finally:
        stop(process)
    for key, value in counted.items():
        results[key] = [value]
    return results


def report(results: dict[str, list[float]]) -> dict[str, float]:
    medians = {key: statistics.median(values) for key, values in results.items()}
    print(
        f"  sequential RPC: p50 {medians['seq_p50_us']:,.0f} µs,"
        f" service CPU {medians['seq_cpu_us']:,.1f} µs/call\n"
        f"  {CONCURRENCY}-way RPC: {medians['c64_per_s']:,.0f} calls/s,"
        f" service CPU {medians['c64_cpu_us']:,.1f} µs/call\n"
        f"  events: ~{medians['events_per_s']:,.0f}/s, service CPU {medians['event_cpu_us']:,.1f} µs/event\n"
        f"  Python calls in the service: {medians['py_calls_per_rpc']:,.1f} per RPC,"
        f" {medians['py_calls_per_event']:,.1f} per event"
    )
    return medians


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.hotpath", description=__doc__)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--events", type=int, default=20_000)
    args = parser.parse_args()
    with NatsServer(jetstream=False) as server:
        report(run(server, args.repeat, args.calls, args.events))
    return 0


if __name__ == "__main__":
    sys.exit(main())
