"""Delayed events: a CloudEvent stored now as a JetStream schedule, delivered at its time.

::

    client.publish_later(msg, delay=30)
        │  schedule on eventmicro.later.<stream>.<event hash>   (Nats-Schedule: @at <UTC time>,
        ▼                                                        Nats-Schedule-Target: <subject>)
    stream <stream> (schedules=True)  ── at that time ──▶  the event, on its subject, in the
                                                           same stream: durable handlers get it

The stream that stores the event's subject must be declared with ``Stream(..., schedules=True)``.
The schedule is durable (it survives a server restart); it is delivered once, to JetStream
consumers only: the server stores the event, it does not publish it on core NATS.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Final

from eventmicro._errors import ConfigurationError, NotStored
from eventmicro.transport import schedules
from eventmicro.transport.jetstream import later_subjects, message_id
from eventmicro.wire import binding

if TYPE_CHECKING:  # pragma: no cover
    from eventmicro.transport.connection import Connection
    from eventmicro.wire.event import Event

__all__ = ["PAST_SLACK", "Scheduled", "cancel_scheduled", "delivery_time", "store_later"]

PAST_SLACK: Final = timedelta(seconds=60)  # an `at` this far in the past is taken as a mistake


@dataclass(frozen=True, slots=True)
class Scheduled:
    """A delayed event stored as a schedule: cancel it with ``client.cancel_scheduled(it)``.

    ``stream`` and ``subject`` (the schedule's own subject) are all a later process needs to
    cancel it; ``at`` is the UTC time it is due.
    """

    event: Event
    target: str
    at: datetime
    stream: str
    subject: str


def delivery_time(at: datetime | None, delay: timedelta | float | None, now: datetime) -> datetime:
    """The UTC time a delayed event is due: exactly one of ``at`` (timezone-aware) and ``delay``
    (a `timedelta` or seconds, not negative). Raises `ConfigurationError` otherwise, or when
    ``at`` is more than `PAST_SLACK` in the past (a wrong clock or time zone, not a wish)."""
    if (at is None) == (delay is None):
        raise ConfigurationError("publish_later: give exactly one of at= (a datetime) and delay=")
    if at is not None:
        if not isinstance(at, datetime) or at.tzinfo is None or at.utcoffset() is None:
            raise ConfigurationError("publish_later: at= must be a timezone-aware datetime")
        if at < now - PAST_SLACK:
            raise ConfigurationError(f"publish_later: at={at.isoformat()} is in the past")
        return at.astimezone(UTC)
    seconds = delay.total_seconds() if isinstance(delay, timedelta) else delay
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not math.isfinite(seconds):
        raise ConfigurationError("publish_later: delay= must be a timedelta or a number of seconds")
    if seconds < 0:
        raise ConfigurationError("publish_later: delay= cannot be negative")
    return now + timedelta(seconds=seconds)


async def store_later(
    connection: Connection, event: Event, target: str, due: datetime, timeout: float
) -> Scheduled:
    """Store ``event`` as an ``@at`` schedule publishing it on ``target`` at ``due``.

    Deduplicated by the event's identity, like a durable publish: storing the same `Event`
    again (a retry) stores one schedule, not two.
    """
    stream = await schedules.stream_of(connection, target)
    key = message_id(event.get_source(), event.get_id())
    subject = later_subjects(stream).replace(">", key)
    wire = binding.to_binary(event, None)
    try:
        await schedules.store(
            connection,
            subject,
            pattern=f"@at {due.strftime('%Y-%m-%dT%H:%M:%S.%fZ')}",
            target=target,
            message=(wire.data, wire.headers),
            msg_id=key,
            timeout=timeout,
        )
    except NotStored as exc:
        if exc.reason == "no stream stores this subject":
            raise ConfigurationError(
                f"publish_later: stream {stream} stores '{target}' but not schedules; "
                "declare it with Stream(..., schedules=True)"
            ) from exc
        exc.event = event
        raise
    return Scheduled(event, target, due, stream, subject)


async def cancel_scheduled(connection: Connection, scheduled: Scheduled) -> bool:
    """Remove a delayed event before it is due; ``False`` when it was already delivered or
    cancelled."""
    return await schedules.cancel(connection, scheduled.stream, scheduled.subject)
