"""Metrics: real calls, events, durable redeliveries and dead letters, then a scrape of the HTTP
endpoint with urllib and prometheus-client's own parser — per service and handler. A scraper
that never reads its answer is dropped."""

from __future__ import annotations

import asyncio
import socket
import urllib.request
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
import pytest_asyncio
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.parser import text_string_to_metric_families

from eventmicro import (
    Client,
    ConfigurationError,
    Connection,
    DeadLetters,
    Durable,
    InternalError,
    NotFound,
    Service,
    Stream,
)
from eventmicro import metrics as em_metrics
from eventmicro.transport.jetstream import ensure_stream
from schemas.shop.orders.v1 import orders_pb2 as orders

Eventually = Callable[..., Awaitable[None]]
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


@pytest.fixture
def registry() -> Iterator[CollectorRegistry]:
    """Metrics on, in a registry of the test's own; off again afterwards."""
    registry = CollectorRegistry()
    em_metrics.enable(registry, buckets=(0.025, 0.1, 1.0, 10.0))
    yield registry
    em_metrics.disable()


@pytest_asyncio.fixture
async def endpoint(registry: CollectorRegistry) -> AsyncIterator[em_metrics.HttpEndpoint]:
    served = await em_metrics.serve(0)
    yield served
    await served.close()


async def scrape(endpoint: em_metrics.HttpEndpoint) -> Samples:
    def get() -> tuple[int, str, str]:
        with urllib.request.urlopen(f"{endpoint.url}/metrics", timeout=5) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()

    status, content_type, text = await asyncio.to_thread(get)
    assert status == 200
    assert content_type.startswith("text/plain; version=0.0.4")
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[sample.name, frozenset(sample.labels.items())] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def test_calls_and_events_are_counted_per_service_and_handler(
    conn: Connection, endpoint: em_metrics.HttpEndpoint, eventually: Eventually
) -> None:
    svc = Service(unique("metrics"), version="1.0.0")
    release = asyncio.Event()
    events_seen: list[str] = []

    @svc.rpc
    async def place(req: orders.PlaceOrder) -> orders.OrderAccepted:
        if req.customer_id == "missing":
            raise NotFound("no such customer")
        if req.customer_id == "boom":
            raise RuntimeError("a bug")
        if req.customer_id == "nap":
            await asyncio.sleep(0.03)
        return orders.OrderAccepted(order_id="o-1")

    @svc.rpc
    async def hold(req: orders.PlaceOrder) -> orders.OrderAccepted:
        await release.wait()
        return orders.OrderAccepted(order_id="held")

    @svc.subscribe
    async def placed(event: orders.OrderPlaced) -> None:
        events_seen.append(event.order_id)
        if event.order_id == "bad":
            raise ValueError("cannot")

    client = Client(conn, source="/test")
    rpc = {"service": svc.name, "kind": "rpc", "handler": "place"}
    async with svc.serving(conn):
        for customer in ("a", "b", "nap"):
            await client.call(f"{svc.name}.place", orders.PlaceOrder(customer_id=customer),
                              returns=orders.OrderAccepted, timeout=5)  # fmt: skip
        with pytest.raises(NotFound):
            await client.call(f"{svc.name}.place", orders.PlaceOrder(customer_id="missing"),
                              returns=orders.OrderAccepted, timeout=5)  # fmt: skip
        with pytest.raises(InternalError):
            await client.call(f"{svc.name}.place", orders.PlaceOrder(customer_id="boom"),
                              returns=orders.OrderAccepted, timeout=5)  # fmt: skip
        for order in ("e-1", "e-2", "bad"):
            await client.publish(orders.OrderPlaced(order_id=order))
        await eventually(lambda: len(events_seen) == 3)

        held = asyncio.create_task(
            client.call(f"{svc.name}.hold", orders.PlaceOrder(), returns=orders.OrderAccepted, timeout=5)
        )
        hold_labels = {"service": svc.name, "kind": "rpc", "handler": "hold"}
        samples = await scrape(endpoint)
        for _ in range(100):  # the request may still be on its way
            if value(samples, "eventmicro_in_flight", **hold_labels) == 1:
                break
            await asyncio.sleep(0.02)
            samples = await scrape(endpoint)
        assert value(samples, "eventmicro_in_flight", **hold_labels) == 1
        release.set()
        await held

        samples = await scrape(endpoint)

    assert value(samples, "eventmicro_handled_total", **rpc, outcome="ok") == 3
    assert value(samples, "eventmicro_handled_total", **rpc, outcome="error") == 2
    assert value(samples, "eventmicro_errors_total", **rpc, code="404") == 1
    assert value(samples, "eventmicro_errors_total", **rpc, code="500") == 1
    assert value(samples, "eventmicro_in_flight", **rpc) == 0
    assert value(samples, "eventmicro_in_flight", **hold_labels) == 0
    assert value(samples, "eventmicro_handled_total", **hold_labels, outcome="ok") == 1
    # the histogram: five requests; "nap" slept 30 ms, so it is above the 25 ms bucket
    histogram = "eventmicro_handler_duration_seconds"
    assert value(samples, f"{histogram}_count", **rpc) == 5
    buckets = [
        value(samples, f"{histogram}_bucket", **rpc, le=le) for le in ("0.025", "0.1", "1.0", "10.0", "+Inf")
    ]
    assert buckets == sorted(buckets)  # cumulative
    assert buckets[0] <= 4  # the nap is not in it
    assert buckets[2:] == [5, 5, 5]
    assert value(samples, f"{histogram}_sum", **rpc) >= 0.03

    event = {"service": svc.name, "kind": "event", "handler": "placed"}
    assert value(samples, "eventmicro_handled_total", **event, outcome="ok") == 2
    assert value(samples, "eventmicro_handled_total", **event, outcome="error") == 1
    assert value(samples, "eventmicro_errors_total", **event, code="500") == 1
    assert value(samples, f"{histogram}_count", **event) == 3
    assert value(samples, "eventmicro_redeliveries_total", **event) == 0
    # RPC endpoints have no redelivery or dead-letter series
    assert ("eventmicro_redeliveries_total", frozenset(rpc.items())) not in samples


