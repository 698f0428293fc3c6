"""Structured logging: context fields on every record, a JSON formatter, and `configure`.

The runtime sets `HANDLING` (a context variable) to ``(running, spec, message)`` when it starts
handling a message — cheap: a tuple and a `ContextVar.set` — and `ContextFilter` turns it into
fields only when a record is actually emitted::

    service, instance, handler, subject, event_id, event_type, trace_id, correlation_id

``Service.run`` also sets `SCOPE` (service, instance) so that records outside handlers (the
connection's reconnects, start and stop) carry the service too.

Nothing secret: eventmicro's own messages name servers through `redact_url`; the formatters
here also hide the user-info part of any URL that reaches a message or a traceback.
"""

from __future__ import annotations

import json as _json
import logging
import os
import re
import sys
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, TYPE_CHECKING, Any, Final

from eventmicro.wire.trace import CORRELATION_EXTENSION

if TYPE_CHECKING:  # pragma: no cover
    from eventmicro.observability.instance import Instance, Named
    from eventmicro.transport.connection import Message

__all__ = ["HANDLING", "SCOPE", "ContextFilter", "JsonFormatter", "Scope", "TextFormatter", "configure"]


@dataclass(slots=True)
class Scope:
    """What a process serves: set by ``Service.run`` before it connects (instance once known)."""

    service: str | None = None
    instance: str | None = None


HANDLING: ContextVar[tuple[Instance, Named, Message] | None] = ContextVar("eventmicro_handling", default=None)
SCOPE: ContextVar[Scope | None] = ContextVar("eventmicro_scope", default=None)

FIELDS: Final = (
    "service",
    "instance",
    "handler",
    "subject",
    "event_id",
    "event_type",
    "trace_id",
    "correlation_id",
)
_STRUCTURED_LIMIT: Final = 64 * 1024  # a structured event's body is parsed for its id only below this
# the user-info ends at the authority's last "@" (as nats-py and `redact_url` split it)
_USERINFO: Final = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<info>[^/\s]+)@")


def context_fields() -> dict[str, str]:
    """The context of the current task as log fields (empty outside any service)."""
    fields: dict[str, str] = {}
    scope = SCOPE.get()
    if scope is not None:
        if scope.service:
            fields["service"] = scope.service
        if scope.instance:
            fields["instance"] = scope.instance
    handling = HANDLING.get()
    if handling is not None:
        running, spec, msg = handling
        fields["service"] = running.service.name
        fields["instance"] = running.id
        fields["handler"] = spec.name
        fields["subject"] = msg.subject
        fields.update(_event_fields(msg))
    return fields


def _event_fields(msg: Message) -> dict[str, str]:
    headers: Mapping[str, str] = msg.headers or {}
    lowered = {k.lower(): v for k, v in headers.items()}
    found = {
        "event_id": lowered.get("ce-id"),
        "event_type": lowered.get("ce-type"),
        "traceparent": lowered.get("traceparent") or lowered.get("ce-traceparent"),
        "correlation_id": lowered.get(f"ce-{CORRELATION_EXTENSION}"),
    }
    if found["event_id"] is None and lowered.get("content-type", "").startswith("application/cloudevents"):
        found.update(_structured(msg.data))
    out: dict[str, str] = {}
    for key in ("event_id", "event_type", "correlation_id"):
        value = found.get(key)
        if value:
            out[key] = value
    if "correlation_id" not in out and "event_id" in out:
        out["correlation_id"] = out["event_id"]  # as the runtime does: the first event of a chain
    trace = trace_id(found.get("traceparent"))
    if trace:
        out["trace_id"] = trace
    return out


def _structured(data: bytes) -> dict[str, str | None]:
    if len(data) > _STRUCTURED_LIMIT:
        return {}
    try:
        document = _json.loads(data)
    except (ValueError, RecursionError):  # e.g. a deeply nested body: no fields, never an error
        return {}
    if not isinstance(document, dict):
        return {}

    def text(key: str) -> str | None:
        value = document.get(key)
        return value if isinstance(value, str) else None

    return {
        "event_id": text("id"),
        "event_type": text("type"),
        "traceparent": text("traceparent"),
        "correlation_id": text(CORRELATION_EXTENSION),
    }


