"""The dashboard's service overview: ``$SRV.INFO`` and ``$SRV.STATS`` answers merged per service.

Every instance answers both verbs; `overview` groups the answers by service name and instance
id into one JSON document (the shape the page renders)::

    {"services": [{"name", "version", "description", "metadata", "subscribes", "publishes",
                   "endpoints": [{"name", "subject", "queue_group", "request", "reply",
                                  "request_type", "reply_type", "idempotent"}],
                   "instances": [{"id", "version", "started", "health", "events", "circuits",
                                  "endpoints": [{"name", "num_requests", "num_errors",
                                                 "average_processing_time", "last_error",
                                                 "latency": {"le", "counts"} | null}]}]}]}

Only the fields ADR-32 requires are relied on, so foreign services (Go, JS, nats-py ``micro``)
show up too, with empty type labels. `ServiceOverview` shares one discovery among concurrent
callers and reuses its result for a short while: many open pages cost one ``$SRV`` round.
It raises the `EventMicroError` of a failed discovery (no NATS connection), not a group.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any, Final

from eventmicro._errors import EventMicroError
from eventmicro.service.discovery import discover
from eventmicro.transport.connection import Connection
from eventmicro.wire.codecs import TYPE_URL_PREFIX

__all__ = ["ServiceOverview", "overview"]

WINDOW: Final = 0.3  # seconds to collect $SRV answers
MAX_BUCKETS: Final = 64  # latency buckets of one endpoint passed on to the page
MAX_CIRCUITS: Final = 64  # circuits of one instance passed on to the page
CIRCUIT_STATES: Final = frozenset({"closed", "open", "half_open"})


class ServiceOverview:
    """`overview` of the services reachable on ``connection``, reused for ``ttl`` seconds."""

    def __init__(self, connection: Connection, *, ttl: float = 1.0, window: float = WINDOW) -> None:
        self.connection = connection
        self.ttl = ttl
        self.window = window
        self._lock = asyncio.Lock()
        self._document: dict[str, Any] | None = None
        self._taken = 0.0

    async def get(self) -> dict[str, Any]:
        """The current overview; callers arriving during a discovery wait for its result."""
        async with self._lock:
            if self._document is None or time.monotonic() - self._taken >= self.ttl:
                infos, stats = await self._discover()
                self._document = overview(infos, stats)
                self._taken = time.monotonic()
            return self._document

    async def _discover(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """INFO and STATS, asked at once; raises the first `EventMicroError` (no NATS, ...)."""
        failure: BaseException | None = None
        try:
            async with asyncio.TaskGroup() as group:
                infos = group.create_task(discover(self.connection, "INFO", window=self.window))
                stats = group.create_task(discover(self.connection, "STATS", window=self.window))
        except* EventMicroError as failed:
            failure = failed.exceptions[0]
        if failure is not None:
            raise failure
        return infos.result(), stats.result()


def overview(infos: Iterable[Mapping[str, Any]], stats: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Merge INFO and STATS answers into the dashboard's document (pure; see the module doc).

    >>> info = {"name": "hello", "id": "i1", "version": "1.0.0", "metadata": {},
    ...         "endpoints": [{"name": "greet", "subject": "hello.greet", "queue_group": "q",
    ...                        "metadata": {"eventmicro.request": "str", "eventmicro.reply": "str"}}]}
    >>> doc = overview([info], [])
    >>> doc["services"][0]["endpoints"][0]["request"], doc["services"][0]["instances"][0]["id"]
    ('str', 'i1')
    """
    services: dict[str, dict[str, Any]] = {}
    for answer in infos:
        name = _text(answer.get("name"))
        if not name:
            continue
        service = services.setdefault(name, _new_service(name))
        _merge_info(service, answer)
    for answer in stats:
        name = _text(answer.get("name"))
        if not name:
            continue
        service = services.setdefault(name, _new_service(name))
        instance = _instance(service, answer)
        instance["started"] = _text(answer.get("started")) or None
        data = answer.get("data")
        data = data if isinstance(data, dict) else {}
        health = data.get("health")
        instance["health"] = health if isinstance(health, dict) else None
        events = data.get("events")  # handler name -> {received, errors, last_error}: the page reads those
        instance["events"] = (
            {str(k): v for k, v in events.items() if isinstance(v, dict)} if isinstance(events, dict) else {}
        )
        instance["circuits"] = _circuits(data.get("circuits"))
        instance["endpoints"] = [_endpoint_stats(e) for e in _dicts(answer.get("endpoints"))]
    for service in services.values():
        versions = Counter(i["version"] for i in service["instances"] if i["version"])
        service["version"] = versions.most_common(1)[0][0] if versions else ""
        service["instances"].sort(key=lambda i: i["id"])
        service["endpoints"] = sorted(service.pop("_endpoints").values(), key=lambda e: e["name"])
    return {"services": [services[name] for name in sorted(services)]}


