"""The prometheus-client collector of the metrics module (imported only when metrics are on)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Final, Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector as _Collector
from prometheus_client.utils import floatToGoString

if TYPE_CHECKING:  # pragma: no cover
    from prometheus_client.metrics_core import Metric

    from eventmicro.observability.instance import CircuitView, GatewayView, RetriesView
    from eventmicro.observability.stats import HandlerMetrics
    from eventmicro.transport.connection import ConnectionStats

__all__ = ["Collector", "Source"]

_LABELS: Final = ("service", "kind", "handler")
_STATES: Final = ("closed", "open", "half_open")
_go_float: Callable[[float], str] = floatToGoString  # how prometheus-client writes "le"


class Source(Protocol):
    """What the collector reads: the histogram bounds and every handler's counters."""

    @property
    def buckets(self) -> tuple[float, ...]: ...
    @property
    def handlers(self) -> Mapping[tuple[str, str, str], HandlerMetrics]: ...
    @property
    def connections(self) -> Mapping[str, Mapping[int, ConnectionStats]]: ...
    def circuits(self) -> list[CircuitView]: ...
    def retries(self) -> list[RetriesView]: ...
    def gateways(self) -> list[GatewayView]: ...


class Collector(_Collector):
    """Turns every handler's plain counters into metric families when scraped."""

    def __init__(self, metrics: Source) -> None:
        self.metrics = metrics
        self._les = [_go_float(b) for b in metrics.buckets] + ["+Inf"]

    def describe(self) -> Iterator[Metric]:
        return self.collect()

    def collect(self) -> Iterator[Metric]:
        labels = list(_LABELS)
        handled = CounterMetricFamily(
            "eventmicro_handled",
            "Messages handled, by outcome (ok, or error: an error reply or a failed event handler).",
            labels=[*labels, "outcome"],
        )
        errors = CounterMetricFamily(
            "eventmicro_errors", "Failed messages by error code.", labels=[*labels, "code"]
        )
        duration = HistogramMetricFamily(
            "eventmicro_handler_duration_seconds",
            "Time from the start of handling until the reply is ready or the event is settled.",
            labels=labels,
        )
        in_flight = GaugeMetricFamily("eventmicro_in_flight", "Messages being handled now.", labels=labels)
        redeliveries = CounterMetricFamily(
            "eventmicro_redeliveries",
            "Durable deliveries after the first (num_delivered > 1).",
            labels=labels,
        )
        dead_letters = CounterMetricFamily(
            "eventmicro_dead_letters", "Dead letters stored for a durable handler.", labels=labels
        )
        not_handled = CounterMetricFamily(
            "eventmicro_not_handled",
            "Messages the handler never saw, by reason: overloaded (answered 503), expired (the "
            "caller's deadline passed while waiting, 504), refused_reply, slow_consumer (dropped).",
            labels=[*labels, "reason"],
        )
        lanes = GaugeMetricFamily(
            "eventmicro_ordered_lanes", "ordered_by= handlers: keys being handled now.", labels=labels
        )
        waiting = GaugeMetricFamily(
            "eventmicro_ordered_waiting",
            "ordered_by= handlers: events waiting behind an earlier event of their key.",
            labels=labels,
        )
        missed = CounterMetricFamily(
            "eventmicro_schedule_missed",
            "Ticks of a scheduled handler skipped: a newer one was queued.",
            labels=labels,
        )
        for h in list(self.metrics.handlers.values()):
            values = [h.service, h.kind, h.handler]
            self._ordering(h, values, lanes, waiting)
            handled.add_metric([*values, "ok"], h.ok)
            handled.add_metric([*values, "error"], h.failed)
            for code, count in sorted(h.errors.items()):
                errors.add_metric([*values, str(code)], count)
            cumulative, buckets = 0, []
            for le, count in zip(self._les, h.buckets, strict=True):
                cumulative += count
                buckets.append((le, float(cumulative)))
            duration.add_metric(values, buckets, h.seconds)
            in_flight.add_metric(values, max(0, h.in_flight))
            if h.kind == "event":
                redeliveries.add_metric(values, h.redeliveries)
                dead_letters.add_metric(values, h.dead_letters)
            if h.kind == "schedule":
                missed.add_metric(values, sum(stats.missed for stats in h.started_by))
            totals: dict[str, int] = {}
            for stats in h.started_by:
                for reason, count in stats.turned_away().items():
                    totals[reason] = totals.get(reason, 0) + count
            for reason, count in sorted(totals.items()):
                not_handled.add_metric([*values, reason], count)
        return iter([handled, errors, duration, in_flight, redeliveries, dead_letters, not_handled,
                     lanes, waiting, missed,
                     *self._circuits(), self._denied(), self._gateway()])  # fmt: skip

    @staticmethod
    def _ordering(
        h: HandlerMetrics, values: list[str], lanes: GaugeMetricFamily, waiting: GaugeMetricFamily
    ) -> None:
        """The lanes of an ``ordered_by=`` handler, summed over its instances in this process."""
        now = [ordering for stats in h.started_by if (ordering := stats.ordering()) is not None]
        if now:
            lanes.add_metric(values, sum(o["lanes"] for o in now))
            waiting.add_metric(values, sum(o["waiting"] for o in now))

    def _denied(self) -> Metric:
        denied = CounterMetricFamily(
            "eventmicro_permission_denied",
            "Publishes and subscriptions the NATS server refused the service's user (permissions violation).",
            labels=["service", "operation"],
        )
        for service, connections in sorted(self.metrics.connections.items()):
            refused = list(connections.values())
            denied.add_metric([service, "publish"], sum(c.denied_publish for c in refused))
            denied.add_metric([service, "subscribe"], sum(c.denied_subscribe for c in refused))
        return denied

    def _gateway(self) -> Metric:
        requests = CounterMetricFamily(
            "eventmicro_gateway_requests",
            "Gateway requests by client id (- without a known token) and outcome: ok, error, "
            "unauthorized (401), forbidden (403, out of scope), rate_limited (429).",
            labels=["client", "outcome"],
        )
        totals: dict[tuple[str, str], int] = {}  # gateways of one process add up
        for gateway in self.metrics.gateways():
            for key, count in list(gateway.counts.items()):
                totals[key] = totals.get(key, 0) + count
        for (client, outcome), count in sorted(totals.items()):
            requests.add_metric([client, outcome], count)
        return requests

    def _circuits(self) -> list[Metric]:
        labels = ["client", "target"]
        state = GaugeMetricFamily(
            "eventmicro_circuit_state",
            "Callers' circuit breakers per target in each state (closed, open, half_open).",
            labels=[*labels, "state"],
        )
        opened = CounterMetricFamily("eventmicro_circuit_opened", "Times a circuit opened.", labels=labels)
        rejected = CounterMetricFamily(
            "eventmicro_circuit_rejected",
            "Calls failed fast (CircuitOpen) by an open circuit.",
            labels=labels,
        )
        totals: dict[tuple[str, str], list[int]] = {}  # clients sharing a source add up
        for circuit in self.metrics.circuits():
            row = totals.setdefault((circuit.owner, circuit.target), [0, 0, 0, 0, 0])
            row[_STATES.index(circuit.state_name)] += 1
            row[3] += circuit.opened
            row[4] += circuit.rejected
        for (owner, target), row in sorted(totals.items()):
            for i, name in enumerate(_STATES):
                state.add_metric([owner, target, name], row[i])
            opened.add_metric([owner, target], row[3])
            rejected.add_metric([owner, target], row[4])
        retries = CounterMetricFamily(
            "eventmicro_client_retries", "Call attempts after the first, by target endpoint.", labels=labels
        )
        counted: dict[tuple[str, str], int] = {}
        for client in self.metrics.retries():
            for target, count in list(client.retried.items()):
                counted[client.owner, target] = counted.get((client.owner, target), 0) + count
        for (owner, target), count in sorted(counted.items()):
            retries.add_metric([owner, target], count)
        return [state, opened, rejected, retries]
