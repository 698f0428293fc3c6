"""Gateway benchmark: one RPC endpoint over raw nats-py, eventmicro's Client and HTTP through the gateway.

One nats-server (started by ``python -m bench``), and in processes of their own:

- the endpoint: ``eventmicro run bench.gateway_service`` (``benchstock.stock``,
  ``GetStockRequest`` -> ``StockLevel``, no work of its own);
- the gateway as shipped: ``python -m eventmicro gateway --port 0 --url URL`` (uvicorn, on
  httptools when it is installed, as the ``gateway`` extra does).

This process is the load generator. Variants, all calling the same service process:

- ``raw``: nats-py ``request`` with the protobuf bytes and hand-built CloudEvents headers (the
  service rejects a request without them), the reply's ``ce-type`` checked and its body parsed;
- ``client``: ``Client.call(..., returns=StockLevel)``;
- ``gateway_httpx``: ``POST /api/benchstock/stock`` with a JSON body through ``httpx.AsyncClient``
  (keep-alive, a pool of 64 connections), the JSON reply parsed and checked;
- ``gateway_minimal``: the same request through a minimal asyncio HTTP/1.1 client (request bytes
  built once, the response read by ``Content-Length``, one keep-alive connection per caller):
  the HTTP figure with as little client cost as Python allows;
- ``healthz_minimal``: ``GET /healthz`` of the same gateway, minimal client: the HTTP stack alone
  (uvicorn, Starlette, a JSONResponse; no NATS), the floor under the gateway's own figures.

This suite found that ``serve`` once left TCP_NODELAY off (its listener had ``proto`` 0), so that
every reply waited ~40 ms for a delayed ACK; ``serve`` now creates it with ``IPPROTO_TCP``.

Each variant measures sequential latency (p50, p99; one caller) and throughput with
``CONCURRENCY`` calls in flight, each for ``calls`` calls or ``SECONDS`` seconds, whichever
ends first (so that a slow variant does not stretch the run). For both, the CPU time spent
per call by every process is read (``time.process_time`` here, ``/proc/PID/stat`` for the
others): where the time goes, and the figure that holds up best on a noisy machine.
Variants are interleaved (forward, then backward); medians of ``--repeat`` rounds are reported.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import select
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import IO, Final

import httpx
import nats

from bench.services import ROOT, connect, handbuilt_headers, percentile
from eventmicro import Client, NatsServer, discover
from schemas.shop.inventory.v1 import inventory_pb2 as inventory

SERVICE: Final = "benchstock"
SUBJECT: Final = f"{SERVICE}.stock"
PATH: Final = f"/api/{SERVICE}/stock"
SKU: Final = "sku-000042"
REQUEST: Final = inventory.GetStockRequest(sku=SKU)
JSON_BODY: Final = json.dumps({"sku": SKU}).encode()
EXPECTED: Final = {"sku": SKU, "available": len(SKU), "reserved": 1}  # StockLevel as JSON
HEALTHY: Final = {"nats": "connected"}
CONCURRENCY: Final = 64
SECONDS: Final = 1.5  # at most this long per variant and scenario (sequential, concurrent)
VARIANTS: Final = ("raw", "client", "gateway_httpx", "gateway_minimal", "healthz_minimal")
PROCESSES: Final = ("loadgen", "gateway", "service", "nats")
CLOCK_TICKS: Final = os.sysconf("SC_CLK_TCK")

Call = Callable[[], Awaitable[object]]


class MinimalHttp:
    """One keep-alive HTTP/1.1 connection: a request written in one go, the response read by length.

    uvicorn closes a connection idle for 5 s (its ``timeout_keep_alive``): a connection the
    server closed is opened again (counted in ``reconnects``).
    """

    reconnects = 0

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def exchange(self, request: bytes) -> tuple[int, bytes]:
        """Send ``request`` (a whole HTTP/1.1 request), return the status and the body."""
        if self.reader is None or self.reader.at_eof():
            await self._open()
        try:
            return await self._exchange(request)
        except asyncio.IncompleteReadError as exc:
            if exc.partial:
                raise
            await self._open()  # closed by the server while idle, before the request got there
            return await self._exchange(request)

    async def _open(self) -> None:
        if self.writer is not None:
            self.writer.close()
            MinimalHttp.reconnects += 1
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def _exchange(self, request: bytes) -> tuple[int, bytes]:
        assert self.reader is not None
        assert self.writer is not None
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        length = None
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            if name.lower() == b"content-length":
                length = int(value)
            elif name.lower() == b"transfer-encoding":
                raise RuntimeError("the minimal client reads Content-Length bodies only")
        if length is None:
            raise RuntimeError(f"no Content-Length in {head!r}")
        return status, await self.reader.readexactly(length)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            await self.writer.wait_closed()


class MinimalPool:
    """``CONCURRENCY`` connections to one server, taken last-in first-out."""

    def __init__(self, url: str) -> None:
        self.host, port = url.removeprefix("http://").rsplit(":", 1)
        self.port = int(port)
        self.free = [MinimalHttp(self.host, self.port) for _ in range(CONCURRENCY)]
        self.all = list(self.free)

    def request(self, method: str, path: str, body: bytes = b"") -> bytes:
        head = f"{method} {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
        if body:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        return head.encode("ascii") + b"\r\n" + body

    async def exchange(self, request: bytes) -> tuple[int, bytes]:
        connection = self.free.pop()  # as many connections as callers: never empty
        try:
            return await connection.exchange(request)
        finally:
            self.free.append(connection)

    async def close(self) -> None:
        for connection in self.all:
            await connection.close()


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU seconds of process ``pid`` (this process when ``None``)."""
    if pid is None:
        return time.process_time()
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat.rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime (fields 14 and 15)


