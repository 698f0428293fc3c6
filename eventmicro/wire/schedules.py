"""The ``Nats-Schedule`` patterns eventmicro accepts for recurring handlers, and the `Tick` a
handler receives: pure, no I/O.

Accepted (ADR-51; nats-server 2.14+ for all of them):

- ``@every <Go duration>``: ``@every 1s``, ``@every 5m``, ``@every 1h30m`` (at least 1 s);
- the predefined ``@yearly`` ``@annually`` ``@monthly`` ``@weekly`` ``@daily`` ``@midnight``
  ``@hourly``;
- a 6-field cron, seconds first: ``0 */5 * * * *`` (UTC).

``@at`` is a one-off, not a recurring schedule: use ``client.publish_later`` for that. The
server has the last word on a cron expression (a field out of range is refused when the
service starts, as a `ConfigurationError`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from eventmicro._errors import ConfigurationError

__all__ = ["Tick", "check_pattern", "tick_of"]

PREDEFINED: Final = frozenset(
    {"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"}
)
_GO_DURATION: Final = re.compile(r"(?:\d+(?:\.\d+)?(?:ns|us|µs|ms|s|m|h))+")
_UNIT_NS: Final = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,
    "ms": 1_000_000,
    "s": 10**9,
    "m": 60 * 10**9,
    "h": 3600 * 10**9,
}
_CRON_FIELD: Final = re.compile(r"[0-9A-Za-z*?/,\-]+")
SCHEDULE_NEXT: Final = "Nats-Schedule-Next"


@dataclass(frozen=True, slots=True)
class Tick:
    """One run of a scheduled handler: ``at`` is when the server produced it (UTC), ``id`` is
    unique per tick (a redelivered tick keeps it), ``next`` is the following tick's time when the
    server said (``None`` otherwise)."""

    id: str
    at: datetime
    schedule: str
    next: datetime | None = None


def check_pattern(pattern: str | None, every: timedelta | float | None) -> str:
    """The ``Nats-Schedule`` value for ``pattern`` or ``every`` (exactly one); `ConfigurationError`
    naming what is wrong otherwise."""
    if (pattern is None) == (every is None):
        raise ConfigurationError("schedule: give a pattern ('@every 1m', a cron, '@hourly') or every=")
    if every is not None:
        seconds = every.total_seconds() if isinstance(every, timedelta) else every
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not math.isfinite(seconds):
            raise ConfigurationError("schedule: every= must be a timedelta or a number of seconds")
        if seconds < 1 or seconds != int(seconds):
            raise ConfigurationError(f"schedule: every={seconds:g}s: use whole seconds, at least 1")
        return f"@every {int(seconds)}s"
    if not isinstance(pattern, str):
        raise ConfigurationError(f"schedule: the pattern must be a string, not {pattern!r}")
    text = " ".join(pattern.split())
    if text in PREDEFINED:
        return text
    if text.startswith("@every "):
        _check_every(text.removeprefix("@every "))
        return text
    if text.startswith("@at"):
        raise ConfigurationError("schedule: '@at' runs once; use client.publish_later(msg, at=...)")
    fields = text.split(" ")
    if len(fields) != 6 or not all(_CRON_FIELD.fullmatch(f) for f in fields):
        raise ConfigurationError(
            f"schedule {pattern!r}: use '@every <duration>', @hourly/@daily/..., or 6 cron fields "
            "(seconds minutes hours day-of-month month day-of-week)"
        )
    return text


def _check_every(duration: str) -> None:
    if not _GO_DURATION.fullmatch(duration):
        raise ConfigurationError(f"schedule '@every {duration}': the duration reads like 30s, 5m or 1h30m")
    total = sum(
        float(number) * _UNIT_NS[unit]
        for number, unit in re.findall(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)", duration)
    )
    if total < 10**9:
        raise ConfigurationError(f"schedule '@every {duration}': at least 1s")


def tick_of(seq: int, at: datetime, schedule: str, headers: Mapping[str, str] | None) -> Tick:
    """The `Tick` of a produced message; a ``Nats-Schedule-Next`` that does not parse (or is
    ``purge``) is left out rather than trusted."""
    raw = (headers or {}).get(SCHEDULE_NEXT, "")
    try:
        following = datetime.fromisoformat(raw) if raw else None
    except ValueError:
        following = None
    if following is not None and following.tzinfo is None:
        following = None
    return Tick(str(seq), at, schedule, following)
