"""Time and identity for events: RFC 3339 text both ways (fast for the common form), unique ids."""

from __future__ import annotations

import itertools
import os
import re
import secrets
from datetime import UTC, datetime
from typing import Any, Final

from eventmicro._errors import (
    InvalidAttribute,
)

__all__ = ["format_time", "is_known_time", "new_event_id", "parse_time"]

_RFC3339_RE: Final = re.compile(r"\d{4}-\d\d-\d\d[Tt ]\d\d:\d\d:\d\d(?:\.\d+)?(?:[Zz]|[+-]\d\d:\d\d)")


class _Second:
    """One remembered UTC second: its "YYYY-MM-DDTHH:MM:SS" text and its datetime fields."""

    __slots__ = ("epoch", "fields", "text")

    def __init__(self) -> None:
        self.epoch: int | None = None
        self.text = ""
        self.fields = (1, 1, 1, 0, 0, 0)


_parsed_second = _Second()  # the last second validated while parsing


def is_known_time(value: str) -> bool:
    """True when ``value`` is eventmicro's own time form within a second already validated."""
    return (
        len(value) == 27
        and value[19] == "."
        and value[26] == "Z"
        and value[:19] == _parsed_second.text
        and value[20:26].isascii()
        and value[20:26].isdigit()
    )


def parse_time(name: str, value: str) -> datetime:
    """Parse an RFC 3339 timestamp into an aware `datetime` (nanoseconds are truncated)."""
    # Fast path: eventmicro's own form, YYYY-MM-DDTHH:MM:SS.ffffffZ, within a second seen before.
    if is_known_time(value):
        year, month, day, hour, minute, second = _parsed_second.fields
        return datetime(year, month, day, hour, minute, second, int(value[20:26]), UTC)
    if not _RFC3339_RE.fullmatch(value):
        raise InvalidAttribute(name, f"{value!r} is not an RFC 3339 timestamp")
    try:
        parsed = datetime.fromisoformat(value if value[10] == "T" and value[-1] != "z" else value.upper())
    except ValueError as exc:
        raise InvalidAttribute(name, f"{value!r} is not a valid timestamp") from exc
    if parsed.tzinfo is UTC and value[10] == "T" and value[19:20] in (".", "Z"):
        _parsed_second.text = value[:19]
        _parsed_second.fields = (
            parsed.year,
            parsed.month,
            parsed.day,
            parsed.hour,
            parsed.minute,
            parsed.second,
        )
    return parsed


_second: list[Any] = [None, ""]  # [(ordinal, hour, minute, second), "YYYY-MM-DDTHH:MM:SS"]


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
    if _second[0] != key:
        _second[1] = value.replace(microsecond=0, tzinfo=None).isoformat()
        _second[0] = key
    micro = value.microsecond
    if micro:
        return f"{_second[1]}.{micro:06d}Z"
    return f"{_second[1]}Z"


_clock = _Second()  # the current second of Event.of's clock


def _tick(second: int) -> None:
    whole = datetime.fromtimestamp(second, UTC)
    _clock.text = whole.replace(tzinfo=None).isoformat()
    _clock.epoch = second


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