@dataclass
class Pids:
    gateway: int
    service: int
    nats: int

    def snapshot(self) -> dict[str, float]:
        pids = {"gateway": self.gateway, "service": self.service, "nats": self.nats}
        return {"loadgen": cpu_seconds(None)} | {name: cpu_seconds(pid) for name, pid in pids.items()}


async def latencies(call: Call, calls: int, seconds: float) -> list[float]:
    """Microseconds of each of ``calls`` sequential calls, stopping early after ``seconds``."""
    out = []
    stop = time.perf_counter() + seconds
    for _ in range(calls):
        started = time.perf_counter()
        await call()
        ended = time.perf_counter()
        out.append((ended - started) * 1e6)
        if ended > stop:
            break
    return out


async def rate(call: Call, calls: int, concurrency: int, seconds: float) -> tuple[float, int]:
    """Calls per second with ``concurrency`` in flight, ``calls`` of them or for about ``seconds``."""
    remaining = calls
    stop = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0 and time.perf_counter() < stop:
            remaining -= 1
            await call()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    done = calls - remaining
    return done / (time.perf_counter() - started), done


async def measure_variant(call: Call, pids: Pids, calls: int, name: str) -> dict[str, float]:
    """Sequential p50/p99 and calls/s at CONCURRENCY in flight, with CPU per call of each process."""
    out: dict[str, float] = {}
    await latencies(call, 5, SECONDS)  # untimed: a connection idle for 5 s was closed by uvicorn
    before = pids.snapshot()
    measured = await latencies(call, calls, SECONDS)
    after = pids.snapshot()
    out[f"seq_p50_us_{name}"] = percentile(measured, 0.5)
    out[f"seq_p99_us_{name}"] = percentile(measured, 0.99)
    out[f"seq_calls_{name}"] = len(measured)
    for process in PROCESSES:
        out[f"seq_cpu_us_{process}_{name}"] = (after[process] - before[process]) / len(measured) * 1e6
    await rate(call, CONCURRENCY, CONCURRENCY, SECONDS)  # untimed: every pooled connection open again
    before = pids.snapshot()
    per_s, done = await rate(call, calls, CONCURRENCY, SECONDS)
    after = pids.snapshot()
    out[f"c{CONCURRENCY}_per_s_{name}"] = per_s
    out[f"c{CONCURRENCY}_calls_{name}"] = done
    for process in PROCESSES:
        out[f"c{CONCURRENCY}_cpu_us_{process}_{name}"] = (after[process] - before[process]) / done * 1e6
    return out


