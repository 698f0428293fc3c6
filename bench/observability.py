"""Observability overhead: the same RPC and event workloads with tracing off and on, in one run.

Variants (``VARIANTS``, a dict: a metrics variant is one more entry, a context manager that
turns it on and off again):

- ``off``: tracing disabled — the path eventmicro takes without the ``opentelemetry`` package
  too (one ``_tracing.active is None`` check per call, publish and handled message);
- ``off_again``: the same once more, as the A/A noise floor for "disabled costs nothing";
- ``tracing_api``: tracing enabled with the API's no-op provider (no SDK): instrumentation
  cost alone, nothing recorded;
- ``tracing_sdk``: tracing enabled, the SDK's ``TracerProvider`` with a ``BatchSpanProcessor``
  and an exporter that drops the spans — the production shape without the network.

Workloads (one service and one client connection in this process, a nats-server without
JetStream): sequential RPC calls/s, 64-way concurrent RPC calls/s, and events/s from
``Client.publish`` to an ``@subscribe`` handler taking a context. Every variant runs each
workload once per round; the variants are interleaved (forward, then backward) and the
medians of ``--repeat`` rounds are reported, with ratios against ``off``.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import timeit
from collections.abc import Callable, Iterator, Sequence

from eventmicro import Client, Connection, ConnectOptions, Context, NatsServer, Service
from eventmicro.observability import tracing as _tracing
from schemas.shop.orders.v1 import orders_pb2 as orders

REQUEST = orders.PlaceOrder(customer_id="cust-000042", currency="EUR",
                            items=[orders.LineItem(sku=f"sku-{i:06d}", quantity=i + 1, unit_price_cents=1999)
                                   for i in range(4)])  # fmt: skip
WORKLOADS = ("rpc_seq_per_s", "rpc64_per_s", "events_per_s")


@contextlib.contextmanager
def _off() -> Iterator[None]:
    _tracing.disable()
    yield


@contextlib.contextmanager
def _tracing_api() -> Iterator[None]:
    from opentelemetry.trace import NoOpTracerProvider

    _tracing.enable(tracer_provider=NoOpTracerProvider())
    try:
        yield
    finally:
        _tracing.disable()


@contextlib.contextmanager
def _tracing_sdk() -> Iterator[None]:
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    class Drop(SpanExporter):
        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Drop()))
    _tracing.enable(tracer_provider=provider)
    try:
        yield
    finally:
        _tracing.disable()
        provider.shutdown()


# name -> a context manager that turns the variant on for one workload run (and off again)
VARIANTS: dict[str, Callable[[], contextlib.AbstractContextManager[None]]] = {
    "off": _off,
    "off_again": _off,
    "tracing_api": _tracing_api,
    "tracing_sdk": _tracing_sdk,
}


async def _connect(url: str) -> Connection:
    return await Connection(ConnectOptions.from_env(url, environ={}, pending_size=64 * 1024 * 1024)).open()


def _service(done: asyncio.Event, count: int) -> Service:
    svc = Service("benchobs", version="1.0.0")
    handled = 0

    @svc.rpc
    async def work(req: orders.PlaceOrder) -> orders.OrderAccepted:
        return orders.OrderAccepted(order_id=req.customer_id, total_cents=len(req.items))

    @svc.subscribe(subject="bench.obs.events")
    async def on_event(event: orders.PlaceOrder, ctx: Context) -> None:
        nonlocal handled
        handled += 1
        if handled == count:
            done.set()

    return svc


async def _workloads(url: str, calls: int, events: int) -> dict[str, float]:
    loop = asyncio.get_running_loop()
    service_conn, client_conn = await _connect(url), await _connect(url)
    client = Client(client_conn, source="/bench")
    all_in = asyncio.Event()
    out: dict[str, float] = {}

    async def call() -> None:
        await client.call("benchobs.work", REQUEST, returns=orders.OrderAccepted, timeout=10)

    async with _service(all_in, events).serving(service_conn):
        for _ in range(100):  # warm up
            await call()
        started = loop.time()
        for _ in range(calls):
            await call()
        out["rpc_seq_per_s"] = calls / (loop.time() - started)

        remaining = calls * 2

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                await call()

        started = loop.time()
        await asyncio.gather(*(worker() for _ in range(64)))
        out["rpc64_per_s"] = calls * 2 / (loop.time() - started)

        started = loop.time()
        for i in range(events):
            await client.publish(REQUEST, subject="bench.obs.events")
            if i % 1000 == 999:
                await asyncio.sleep(0)  # let the subscriber run, as a real process would
        await asyncio.wait_for(all_in.wait(), 300)
        out["events_per_s"] = events / (loop.time() - started)
    await client_conn.close()
    await service_conn.close()
    return out


def disabled_check_ns() -> float:
    """What tracing costs per message while off: one module attribute read and a None check."""
    runs = timeit.repeat("_tracing.active is None", globals={"_tracing": _tracing}, number=10**6, repeat=5)
    return min(runs) / 1_000_000 * 1e9


def run(server: NatsServer, repeat: int, calls: int, events: int) -> dict[str, dict[str, list[float]]]:
    """Per variant, per workload: the figure of each round."""
    results: dict[str, dict[str, list[float]]] = {v: {w: [] for w in WORKLOADS} for v in VARIANTS}
    for round_ in range(repeat):
        order = list(VARIANTS) if round_ % 2 == 0 else list(reversed(VARIANTS))
        for variant in order:
            with VARIANTS[variant]():
                figures = asyncio.run(_workloads(server.url, calls, events))
            for workload, value in figures.items():
                results[variant][workload].append(value)
        print(
            f"  round {round_ + 1}/{repeat}: "
            + "; ".join(
                f"{v} " + ", ".join(f"{results[v][w][-1]:,.0f}" for w in WORKLOADS) for v in VARIANTS
            ),
            flush=True,
        )
    return results


def report(results: dict[str, dict[str, list[float]]]) -> dict[str, dict[str, float]]:
    medians = {v: {w: statistics.median(r) for w, r in by.items()} for v, by in results.items()}
    base = medians["off"]
    print(f"  {'variant':<14}" + "".join(f"{w:>24}" for w in WORKLOADS))
    for variant, figures in medians.items():
        cells = "".join(f"{figures[w]:>14,.0f} (x{figures[w] / base[w]:.2f})" for w in WORKLOADS)
        print(f"  {variant:<14}{cells}")
    check = disabled_check_ns()
    per_call_us = 1e6 / base["rpc_seq_per_s"]
    print(
        f"  tracing off costs one check per message: {check:.1f} ns,"
        f" {check / (per_call_us * 1000) * 100:.4f}% of a sequential call ({per_call_us:.0f} µs)"
    )
    return {**medians, "disabled_check_ns": {"ns": check}}
