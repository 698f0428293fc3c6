"""Service benchmarks: RPC latency and throughput, queue groups, events, I/O-bound handlers.

Each scenario runs raw nats-py and eventmicro side by side in the same process run.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import nats
from nats.aio.client import Client as Nats
from nats.aio.msg import Msg

from eventmicro import Client, Connection, ConnectOptions, Message, NatsServer, Service, discover
from eventmicro.wire.clock import format_time, new_event_id
from schemas.shop.orders.v1 import orders_pb2 as orders

REQUEST = orders.PlaceOrder(customer_id="cust-000042", currency="EUR",
                            items=[orders.LineItem(sku=f"sku-{i:06d}", quantity=i + 1, unit_price_cents=1999)
                                   for i in range(4)])  # fmt: skip
ROOT = Path(__file__).resolve().parent.parent


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def connect(url: str) -> Connection:
    return await Connection(ConnectOptions.from_env(url, environ={}, pending_size=64 * 1024 * 1024)).open()


async def raw_responder(nc: Nats, subject: str, delay: float = 0.0) -> None:
    async def answer(msg: Msg) -> None:
        request = orders.PlaceOrder.FromString(msg.data)
        if delay:
            await asyncio.sleep(delay)  # nats-py runs one callback at a time: sequential handling
        reply = orders.OrderAccepted(order_id=request.customer_id, total_cents=len(request.items))
        await nc.publish(msg.reply, reply.SerializeToString())

    await nc.subscribe(subject, queue="q", cb=answer)
    await nc._flush_pending(force_flush=True)
    await nc.flush()


def bench_service(delay: float = 0.0) -> Service:
    svc = Service("bench", version="1.0.0")

    @svc.rpc
    async def work(req: orders.PlaceOrder) -> orders.OrderAccepted:
        if delay:
            await asyncio.sleep(delay)
        return orders.OrderAccepted(order_id=req.customer_id, total_cents=len(req.items))

    return svc


async def latencies(call: Callable[[], Awaitable[object]], count: int) -> list[float]:
    out = []
    for _ in range(count):
        started = time.perf_counter()
        await call()
        out.append((time.perf_counter() - started) * 1e6)
    return out


async def rate(call: Callable[[], Awaitable[object]], total: int, concurrency: int) -> float:
    remaining = total

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await call()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return total / (time.perf_counter() - started)


def handbuilt_headers(event_type: str, **extensions: str) -> dict[str, str]:
    """The CloudEvents binary-mode headers a hand-written nats-py program would send."""
    headers = {"ce-specversion": "1.0", "ce-id": new_event_id(), "ce-source": "/bench", "ce-type": event_type,
               "ce-time": format_time(_now()), "ce-datacontenttype": "application/protobuf"}  # fmt: skip
    headers.update({f"ce-{name}": value for name, value in extensions.items()})
    return headers


async def handbuilt_responder(nc: Nats, subject: str) -> None:
    """A nats-py responder that reads and answers CloudEvents headers by hand (no validation)."""

    async def answer(msg: Msg) -> None:
        if not msg.headers or msg.headers.get("ce-type") != "shop.orders.v1.PlaceOrder":
            raise RuntimeError("not the request this benchmark sends")
        request = orders.PlaceOrder.FromString(msg.data)
        reply = orders.OrderAccepted(order_id=request.customer_id, total_cents=len(request.items))
        headers = handbuilt_headers("shop.orders.v1.OrderAccepted", correlationid=msg.headers["ce-id"])
        await nc.publish(msg.reply, reply.SerializeToString(), headers=headers)

    await nc.subscribe(subject, queue="q", cb=answer)
    await nc._flush_pending(force_flush=True)
    await nc.flush()


async def rpc_scenarios(url: str, *, calls: int) -> dict[str, float]:
    out: dict[str, float] = {}
    server_nc, client_nc = await nats.connect(url), await nats.connect(url)
    await raw_responder(server_nc, "bench.raw")
    await handbuilt_responder(server_nc, "bench.handbuilt")
    body = REQUEST.SerializeToString()

    async def raw_call() -> object:
        msg = await client_nc.request("bench.raw", body, timeout=10)
        return orders.OrderAccepted.FromString(msg.data)

    async def handbuilt_call() -> object:
        headers = handbuilt_headers("shop.orders.v1.PlaceOrder", timeoutms="10000")
        msg = await client_nc.request("bench.handbuilt", body, timeout=10, headers=headers)
        if not msg.headers or msg.headers.get("ce-type") != "shop.orders.v1.OrderAccepted":
            raise RuntimeError("not the reply this benchmark expects")
        return orders.OrderAccepted.FromString(msg.data)

    service_conn, client_conn = await connect(url), await connect(url)
    client = Client(client_conn)

    async def em_call() -> object:
        return await client.call("bench.work", REQUEST, returns=orders.OrderAccepted, timeout=10)

    async with bench_service().serving(service_conn):
        variants = {"raw": raw_call, "handbuilt": handbuilt_call, "eventmicro": em_call}
        for call in variants.values():
            await latencies(call, 200)  # warm up
        for name, call in variants.items():
            measured = await latencies(call, calls)
            out[f"rpc_p50_us_{name}"] = percentile(measured, 0.5)
            out[f"rpc_p99_us_{name}"] = percentile(measured, 0.99)
        for name, call in reversed(variants.items()):
            out[f"rpc64_per_s_{name}"] = await rate(call, calls * 2, 64)
    await client_conn.close()
    await service_conn.close()
    await server_nc.close()
    await client_nc.close()
    return out


async def io_bound(url: str, *, calls: int) -> dict[str, float]:
    server_nc, client_nc = await nats.connect(url), await nats.connect(url)
    await raw_responder(server_nc, "bench.slow", delay=0.005)
    body = REQUEST.SerializeToString()

    async def raw_call() -> object:
        return await client_nc.request("bench.slow", body, timeout=60)

    service_conn, client_conn = await connect(url), await connect(url)
    client = Client(client_conn)

    async def em_call() -> object:
        return await client.call("bench.work", REQUEST, returns=orders.OrderAccepted, timeout=60)

    async with bench_service(delay=0.005).serving(service_conn):
        sequential = await rate(raw_call, max(100, calls // 10), 64)
        concurrent = await rate(em_call, calls, 64)
    # the realistic shape: the service in its own process, the 64 callers in this one
    process = subprocess.Popen([sys.executable, str(ROOT / "bench" / "responder.py"), "eventmicro-5ms", url],  # noqa: ASYNC220
                               env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip
    try:
        async with asyncio.timeout(60):
            while not await discover(client_conn, "PING", "benchslow", window=0.2):
                pass

        async def remote_call() -> object:
            return await client.call("benchslow.work", REQUEST, returns=orders.OrderAccepted, timeout=60)

        await rate(remote_call, 200, 64)
        remote = await rate(remote_call, calls, 64)
    finally:
        process.terminate()
        process.wait(30)
    for c in (client_conn, service_conn):
        await c.close()
    for n in (server_nc, client_nc):
        await n.close()
    return {"io5ms_per_s_sequential_raw": sequential, "io5ms_per_s_eventmicro": concurrent,
            "io5ms_per_s_eventmicro_own_process": remote}  # fmt: skip


async def events(url: str, *, count: int) -> dict[str, float]:
    body = REQUEST.SerializeToString()
    out: dict[str, float] = {}
    # raw nats-py: hand-built CloudEvents headers, a subscriber parsing the protobuf body
    pub, sub = await nats.connect(url, pending_size=64 * 1024 * 1024), await nats.connect(url)
    done = asyncio.Event()
    received = 0

    async def on_raw(msg: Msg) -> None:
        nonlocal received
        orders.PlaceOrder.FromString(msg.data)
        received += 1
        if received == count:
            done.set()

    await sub.subscribe("bench.events.raw", cb=on_raw, pending_msgs_limit=count + 10)
    await sub._flush_pending(force_flush=True)
    await sub.flush()
    started = time.perf_counter()
    for i in range(count):
        headers = {"ce-specversion": "1.0", "ce-id": new_event_id(), "ce-source": "/bench",
                   "ce-type": "shop.orders.v1.PlaceOrder", "ce-time": format_time(_now()),
                   "ce-datacontenttype": "application/protobuf"}  # fmt: skip
        await pub.publish("bench.events.raw", body, headers=headers)
        if i % 1000 == 999:
            await asyncio.sleep(0)
    await asyncio.wait_for(done.wait(), 300)
    out["events_per_s_raw_handbuilt"] = count / (time.perf_counter() - started)
    await pub.close()
    await sub.close()
    # eventmicro: Client.publish -> @subscribe handler
    svc = Service("sink", version="1.0.0")
    handled = 0
    all_in = asyncio.Event()

    @svc.subscribe
    async def on_event(event: orders.PlaceOrder) -> None:
        nonlocal handled
        handled += 1
        if handled == count:
            all_in.set()

    service_conn, client_conn = await connect(url), await connect(url)
    client = Client(client_conn, source="/bench")
    async with svc.serving(service_conn):
        started = time.perf_counter()
        for i in range(count):
            await client.publish(REQUEST)
            if i % 1000 == 999:
                await asyncio.sleep(0)
        await asyncio.wait_for(all_in.wait(), 300)
        out["events_per_s_eventmicro"] = count / (time.perf_counter() - started)
    await client_conn.close()
    await service_conn.close()
    return out


def _now() -> datetime:
    return datetime.now(UTC)


async def queue_group(url: str, *, calls: int) -> dict[str, float]:
    return {
        "queue3_per_s_raw": await _three_responders(url, "raw", "bench.raw", calls),
        "queue3_per_s_eventmicro": await _three_responders(url, "eventmicro", "bench.work", calls),
    }


async def _three_responders(url: str, mode: str, subject: str, calls: int) -> float:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    conn = await connect(url)
    ready = asyncio.Queue[bytes]()

    async def on_ready(msg: Message) -> None:
        await ready.put(msg.data)

    await conn.subscribe("bench.ready", on_ready)
    script = str(ROOT / "bench" / "responder.py")
    processes = [subprocess.Popen([sys.executable, script, mode, url], env=env) for _ in range(3)]  # noqa: ASYNC220
    try:
        async with asyncio.timeout(60):
            if mode == "eventmicro":
                while len(await discover(conn, "PING", "bench", window=0.2)) < 3:
                    pass
            else:
                for _ in range(3):
                    await ready.get()
        client = Client(conn)
        body = REQUEST.SerializeToString()

        async def call() -> object:
            if mode == "raw":
                return await conn.request(subject, body, timeout=10)
            return await client.call(subject, REQUEST, returns=orders.OrderAccepted, timeout=10)

        await rate(call, 200, 16)
        return await rate(call, calls, 64)
    finally:
        await conn.close()
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(30)


def run(server: NatsServer, repeat: int, calls: int, event_count: int) -> dict[str, list[float]]:
    results: dict[str, list[float]] = {}
    for round_ in range(repeat):
        figures: dict[str, float] = {}
        figures.update(asyncio.run(rpc_scenarios(server.url, calls=calls)))
        figures.update(asyncio.run(io_bound(server.url, calls=calls)))
        figures.update(asyncio.run(events(server.url, count=event_count)))
        figures.update(asyncio.run(queue_group(server.url, calls=calls)))
        for key, value in figures.items():
            results.setdefault(key, []).append(value)
        shown = ", ".join(f"{k} {v:,.0f}" for k, v in sorted(figures.items()))
        print(f"  round {round_ + 1}/{repeat}: {shown}", flush=True)
    return results


def report(results: dict[str, list[float]]) -> dict[str, float]:
    medians = {key: statistics.median(values) for key, values in results.items()}

    def ratio(a: str, b: str) -> str:
        return f"x{medians[a] / medians[b]:.2f}"

    rows = (("sequential RPC p50", "rpc_p50_us", "µs"), ("sequential RPC p99", "rpc_p99_us", "µs"),
            ("64-way RPC", "rpc64_per_s", "/s"))  # fmt: skip
    for label, key, unit in rows:
        raw, built, ours = (f"{key}_{name}" for name in ("raw", "handbuilt", "eventmicro"))
        print(
            f"  {label:<25} raw {medians[raw]:8.0f} {unit}   hand-built CE {medians[built]:8.0f} {unit}"
            f"   eventmicro {medians[ours]:8.0f} {unit}   {ratio(ours, raw)} raw,"
            f" {ratio(ours, built)} hand-built"
        )
    print(
        "  3 responder processes     raw {:8.0f} /s   eventmicro {:8.0f} /s   {}".format(
            medians["queue3_per_s_raw"],
            medians["queue3_per_s_eventmicro"],
            ratio("queue3_per_s_eventmicro", "queue3_per_s_raw"),
        )
    )
    print(
        "  events -> @subscribe      raw {:8.0f} /s   eventmicro {:8.0f} /s   {}".format(
            medians["events_per_s_raw_handbuilt"],
            medians["events_per_s_eventmicro"],
            ratio("events_per_s_eventmicro", "events_per_s_raw_handbuilt"),
        )
    )
    print("  5 ms I/O handler, 64 callers: sequential {:6.0f} /s   eventmicro {:8.0f} /s   {}".format(
        medians["io5ms_per_s_sequential_raw"], medians["io5ms_per_s_eventmicro"],
        ratio("io5ms_per_s_eventmicro", "io5ms_per_s_sequential_raw")))  # fmt: skip
    print("    ... service in its own process:              eventmicro {:8.0f} /s   {}".format(
        medians["io5ms_per_s_eventmicro_own_process"],
        ratio("io5ms_per_s_eventmicro_own_process", "io5ms_per_s_sequential_raw")))  # fmt: skip
    return medians