async def measure(
    nats_url: str, gateway_url: str, pids: Pids, *, repeat: int, calls: int
) -> dict[str, list[float]]:
    nc = await nats.connect(nats_url)
    conn = await connect(nats_url)
    client = Client(conn)
    async with asyncio.timeout(60):
        while not await discover(conn, "PING", SERVICE, window=0.2):
            pass
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    http = httpx.AsyncClient(base_url=gateway_url, limits=limits, timeout=30)
    minimal = MinimalPool(gateway_url)
    body = REQUEST.SerializeToString()
    post_stock = minimal.request("POST", PATH, JSON_BODY)
    get_healthz = minimal.request("GET", "/healthz")
    json_headers = {"content-type": "application/json"}
    httpx_retries = 0

    async def raw() -> object:
        headers = handbuilt_headers("shop.inventory.v1.GetStockRequest", timeoutms="10000")
        msg = await nc.request(SUBJECT, body, timeout=10, headers=headers)
        if not msg.headers or msg.headers.get("ce-type") != "shop.inventory.v1.StockLevel":
            raise RuntimeError(f"not the reply this benchmark expects: {msg.headers} {msg.data!r}")
        return inventory.StockLevel.FromString(msg.data)

    async def em_client() -> object:
        return await client.call(SUBJECT, REQUEST, returns=inventory.StockLevel, timeout=10)

    async def gateway_httpx() -> object:
        nonlocal httpx_retries
        try:
            response = await http.post(PATH, content=JSON_BODY, headers=json_headers)
        except httpx.RemoteProtocolError:  # a pooled connection uvicorn closed (idle 5 s) as it was taken
            httpx_retries += 1
            response = await http.post(PATH, content=JSON_BODY, headers=json_headers)
        return _check(response.status_code, response.json(), EXPECTED)

    async def gateway_minimal() -> object:
        status, data = await minimal.exchange(post_stock)
        return _check(status, json.loads(data), EXPECTED)

    async def healthz_minimal() -> object:
        status, data = await minimal.exchange(get_healthz)
        return _check(status, json.loads(data), HEALTHY)

    variants: dict[str, Call] = {
        "raw": raw,
        "client": em_client,
        "gateway_httpx": gateway_httpx,
        "gateway_minimal": gateway_minimal,
        "healthz_minimal": healthz_minimal,
    }
    assert tuple(variants) == VARIANTS
    results: dict[str, list[float]] = {}
    try:
        for call in variants.values():  # warm up: imports, the gateway's catalog, the pools
            await latencies(call, 20, SECONDS)
            await rate(call, 2 * CONCURRENCY, CONCURRENCY, SECONDS)
        for round_ in range(repeat):
            started = time.perf_counter()
            figures: dict[str, float] = {}
            for name in VARIANTS if round_ % 2 == 0 else tuple(reversed(VARIANTS)):
                figures.update(await measure_variant(variants[name], pids, calls, name))
            for key, value in figures.items():
                results.setdefault(key, []).append(value)
            c = f"c{CONCURRENCY}"
            shown = ", ".join(
                f"{name} {figures[f'seq_p50_us_{name}']:,.0f} µs {figures[f'{c}_per_s_{name}']:,.0f}/s"
                for name in VARIANTS
            )
            print(
                f"  round {round_ + 1}/{repeat} ({time.perf_counter() - started:.0f} s): {shown}", flush=True
            )
    finally:
        await http.aclose()
        await minimal.close()
        await conn.close()
        await nc.close()
    results["httpx_retries"] = [httpx_retries]
    results["minimal_reconnects"] = [MinimalHttp.reconnects]
    return results


def _check(status: int, value: object, expected: object) -> object:
    if status != 200 or value != expected:
        raise RuntimeError(f"unexpected answer {status} {value!r}")
    return value


@contextmanager
def _process(args: list[str], log: IO[bytes], stdout: int | None = None) -> Iterator[subprocess.Popen[bytes]]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(args, cwd=ROOT, env=env, stdout=stdout, stderr=log, stdin=subprocess.DEVNULL)
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()


def _tail(log: IO[bytes]) -> str:
    log.seek(0)
    return log.read().decode(errors="replace")[-2000:]


def _ready_url(process: subprocess.Popen[bytes], log: IO[bytes]) -> str:
    """The base URL a gateway process prints once it listens."""
    assert process.stdout is not None
    readable, _, _ = select.select([process.stdout], [], [], 60)
    line = process.stdout.readline().decode() if readable else ""
    prefix = "eventmicro gateway ready: "
    if not line.startswith(prefix):
        raise RuntimeError(f"the gateway did not start: {line!r}\n{_tail(log)}")
    return line.removeprefix(prefix).split()[0]


