"""OpenTelemetry tracing (optional extra ``eventmicro[otel]``): spans for call, publish, handle
and consume, the W3C trace context carried in the CloudEvents distributed-tracing extension.

Tracing is off until `enable` is called (or ``EVENTMICRO_TRACING=1`` is set when eventmicro is
imported); while it is off, the only cost per message is one check of `active`, and eventmicro
works without the ``opentelemetry-api`` package. Spans::

    call <endpoint>               CLIENT     one per attempt of Client.call / ctx.call
    publish <type>                PRODUCER   Client.publish / ctx.publish, each event of publish_batch
    handle <service>.<endpoint>   SERVER     an RPC handler (middleware included)
    consume <service>.<handler>   CONSUMER   an event handler: core, ordered and each durable delivery

An outgoing span is a child of the current OpenTelemetry span (inside a handler: its ``handle``
or ``consume`` span), else of the ``traceparent`` of the `Trace` passed in; its own context
goes out as the ``traceparent``/``tracestate`` extensions (so as ``ce-traceparent`` and a
plain ``traceparent`` header). An incoming span is a child of the message's ``ce-traceparent``
(or a plain ``traceparent`` header, or the extension of a structured-mode event) and is the
current span while the handler runs. Errors set the span status to ERROR with the error code
(``error.type``) and the error's message only for eventmicro's own errors (whose messages are
safe to show a remote caller); of anything else only the type name is recorded.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Final, Self, TypeVar

from eventmicro._errors import ConfigurationError, EventMicroError
from eventmicro.wire import binding
from eventmicro.wire.headervalues import decode_header_value
from eventmicro.wire.service_errors import ServiceError
from eventmicro.wire.trace import Trace

try:
    from opentelemetry import context as otel_context
    from opentelemetry import trace as otel_trace
    from opentelemetry.trace import SpanKind, Status, StatusCode
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    AVAILABLE = True
except ImportError:  # pragma: no cover - the otel extra is not installed
    AVAILABLE = False

if TYPE_CHECKING:  # pragma: no cover
    from opentelemetry.trace import Span, Tracer, TracerProvider

    from eventmicro.transport.connection import Message
    from eventmicro.wire.event import Event

__all__ = ["AVAILABLE", "Tracing", "active", "disable", "enable", "enabled"]

log = logging.getLogger("eventmicro.tracing")
T = TypeVar("T")

ENV: Final = "EVENTMICRO_TRACING"
SYSTEM: Final = "nats"
_STRUCTURED: Final = "application/cloudevents"

active: Tracing | None = None
"""The tracer while tracing is on; ``None`` (the one check per message) while it is off."""


def enable(tracer_provider: TracerProvider | None = None) -> None:
    """Turn tracing on, with spans from ``tracer_provider`` (default: the global provider,
    also one set later with ``opentelemetry.trace.set_tracer_provider``).

    Raises `ConfigurationError` when the OpenTelemetry API is not installed.
    """
    global active  # noqa: PLW0603 - the one switch, read per message
    if not AVAILABLE:
        raise ConfigurationError("tracing needs the OpenTelemetry API: pip install 'eventmicro[otel]'")
    active = Tracing(otel_trace.get_tracer("eventmicro", _version(), tracer_provider=tracer_provider))


def disable() -> None:
    """Turn tracing off: no spans; the ``traceparent`` a handler received is passed on as it is."""
    global active  # noqa: PLW0603
    active = None


def enabled() -> bool:
    return active is not None


def _version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("eventmicro")
    except PackageNotFoundError:  # pragma: no cover - run from a source tree
        return None


class Tracing:
    """Starts eventmicro's spans (one instance while tracing is on)."""

    __slots__ = ("tracer",)

    def __init__(self, tracer: Tracer) -> None:
        self.tracer = tracer

    def client(self, endpoint: str, trace: Trace | None) -> Outgoing:
        return Outgoing(self.tracer, f"call {endpoint}", SpanKind.CLIENT, trace)

    def producer(self, trace: Trace | None) -> Outgoing:
        return Outgoing(self.tracer, "publish", SpanKind.PRODUCER, trace)  # named by `sending`

    def server(self, service: str, endpoint: str, msg: Message) -> Incoming:
        return Incoming(self.tracer, f"handle {service}.{endpoint}", SpanKind.SERVER, msg)

    def consumer(self, service: str, handler: str, msg: Message) -> Incoming:
        return Incoming(self.tracer, f"consume {service}.{handler}", SpanKind.CONSUMER, msg)

    @staticmethod
    async def around(span: Incoming | Outgoing, work: Awaitable[T]) -> T:
        """Await ``work`` inside ``span`` (current while it runs, if incoming), then end it."""
        with span:
            return await work