async def test_durable_redeliveries_and_dead_letters_are_counted(
    conn: Connection, endpoint: em_metrics.HttpEndpoint, eventually: Eventually
) -> None:
    stream = unique("M")
    await ensure_stream(conn, Stream(stream, [f"{stream}.>"]))
    svc = Service(unique("durmetrics"), version="1.0.0")
    attempts: dict[str, int] = {}

    @svc.subscribe(subject=f"{stream}.placed", delivery=Durable(max_deliver=3, backoff=[0.05]))
    async def settle(event: orders.OrderPlaced) -> None:
        attempts[event.order_id] = attempts.get(event.order_id, 0) + 1
        if event.order_id == "flaky" and attempts["flaky"] < 3:
            raise RuntimeError("not yet")  # fails twice, then succeeds on delivery 3
        if event.order_id == "doomed":
            raise NotFound("never")  # fails all three deliveries: a dead letter

    client = Client(conn, source="/test")
    labels = {"service": svc.name, "kind": "event", "handler": "settle"}
    dead = DeadLetters(conn)
    try:
        async with svc.serving(conn):
            for order in ("fine", "flaky", "doomed"):
                await client.publish(
                    orders.OrderPlaced(order_id=order), subject=f"{stream}.placed", durable=True
                )

            async def settled() -> bool:
                return len(await dead.list(svc.name)) == 1 and attempts.get("flaky") == 3

            async with asyncio.timeout(15):
                while not await settled():  # noqa: ASYNC110 - the dead-letter stream has no event
                    await asyncio.sleep(0.05)
            samples = await scrape(endpoint)
            for _ in range(100):  # the dead letter's ack and count follow its store
                if value(samples, "eventmicro_dead_letters_total", **labels) == 1:
                    break
                await asyncio.sleep(0.02)
                samples = await scrape(endpoint)
    finally:
        await dead.purge(svc.name)

    assert value(samples, "eventmicro_handled_total", **labels, outcome="ok") == 2  # fine, flaky (3rd)
    assert value(samples, "eventmicro_handled_total", **labels, outcome="error") == 5  # flaky 2, doomed 3
    assert value(samples, "eventmicro_errors_total", **labels, code="500") == 2
    assert value(samples, "eventmicro_errors_total", **labels, code="404") == 3
    assert value(samples, "eventmicro_redeliveries_total", **labels) == 4  # flaky 2+3, doomed 2+3
    assert value(samples, "eventmicro_dead_letters_total", **labels) == 1
    assert value(samples, "eventmicro_handler_duration_seconds_count", **labels) == 7
    assert value(samples, "eventmicro_in_flight", **labels) == 0


async def test_openmetrics_is_served_when_asked_and_unknown_paths_are_404(
    endpoint: em_metrics.HttpEndpoint,
) -> None:
    def get(path: str, accept: str | None = None) -> tuple[int, str]:
        request = urllib.request.Request(
            f"{endpoint.url}{path}", headers={"Accept": accept} if accept else {}
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return response.status, response.headers["Content-Type"]
        except urllib.error.HTTPError as error:
            return error.code, error.headers["Content-Type"]

    status, content_type = await asyncio.to_thread(
        get, "/metrics", "application/openmetrics-text; version=1.0.0"
    )
    assert status == 200
    assert content_type.startswith("application/openmetrics-text")
    assert (await asyncio.to_thread(get, "/nope"))[0] == 404
    assert (await asyncio.to_thread(get, "/readyz"))[0] == 404  # no instances given: no health paths


async def test_metrics_off_means_no_handler_metrics(conn: Connection) -> None:
    em_metrics.disable()
    svc = Service(unique("off"), version="1.0.0")

    @svc.rpc
    async def ping(req: orders.PlaceOrder) -> orders.OrderAccepted:
        return orders.OrderAccepted()

    async with svc.serving(conn) as running:
        await Client(conn, source="/t").call(
            f"{svc.name}.ping", orders.PlaceOrder(), returns=orders.OrderAccepted
        )
        assert running.stats["ping"].metrics is None
        assert running.stats["ping"].num_requests == 1


def test_bad_buckets_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="buckets"):
        em_metrics.enable(CollectorRegistry(), buckets=(1.0, 0.5))
    assert em_metrics.active() is None


async def test_a_scraper_that_never_reads_the_answer_is_dropped(eventually: Eventually) -> None:
    """Only reading the request was bounded: a client that sent ``GET /metrics`` and never
    read a large answer held its connection (and the handler's task) for ever."""

    class Large:  # a registry with a lot in it: megabytes of exposition
        def collect(self) -> Iterator[GaugeMetricFamily]:
            family = GaugeMetricFamily("review_large", "Many series.", labels=["n"])
            for n in range(150_000):
                family.add_metric([str(n)], n)
            yield family

    registry = CollectorRegistry()
    registry.register(Large())
    em_metrics.enable(registry)
    endpoint = await em_metrics.serve(0)
    stalled = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        await asyncio.to_thread(stalled.connect, ("127.0.0.1", endpoint.port))
        stalled.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")  # and never read
        server: Any = endpoint._server
        await eventually(lambda: server._active_count == 1)
        await eventually(lambda: server._active_count == 0, timeout=20)
    finally:
        stalled.close()
        await endpoint.close()
        em_metrics.disable()
