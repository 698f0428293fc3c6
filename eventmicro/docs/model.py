"""The model of an AsyncAPI document: what services answer, handle and publish, read from
`Service` objects or from ``$SRV.INFO`` answers (see `eventmicro.docs.asyncapi`)."""

from __future__ import annotations

import json
import re
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from eventmicro.service.handlers import HandlerKind, HandlerSpec
from eventmicro.service.service import Service
from eventmicro.wire.codecs import (
    TYPE_URL_PREFIX,
    dataschema_of,
    media_type_of,
    media_type_of_label,
    python_type_name,
    type_name_of,
)
from eventmicro.wire.jsonschema import SchemaSet
from eventmicro.wire.media import JSON, PROTOBUF
from eventmicro.wire.names import consumer_name, event_subject

__all__ = [
    "Body",
    "Endpoint",
    "ServiceModel",
    "Subscription",
    "component_key",
    "read_discovery",
    "read_services",
]

Schema = dict[str, Any]
_KEY: Final = re.compile(r"[^\w.\-]")


@dataclass(frozen=True, slots=True)
class Body:
    """A payload type: the ``ce-type`` it travels as, its schema and content type (None: unknown).

    ``named``: the type is a CloudEvent type (protobuf, ``@event_type``), so ``ce-type`` is fixed.
    """

    type: str
    schema: Schema
    content_type: str | None
    dataschema: str | None = None
    named: bool = False


@dataclass(frozen=True, slots=True)
class Endpoint:
    """An RPC endpoint; ``cloudevents=False`` for a foreign ADR-32 endpoint (types unknown)."""

    name: str
    subject: str
    queue_group: str | None
    request: Body
    replies: tuple[Body, ...]
    may_be_empty: bool = False  # the handler may return None: an empty reply
    idempotent: bool = False
    cloudevents: bool = True


@dataclass(frozen=True, slots=True)
class Subscription:
    """An event handler; ``delivery`` is ``core``, ``durable``, ``ordered`` or ``""`` (not reported)."""

    name: str
    subject: str
    queue_group: str | None  # of a core NATS subscription; None: broadcast, or JetStream
    events: tuple[Body, ...]
    delivery: str
    consumer: str | None = None
    detail: str = ""


@dataclass(frozen=True, slots=True)
class ServiceModel:
    """What the document says about one service."""

    name: str
    version: str
    description: str
    endpoints: tuple[Endpoint, ...]
    subscriptions: tuple[Subscription, ...]
    publishes: tuple[Body, ...]


def read_services(services: Sequence[Service], schemas: SchemaSet) -> list[ServiceModel]:
    """The model of each service; payload schemas go into ``schemas``."""
    return [_from_service(service, schemas) for service in services]


def read_discovery(infos: Sequence[Mapping[str, Any]], schemas: SchemaSet) -> list[ServiceModel]:
    """The model of each service answering ``$SRV.INFO`` (its instances are one service)."""
    answers = [i for i in infos if isinstance(i, Mapping) and isinstance(i.get("name"), str)]
    first: dict[tuple[str, str], Mapping[str, Any]] = {}
    for info in sorted(answers, key=lambda i: (i["name"], str(i.get("version")), str(i.get("id")))):
        first.setdefault((info["name"], str(info.get("version") or "")), info)
    return [_from_info(info, schemas) for info in first.values()]


def component_key(name: str) -> str:
    """``name`` as a component or channel key (``^[\\w.\\-]+$``)."""
    return _KEY.sub("_", name) or "_"


def _from_service(service: Service, schemas: SchemaSet) -> ServiceModel:
    endpoints, subscriptions = [], []
    for spec in service.handlers:
        if spec.kind is HandlerKind.RPC:
            members = _members(spec.reply_type)
            endpoints.append(
                Endpoint(
                    spec.name,
                    spec.subject,
                    spec.queue,
                    _body(spec.message_types[0], schemas),
                    tuple(_body(m, schemas) for m in members if m is not type(None)),
                    may_be_empty=spec.allows_none,
                    idempotent=spec.idempotent,
                )
            )
        else:
            subscriptions.append(_subscription(service, spec, schemas))
    publishes = tuple(_body(cls, schemas) for cls in service.publishes)
    return ServiceModel(
        service.name, service.version, service.description, tuple(endpoints), tuple(subscriptions), publishes
    )


def _subscription(service: Service, spec: HandlerSpec, schemas: SchemaSet) -> Subscription:
    events = tuple(_body(cls, schemas) for cls in spec.message_types)
    if spec.durable is not None:
        policy = spec.durable
        backoff = ", ".join(f"{b:g}s" for b in policy.backoff) or "none"
        detail = f" At most {policy.max_deliver} attempts, backoff {backoff}."
        if policy.stream:
            detail += f" Stream {policy.stream}."
        if policy.idempotent_ttl is not None:
            detail += " Redelivered duplicates (same ce-source and ce-id) are skipped."
        name = consumer_name(service.name, spec.name)
        return Subscription(spec.name, spec.subject, None, events, "durable", name, detail)
    if spec.ordered is not None:
        detail = f" Stream {spec.ordered.stream}." if spec.ordered.stream else ""
        return Subscription(spec.name, spec.subject, None, events, "ordered", detail=detail)
    return Subscription(spec.name, spec.subject, spec.queue, events, "core")