class Outgoing:
    """The span of one request or event sent; ``trace`` is what the message carries."""

    __slots__ = ("ended", "named", "span", "trace")

    def __init__(self, tracer: Tracer, name: str, kind: SpanKind, trace: Trace | None) -> None:
        self.span: Span = _start(
            tracer,
            name,
            lambda: _outgoing_parent(trace),
            kind,
            {"messaging.system": SYSTEM, "messaging.operation.type": "send"},
        )
        self.named = kind is not SpanKind.PRODUCER  # a publish is named once its event is made
        self.ended = False
        self.trace = _carried(self.span, trace)

    def sending(self, event: Event, destination: str) -> None:
        """Describe the message (and name the span of a publish after the event's type)."""
        if self.span.is_recording():
            event_type = event.get_type()
            if not self.named:
                self.span.update_name(f"publish {event_type}")
            self.span.set_attributes(
                {
                    "messaging.destination.name": destination,
                    "messaging.message.id": event.get_id(),
                    "cloudevents.event_type": event_type,
                }
            )

    def end(self, error: BaseException | None = None) -> None:
        """End the span (with ``error``: status ERROR); only the first call counts."""
        if self.ended:
            return
        self.ended = True
        _end(self.span, error)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        self.end(exc)


class Incoming:
    """The span of one request or event handled; current while the handler runs."""

    __slots__ = ("span", "token")

    def __init__(self, tracer: Tracer, name: str, kind: SpanKind, msg: Message) -> None:
        self.span: Span = _start(tracer, name, lambda: _incoming(msg), kind, None)
        self.token: object = None

    def __enter__(self) -> Self:
        self.token = otel_context.attach(otel_trace.set_span_in_context(self.span))
        return self

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        otel_context.detach(self.token)  # type: ignore[arg-type]  # the token attach returned
        _end(self.span, exc)


def _start(
    tracer: Tracer,
    name: str,
    parent: Callable[[], otel_context.Context | tuple[otel_context.Context, dict[str, Any]] | None],
    kind: SpanKind,
    attributes: dict[str, Any] | None,
) -> Span:
    """A started span; when the SDK (e.g. a span processor) fails, a non-recording one, so
    that tracing never changes how a message is handled."""
    try:
        found = parent()
        context, attributes = found if isinstance(found, tuple) else (found, attributes)
        return tracer.start_span(name, context=context, kind=kind, attributes=attributes)
    except Exception:
        log.warning("tracing: span %r not started", name, exc_info=True)
        return otel_trace.INVALID_SPAN


def _end(span: Span, error: BaseException | None) -> None:
    """End ``span`` (status ERROR for ``error``); an SDK failure is logged, never raised."""
    try:
        if error is not None:
            _failed(span, error)
        span.end()
    except Exception:
        log.warning("tracing: span not ended", exc_info=True)


# --- trace context ----------------------------------------------------------------------------

if AVAILABLE:
    _W3C: Final = TraceContextTextMapPropagator()  # the extension is W3C Trace Context by definition


def _outgoing_parent(trace: Trace | None) -> otel_context.Context | None:
    """``None`` (the current context) when a span is current, else the `Trace`'s traceparent."""
    if otel_trace.get_current_span().get_span_context().is_valid:
        return None
    if trace is not None and trace.traceparent:
        return _extract(trace.traceparent, trace.tracestate)
    return None


