"""Tracing across processes: a client span here, the server and producer spans in a service
process of its own (tests/system/traced_service.py, spans as JSON lines), and the consumer span
back here — one trace, each span the child of the one before."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("opentelemetry.sdk")

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from eventmicro import Client, Connection, NatsServer, Service, discover
from eventmicro.observability import tracing

sys.path.insert(0, str(Path(__file__).parent))
from traced_service import Made, Place, Placed, span_record

SERVICE = Path(__file__).parent / "traced_service.py"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    provider = TracerProvider()
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.enable(tracer_provider=provider)
    try:
        yield exporter
    finally:
        tracing.disable()
        provider.shutdown()


async def test_parent_child_links_cross_processes(
    nats_server: NatsServer, conn: Connection, spans: InMemorySpanExporter, tmp_path: Path
) -> None:
    name, subject = f"traced{uuid.uuid4().hex[:8]}", f"traced.{uuid.uuid4().hex[:8]}.made"
    span_file = tmp_path / "spans.jsonl"
    env = {**os.environ, "EVENTMICRO_NATS_URL": nats_server.url, "TRACED_SPANS": str(span_file),
           "TRACED_SERVICE": name, "TRACED_SUBJECT": subject}  # fmt: skip
    env.pop("EVENTMICRO_TRACING", None)
    process = subprocess.Popen([sys.executable, str(SERVICE)], env=env)  # noqa: ASYNC220
    consumer = Service(f"{name}sink", version="1.0.0")
    got: asyncio.Queue[Made] = asyncio.Queue()

    @consumer.subscribe(subject=subject)
    async def on_made(made: Made) -> None:
        await got.put(made)

    try:
        async with asyncio.timeout(30):
            while not await discover(conn, "PING", name, window=0.2):
                pass
        async with consumer.serving(conn):
            reply = await Client(conn).call(f"{name}.place", Place("o-1"), returns=Placed, timeout=10)
            assert reply.pid == process.pid  # served by the other process
            assert await asyncio.wait_for(got.get(), 10) == Made("o-1")
            consumed = f"consume {consumer.name}.on_made"
            async with asyncio.timeout(10):
                while not any(s.name == consumed for s in spans.get_finished_spans()):  # noqa: ASYNC110
                    await asyncio.sleep(0.01)
            remote: dict[str, dict[str, object]] = {}
            async with asyncio.timeout(10):  # the service writes a span as it ends (after replying)
                while len(remote) < 2:
                    lines = span_file.read_text().splitlines() if span_file.exists() else []
                    remote = {r["name"]: r for r in map(json.loads, lines)}
                    await asyncio.sleep(0.01)
    finally:
        process.terminate()
        process.wait(30)
    local = {s.name: span_record(s) for s in spans.get_finished_spans()}
    call = local[f"call {name}.place"]
    handle = remote[f"handle {name}.place"]
    produce = remote["publish tests.system.v1.Made"]
    consume = local[f"consume {consumer.name}.on_made"]
    assert call["pid"] == os.getpid() == consume["pid"]
    assert handle["pid"] == produce["pid"] == process.pid
    kinds = [s["kind"] for s in (call, handle, produce, consume)]
    assert kinds == ["CLIENT", "SERVER", "PRODUCER", "CONSUMER"]
    assert call["parent_span_id"] is None
    assert handle["parent_span_id"] == call["span_id"]
    assert handle["parent_remote"] is True
    assert produce["parent_span_id"] == handle["span_id"]
    assert produce["parent_remote"] is False
    assert consume["parent_span_id"] == produce["span_id"]
    assert consume["parent_remote"] is True
    assert len({s["trace_id"] for s in (call, handle, produce, consume)}) == 1
    assert all(s["status"] == "UNSET" for s in (call, handle, produce, consume))
