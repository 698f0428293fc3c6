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
    eventmicro_ordered_lanes                 gauge      service, kind, handler  (ordered_by=: keys in hand)
    eventmicro_ordered_waiting               gauge      service, kind, handler  (behind their key)
    eventmicro_permission_denied_total       counter    service, operation (publish|subscribe)
    eventmicro_circuit_state                 gauge      client, target, state (circuits in it: 1 or 0)
    eventmicro_circuit_opened_total          counter    client, target
    eventmicro_circuit_rejected_total        counter    client, target  (calls failed fast)
    eventmicro_client_retries_total          counter    client, target  (attempts after the first)
    eventmicro_gateway_requests_total        counter    client, outcome (ok|error|unauthorized|
                                                        forbidden|rate_limited)
    eventmicro_schedule_missed_total         counter    service, kind, handler  (ticks skipped: a newer
                                                        one was queued; kind "schedule")

``kind`` is ``rpc``, ``event`` or ``schedule`` (an ``@svc.schedule`` handler: one tick, one
run). Instances of one service in one process add up (a process is one scrape target).
Circuits are the callers' breakers (``eventmicro.BreakerPolicy``): ``client`` is the calling
client's source (``/<service>/<instance>`` for a service's handlers). The duration is the
handler's, from the start of handling (decode included) until the reply is ready or the event
is settled. An RPC's outcome is its reply: an error reply counts as an error with its code;
``in_flight`` is computed when scraped (started − finished), so it needs no hook when a
message starts. A gateway that asks for tokens counts its requests by its client's id (``-``
for requests without a known token).

This module does not import prometheus-client; `enable` does, and says how to install it.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

from eventmicro._errors import ConfigurationError
from eventmicro.observability.stats import HandlerMetrics

if TYPE_CHECKING:  # pragma: no cover
    from prometheus_client import CollectorRegistry

    from eventmicro.observability.instance import CircuitView, GatewayView, Instance, RetriesView
    from eventmicro.transport.connection import ConnectionStats

__all__ = [
    "DEFAULT_BUCKETS",
    "HandlerMetrics",
    "Metrics",
    "active",
    "attach",
    "disable",
    "enable",
    "watch_circuit",
    "watch_gateway",
    "watch_retries",
]

# seconds: sub-millisecond RPCs up to minute-long durable handlers
DEFAULT_BUCKETS: Final = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip


_circuits: weakref.WeakSet[Any] = weakref.WeakSet()  # every live circuit of the process


def watch_circuit(circuit: CircuitView) -> None:
    """Show ``circuit`` in the metrics while it lives (called once, when a circuit is made)."""
    _circuits.add(circuit)


_retries: weakref.WeakSet[Any] = weakref.WeakSet()  # the retry counts of every live client that retried


def watch_retries(retries: RetriesView) -> None:
    """Show a client's retry counts in the metrics (called at its first retry)."""
    _retries.add(retries)


_gateways: weakref.WeakSet[Any] = weakref.WeakSet()  # the request counts of every live gateway app


def watch_gateway(counters: GatewayView) -> None:
    """Show a gateway's requests per client in the metrics while it lives (called once per app)."""
    _gateways.add(counters)


class Metrics:
    """The enabled metrics of this process: every handler's `HandlerMetrics`, and where they
    are registered."""

    def __init__(self, registry: CollectorRegistry, buckets: Sequence[float]) -> None:
        self.registry = registry
        self.buckets = tuple(buckets)
        self.handlers: dict[tuple[str, str, str], HandlerMetrics] = {}
        # service -> the stats of its instances' connections (by id: one connection counted once)
        self.connections: dict[str, dict[int, ConnectionStats]] = {}
        self._collector: Any = None

    def handler(self, service: str, kind: str, name: str) -> HandlerMetrics:
        key = (service, kind, name)
        found = self.handlers.get(key)
        if found is None:
            found = self.handlers[key] = HandlerMetrics(service, kind, name, self.buckets)
        return found

    def circuits(self) -> list[CircuitView]:
        """The live circuit breakers of the process."""
        return list(_circuits)

    def retries(self) -> list[RetriesView]:
        """The retry counts of the live clients that have retried."""
        return list(_retries)

    def gateways(self) -> list[GatewayView]:
        """The request counts of the live gateway apps that ask for tokens."""
        return list(_gateways)

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


def attach(running: Instance) -> None:
    """Give each handler of a starting instance its metrics (nothing when metrics are off)."""
    metrics = _active
    if metrics is None:
        return
    service = running.service.name
    stats_of_connection = running.connection.stats  # what the server refused it: permission_denied
    metrics.connections.setdefault(service, {})[id(stats_of_connection)] = stats_of_connection
    tables = (("rpc", running.stats), ("event", running.event_stats), ("schedule", running.schedule_stats))
    for kind, table in tables:
        for name, stats in table.items():
            handler = metrics.handler(service, kind, name)
            handler.started_by.append(stats)
            stats.metrics = handler