def _extract(traceparent: str, tracestate: str | None) -> otel_context.Context:
    carrier = {"traceparent": traceparent}
    if tracestate:
        carrier["tracestate"] = tracestate
    return _W3C.extract(carrier, context=otel_context.Context())  # invalid: a new root


def _carried(span: Span, trace: Trace | None) -> Trace | None:
    """The `Trace` an outgoing message carries: ``trace`` with ``span``'s context."""
    context = span.get_span_context()
    if not context.is_valid:  # no SDK and no parent: as with tracing off
        return trace
    from eventmicro.wire.trace import Trace

    state = context.trace_state.to_header() if context.trace_state else None
    return Trace(
        correlation_id=trace.correlation_id if trace is not None else None,
        traceparent=f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}",
        tracestate=state or None,
        deadline=trace.deadline if trace is not None else None,
    )


def _incoming(msg: Message) -> tuple[otel_context.Context, dict[str, Any]]:
    """The remote parent of a received message (an empty context: a root) and its attributes."""
    attributes: dict[str, Any] = {
        "messaging.system": SYSTEM,
        "messaging.operation.type": "process",
        "messaging.destination.name": msg.subject,
    }
    headers = msg.headers
    traceparent = tracestate = event_id = event_type = None
    if headers is not None and "ce-specversion" in headers:  # binary mode, what eventmicro sends
        traceparent = headers.get("ce-traceparent") or headers.get("traceparent")
        if traceparent is not None:
            tracestate = _header(headers, "ce-tracestate") or headers.get("tracestate")
        event_id, event_type = _header(headers, "ce-id"), _header(headers, "ce-type")
    elif headers is not None and headers.get("traceparent"):  # not a binary CloudEvent
        traceparent, tracestate = headers["traceparent"], headers.get("tracestate")
    else:  # structured mode (or not a CloudEvent): the extension is in the body
        event = _decoded(msg)
        if event is not None:
            traceparent = _text(event.get_extension("traceparent"))
            tracestate = _text(event.get_extension("tracestate"))
            event_id, event_type = event.get_id(), event.get_type()
    if event_id is not None:
        attributes["messaging.message.id"] = event_id
    if event_type is not None:
        attributes["cloudevents.event_type"] = event_type
    if traceparent is None:
        return otel_context.Context(), attributes
    return _extract(traceparent, tracestate), attributes


def _decoded(msg: Message) -> Event | None:
    headers = msg.headers
    if headers is not None:
        content_type = next((v for k, v in headers.items() if k.lower() == "content-type"), "")
        if not content_type.lower().startswith(_STRUCTURED):
            return None
    elif not msg.data.lstrip().startswith(b"{"):
        return None
    try:
        return binding.from_nats(msg, None)
    except EventMicroError:
        return None  # the handler's own decoding reports it


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None or "%" not in value:
        return value
    try:
        return decode_header_value(name, value)
    except EventMicroError:
        return None


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


# --- errors -----------------------------------------------------------------------------------


def _failed(span: Span, error: BaseException) -> None:
    """Status ERROR with the code; the message only of eventmicro's own errors."""
    if isinstance(error, ServiceError):
        code, text = error.instance_code, error.detail
    elif isinstance(error, EventMicroError):
        code, text = error.code, error.message
    elif isinstance(error, asyncio.CancelledError):
        code, text = 500, "cancelled"
    else:
        code, text = 500, type(error).__name__  # its text may carry data: never recorded
    span.set_attribute("error.type", str(code))
    span.set_status(Status(StatusCode.ERROR, f"{code} {text}"))


def _from_environment(environ: Mapping[str, str] = os.environ) -> None:
    if environ.get(ENV, "").strip().lower() not in ("1", "true", "yes", "on"):
        return
    if not AVAILABLE:  # pragma: no cover - the otel extra is not installed
        log.warning("%s is set but the OpenTelemetry API is not installed: tracing stays off", ENV)
        return
    enable()


_from_environment()
