"""Overload: an endpoint offered ten times its capacity (issue 12, item 5).

``python -m bench --suite overload`` (or ``python -m bench.overload``). The service
(``bench/overload_service.py``: ``benchbusy.work`` sleeps 100 ms, concurrency 8, so 80 calls/s)
runs in its own process under ``eventmicro run``. ``--callers`` processes offer together
``--rate`` requests per second (default 800, ten times the capacity) for ``--seconds`` (10),
open loop: request *i* leaves at *start + i / rate* whatever became of the earlier ones. Each is
a plain nats-py publish with hand-built CloudEvents headers, the caller's budget in
``ce-timeoutms`` (as eventmicro's client sends it) and a reply subject of its own; its caller
waits ``--timeout`` seconds (2) for the answer. An answer is classified by its headers only
(``Nats-Service-Error-Code``), so the same callers measure any eventmicro version: OK (the
reply's ``ce-type``), 503 (``Overloaded``), another error code, or late (after the timeout:
the caller had gone; a handler that ran for nobody).

When the burst ends this process sends a probe call every 100 ms (each with the same timeout)
until one is answered OK within its timeout: the recovery time is from the end of the burst
to that answer.

To measure an older eventmicro, run this from a checkout (``git worktree``) of it: the service
process imports eventmicro from the checkout the benchmark runs from.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Final

import nats
from nats.aio.msg import Msg

from bench.services import REQUEST, ROOT, handbuilt_headers, percentile
from eventmicro import NatsServer

SUBJECT: Final = "benchbusy.work"
REQUEST_TYPE: Final = "shop.orders.v1.PlaceOrder"
REPLY_TYPE: Final = "shop.orders.v1.OrderAccepted"
CODE_HEADER: Final = "Nats-Service-Error-Code"
PROBE_EVERY: Final = 0.1
RECOVERY_CAP: Final = 300.0  # seconds after the burst: give up probing


def classify(msg: Msg) -> str:
    headers = msg.headers or {}
    code = headers.get(CODE_HEADER)
    if code is not None:
        return "503" if code == "503" else f"error {code}"
    if headers.get("Status") == "503":
        return "no responders"  # nats-server's notice, not the service's answer
    return "ok" if headers.get("ce-type") == REPLY_TYPE else "other"


@dataclass
class Offer:
    url: str
    rate: float
    start_at: float  # time.time() of the first request, the same for every caller process
    seconds: float
    timeout: float
    offset: float  # this caller's first request, in 1/rate after start_at (callers interleave)


def offer(spec: Offer) -> dict[str, object]:
    """One caller process: its share of the load, open loop; what became of each request."""
    return asyncio.run(_offer(spec))


async def _offer(spec: Offer) -> dict[str, object]:
    nc = await nats.connect(spec.url, pending_size=64 * 1024 * 1024)
    inbox = nc.new_inbox()
    count = int(spec.rate * spec.seconds)
    sent = [0.0] * count
    answers: dict[int, tuple[float, str]] = {}  # request -> (seconds after it left, kind)

    async def on_reply(msg: Msg) -> None:
        index = int(msg.subject.rsplit(".", 1)[1])
        if index not in answers:
            answers[index] = (time.monotonic() - sent[index], classify(msg))

    await nc.subscribe(f"{inbox}.*", cb=on_reply)
    await nc.flush()
    body = REQUEST.SerializeToString()
    budget = str(int(spec.timeout * 1000))
    await asyncio.sleep(max(0.0, spec.start_at - time.time()))
    start = time.monotonic() + spec.offset / spec.rate
    lag = []
    cpu = time.process_time()
    for index in range(count):
        due = start + index / spec.rate
        ahead = due - time.monotonic()
        if ahead > 0:
            await asyncio.sleep(ahead)
        sent[index] = time.monotonic()
        lag.append(sent[index] - due)
        headers = handbuilt_headers(REQUEST_TYPE, timeoutms=budget)
        await nc.publish(SUBJECT, body, reply=f"{inbox}.{index}", headers=headers)
    sending = time.monotonic() - sent[0]
    await nc.flush()
    await asyncio.sleep(max(0.0, sent[-1] + spec.timeout + 0.5 - time.monotonic()))
    cpu = time.process_time() - cpu
    await nc.close()
    return {
        "offered": count,
        "sending_seconds": sending,
        "lag_p99_ms": percentile(lag, 0.99) * 1e3,
        "lag_max_ms": max(lag) * 1e3,
        "cpu_us_per_request": cpu / count * 1e6,
        "answers": list(answers.values()),
    }


async def probe_until_normal(url: str, burst_end: float, timeout: float) -> dict[str, float]:
    """Probe every PROBE_EVERY s from ``burst_end`` (time.time()); when was one answered OK in time."""
    nc = await nats.connect(url)
    inbox = nc.new_inbox()
    sent: dict[int, float] = {}
    recovered = asyncio.get_running_loop().create_future()
    kinds: dict[str, int] = {}

    async def on_reply(msg: Msg) -> None:
        index = int(msg.subject.rsplit(".", 1)[1])
        kind = classify(msg)
        kinds[kind] = kinds.get(kind, 0) + 1
        now = time.time()
        if kind == "ok" and now - sent[index] <= timeout and not recovered.done():
            recovered.set_result((now, sent[index]))

    await nc.subscribe(f"{inbox}.*", cb=on_reply)
    await nc.flush()
    await asyncio.sleep(max(0.0, burst_end - time.time()))
    body = REQUEST.SerializeToString()
    budget = str(int(timeout * 1000))
    index = 0
    try:
        while not recovered.done() and time.time() < burst_end + RECOVERY_CAP:
            sent[index] = time.time()
            headers = handbuilt_headers(REQUEST_TYPE, timeoutms=budget)
            await nc.publish(SUBJECT, body, reply=f"{inbox}.{index}", headers=headers)
            index += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(recovered), PROBE_EVERY)
    finally:
        await nc.close()
    if not recovered.done():
        return {"recovery_s": float("inf"), "probes": index}
    answered, left = recovered.result()
    return {
        "recovery_s": answered - burst_end,
        "recovered_probe_sent_s": left - burst_end,
        "probes": index,
        **{f"probe_{kind}": float(n) for kind, n in kinds.items()},
    }


async def wait_ready(url: str) -> None:
    nc = await nats.connect(url)
    try:
        async with asyncio.timeout(60):
            while True:
                headers = handbuilt_headers(REQUEST_TYPE, timeoutms="5000")
                try:
                    msg = await nc.request(SUBJECT, REQUEST.SerializeToString(), timeout=5, headers=headers)
                except (nats.errors.NoRespondersError, nats.errors.TimeoutError):
                    await asyncio.sleep(0.1)
                    continue
                if classify(msg) == "ok":
                    return
                await asyncio.sleep(0.1)
    finally:
        await nc.close()


async def endpoint_stats(url: str) -> dict[str, object]:
    nc = await nats.connect(url)
    try:
        msg = await nc.request("$SRV.STATS.benchbusy", b"", timeout=5)
    finally:
        await nc.close()
    document = json.loads(msg.data)
    endpoints = [e for e in document.get("endpoints", []) if e.get("name") == "work"]
    return {"endpoint": endpoints[0] if endpoints else {}, "data": document.get("data", {})}


def run_once(url: str, *, rate: float, seconds: float, timeout: float, callers: int) -> dict[str, object]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "eventmicro", "run", "bench.overload_service", "--url", url]
    service = subprocess.Popen(
        command, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        asyncio.run(wait_ready(url))
        start_at = time.time() + 3.0  # the caller processes start and import meanwhile
        specs = [Offer(url, rate / callers, start_at, seconds, timeout, i / callers) for i in range(callers)]
        with ProcessPoolExecutor(callers, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = [pool.submit(offer, spec) for spec in specs]
            recovery = asyncio.run(probe_until_normal(url, start_at + seconds, timeout))
            results = [future.result() for future in futures]
        stats = asyncio.run(endpoint_stats(url))
    finally:
        service.terminate()
        try:
            service.wait(30)
        except subprocess.TimeoutExpired:
            service.kill()
            service.wait()
    return summarize(results, recovery, stats, timeout)


def summarize(
    results: list[dict[str, object]], recovery: dict[str, float], stats: dict[str, object], timeout: float
) -> dict[str, object]:
    answers = [a for r in results for a in r["answers"]]  # type: ignore[attr-defined]
    offered = sum(int(r["offered"]) for r in results)  # type: ignore[call-overload]
    in_time = [(seconds, kind) for seconds, kind in answers if seconds <= timeout]
    kinds: dict[str, int] = {}
    for _, kind in in_time:
        kinds[kind] = kinds.get(kind, 0) + 1
    latencies = sorted(seconds * 1e3 for seconds, _ in in_time)
    ok_latencies = sorted(seconds * 1e3 for seconds, kind in in_time if kind == "ok")
    sending = max(float(r["sending_seconds"]) for r in results)  # type: ignore[arg-type]
    summary: dict[str, object] = {
        "offered": offered,
        "offered_per_s": offered / sending if sending else 0.0,
        "ok": kinds.pop("ok", 0),
        "overloaded_503": kinds.pop("503", 0),
        "other_in_time": kinds,
        "timeouts": offered - len(in_time),
        "late_answers": len(answers) - len(in_time),
        "answered_in_time_pct": 100.0 * len(in_time) / offered,
        "p50_ms": percentile(latencies, 0.5) if latencies else float("nan"),
        "p99_ms": percentile(latencies, 0.99) if latencies else float("nan"),
        "ok_p50_ms": percentile(ok_latencies, 0.5) if ok_latencies else float("nan"),
        "lag_p99_ms": max(float(r["lag_p99_ms"]) for r in results),  # type: ignore[arg-type]
        "caller_cpu_us_per_request": statistics.mean(float(r["cpu_us_per_request"]) for r in results),  # type: ignore[arg-type]
        **recovery,
        "stats": stats,
    }
    return summary


def run(
    server: NatsServer, repeat: int, *, rate: float, seconds: float, timeout: float, callers: int
) -> list[dict[str, object]]:
    rounds = []
    for round_ in range(repeat):
        summary = run_once(server.url, rate=rate, seconds=seconds, timeout=timeout, callers=callers)
        rounds.append(summary)
        print(f"  round {round_ + 1}/{repeat}: {line(summary)}", flush=True)
    return rounds


def line(s: dict[str, object]) -> str:
    return (
        f"offered {s['offered']:,} ({s['offered_per_s']:,.0f}/s, send lag p99 {s['lag_p99_ms']:.1f} ms),"
        f" OK {s['ok']:,}, 503 {s['overloaded_503']:,}, timeouts {s['timeouts']:,}"
        f" (late answers {s['late_answers']:,}), other {s['other_in_time']},"
        f" answered in time {s['answered_in_time_pct']:.1f} %, p50 {s['p50_ms']:.1f} ms,"
        f" p99 {s['p99_ms']:.1f} ms, OK p50 {s['ok_p50_ms']:.1f} ms;"
        f" normal again {s['recovery_s']:.2f} s after the burst"
    )


def report(rounds: list[dict[str, object]]) -> dict[str, float]:
    keys = ("offered", "ok", "overloaded_503", "timeouts", "late_answers", "answered_in_time_pct",
            "p50_ms", "p99_ms", "recovery_s")  # fmt: skip
    medians = {key: statistics.median(float(r[key]) for r in rounds) for key in keys}  # type: ignore[arg-type]
    print("  median of rounds: " + ", ".join(f"{key} {value:,.2f}" for key, value in medians.items()))
    return medians


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rate", type=float, default=800.0, help="requests per second offered (overload)")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the burst (overload)")
    parser.add_argument("--timeout", type=float, default=2.0, help="each caller's timeout, s (overload)")
    parser.add_argument("--callers", type=int, default=2, help="caller processes (overload)")


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.overload", description=__doc__)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--json", default=None)
    add_arguments(parser)
    args = parser.parse_args()
    with NatsServer(jetstream=False) as server:
        print(
            f"overload: {args.rate:g}/s for {args.seconds:g} s, {args.callers} caller processes,"
            f" timeout {args.timeout:g} s"
        )
        rounds = run(
            server,
            args.repeat,
            rate=args.rate,
            seconds=args.seconds,
            timeout=args.timeout,
            callers=args.callers,
        )
    medians = report(rounds)
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"rounds": rounds, "medians": medians}, out, indent=2, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