def trace_id(traceparent: str | None) -> str | None:
    """The trace id of a W3C ``traceparent`` (``00-<32 hex>-<16 hex>-<2 hex>``), or None."""
    if not traceparent:
        return None
    parts = traceparent.strip().split("-")
    if len(parts) < 4 or len(parts[1]) != 32:
        return None
    trace = parts[1].lower()
    if trace == "0" * 32 or any(c not in "0123456789abcdef" for c in trace):
        return None
    return trace


def redact(text: str) -> str:
    """Hide user-info in URLs: ``nats://alice:pw@h`` -> ``nats://alice:***@h``, a token -> ``***``."""
    if "@" not in text:
        return text

    def hide(match: re.Match[str]) -> str:
        info = match["info"]
        shown = f"{info.split(':', 1)[0]}:***" if ":" in info else "***"
        return f"{match['scheme']}{shown}@"

    return _USERINFO.sub(hide, text)


class ContextFilter(logging.Filter):
    """Attaches the eventmicro context to each record as ``record.eventmicro_context`` (a dict).

    Add it to any handler (a JSON library's too) to get the fields; it never drops a record.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "eventmicro_context"):
            # a filter's exception escapes the logging call (only emit's are handled): it
            # would break the error boundary that logs
            try:
                record.eventmicro_context = context_fields()
            except Exception:
                record.eventmicro_context = {}
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the context fields, the fields
    of `logging_middleware` (``record.eventmicro``), and ``exception`` when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        context = getattr(record, "eventmicro_context", None)
        if context is None:
            context = context_fields()
        document.update(context)
        extra = getattr(record, "eventmicro", None)
        if isinstance(extra, Mapping):
            for key, value in extra.items():
                document.setdefault(str(key), value)
        if record.exc_info and record.exc_info[0] is not None:
            document["exception_type"] = record.exc_info[0].__name__
            document["exception"] = redact(self.formatException(record.exc_info))
        elif record.exc_text:
            document["exception"] = redact(record.exc_text)
        if record.stack_info:
            document["stack"] = redact(record.stack_info)
        return _json.dumps(document, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """``time level logger: message [service=... instance=... event_type=... ...]``."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        context = getattr(record, "eventmicro_context", None)
        if context is None:
            context = context_fields()
        if context:
            shown = " ".join(f"{k}={context[k]}" for k in FIELDS if k in context)
            head, sep, rest = text.partition("\n")  # the context goes on the first line
            text = f"{head} [{shown}]{sep}{rest}"
        return redact(text)


_installed: logging.Handler | None = None


def configure(
    *,
    json: bool | None = None,
    level: int | str | None = None,
    stream: IO[str] | None = None,
) -> logging.Handler:
    """Log to ``stream`` (stderr) through one handler on the root logger, in JSON lines or text.

    ``json`` defaults to ``EVENTMICRO_LOG_FORMAT=json`` (else text); ``level`` to
    ``EVENTMICRO_LOG_LEVEL`` (else INFO). Like ``logging.basicConfig(force=True)``, the root
    logger's existing handlers are replaced. Returns the handler.
    """
    global _installed  # noqa: PLW0603 - the one handler this function manages
    if json is None:
        json = os.environ.get("EVENTMICRO_LOG_FORMAT", "").strip().lower() == "json"
    if level is None:
        level = os.environ.get("EVENTMICRO_LOG_LEVEL", "").strip().upper() or logging.INFO
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.addFilter(ContextFilter())
    handler.setFormatter(JsonFormatter() if json else TextFormatter())
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
        if existing is _installed:
            existing.close()
    root.addHandler(handler)
    root.setLevel(level)
    _installed = handler
    return handler
