"""One browser's share of the live events: decoded, filtered, bounded (the oldest give way).

Each open event stream has its own `Feed`. The NATS subscription's handler decodes every
message into the JSON the page shows (with `eventmicro.wire.documents`, as ``eventmicro tail``
does), keeps it when its CloudEvent type passes the `TypeFilter`, and queues it; the HTTP side
takes what is queued::

    NATS ──on_message──▶ [decode, filter] ──▶ deque(N events, B bytes) ──take()──▶ SSE ``data:`` lines
                                                   │ full: the oldest are dropped and counted
                                                   ▼
                                        ``event: dropped`` {"dropped": k}

The queue is bounded in events and in bytes (each event counted as its message's size).

A message that is not a CloudEvent is queued too, as a document with an ``error`` field; a
type filter lets it through only when no filter is set (it has no trustworthy type).
"""

from __future__ import annotations

import asyncio
import collections
import logging
from dataclasses import dataclass
from typing import Any, Final

from eventmicro._errors import EventMicroError
from eventmicro.transport.connection import Message
from eventmicro.wire.documents import event_document, foreign_document, one_line

__all__ = ["MAX_QUEUE", "MAX_QUEUE_BYTES", "Feed", "TypeFilter", "event_json", "size_of"]

log = logging.getLogger("eventmicro.gateway.dashboard")

MAX_QUEUE: Final = 1000  # events a slow browser may fall behind before the oldest are dropped
MAX_QUEUE_BYTES: Final = 8 * 1024 * 1024  # and bytes of them (their messages' sizes)
MAX_TYPE_FILTER: Final = 256
_ATTRIBUTES: Final = ("id", "type", "source", "time", "datacontenttype")
_NOT_EXTENSIONS: Final = frozenset(
    {*_ATTRIBUTES, "nats_subject", "mode", "specversion", "subject", "dataschema", "data", "data_base64"}
)


@dataclass(frozen=True, slots=True)
class TypeFilter:
    """An exact CloudEvent type, a prefix ending with ``*``, or nothing (every event).

    >>> TypeFilter.parse("shop.orders.*").matches("shop.orders.v1.OrderPlaced")
    True
    >>> TypeFilter.parse("shop.orders.v1.OrderPlaced").matches("shop.orders.v1.OrderPlacedX")
    False
    """

    pattern: str = ""

    @classmethod
    def parse(cls, text: str | None) -> TypeFilter:
        """The filter ``text`` describes; `ValueError` when it cannot be one."""
        text = (text or "").strip()
        if len(text) > MAX_TYPE_FILTER:
            raise ValueError(f"type filter is longer than {MAX_TYPE_FILTER} characters")
        if "*" in text[:-1]:
            raise ValueError("type filter may have '*' only at its end (a prefix)")
        return cls("" if text == "*" else text)

    def matches(self, event_type: str | None) -> bool:
        """Whether an event of ``event_type`` (``None``: not a CloudEvent) passes."""
        if not self.pattern:
            return True
        if event_type is None:
            return False
        if self.pattern.endswith("*"):
            return event_type.startswith(self.pattern[:-1])
        return event_type == self.pattern


def event_json(msg: Message) -> dict[str, Any]:
    """What the page shows of one message: ``{subject, id, type, source, time, datacontenttype,
    data}`` (``subject`` is the NATS subject), or ``{subject, error, type, data}`` for a message
    that is not a valid CloudEvent. Data is decoded as ``eventmicro tail`` decodes it (JSON,
    protobuf of an installed type); without a JSON form it comes as ``data_base64``."""
    try:
        document = event_document(msg)
    except (EventMicroError, ValueError, TypeError) as exc:  # not a CloudEvent, or a broken one
        return _malformed(msg, one_line(exc))
    out: dict[str, Any] = {"subject": msg.subject}
    for name in _ATTRIBUTES:
        out[name] = document.get(name)
    if document.get("subject") is not None:  # the CloudEvent's own subject attribute
        out["ce_subject"] = document["subject"]
    if document.get("dataschema") is not None:
        out["dataschema"] = document["dataschema"]
    extensions = {k: v for k, v in document.items() if k not in _NOT_EXTENSIONS}
    if extensions:
        out["extensions"] = extensions
    out["mode"] = document.get("mode")
    if "data_base64" in document:
        out["data_base64"] = document["data_base64"]
    else:
        out["data"] = document.get("data")
    return out


def _malformed(msg: Message, reason: str) -> dict[str, Any]:
    foreign = foreign_document(msg, reason)
    headers = {k.lower(): v for k, v in (msg.headers or {}).items()}
    out: dict[str, Any] = {
        "subject": msg.subject,
        "error": f"not a CloudEvent: {reason}",
        "type": headers.get("ce-type"),  # a hint only: the filter does not trust it
    }
    if "headers" in foreign:
        out["headers"] = foreign["headers"]
    for key in ("data", "data_base64"):
        if key in foreign:
            out[key] = foreign[key]
    return out


def size_of(msg: Message) -> int:
    """The bytes ``msg`` brought: its data and its headers."""
    return len(msg.data) + sum(len(k) + len(v) for k, v in (msg.headers or {}).items())


class Feed:
    """A bounded queue of decoded events for one client; `on_message` is the NATS handler."""

    def __init__(
        self,
        type_filter: TypeFilter | None = None,
        *,
        max_queue: int = MAX_QUEUE,
        max_bytes: int = MAX_QUEUE_BYTES,
    ) -> None:
        if max_queue < 1 or max_bytes < 1:
            raise ValueError("max_queue and max_bytes must be at least 1")
        self.type_filter = type_filter or TypeFilter()
        self.max_queue = max_queue
        self.max_bytes = max_bytes
        self._queue: collections.deque[tuple[dict[str, Any], int]] = collections.deque()
        self._bytes = 0
        self._dropped = 0
        self._ready = asyncio.Event()

    async def on_message(self, msg: Message) -> None:
        """Decode, filter and queue one message (the subscription's handler; never raises)."""
        try:
            document = event_json(msg)
        except Exception:  # a decoder bug must not end the stream: logged, and shown as such
            log.exception("dashboard: decoding a message on %s failed", msg.subject)
            error = "could not be decoded (see the gateway log)"
            document = {"subject": msg.subject, "error": error, "type": None}
        if "error" in document:
            if self.type_filter.pattern:
                return  # a type was asked for; this message has none to trust
        elif not self.type_filter.matches(document.get("type")):
            return
        self.put(document, size_of(msg))

    def put(self, document: dict[str, Any], size: int = 0) -> None:
        """Queue ``document`` (``size`` bytes); the oldest queued ones are dropped and counted
        while the queue would hold more than ``max_queue`` events or ``max_bytes`` bytes."""
        self._queue.append((document, size))
        self._bytes += size
        while len(self._queue) > 1 and (len(self._queue) > self.max_queue or self._bytes > self.max_bytes):
            self._bytes -= self._queue.popleft()[1]
            self._dropped += 1
        self._ready.set()

    def lost(self, count: int) -> None:
        """Count ``count`` events dropped before they reached this feed (a full NATS buffer)."""
        if count > 0:
            self._dropped += count
            self._ready.set()

    async def wait(self) -> None:
        """Return once something (an event, or a count of dropped ones) is waiting."""
        await self._ready.wait()

    def take(self) -> tuple[list[dict[str, Any]], int]:
        """Everything queued, oldest first, and how many were dropped since the last take."""
        documents, dropped = [document for document, _ in self._queue], self._dropped
        self._queue.clear()
        self._bytes = 0
        self._dropped = 0
        self._ready.clear()
        return documents, dropped
