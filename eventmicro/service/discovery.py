"""Discovery over the NATS Service API (ADR-32): ``$SRV.PING``, ``$SRV.INFO``, ``$SRV.STATS``.

Every instance answers all three verbs on ``$SRV.<VERB>``, ``$SRV.<VERB>.<name>`` and
``$SRV.<VERB>.<name>.<id>`` (no queue group: every instance answers). INFO's endpoint metadata
names the request and reply types (``eventmicro.request``, ``eventmicro.reply``, and the
protobuf type URLs), and the service metadata the event types it subscribes to, so tools can
build requests without the Python code. `discover` collects the answers of all instances.

Service metadata written by eventmicro (ADR-32: strings to strings)::

    eventmicro.subscribes                  the event types handled, comma-separated
    eventmicro.publishes                   the event types published (Service(publishes=...))
    eventmicro.event_schemas               type URLs of the protobuf ones among both
    eventmicro.subscription.<handler>      JSON: {"subject", "types", "delivery": "core" |
                                           "durable" | "ordered", "queue_group" (of a core
                                           subscription; null: broadcast), "consumer" (durable)}

Endpoint metadata::

    eventmicro.request, eventmicro.reply   the payload types (labels)
    eventmicro.request_schema, ..._schema  protobuf type URLs
    eventmicro.request_json_schema,        a dataclass or pydantic type's JSON Schema: one compact
    eventmicro.reply_json_schema           document, its models under "$defs", at most 16 KiB each
                                           (left out when longer; ADR-33: 128 KB of metadata)
    eventmicro.idempotent                  "true" when retried after a lost attempt
    eventmicro.versioned_subject           the subject only this major version serves
                                           (``orders.v2.place``; `Client.call(..., version=2)`)

STATS endpoint ``data``: ``not_handled`` (by reason) and, when metrics are on (`eventmicro.metrics`),
``latency``: ``{"le": [upper bounds in s], "counts": [per bucket, not cumulative, last +Inf]}``,
the handler's duration histogram (shared by the instances of one process, like the metrics).
STATS ``data.circuits`` (when the service has a ``breaker``): the circuits its handlers' calls
go through, target -> ``closed``, ``open`` or ``half_open``; ``data.retries`` (once they have
retried): target -> attempts after the first.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final, Protocol

from eventmicro.observability.health import check
from eventmicro.observability.instance import Instance
from eventmicro.service.client import Client
from eventmicro.service.handlers import HandlerKind, HandlerSpec
from eventmicro.transport.connection import Connection, Message, Subscription
from eventmicro.wire import strictjson as strict_json
from eventmicro.wire.codecs import dataschema_of, python_type_name
from eventmicro.wire.names import consumer_name

if TYPE_CHECKING:  # pragma: no cover
    from eventmicro.observability.stats import EndpointStats
    from eventmicro.service.declared import Declared
    from eventmicro.service.ticks import TickRunner

__all__ = ["DiscoveryResponder", "discover"]

log = logging.getLogger("eventmicro.discovery")

PREFIX: Final = "$SRV"
VERBS: Final = ("PING", "INFO", "STATS")
RESPONSE_TYPES: Final = {
    "PING": "io.nats.micro.v1.ping_response",
    "INFO": "io.nats.micro.v1.info_response",
    "STATS": "io.nats.micro.v1.stats_response",
}


class Described(Instance, Protocol):
    """A running instance as discovery reads it: `Instance`, its declarations, its start."""

    @property
    def service(self) -> Declared: ...
    @property
    def started(self) -> datetime: ...
    @property
    def client(self) -> Client: ...
    @property
    def schedules(self) -> Sequence[TickRunner]: ...


class DiscoveryResponder:
    """Answers the ``$SRV`` verbs for one running instance."""

    def __init__(self, running: Described) -> None:
        self.running = running

    async def subscribe(self) -> list[Subscription]:
        service, instance = self.running.service.name, self.running.id
        subscriptions = []
        for verb in VERBS:
            answer = self._answerer(verb)
            for subject in (
                f"{PREFIX}.{verb}",
                f"{PREFIX}.{verb}.{service}",
                f"{PREFIX}.{verb}.{service}.{instance}",
            ):
                subscriptions.append(await self.running.connection.subscribe(subject, answer))
        return subscriptions

    def _answerer(self, verb: str) -> Callable[[Message], Any]:
        build = {"PING": self.ping, "INFO": self.info, "STATS": self.stats}[verb]

        async def answer(msg: Message) -> None:
            if msg.reply:
                await self.running.connection.publish(msg.reply, json.dumps(build()).encode())

        return answer

    def _base(self, verb: str) -> dict[str, Any]:
        service = self.running.service
        return {
            "type": RESPONSE_TYPES[verb],
            "name": service.name,
            "id": self.running.id,
            "version": service.version,
            "metadata": self.metadata(),
        }

    def metadata(self) -> dict[str, str]:
        service = self.running.service
        metadata = dict(service.metadata)
        handlers = [spec for spec in service.handlers if spec.kind is HandlerKind.EVENT]
        subscribed = sorted({name for spec in handlers for name in _names(spec)})
        if subscribed:
            metadata["eventmicro.subscribes"] = ",".join(subscribed)
        published = sorted({_label(cls) for cls in service.publishes})
        if published:
            metadata["eventmicro.publishes"] = ",".join(published)
        event_types = [*service.publishes, *(cls for spec in handlers for cls in spec.message_types)]
        schemas = sorted({url for cls in event_types if (url := _type_url(cls))})
        if schemas:
            metadata["eventmicro.event_schemas"] = ",".join(schemas)
        for spec in handlers:
            metadata[f"eventmicro.subscription.{spec.name}"] = _subscription(spec, service.name)
        return metadata

    def ping(self) -> dict[str, Any]:
        return self._base("PING")

    def info(self) -> dict[str, Any]:
        response = self._base("INFO")
        response["description"] = self.running.service.description
        response["endpoints"] = [
            {
                "name": spec.name,
                "subject": spec.subject,
                "queue_group": spec.queue,
                "metadata": _endpoint_metadata(spec),
            }
            for spec in self._endpoints()
        ]
        return response

    def stats(self) -> dict[str, Any]:
        response = self._base("STATS")
        started = self.running.started.astimezone(UTC).isoformat(timespec="microseconds")
        response["started"] = started.replace("+00:00", "Z")
        endpoints = []
        for spec in self._endpoints():
            counts = self.running.stats[spec.name]
            average = counts.processing_time // counts.num_requests if counts.num_requests else 0
            endpoints.append(
                {
                    "name": spec.name,
                    "subject": spec.subject,
                    "queue_group": spec.queue,
                    "num_requests": counts.num_requests,
                    "num_errors": counts.num_errors + counts.dropped,
                    "last_error": counts.last_error,
                    "processing_time": counts.processing_time,
                    "average_processing_time": average,
                    "data": _endpoint_data(counts),
                }
            )
        response["endpoints"] = endpoints
        events = {name: _event_data(c) for name, c in self.running.event_stats.items()}
        # nats-py's ServiceStats.from_dict needs the key; health: see eventmicro.observability.health
        response["data"] = {"events": events, "health": check(self.running).as_dict()}
        if self.running.schedules:  # @svc.schedule handlers: ticks run, failed, missed
            response["data"]["schedules"] = {t.spec.name: t.stats() for t in self.running.schedules}
        client = self.running.client  # what its handlers' calls went through
        if client.breaker is not None:
            response["data"]["circuits"] = client.circuits()
        if retried := client.retries():
            response["data"]["retries"] = retried
        return response

    def _endpoints(self) -> list[HandlerSpec]:
        return [spec for spec in self.running.service.handlers if spec.kind is HandlerKind.RPC]


def _event_data(counts: EndpointStats) -> dict[str, Any]:
    data: dict[str, Any] = {
        "received": counts.num_requests,
        "errors": counts.num_errors + counts.dropped,
        "last_error": counts.last_error,
        "dropped": counts.dropped,  # by nats-py: the handler fell behind (a slow consumer)
        "plain": counts.plain,  # bare payloads from plain NATS clients (no CloudEvent)
    }
    ordering = counts.ordering()
    if ordering is not None:  # ordered_by=: lanes (keys being handled) and events waiting behind them
        data["ordered"] = ordering
    return data


def _endpoint_data(counts: EndpointStats) -> dict[str, Any]:
    data: dict[str, Any] = {"not_handled": counts.turned_away(), "plain": counts.plain}
    group = counts.group
    if group is not None:  # balance="room": whether it is out of its queue group now, how often it left
        data["queue_group"] = {"out": group.out, "left": group.left}
    metrics = counts.metrics
    if metrics is not None:
        data["latency"] = {"le": list(metrics.bounds), "counts": list(metrics.buckets)}
    return data


def _label(cls: Any) -> str:
    if cls is None or cls is type(None):
        return "none"
    if isinstance(cls, type):
        return python_type_name(cls)
    return repr(cls)  # an annotation such as dict[str, Any]


def _names(spec: HandlerSpec) -> list[str]:
    return [_label(cls) for cls in spec.message_types]


def _type_url(cls: Any) -> str | None:
    """The ``dataschema`` its codec gives a class (protobuf: ``type.googleapis.com/<full
    name>``), ``None`` for other types."""
    return dataschema_of(cls) if isinstance(cls, type) else None


@functools.cache
def _json_schema(cls: type) -> str | None:
    """The published JSON Schema of a dataclass or pydantic type (built once per type)."""
    from eventmicro.wire.jsonschema import published_schema  # protobuf descriptors: only when needed

    return published_schema(cls)


def _subscription(spec: HandlerSpec, service: str) -> str:
    """How an event handler listens; ``queue_group`` is that of a core NATS subscription."""
    delivery = "durable" if spec.durable else "ordered" if spec.ordered else "core"
    queue = spec.queue if delivery == "core" else None
    document = {"subject": spec.subject, "queue_group": queue, "types": _names(spec), "delivery": delivery}
    if spec.durable:
        document["consumer"] = consumer_name(service, spec.name)
    return json.dumps(document)


def _endpoint_metadata(spec: HandlerSpec) -> dict[str, str]:
    request, reply = spec.message_types[0], spec.reply_type
    metadata = {"eventmicro.request": _label(request), "eventmicro.reply": _label(reply)}
    for role, cls in (("request", request), ("reply", reply)):
        url = _type_url(cls)
        if url:
            metadata[f"eventmicro.{role}_schema"] = url
        elif isinstance(cls, type) and (schema := _json_schema(cls)) is not None:
            metadata[f"eventmicro.{role}_json_schema"] = schema
    if spec.idempotent:
        metadata["eventmicro.idempotent"] = "true"
    if spec.versioned is not None:
        metadata["eventmicro.versioned_subject"] = spec.versioned
    return metadata


async def discover(
    connection: Connection, verb: str = "PING", name: str | None = None, *, window: float = 0.5
) -> list[dict[str, Any]]:
    """Ask every instance (of ``name``, or of every service) and collect answers for ``window`` s.

    Answers that are not JSON objects are skipped (and logged).
    """
    verb = verb.upper()
    if verb not in VERBS:
        raise ValueError(f"verb must be one of {', '.join(VERBS)}")
    answers: list[dict[str, Any]] = []

    async def collect(msg: Message) -> None:
        if not msg.data:  # the server's no-responders notice (status 503): nobody there yet
            return
        try:
            document = strict_json.loads(msg.data)
        except ValueError:
            log.warning("discovery: an answer on %s is not JSON", msg.subject)
            return
        if isinstance(document, dict):
            answers.append(document)

    inbox = connection.new_inbox()
    subscription = await connection.subscribe(inbox, collect)
    try:
        subject = f"{PREFIX}.{verb}" + (f".{name}" if name else "")
        await connection.publish(subject, b"", reply=inbox)
        await asyncio.sleep(window)  # a collection window: how long to wait for every instance
    finally:
        await subscription.unsubscribe()
    return answers
