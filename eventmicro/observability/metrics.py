"""Metrics per service and handler, exposed through prometheus-client (the ``metrics`` extra).

Off by default. `enable` (or ``Service.run(metrics_port=...)``) turns them on for the services
started afterwards; until then the runtime pays one ``stats.metrics is not None`` check per
message. On, the hot path only adds to plain integers of a `HandlerMetrics`; a collector
registered in a prometheus-client registry turns them into metric families when scraped::

    metric                                   type       labels
    eventmicro_handled_total                 counter    service, kind, handler, outcome (ok|error)
    eventmicro_errors_total                  counter    service, kind, handler, code
    eventmicro_handler_duration_seconds      histogram  service, kind, handler
    eventmicro_in_flight                     gauge      service, kind, handler
    eventmicro_redeliveries_total            counter    service, kind, handler  (durable, delivery > 1)
    eventmicro_dead_letters_total            counter    service, kind, handler  (stored dead letters)

``kind`` is ``rpc`` or ``event``. Instances of one service in one process add up (a process is
one scrape target). The duration is the handler's, from the start of handling (decode
included) until the reply is ready or the event is settled. An RPC's outcome is its reply: an
error reply counts as an error with its code; ``in_flight`` is computed when scraped
(started − finished), so it needs no hook when a message starts.

This module does not import prometheus-client; `enable` does, and says how to install it.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

from eventmicro._errors import ConfigurationError
from eventmicro.wire.service_errors import ERROR_CODE_HEADER

if TYPE_CHECKING:  # pragma: no cover
    from prometheus_client import CollectorRegistry

    from eventmicro.service.running import EndpointStats, Running
    from eventmicro.wire import binding

__all__ = ["DEFAULT_BUCKETS", "HandlerMetrics", "Metrics", "active", "attach", "disable", "enable"]

# seconds: sub-millisecond RPCs up to minute-long durable handlers
DEFAULT_BUCKETS: Final = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip


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

    def replied(self, elapsed_ns: int, reply: binding.NATSMessage) -> None:
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


class Metrics:
    """The enabled metrics of this process: every handler's `HandlerMetrics`, and where they
    are registered."""

    def __init__(self, registry: CollectorRegistry, buckets: Sequence[float]) -> None:
        self.registry = registry
        self.buckets = tuple(buckets)
        self.handlers: dict[tuple[str, str, str], HandlerMetrics] = {}
        self._collector: Any = None

    def handler(self, service: str, kind: str, name: str) -> HandlerMetrics:
        key = (service, kind, name)
        found = self.handlers.get(key)
        if found is None:
            found = self.handlers[key] = HandlerMetrics(service, kind, name, self.buckets)
        return found

    def exposition(self, accept: str | None = None) -> tuple[bytes, str]:
        """The registry's metrics in the format ``accept`` asks for (text 0.0.4 by default)."""
        from prometheus_client.exposition import choose_encoder

        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type


_active: Metrics | None = None


def active() -> Metrics | None:
    """The enabled metrics, or None."""
    return _active


def enable(registry: CollectorRegistry | None = None, *, buckets: Sequence[float] | None = None) -> Metrics:
    """Turn metrics on for the services started from now on; idempotent.

    ``registry`` defaults to prometheus-client's global ``REGISTRY`` (with its process and
    platform collectors). Raises `ConfigurationError` when prometheus-client is not installed.
    """
    global _active  # noqa: PLW0603 - one switch per process, read once per service start
    try:
        import prometheus_client
    except ImportError as exc:
        raise ConfigurationError("metrics need prometheus-client: pip install 'eventmicro[metrics]'") from exc
    from eventmicro.observability.prometheus import Collector

    target = registry if registry is not None else prometheus_client.REGISTRY
    bounds = tuple(float(b) for b in (buckets if buckets is not None else DEFAULT_BUCKETS))
    if not bounds or list(bounds) != sorted(set(bounds)) or bounds[0] <= 0:
        raise ConfigurationError("metrics buckets: increasing positive upper bounds in seconds")
    if _active is not None:
        if _active.registry is target and (buckets is None or bounds == _active.buckets):
            return _active
        disable()
    metrics = Metrics(target, bounds)
    metrics._collector = Collector(metrics)
    target.register(metrics._collector)
    _active = metrics
    return metrics


def disable() -> None:
    """Turn metrics off for services started from now on (running ones keep counting, unseen)."""
    global _active  # noqa: PLW0603
    if _active is None:
        return
    _active.registry.unregister(_active._collector)
    _active = None


def attach(running: Running) -> None:
    """Give each handler of a starting instance its metrics (nothing when metrics are off)."""
    metrics = _active
    if metrics is None:
        return
    service = running.service.name
    for kind, table in (("rpc", running.stats), ("event", running.event_stats)):
        for name, stats in table.items():
            handler = metrics.handler(service, kind, name)
            handler.started_by.append(stats)
            stats.metrics = handler