def _new_service(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "version": "",
        "description": "",
        "metadata": {},
        "subscribes": [],
        "publishes": [],
        "instances": [],
        "_endpoints": {},
    }


def _merge_info(service: dict[str, Any], answer: Mapping[str, Any]) -> None:
    metadata = _metadata(answer.get("metadata"))
    service["metadata"].update(metadata)
    service["description"] = service["description"] or _text(answer.get("description"))
    for key, field in (("eventmicro.subscribes", "subscribes"), ("eventmicro.publishes", "publishes")):
        names = {n.strip() for n in metadata.get(key, "").split(",") if n.strip()}
        service[field] = sorted(names.union(service[field]))
    _instance(service, answer)
    for endpoint in _dicts(answer.get("endpoints")):
        name = _text(endpoint.get("name"))
        if name and name not in service["_endpoints"]:
            service["_endpoints"][name] = _endpoint_info(endpoint)


def _instance(service: dict[str, Any], answer: Mapping[str, Any]) -> dict[str, Any]:
    instance_id = _text(answer.get("id"))
    instance: dict[str, Any]
    for instance in service["instances"]:
        if instance["id"] == instance_id:
            break
    else:
        instance = {
            "id": instance_id,
            "version": "",
            "started": None,
            "health": None,
            "events": {},
            "endpoints": [],
        }
        service["instances"].append(instance)
    instance["version"] = instance["version"] or _text(answer.get("version"))
    return instance


def _endpoint_info(endpoint: Mapping[str, Any]) -> dict[str, Any]:
    metadata = _metadata(endpoint.get("metadata"))
    return {
        "name": _text(endpoint.get("name")),
        "subject": _text(endpoint.get("subject")),
        "queue_group": _text(endpoint.get("queue_group")) or None,
        "request": metadata.get("eventmicro.request", ""),
        "reply": metadata.get("eventmicro.reply", ""),
        "request_type": _full_name(metadata.get("eventmicro.request_schema")),
        "reply_type": _full_name(metadata.get("eventmicro.reply_schema")),
        "idempotent": metadata.get("eventmicro.idempotent") == "true",
    }


def _circuits(value: object) -> dict[str, str]:
    """``data.circuits`` of an instance with a breaker (target -> state), at most `MAX_CIRCUITS`
    entries with a known state: what a foreign or odd answer holds beyond that is left out."""
    if not isinstance(value, dict):
        return {}
    circuits = (
        (str(target)[:200], state)
        for target, state in value.items()
        if isinstance(state, str) and state in CIRCUIT_STATES
    )
    return dict(itertools.islice(circuits, MAX_CIRCUITS))


def _endpoint_stats(endpoint: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "name": _text(endpoint.get("name")),
        "num_requests": _int(endpoint.get("num_requests")),
        "num_errors": _int(endpoint.get("num_errors")),
        "average_processing_time": _int(endpoint.get("average_processing_time")),  # nanoseconds
        "last_error": _text(endpoint.get("last_error")),
        "latency": _latency(endpoint.get("data")),
    }


def _latency(data: Any) -> dict[str, list[Any]] | None:
    """``data.latency`` of an endpoint's STATS (eventmicro with metrics on): increasing upper
    bounds in seconds and a count per bucket (one more: +Inf); ``None`` when absent or malformed."""
    latency = data.get("latency") if isinstance(data, dict) else None
    if not isinstance(latency, dict):
        return None
    bounds, counts = latency.get("le"), latency.get("counts")
    if not (isinstance(bounds, list) and isinstance(counts, list) and 0 < len(bounds) <= MAX_BUCKETS):
        return None
    numbers = all(isinstance(b, int | float) and not isinstance(b, bool) and b > 0 for b in bounds)
    if not numbers or bounds != sorted(set(bounds)) or len(counts) != len(bounds) + 1:
        return None
    if not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in counts):
        return None
    return {"le": bounds, "counts": counts}


def _full_name(type_url: str | None) -> str | None:
    """``type.googleapis.com/a.b.C`` -> ``a.b.C`` (the key of the OpenAPI component schema)."""
    if not type_url:
        return None
    return type_url.removeprefix(TYPE_URL_PREFIX) or None


def _dicts(value: Any) -> list[Mapping[str, Any]]:
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def _metadata(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        return {}
    return {str(k): str(v) for k, v in value.items() if v is not None}


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