def run(server: NatsServer, repeat: int, calls: int) -> dict[str, list[float]]:
    python, url = sys.executable, server.url
    commands = {
        "service": [python, "-m", "eventmicro", "run", "bench.gateway_service", "--url", url],
        "gateway": [python, "-m", "eventmicro", "gateway", "--port", "0", "--url", url],
    }
    with ExitStack() as stack:
        logs = {name: stack.enter_context(tempfile.TemporaryFile()) for name in commands}
        processes = {
            name: stack.enter_context(
                _process(command, logs[name], stdout=None if name == "service" else subprocess.PIPE)
            )
            for name, command in commands.items()
        }
        gateway_url = _ready_url(processes["gateway"], logs["gateway"])
        assert server.pid is not None
        pids = Pids(gateway=processes["gateway"].pid, service=processes["service"].pid, nats=server.pid)
        try:
            return asyncio.run(measure(url, gateway_url, pids, repeat=repeat, calls=calls))
        finally:
            for name, process in processes.items():
                if process.poll() is not None:
                    print(f"the {name} process exited early ({process.returncode}): {_tail(logs[name])}")
    raise AssertionError("unreachable")  # pragma: no cover - mypy: ExitStack may swallow


def report(results: dict[str, list[float]]) -> dict[str, float]:
    medians = {key: statistics.median(values) for key, values in results.items()}
    c = f"c{CONCURRENCY}"
    raw_p50, raw_rate = medians["seq_p50_us_raw"], medians[f"{c}_per_s_raw"]
    print(
        f"  {'variant':<16} {'p50 µs':>8} {'p99 µs':>8} {f'{CONCURRENCY}-way /s':>11}"
        f" {'p50 vs raw':>11} {f'{CONCURRENCY}-way vs raw':>14}   {'calls seq/conc':>15}"
    )
    for name in VARIANTS:
        p50, p99, per_s = (medians[f"{k}_{name}"] for k in ("seq_p50_us", "seq_p99_us", f"{c}_per_s"))
        print(
            f"  {name:<16} {p50:8.0f} {p99:8.0f} {per_s:11.0f} {f'x{p50 / raw_p50:.2f}':>11}"
            f" {f'x{per_s / raw_rate:.2f}':>14}"
            f"   {medians[f'seq_calls_{name}']:7.0f}/{medians[f'{c}_calls_{name}']:.0f}"
        )
    for name in ("gateway_httpx", "gateway_minimal"):
        p50, client_p50 = medians[f"seq_p50_us_{name}"], medians["seq_p50_us_client"]
        print(
            f"  {name} vs client: p50 x{p50 / client_p50:.2f} ({p50 - client_p50:+,.0f} µs),"
            f" {CONCURRENCY}-way x{medians[f'{c}_per_s_{name}'] / medians[f'{c}_per_s_client']:.2f}"
        )
    print(f"  CPU µs per call, by process (sequential | {CONCURRENCY}-way):")
    print(
        f"  {'variant':<16} "
        + " ".join(f"{p:>8}" for p in PROCESSES)
        + " | "
        + " ".join(f"{p:>8}" for p in PROCESSES)
    )
    for name in VARIANTS:
        seq = " ".join(f"{medians[f'seq_cpu_us_{p}_{name}']:8.0f}" for p in PROCESSES)
        conc = " ".join(f"{medians[f'{c}_cpu_us_{p}_{name}']:8.0f}" for p in PROCESSES)
        print(f"  {name:<16} {seq} | {conc}")
    parser = "httptools" if importlib.util.find_spec("httptools") is not None else "h11"
    print(f"  uvicorn {version('uvicorn')} parses HTTP with {parser} (its http='auto')")
    if importlib.util.find_spec("sniffio") is None:
        print(
            f"  note: sniffio is not installed: httpcore {version('httpcore')} tries to import it (and fails,"
            " searching sys.path) several times per request, part of httpx's figures"
        )
    retries, reconnects = medians["httpx_retries"], medians["minimal_reconnects"]
    print(
        f"  (connections uvicorn closed while idle: httpx retried {retries:.0f},"
        f" minimal client reopened {reconnects:.0f})"
    )
    return medians
