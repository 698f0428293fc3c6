"""Durable (JetStream) benchmarks: acknowledged publishing and consuming with acks.

Each scenario runs raw nats-py JetStream and eventmicro side by side in the same process run,
against a nats-server with JetStream and file storage (as in production), every variant on a
fresh stream (created before and deleted after its measurement, untimed):

(a) sequential durable publish, each acknowledgement awaited: raw ``js.publish`` with
    hand-built CloudEvents binary headers plus ``Nats-Msg-Id`` (the event id), against
    ``Client.publish(msg, durable=True)``;
(b) pipelined durable publish, up to 256 acknowledgements outstanding: raw
    ``js.publish_async`` (nats-py's own bounded window) against
    ``Client.publish_batch(messages, window=256)``;
(c) durable consume with acks from a stream pre-filled with N events: a raw pull consumer
    (fetch batches of 64, check ``ce-type``, parse the protobuf body, ack each) against a
    `Service` with a ``@svc.subscribe(durable=True)`` handler taking the typed event (64 at
    a time, eventmicro's default concurrency). Timed from the consumer's creation until all
    N are handled and the server counts no message pending or awaiting an ack.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable

import nats
import nats.errors
from nats.aio.client import Client as Nats
from nats.js import JetStreamContext, api

from bench.sample import SOURCE, TYPE, handbuilt_event_headers, sample_event
from bench.services import connect
from eventmicro import Client, Durable, Event, NatsServer, Service
from eventmicro import cloudevents_nats as binding
from eventmicro.service.deadletters import dead_letter_stream
from eventmicro.transport.jetstream import MSG_ID_HEADER, ensure_stream
from schemas.shop.orders.v1 import orders_pb2 as orders

WINDOW = 256  # acknowledgements outstanding in the pipelined scenario, both sides
FETCH_BATCH = 64  # the raw consumer's batch: eventmicro's default handler concurrency
DEADLINE = 300.0  # seconds any one measurement may take before the benchmark gives up
SCENARIOS = ("publish_seq", "publish_pipelined", "consume")
VARIANTS = ("raw", "eventmicro")


def handbuilt_headers() -> dict[str, str]:
    """What a hand-written nats-py producer sends: CloudEvents binary headers + ``Nats-Msg-Id``."""
    headers = handbuilt_event_headers()
    headers[MSG_ID_HEADER] = headers["ce-id"]
    return headers


# --- streams (untimed setup) -----------------------------------------------------------------


async def create_stream(js: JetStreamContext, name: str, subject: str) -> None:
    """A stream as `eventmicro.Stream` declares one by default: limits, file storage, 2 min dedup."""
    await js.add_stream(api.StreamConfig(name=name, subjects=[subject], retention=api.RetentionPolicy.LIMITS,
                                         storage=api.StorageType.FILE, num_replicas=1,
                                         duplicate_window=120.0))  # fmt: skip


async def stored(js: JetStreamContext, name: str) -> int:
    return (await js.stream_info(name)).state.messages


async def prefill(js: JetStreamContext, subject: str, count: int) -> None:
    """``count`` events as eventmicro publishes them, pipelined (nats-py's publish_async)."""
    message = sample_event()
    futures = []
    for _ in range(count):
        event = Event.of(message, source=SOURCE)
        wire = binding.to_binary(event, None)
        headers = {**wire.headers, MSG_ID_HEADER: event.get_id()}
        futures.append(await js.publish_async(subject, wire.data, headers=headers))
    await asyncio.wait_for(asyncio.gather(*futures), DEADLINE)


async def settled(nc: Nats, js: JetStreamContext, stream: str, consumer: str, deadline: float) -> None:
    """Until the consumer has nothing left to deliver and no ack outstanding (round trips, no sleeps)."""
    while True:
        info = await js.consumer_info(stream, consumer)
        if not info.num_pending and not info.num_ack_pending:
            return
        if time.perf_counter() > deadline:
            raise RuntimeError(
                f"consumer {consumer}: {info.num_pending} pending, {info.num_ack_pending} unacked"
            )
        await nc.flush()


# --- (a) and (b): publishing -----------------------------------------------------------------


async def publish_raw_sequential(js: JetStreamContext, subject: str, count: int) -> None:
    message = sample_event()
    for _ in range(count):
        await js.publish(subject, message.SerializeToString(), headers=handbuilt_headers())


async def publish_raw_pipelined(js: JetStreamContext, subject: str, count: int) -> None:
    message = sample_event()
    futures = [
        await js.publish_async(subject, message.SerializeToString(), headers=handbuilt_headers())
        for _ in range(count)
    ]
    await asyncio.wait_for(asyncio.gather(*futures), DEADLINE)  # any refusal raises here


async def measure_publish(url: str, scenario: str, variant: str, count: int, tag: str) -> float:
    """Messages per second from the first publish until the last one is acknowledged."""
    admin = await nats.connect(url)
    admin_js = admin.jetstream()
    stream, subject = f"BENCH_{tag}_{scenario}_{variant}".upper(), f"bench.durable.{tag}.{scenario}.{variant}"
    await create_stream(admin_js, stream, subject)
    nc = await nats.connect(url, pending_size=64 * 1024 * 1024)
    js = nc.jetstream(publish_async_max_pending=WINDOW)
    conn = await connect(url)
    client = Client(conn, source=SOURCE)
    message = sample_event()
    messages = [message] * count

    async def eventmicro_sequential() -> None:
        for _ in range(count):
            await client.publish(message, subject=subject, durable=True)

    async def eventmicro_pipelined() -> None:
        await client.publish_batch(messages, subject=subject, window=WINDOW)

    runs: dict[tuple[str, str], Callable[[], Awaitable[None]]] = {
        ("publish_seq", "raw"): lambda: publish_raw_sequential(js, subject, count),
        ("publish_seq", "eventmicro"): eventmicro_sequential,
        ("publish_pipelined", "raw"): lambda: publish_raw_pipelined(js, subject, count),
        ("publish_pipelined", "eventmicro"): eventmicro_pipelined,
    }
    try:
        started = time.perf_counter()
        await asyncio.wait_for(runs[scenario, variant](), DEADLINE)
        elapsed = time.perf_counter() - started
        if (n := await stored(admin_js, stream)) != count:
            raise RuntimeError(f"{scenario} {variant}: {n} of {count} events stored")
    finally:
        await admin_js.delete_stream(stream)
        await conn.close()
        await nc.close()
        await admin.close()
    return count / elapsed


# --- (c): consuming with acks ----------------------------------------------------------------


async def consume_raw(nc: Nats, js: JetStreamContext, stream: str, subject: str, count: int) -> float:
    """A hand-written pull consumer: fetch a batch, check the type, parse, ack each, repeat."""
    started = time.perf_counter()
    config = api.ConsumerConfig(ack_policy=api.AckPolicy.EXPLICIT, ack_wait=30.0, max_ack_pending=1000,
                                deliver_policy=api.DeliverPolicy.ALL)  # fmt: skip
    psub = await js.pull_subscribe(subject, durable="raw-consume", stream=stream, config=config)
    handled = errors = 0
    while handled < count:
        try:
            msgs = await psub.fetch(batch=FETCH_BATCH, timeout=2.0)
        except nats.errors.TimeoutError:
            if time.perf_counter() - started > DEADLINE:
                raise
            continue
        for msg in msgs:
            if not msg.headers or msg.headers.get("ce-type") != TYPE:
                errors += 1
            orders.OrderPlaced.FromString(msg.data)
            await msg.ack()
            handled += 1
    await nc.flush()
    await settled(nc, js, stream, "raw-consume", started + DEADLINE)
    elapsed = time.perf_counter() - started
    await psub.unsubscribe()
    if errors:
        raise RuntimeError(f"raw consumer: {errors} messages without their ce-type")
    return elapsed


async def consume_eventmicro(
    url: str, js: JetStreamContext, stream: str, subject: str, *, count: int, tag: str
) -> float:
    """A service with one durable handler, started against the backlog."""
    svc = Service(f"benchdur{tag}", version="1.0.0")
    handled = 0
    all_in = asyncio.Event()

    @svc.subscribe(subject=subject, delivery=Durable(stream=stream))
    async def consume(event: orders.OrderPlaced) -> None:
        nonlocal handled
        handled += 1
        if handled == count:
            all_in.set()

    conn = await connect(url)
    try:
        started = time.perf_counter()
        async with svc.serving(conn):
            await asyncio.wait_for(all_in.wait(), DEADLINE)
            await conn.flush()
            await settled(conn._client, js, stream, f"benchdur{tag}-consume", started + DEADLINE)
            elapsed = time.perf_counter() - started
    finally:
        await conn.close()
    return elapsed


async def measure_consume(url: str, variant: str, count: int, tag: str) -> float:
    """Messages per second handled and acked, from the consumer's creation."""
    admin = await nats.connect(url, pending_size=64 * 1024 * 1024)
    admin_js = admin.jetstream(publish_async_max_pending=WINDOW)
    stream, subject = f"BENCH_{tag}_CONSUME_{variant}".upper(), f"bench.durable.{tag}.consume.{variant}"
    await create_stream(admin_js, stream, subject)
    try:
        await prefill(admin_js, subject, count)
        if (n := await stored(admin_js, stream)) != count:
            raise RuntimeError(f"prefill: {n} of {count} events stored")
        if variant == "raw":
            nc = await nats.connect(url, pending_size=64 * 1024 * 1024)
            try:
                elapsed = await consume_raw(nc, nc.jetstream(), stream, subject, count)
            finally:
                await nc.close()
        else:
            elapsed = await consume_eventmicro(url, admin_js, stream, subject, count=count, tag=tag)
    finally:
        await admin_js.delete_stream(stream)
        await admin.close()
    return count / elapsed


# --- rounds and report -------------------------------------------------------------------------


async def one_round(url: str, count: int, round_: int, tag: str) -> dict[str, float]:
    """Every scenario once, raw first in even rounds and eventmicro first in odd ones."""
    figures: dict[str, float] = {}
    variants = VARIANTS if round_ % 2 == 0 else tuple(reversed(VARIANTS))
    for scenario in SCENARIOS:
        for variant in variants:
            if scenario == "consume":
                rate = await measure_consume(url, variant, count, tag)
            else:
                rate = await measure_publish(url, scenario, variant, count, tag)
            figures[f"{scenario}_per_s_{variant}"] = rate
    return figures


async def prepare(url: str, warmup: int) -> None:
    """The dead-letter stream (a durable handler declares it) and one small untimed round."""
    conn = await connect(url)
    try:
        await ensure_stream(conn, dead_letter_stream())
    finally:
        await conn.close()
    await one_round(url, warmup, 0, "warmup")


def run(server: NatsServer, repeat: int, count: int) -> dict[str, list[float]]:
    asyncio.run(prepare(server.url, min(200, count)))
    results: dict[str, list[float]] = {}
    for round_ in range(repeat):
        figures = asyncio.run(one_round(server.url, count, round_, f"r{round_ + 1}"))
        for key, value in figures.items():
            results.setdefault(key, []).append(value)
        shown = ", ".join(f"{k} {v:,.0f}" for k, v in figures.items())
        print(f"  round {round_ + 1}/{repeat}: {shown}", flush=True)
    return results


LABELS = {
    "publish_seq": "publish, sequential acks",
    "publish_pipelined": f"publish, {WINDOW} in flight",
    "consume": "consume + ack (pre-filled)",
}


def report(results: dict[str, list[float]]) -> dict[str, float]:
    medians = {key: statistics.median(values) for key, values in results.items()}
    print(f"  {'scenario':<28} {'raw nats-py':>14} {'eventmicro':>14}   ratio")
    for scenario in SCENARIOS:
        raw, ours = medians[f"{scenario}_per_s_raw"], medians[f"{scenario}_per_s_eventmicro"]
        print(f"  {LABELS[scenario]:<28} {raw:>12,.0f}/s {ours:>12,.0f}/s   x{ours / raw:.2f}")
    return medians
