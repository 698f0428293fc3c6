"""JetStream message schedules (ADR-51): store a schedule, read it back, remove it.

A schedule is a message in a stream with ``allow_msg_schedules`` whose ``Nats-Schedule`` header
says when (``@at <RFC 3339>``, ``@every <Go duration>``, a 6-field cron or ``@hourly``...) and
whose ``Nats-Schedule-Target`` says on which subject of the *same* stream the server stores its
body and other headers. The last message on a schedule's subject is the schedule (the server
rolls the subject up), so one subject holds one schedule; purging the subject cancels it.

Checked against nats-server 2.15.1: a bad pattern is refused with err_code 10189, a target
outside the stream with 10190; an ``@at`` in the past fires at once; ``@every`` ticks fall on
whole seconds; the produced message carries ``Nats-Scheduler`` (the schedule's subject) and
``Nats-Schedule-Next`` (the next time, or ``purge`` for an ``@at``), not ``Nats-Msg-Id``.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

import nats.errors
import nats.js.errors

from eventmicro._errors import ConfigurationError, JetStreamError
from eventmicro.transport.connection import Connection, translate
from eventmicro.transport.jetstream import Stored, _js, publish

__all__ = [
    "BAD_PATTERN",
    "BAD_TARGET",
    "SCHEDULE",
    "SCHEDULER",
    "SCHEDULE_TARGET",
    "Schedule",
    "cancel",
    "current",
    "store",
    "stream_of",
]

log = logging.getLogger("eventmicro.schedules")

SCHEDULE: Final = "Nats-Schedule"
SCHEDULE_TARGET: Final = "Nats-Schedule-Target"
SCHEDULER: Final = "Nats-Scheduler"  # on a produced message: the subject of its schedule
BAD_PATTERN: Final = 10189  # "message schedules pattern is invalid"
BAD_TARGET: Final = 10190  # "message schedules target is invalid"
STREAMS_KEPT: Final = 256  # subject -> stream answers cached per connection

_streams: weakref.WeakKeyDictionary[Connection, dict[str, str]] = weakref.WeakKeyDictionary()


@dataclass(frozen=True, slots=True)
class Schedule:
    """A schedule as stored: its pattern, the subject it publishes to, its stream sequence."""

    pattern: str
    target: str
    seq: int


async def store(
    connection: Connection,
    subject: str,
    *,
    pattern: str,
    target: str,
    message: tuple[bytes, Mapping[str, str]],
    msg_id: str,
    timeout: float = 5.0,
) -> Stored:
    """Store a schedule on ``subject`` that publishes ``message`` (body, headers) to ``target``.

    Replaces the schedule that subject held. Raises `ConfigurationError` when the server refuses
    the pattern or the target (so a typo is not mistaken for an outage), `NotStored` when no
    stream takes ``subject``.
    """
    data, headers = message
    try:
        return await publish(
            connection,
            subject,
            data,
            {**headers, SCHEDULE: pattern, SCHEDULE_TARGET: target},
            msg_id=msg_id,
            timeout=timeout,
        )
    except JetStreamError as exc:
        if exc.err_code == BAD_PATTERN:
            raise ConfigurationError(f"schedule {pattern!r}: the server refused the pattern") from exc
        if exc.err_code == BAD_TARGET:
            raise ConfigurationError(
                f"schedule on '{subject}': its target '{target}' must be stored by the same stream"
            ) from exc
        raise


async def current(connection: Connection, stream: str, subject: str) -> Schedule | None:
    """The schedule ``subject`` holds now, or ``None`` (none, or one that already fired)."""
    try:
        raw = await _js(connection).get_last_msg(stream, subject)
    except nats.js.errors.NotFoundError:
        return None
    except nats.errors.Error as exc:
        raise translate(exc, subject, jetstream=True) from exc
    headers = raw.headers or {}
    pattern = headers.get(SCHEDULE)
    if pattern is None:
        return None
    return Schedule(pattern, headers.get(SCHEDULE_TARGET, ""), raw.seq or 0)


async def cancel(connection: Connection, stream: str, subject: str) -> bool:
    """Remove the schedule on ``subject``; ``False`` when there was none left (it fired, or was
    cancelled before)."""
    if await current(connection, stream, subject) is None:
        return False
    try:
        await _js(connection).purge_stream(stream, subject=subject)
    except nats.js.errors.NotFoundError:
        return False
    except nats.errors.Error as exc:
        raise translate(exc, subject, jetstream=True) from exc
    return True


async def stream_of(connection: Connection, subject: str) -> str:
    """The stream storing ``subject`` (asked once per subject and connection, then cached).

    Raises `ConfigurationError` when no stream stores it.
    """
    cache = _streams.setdefault(connection, {})
    found = cache.get(subject)
    if found is not None:
        return found
    try:
        found = await _js(connection).find_stream_name_by_subject(subject)
    except nats.js.errors.NotFoundError as exc:
        raise ConfigurationError(
            f"publish_later: no stream stores '{subject}'; declare one with Stream(..., schedules=True)"
        ) from exc
    except nats.errors.Error as exc:
        raise translate(exc, subject, jetstream=True) from exc
    if len(cache) >= STREAMS_KEPT:
        cache.pop(next(iter(cache)))
    cache[subject] = found
    return found