def _members(annotation: Any) -> tuple[Any, ...]:
    if annotation is None:
        return (type(None),)
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin is types.UnionType:
        return typing.get_args(annotation)
    return (annotation,)


def _body(cls: Any, schemas: SchemaSet) -> Body:
    plain = typing.get_origin(cls) or cls
    if not isinstance(plain, type):
        return Body(repr(cls), schemas.of_type(cls), JSON)
    name = type_name_of(plain)  # its codec says the rest: content type, dataschema (protobuf's type URL)
    return Body(
        name or python_type_name(plain),
        schemas.of_type(cls),
        media_type_of(plain),
        dataschema_of(plain),
        named=name is not None,
    )


def _from_info(info: Mapping[str, Any], schemas: SchemaSet) -> ServiceModel:
    metadata = _strings(info.get("metadata"))
    protobuf = set(_split(metadata.get("eventmicro.event_schemas")))

    def event(label: str) -> Body:
        url = TYPE_URL_PREFIX + label
        return _label_body(label, url if url in protobuf else None, schemas, event=True)

    listed = info.get("endpoints")
    endpoints = (
        [_endpoint(e, schemas) for e in listed if isinstance(e, Mapping)] if isinstance(listed, list) else []
    )
    subscriptions = []
    for key, value in sorted(metadata.items()):
        if key.startswith("eventmicro.subscription."):
            found = _loads(value)
            subject, labels = found.get("subject"), found.get("types")
            if isinstance(subject, str) and isinstance(labels, list):
                queue, consumer = found.get("queue_group"), found.get("consumer")
                subscriptions.append(
                    Subscription(
                        key.removeprefix("eventmicro.subscription."),
                        subject,
                        queue if isinstance(queue, str) else None,
                        tuple(event(str(label)) for label in labels),
                        str(found.get("delivery") or ""),
                        consumer if isinstance(consumer, str) else None,
                    )
                )
    if not subscriptions:  # an older eventmicro: only the types, on their default subjects
        for label in _split(metadata.get("eventmicro.subscribes")):
            subscriptions.append(
                Subscription(component_key(label), event_subject(label), None, (event(label),), "")
            )
    return ServiceModel(
        str(info.get("name")),
        str(info.get("version") or ""),
        str(info.get("description") or ""),
        tuple(endpoints),
        tuple(subscriptions),
        tuple(event(label) for label in _split(metadata.get("eventmicro.publishes"))),
    )


def _endpoint(info: Mapping[str, Any], schemas: SchemaSet) -> Endpoint:
    metadata = _strings(info.get("metadata"))
    name = str(info.get("name"))
    subject = str(info.get("subject") or name)
    queue = info.get("queue_group") if isinstance(info.get("queue_group"), str) else None
    request = metadata.get("eventmicro.request")
    if request is None:  # a foreign service: ADR-32 says nothing of payloads
        unknown = Body("", {"description": "not described by the service"}, None)
        return Endpoint(name, subject, queue, unknown, (unknown,), cloudevents=False)
    members = [m.strip() for m in metadata.get("eventmicro.reply", "").split("|")]
    single = len(members) == 1
    reply_url = metadata.get("eventmicro.reply_schema") if single else None
    reply_json = metadata.get("eventmicro.reply_json_schema") if single else None
    request_json = metadata.get("eventmicro.request_json_schema")
    return Endpoint(
        name,
        subject,
        queue,
        _label_body(request, metadata.get("eventmicro.request_schema"), schemas, published=request_json),
        tuple(
            _label_body(m, reply_url, schemas, published=reply_json)
            for m in members
            if m not in ("none", "None", "")
        ),
        may_be_empty=any(m in ("none", "None") for m in members),
        idempotent=metadata.get("eventmicro.idempotent") == "true",
    )


def _label_body(
    label: str, url: str | None, schemas: SchemaSet, *, event: bool = False, published: str | None = None
) -> Body:
    schema = schemas.of_label(label, url, published)
    if url or ("$ref" in schema and not published):  # a $ref without `published`: installed protobuf
        return Body(label, schema, PROTOBUF, url or TYPE_URL_PREFIX + label, named=True)
    content = media_type_of_label(label)  # builtins.str: text, builtins.bytes: bytes, else JSON
    return Body(label, schema, content, named=event and not label.startswith("builtins."))


def _strings(value: object) -> dict[str, str]:
    if not isinstance(value, Mapping):
        return {}
    return {str(k): v for k, v in value.items() if isinstance(v, str)}


def _split(text: str | None) -> list[str]:
    return [part.strip() for part in (text or "").split(",") if part.strip()]


def _loads(text: str) -> dict[str, Any]:
    try:
        found = json.loads(text)
    except ValueError:
        return {}
    return found if isinstance(found, dict) else {}
