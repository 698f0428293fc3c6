"""Time and identity for events: RFC 3339 text both ways (fast for the common form), unique ids."""

from __future__ import annotations

import itertools
import os
import re
import secrets
import time as _time
from datetime import UTC, datetime
from typing import Any, Final

from eventmicro._errors import (
    InvalidAttribute,
)

__all__ = ["format_time", "is_known_time", "new_event_id", "now_text", "parse_time"]

_RFC3339_RE: Final = re.compile(r"\d{4}-\d\d-\d\d[Tt ]\d\d:\d\d:\d\d(?:\.\d+)?(?:[Zz]|[+-]\d\d:\d\d)")


Fields = tuple[int, int, int, int, int, int]


class _Memo:
    """One remembered value, replaced as a whole tuple: a thread never sees half an update."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


# ("YYYY-MM-DDTHH:MM:SS.", its datetime fields): the last UTC second validated while parsing
# (the sentinel matches nothing).
_parsed = _Memo(("\0", (1, 1, 1, 0, 0, 0)))


def is_known_time(value: str) -> bool:
    """True when ``value`` is eventmicro's own time form within a second already validated."""
    return (
        len(value) == 27
        and value.startswith(_parsed.value[0])
        and value[26] == "Z"
        and value.isascii()
        and value[20:26].isdigit()
    )


def parse_time(name: str, value: str) -> datetime:
    """Parse an RFC 3339 timestamp into an aware `datetime` (nanoseconds are truncated)."""
    # Fast path: eventmicro's own form, YYYY-MM-DDTHH:MM:SS.ffffffZ, within a second seen before.
    prefix, fields = _parsed.value
    if len(value) == 27 and value.startswith(prefix) and value[26] == "Z" and value.isascii():
        fraction = value[20:26]
        if fraction.isdigit():
            year, month, day, hour, minute, second = fields
            return datetime(year, month, day, hour, minute, second, int(fraction), UTC)
    if not _RFC3339_RE.fullmatch(value):
        raise InvalidAttribute(name, f"{value!r} is not an RFC 3339 timestamp")
    try:
        parsed = datetime.fromisoformat(value if value[10] == "T" and value[-1] != "z" else value.upper())
    except ValueError as exc:
        raise InvalidAttribute(name, f"{value!r} is not a valid timestamp") from exc
    if parsed.tzinfo is UTC and value[10] == "T" and value[19:20] in (".", "Z"):
        whole: Fields = (parsed.year, parsed.month, parsed.day, parsed.hour, parsed.minute, parsed.second)
        _parsed.value = (value[:19] + ".", whole)
    return parsed


# ((ordinal, hour, minute, second), "YYYY-MM-DDTHH:MM:SS"): the last second formatted.
_formatted = _Memo(((0, 0, 0, 0), ""))


def format_time(value: datetime) -> str:
    """Write an aware `datetime` as RFC 3339 in UTC with a ``Z`` suffix.

    >>> format_time(datetime(2018, 4, 5, 3, 56, 24, tzinfo=UTC))
    '2018-04-05T03:56:24Z'
    """
    if value.tzinfo is not UTC:
        offset = value.utcoffset()
        if offset is None:
            raise InvalidAttribute("time", "a timestamp must be timezone-aware")
        if offset:
            value = value.astimezone(UTC)
    key = (value.toordinal(), value.hour, value.minute, value.second)
    cached, text = _formatted.value
    if cached != key:
        text = value.replace(microsecond=0, tzinfo=None).isoformat()
        _formatted.value = (key, text)
    micro = value.microsecond
    if micro:
        return f"{text}.{micro:06d}Z"
    return f"{text}Z"


# (epoch second, "YYYY-MM-DDTHH:MM:SS"): the current second of Event.of's clock.
_clock = _Memo((-1, ""))


def now_text() -> str:
    """The current UTC time as RFC 3339 text with microseconds, cheaply (one format a second)."""
    second, micro = divmod(_time.time_ns() // 1000, 1_000_000)
    epoch, text = _clock.value
    if epoch != second:
        text = tick(second)
    return f"{text}.{micro:06d}Z" if micro else f"{text}Z"


def tick(second: int) -> str:
    """Remember and return the "YYYY-MM-DDTHH:MM:SS" text of a new current second."""
    text = datetime.fromtimestamp(second, UTC).replace(tzinfo=None).isoformat()
    _clock.value = (second, text)
    return text


class _IdSource:
    """Unique event ids: a random per-process prefix and a counter (reset after fork)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.prefix = secrets.token_hex(8)
        self.counter = itertools.count(1)

    def next(self) -> str:
        return f"{self.prefix}-{next(self.counter):x}"


_ids = _IdSource()
os.register_at_fork(after_in_child=_ids.reset)


def new_event_id() -> str:
    """Return an id unique within this process and, with overwhelming odds, across processes."""
    return _ids.next()
