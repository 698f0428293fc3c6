"""Ordered per-key handling: one in-order lane per key, different keys side by side.

``@svc.subscribe(ordered_by=...)`` names the key of an event (a field of the decoded message,
a function of it, or the CloudEvent ``partitionkey``); an instance then runs the events of one
key one at a time, in the order they arrived, and events of other keys concurrently, up to the
handler's ``concurrency``::

    event of key K --> lane K exists? --no--> fewer than `concurrency` lanes? --yes--> a task
    (in arrival           | yes                   | no                          owns lane K: it
     order, one           v                       v                           handles the event,
     reader)          queued in lane K        the reader waits for a lane     then each one queued
                      (LANE_MSGS / LANE_BYTES  to end (back-pressure)         behind it; the lane
                      in all lanes; past                                      ends when empty
                      them the reader waits)

One reader (the subscription's single worker, or a durable handler's fetch loop) puts events
in the lanes in the order they arrived, so the order within a key is exact; lanes exist only
while a key has work, so there are at most ``concurrency`` of them (and their tasks), and what
waits behind them is bounded in messages and bytes.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Final, Generic, TypeVar

from google.protobuf.message import Message as Protobuf

from eventmicro._errors import ConfigurationError
from eventmicro.transport.message import Message
from eventmicro.wire.event import Event

__all__ = [
    "LANE_BYTES",
    "LANE_MSGS",
    "KeyOf",
    "Lanes",
    "OrderedBy",
    "PartitionKey",
    "Prepared",
    "key_of",
    "size_of",
]

log = logging.getLogger("eventmicro.service")

LANE_MSGS: Final = 1000  # events waiting behind their key, in all lanes of one handler
LANE_BYTES: Final = 64 * 1024 * 1024  # their bodies and headers, in bytes

T = TypeVar("T")
Prepared = tuple[Any, Event]
"""An event decoded for its handler: the message, and its CloudEvent."""


@dataclass(frozen=True, slots=True)
class PartitionKey:
    """``ordered_by=PartitionKey()``: the key is the event's CloudEvents ``partitionkey``
    extension (the Partitioning extension), set by the publisher
    (``client.publish(msg, extensions={"partitionkey": order_id})``)."""


OrderedBy = str | Callable[[Any], str | int] | PartitionKey | type[PartitionKey]
"""What ``ordered_by=`` takes: a field name of the message, a function of the message, or
`PartitionKey()`."""


@dataclass(frozen=True, slots=True)
class KeyOf:
    """Reads the key of a decoded event (checked when the decorator runs, see `key_of`)."""

    field: str | None = None
    function: Callable[[Any], object] | None = None

    def __call__(self, value: Any, event: Event) -> str | None:
        """The key, or ``None`` when the event has none (missing, empty, not a str or int).

        A function given by the user may raise; the caller counts that as no key."""
        if self.function is not None:
            raw = self.function(value)
        elif self.field is None:
            raw = event.get_extension("partitionkey")
        elif isinstance(value, dict):
            raw = value.get(self.field)
        else:
            raw = getattr(value, self.field, None)
        if isinstance(raw, str):
            return raw or None
        if isinstance(raw, int) and not isinstance(raw, bool):
            return str(raw)
        return None


def key_of(option: object, message_types: tuple[type, ...], label: str) -> KeyOf:
    """Check ``ordered_by=`` against the handler's message types. Raises `ConfigurationError`."""
    if isinstance(option, PartitionKey) or option is PartitionKey:
        return KeyOf()
    if isinstance(option, str):
        if not option.isidentifier():
            raise ConfigurationError(f"handler {label}: ordered_by={option!r} is not a field name")
        for cls in message_types:
            fields = _fields_of(cls)
            if fields is not None and option not in fields:
                raise ConfigurationError(
                    f"handler {label}: ordered_by={option!r}, but {cls.__name__} has no such field"
                )
        return KeyOf(field=option)
    if callable(option) and not asyncio.iscoroutinefunction(option):
        return KeyOf(function=option)
    raise ConfigurationError(
        f"handler {label}: ordered_by= takes a field name, a function message -> key (not async), "
        "or PartitionKey()"
    )


def _fields_of(cls: type) -> set[str] | None:
    """The field names of a message class, or ``None`` when they cannot be known (a dict)."""
    if issubclass(cls, Protobuf):
        return set(cls.DESCRIPTOR.fields_by_name)
    slots = getattr(cls, "__dataclass_fields__", None) or getattr(cls, "model_fields", None)
    return set(slots) if isinstance(slots, dict) else None


def size_of(msg: Message) -> int:
    """What a queued event holds in memory, about: its body and headers, in bytes."""
    headers = msg.headers
    return len(msg.data) + (sum(len(k) + len(v) for k, v in headers.items()) if headers else 0)


class Lanes(Generic[T]):
    """The lanes of one handler in one instance: ``serve`` runs on each item, one at a time per
    key, in the order `put` was called; at most ``limit`` keys at once, each on a task of its own
    made by ``spawn`` (a task per key in hand, not per event)."""

    __slots__ = ("_lanes", "_on_room", "_room", "_serve", "_spawn", "bytes", "limit", "waiting")

    def __init__(
        self,
        serve: Callable[[T], Awaitable[None]],
        spawn: Callable[[Coroutine[Any, Any, None]], object],
        limit: int,
        on_room: Callable[[], None] | None = None,
    ) -> None:
        self._serve = serve
        self._spawn = spawn
        self.limit = limit
        self._on_room = on_room  # told when a lane ends or an item leaves one
        self._lanes: dict[object, deque[tuple[T, int]]] = {}
        self._room = asyncio.Event()
        self.waiting = 0  # items queued behind their key
        self.bytes = 0

    @property
    def active(self) -> int:
        """Keys with an event being handled now (each has a lane and its task)."""
        return len(self._lanes)

    def full(self) -> bool:
        """Whether more queued items would pass the bounds."""
        return self.waiting >= LANE_MSGS or self.bytes >= LANE_BYTES

    async def put(self, key: str | None, item: T, size: int) -> None:
        """Queue ``item`` behind the earlier items of ``key`` (``None``: a key of its own), or
        start a lane for it; waits while that would pass the bounds (back-pressure)."""
        lane_key: object = key if key is not None else object()
        while not self._offer(lane_key, item, size):
            self._room.clear()
            await self._room.wait()

    def _offer(self, key: object, item: T, size: int) -> bool:
        lane = self._lanes.get(key)
        if lane is not None:
            if self.full():
                return False
            lane.append((item, size))
            self.waiting += 1
            self.bytes += size
            return True
        if len(self._lanes) >= self.limit:
            return False
        lane = self._lanes[key] = deque()
        self._spawn(self._own(key, lane, item))
        return True

    async def _own(self, key: object, lane: deque[tuple[T, int]], item: T) -> None:
        try:
            await self._serve(item)
            while lane:
                item, size = lane.popleft()
                self._left(size)
                await self._serve(item)
        finally:
            del self._lanes[key]
            if lane:  # cancelled (a stop out of time): what waited is not served here
                log.warning("%d event(s) waiting behind their key were not handled", len(lane))
                for _, size in lane:
                    self.waiting -= 1
                    self.bytes -= size
            self._freed()

    def _left(self, size: int) -> None:
        self.waiting -= 1
        self.bytes -= size
        self._freed()

    def _freed(self) -> None:
        self._room.set()
        if self._on_room is not None:
            self._on_room()
