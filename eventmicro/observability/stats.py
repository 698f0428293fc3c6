"""The counters of a running instance: ADR-32 numbers per endpoint and handler, what was
turned away and why, and the plain integers metrics are read from.

The hot path only adds to these; ``$SRV.STATS`` (discovery), health and the metrics collector
read them.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from eventmicro.transport.quiet import Quiet
from eventmicro.wire.service_errors import ERROR_CODE_HEADER

if TYPE_CHECKING:  # pragma: no cover
    from eventmicro.wire.binding import NATSMessage

__all__ = ["EndpointStats", "HandlerMetrics", "error_code"]


class Dropping(Protocol):
    """An endpoint's subscription, as far as its stats read it."""

    @property
    def dropped(self) -> int: ...


class Membership(Protocol):
    """An endpoint's place in its queue group (`eventmicro.service.balance.Balancer`)."""

    @property
    def out(self) -> bool: ...
    @property
    def left(self) -> int: ...


class Lanes(Protocol):
    """An event handler's per-key lanes (``ordered_by=``, `eventmicro.service.lanes.Lanes`)."""

    @property
    def active(self) -> int: ...
    @property
    def waiting(self) -> int: ...


@dataclass(slots=True)
class EndpointStats:
    """ADR-32 counters of one endpoint or event handler (processing time in nanoseconds), and
    what it turned away without running the handler."""

    num_requests: int = 0
    num_errors: int = 0
    last_error: str = ""
    processing_time: int = 0
    metrics: HandlerMetrics | None = None  # set when metrics are enabled (eventmicro.observability.metrics)
    shed: int = 0  # answered 503 Overloaded: the backlog was full
    expired: int = 0  # answered 504: the caller's deadline passed while the request waited
    refused: int = 0  # not handled: a reply subject the service does not send to
    intake: Dropping | None = None  # its subscription, whose ``dropped`` counts slow-consumer drops
    group: Membership | None = None  # an endpoint with balance="room": in or out of its queue group
    missed: int = 0  # scheduled handlers: ticks skipped because a newer one was queued
    plain: int = 0  # handled as bare payloads (no CloudEvent: plain NATS clients), see eventmicro.wire.plain
    quiet: Quiet = field(default_factory=Quiet)
    lanes: Lanes | None = None  # ordered_by=: keys being handled, events waiting behind their key
    unkeyed: int = 0  # ordered_by=: events without a readable key, handled at once (not in order)

    def ordering(self) -> dict[str, int] | None:
        """An ordered handler's lanes now (``$SRV.STATS`` data), ``None`` for others."""
        lanes = self.lanes
        if lanes is None:
            return None
        return {"lanes": lanes.active, "waiting": lanes.waiting, "unkeyed": self.unkeyed}

    @property
    def dropped(self) -> int:
        """Messages nats-py dropped before this handler saw them (its buffer was full)."""
        return self.intake.dropped if self.intake is not None else 0

    def turned_away(self) -> dict[str, int]:
        """What was not handled, by reason (``$SRV.STATS`` data, metrics)."""
        return {
            "overloaded": self.shed,
            "expired": self.expired,
            "refused_reply": self.refused,
            "slow_consumer": self.dropped,
        }


class HandlerMetrics:
    """The counters of one handler of one service, shared by its instances in this process."""

    __slots__ = (
        "bounds",
        "buckets",
        "dead_letters",
        "errors",
        "finished",
        "handler",
        "kind",
        "ok",
        "redeliveries",
        "seconds",
        "service",
        "started_by",
    )

    def __init__(self, service: str, kind: str, handler: str, bounds: Sequence[float]) -> None:
        self.service = service
        self.kind = kind
        self.handler = handler
        self.bounds = tuple(bounds)
        self.buckets = [0] * (len(self.bounds) + 1)  # not cumulative; the last one is +Inf
        self.seconds = 0.0
        self.ok = 0
        self.errors: dict[int, int] = {}
        self.finished = 0  # handled, failed or cancelled: what left the in-flight count
        self.redeliveries = 0
        self.dead_letters = 0
        self.started_by: list[EndpointStats] = []  # their num_requests count what started

    def handled(self, elapsed_ns: int, code: int | None) -> None:
        """One message done: ``code`` 0 for success, an error code, or None when stop()
        cancelled it (no outcome: it only leaves the in-flight count)."""
        self.finished += 1
        if code is None:
            return
        seconds = elapsed_ns / 1e9
        self.buckets[bisect_left(self.bounds, seconds)] += 1
        self.seconds += seconds
        if code:
            self.errors[code] = self.errors.get(code, 0) + 1
        else:
            self.ok += 1

    def replied(self, elapsed_ns: int, reply: NATSMessage) -> None:
        """One request done, its outcome read from the reply (an error reply has a code)."""
        headers = reply.headers
        code = 0
        if headers:
            raw = headers.get(ERROR_CODE_HEADER)
            if raw is not None:
                code = _int_code(raw)
        self.handled(elapsed_ns, code)

    @property
    def in_flight(self) -> int:
        return sum(stats.num_requests for stats in self.started_by) - self.finished

    @property
    def failed(self) -> int:
        return sum(self.errors.values())


def error_code(exc: BaseException) -> int:
    """The code an exception counts under: its ``code`` when that is an int, else 500."""
    code = getattr(exc, "code", 500)
    return code if isinstance(code, int) and not isinstance(code, bool) and code > 0 else 500


def _int_code(raw: str) -> int:
    try:
        code = int(raw)
    except ValueError:
        return 500
    return code if code > 0 else 500
