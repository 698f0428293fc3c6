"""How events reach an event handler, as values: `Shared`, `Broadcast`, `Durable`, `Ordered`.

Passed as ``@svc.subscribe(delivery=...)``; each value checks its own options when it is made,
so a wrong combination cannot be written::

    Shared()       core NATS, one instance of the service gets each event (queue group
                   ``<service>.<handler>``); at most once: what arrives while no instance
                   listens is not kept                                          (the default)
    Broadcast()    core NATS, every instance gets every event
    Durable(...)   JetStream: a durable pull consumer ``<service>-<handler>`` shared by the
                   instances; acked after success, redelivered with backoff, dead-lettered
                   after the last attempt (`eventmicro.service.durable`)
    Ordered(...)   JetStream: an ordered consumer per instance, every stored event in order,
                   one at a time, nothing acked (rebuilding projections, replays)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final, Literal

from eventmicro._errors import ConfigurationError, EnvelopeError, PayloadError
from eventmicro.transport.jetstream import STREAM_NAME, check_deliver
from eventmicro.wire.service_errors import BadRequest

__all__ = [
    "DEFAULT_IDEMPOTENT_TTL",
    "RETRY_MAX",
    "Broadcast",
    "DeliveryOption",
    "Durable",
    "Ordered",
    "Shared",
    "Start",
]

DEFAULT_IDEMPOTENT_TTL: Final = 24 * 3600.0  # seconds an idempotent handler remembers an event
RETRY_MAX: Final = 60.0  # seconds: the longest NAK delay of a message whose dead letter failed

Start = Literal["all", "new", "last"] | int | datetime
"""Where a new JetStream consumer starts: every stored event, new ones only, the last one, a
stream sequence, or a time."""


@dataclass(frozen=True, slots=True)
class Shared:
    """Each event to one instance of the service (a core NATS queue group): the default."""


@dataclass(frozen=True, slots=True)
class Broadcast:
    """Each event to every instance of the service (a core NATS subscription per instance)."""


@dataclass(frozen=True, slots=True)
class Durable:
    """At-least-once delivery from a JetStream stream through a consumer shared by the instances.

    - ``stream``: the stream that stores the subject (found by subject when ``None``);
    - ``max_deliver`` attempts, the n-th failure redelivered after ``backoff[n-1]`` seconds (the
      last delay repeats); an error of a ``terminal`` type (or an event that does not decode)
      is not retried; after the last attempt the event becomes a dead letter
      (``dead_letter=False``: it is terminated instead);
    - ``ack_wait``: seconds before an unacknowledged delivery is redelivered (a handler still
      running extends it every ``ack_wait / 3``);
    - ``deliver``: where a new consumer starts (`Start`);
    - ``idempotent``: remember the (source, id) of each event handled, for a day or this many
      seconds, in a KV bucket, and skip a redelivered one.
    """

    stream: str | None = None
    max_deliver: int = 5
    backoff: Sequence[float] = (1.0, 5.0, 30.0)
    terminal: Sequence[type[BaseException]] = ()
    dead_letter: bool = True
    ack_wait: float = 30.0
    deliver: Start = "all"
    idempotent: bool | float = False

    def __post_init__(self) -> None:
        if (
            isinstance(self.max_deliver, bool)
            or not isinstance(self.max_deliver, int)
            or self.max_deliver < 1
        ):
            raise ConfigurationError("Durable(max_deliver=...) must be at least 1")
        backoff = self.backoff
        if isinstance(backoff, str | bytes) or any(
            isinstance(b, bool) or not (isinstance(b, int | float) and b >= 0) for b in backoff
        ):
            raise ConfigurationError("Durable(backoff=...) is a list of delays in seconds (0 or more)")
        if isinstance(self.terminal, type) or not all(
            isinstance(t, type) and issubclass(t, BaseException) for t in self.terminal
        ):
            raise ConfigurationError("Durable(terminal=...) is a list of exception types")
        wait = self.ack_wait
        if isinstance(wait, bool) or not isinstance(wait, int | float) or not wait > 0:
            raise ConfigurationError("Durable(ack_wait=...) must be a positive number of seconds")
        check_deliver(self.deliver)
        _check_stream(self.stream, "Durable")
        if not isinstance(self.dead_letter, bool):
            raise ConfigurationError("Durable(dead_letter=...) is True or False")
        ttl = self.idempotent
        if not isinstance(ttl, bool) and not (isinstance(ttl, int | float) and ttl >= 0.1):
            raise ConfigurationError("Durable(idempotent=...): the guard's TTL must be at least 0.1 s")
        object.__setattr__(self, "backoff", tuple(float(b) for b in backoff))
        object.__setattr__(self, "terminal", tuple(self.terminal))
        object.__setattr__(self, "ack_wait", float(self.ack_wait))

    @property
    def idempotent_ttl(self) -> float | None:
        """Seconds an event's (source, id) is remembered; ``None``: no idempotency guard."""
        if self.idempotent is False:
            return None
        return DEFAULT_IDEMPOTENT_TTL if self.idempotent is True else float(self.idempotent)

    def delay(self, num_delivered: int) -> float:
        """The NAK delay after failed delivery number ``num_delivered`` (1-based)."""
        if not self.backoff:
            return 0.0
        return self.backoff[min(num_delivered, len(self.backoff)) - 1]

    def dead_letter_retry(self, num_delivered: int) -> float:
        """The NAK delay when delivery ``num_delivered`` could not be dead-lettered: the last
        backoff (at least 1 s), doubled per delivery beyond ``max_deliver``, at most
        ``RETRY_MAX`` (or the last backoff when that is longer) — bounded, never a hot loop."""
        last = self.backoff[-1] if self.backoff else 0.0
        extra = min(max(0, num_delivered - self.max_deliver), 16)
        return min(max(RETRY_MAX, last), max(1.0, last) * 2.0**extra)

    def is_terminal(self, error: BaseException) -> bool:
        """Whether ``error`` ends the event's attempts at once."""
        if isinstance(error, EnvelopeError | PayloadError | BadRequest):
            return True  # it will not decode or validate on the next attempt either
        return isinstance(error, tuple(self.terminal))


@dataclass(frozen=True, slots=True)
class Ordered:
    """An ordered consumer per instance: the stream's events on the subject, in order, from
    ``deliver``, one at a time — to rebuild a projection. Nothing is acked; a failing handler
    is logged and counted, and the next event follows."""

    stream: str | None = None
    deliver: Start = "all"

    def __post_init__(self) -> None:
        check_deliver(self.deliver)
        _check_stream(self.stream, "Ordered")


def _check_stream(stream: object, mode: str) -> None:
    if stream is not None and not (isinstance(stream, str) and STREAM_NAME.fullmatch(stream)):
        raise ConfigurationError(f"{mode}(stream=...): a stream name (letters, digits, '-' and '_') or None")


DeliveryOption = Shared | Broadcast | Durable | Ordered
"""What ``@svc.subscribe(delivery=...)`` takes."""
