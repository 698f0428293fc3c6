"""A traced service run as its own process by tests/system/test_traced_processes.py:
``python traced_service.py``.

It connects to ``$EVENTMICRO_NATS_URL``, serves ``$TRACED_SERVICE`` (RPC ``place``, which
publishes ``Made`` on ``$TRACED_SUBJECT``) with tracing on, and writes each span it finishes as
one JSON line to ``$TRACED_SPANS``, until SIGTERM.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

from eventmicro import Context, Service, event_type
from eventmicro.observability import tracing


@event_type("tests.system.v1.Place")
@dataclasses.dataclass
class Place:
    order_id: str


@event_type("tests.system.v1.Placed")
@dataclasses.dataclass
class Placed:
    order_id: str
    pid: int


@event_type("tests.system.v1.Made")
@dataclasses.dataclass
class Made:
    order_id: str


def span_record(span: ReadableSpan) -> dict[str, object]:
    """What the test compares: names, kinds, ids (hex, as in a traceparent), parent, status."""
    context = span.get_span_context()
    assert context is not None
    return {
        "name": span.name,
        "kind": span.kind.name,
        "trace_id": f"{context.trace_id:032x}",
        "span_id": f"{context.span_id:016x}",
        "parent_span_id": f"{span.parent.span_id:016x}" if span.parent is not None else None,
        "parent_remote": span.parent.is_remote if span.parent is not None else None,
        "status": span.status.status_code.name,
        "attributes": dict(span.attributes or {}),
        "pid": os.getpid(),
    }


class JsonLines(SpanExporter):
    """Each finished span as one JSON line, flushed at once (the test reads while we run)."""

    def __init__(self, path: Path) -> None:
        self.file: TextIO = path.open("a", encoding="utf-8")

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        for span in spans:
            self.file.write(json.dumps(span_record(span)) + "\n")
        self.file.flush()
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        self.file.close()


def build(name: str, subject: str) -> Service:
    svc = Service(name, version="1.0.0")

    @svc.rpc
    async def place(req: Place, ctx: Context) -> Placed:
        await ctx.publish(Made(req.order_id), subject=subject)
        return Placed(req.order_id, os.getpid())

    return svc


if __name__ == "__main__":
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(JsonLines(Path(os.environ["TRACED_SPANS"]))))
    tracing.enable(tracer_provider=provider)
    try:
        code = build(os.environ["TRACED_SERVICE"], os.environ["TRACED_SUBJECT"]).run()
    finally:
        provider.shutdown()
    sys.exit(code)
