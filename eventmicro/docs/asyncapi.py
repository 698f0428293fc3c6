"""AsyncAPI 3.0.0 documents of eventmicro services, from `Service` objects or from ``$SRV.INFO``.

Both sources are read into one model (`ServiceModel`), which one writer turns into the document::

    channel id               address                        operations
    events.<type>            the event's subject            <service>.publish.<type>  (send)
    (a handler's subject)    that subject, wildcards too    <service>.<handler>       (receive)
    <service>.<endpoint>     the endpoint's subject         <service>.<endpoint>      (receive,
    <service>.<endpoint>.reply   null: the caller's inbox                              with reply)

Messages are binary-mode CloudEvents: the ``ce-*`` headers of the NATS binding are each
message's ``headers`` schema, payloads are `SchemaSet` schemas. An endpoint's reply lists its
reply type(s), the empty reply of a handler that may return ``None``, and the ADR-32 error reply
(``Nats-Service-Error`` / ``Nats-Service-Error-Code`` headers, a JSON body).

What AsyncAPI 3.0 cannot express, said in descriptions instead:

- the reply address: a NATS reply goes to the request's reply subject (an ``_INBOX.`` subject),
  a protocol field that runtime expressions (``$message.header#/...``) cannot reach, so reply
  channels have ``address: null``;
- JetStream delivery (durable and ordered consumers, redelivery, dead letters) and broadcast
  delivery (no queue group): the NATS binding knows only ``queue``;
- NATS wildcards (``*``, ``>``) in a subscription's address;
- the structured content mode (``application/cloudevents+json``), which receivers accept too;
- protobuf payloads are described by their proto3 JSON mapping, which eventmicro also accepts
  as ``application/json``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Final
from urllib.parse import urlsplit

from eventmicro.docs.model import (
    Body,
    Endpoint,
    ServiceModel,
    Subscription,
    component_key,
    read_discovery,
    read_services,
)
from eventmicro.service.service import Service
from eventmicro.wire.codecs import JSON, PROTOBUF
from eventmicro.wire.jsonschema import SchemaSet
from eventmicro.wire.names import consumer_name, dead_letter_subject, event_subject
from eventmicro.wire.service_errors import ERROR_CODE_HEADER, ERROR_HEADER
from eventmicro.wire.trace import CORRELATION_EXTENSION, TIMEOUT_EXTENSION

__all__ = ["asyncapi_for_services", "asyncapi_from_discovery"]

Schema = dict[str, Any]
NATS_BINDING: Final = "0.1.0"
_TRACEPARENT: Final = "^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$"
_INBOX: Final = (
    "The caller's inbox: NATS sends the reply to the request's reply subject (an `_INBOX.` subject), "
    "a protocol field that AsyncAPI runtime expressions cannot reach, so the address is null."
)
ERROR_REPLY: Final[Schema] = {
    "name": "ServiceError",
    "title": "Error reply",
    "summary": "The request failed (NATS Service API error reply, ADR-32).",
    "contentType": JSON,
    "headers": {
        "type": "object",
        "properties": {
            ERROR_HEADER: {"type": "string", "description": "what went wrong, on one line"},
            ERROR_CODE_HEADER: {
                "type": "string",
                "pattern": "^[0-9]+$",
                "description": "an HTTP-like code: 400, 404, 409, 500, 503, 504...",
            },
        },
        "required": [ERROR_HEADER, ERROR_CODE_HEADER],
    },
    "payload": {
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "code": {"type": "integer"},
            "status": {"type": "string"},
            "detail": {"type": "string"},
        },
        "description": "eventmicro services send this body; other ADR-32 services may send the headers only",
    },
}
EMPTY_REPLY: Final[Schema] = {
    "name": "EmptyReply",
    "title": "Empty reply",
    "summary": "No headers and no body: the handler returned nothing.",
}


def asyncapi_for_services(
    services: Sequence[Service], *, title: str | None = None, server: str | None = None
) -> dict[str, Any]:
    """The AsyncAPI 3.0.0 document of ``services`` (a JSON-ready dict).

    ``server``: NATS URL(s), comma-separated, for ``servers`` (credentials are left out).
    Raises `ValueError` for a server URL that cannot be read.

    >>> svc = Service("greeter", version="1.0.0")
    >>> asyncapi_for_services([svc])["info"]["title"]
    'greeter'
    """
    schemas = SchemaSet()
    return _document(read_services(services, schemas), schemas, title, server)


def asyncapi_from_discovery(
    infos: Sequence[Mapping[str, Any]], *, title: str | None = None, server: str | None = None
) -> dict[str, Any]:
    """The AsyncAPI 3.0.0 document of the services in ``$SRV.INFO`` answers (`discover`).

    The instances of a service (same name and version) are one service. Types are found in the
    default protobuf descriptor pool (import the schema modules first); others stay any JSON.
    """
    schemas = SchemaSet()
    return _document(read_discovery(infos, schemas), schemas, title, server)


def _document(
    models: Sequence[ServiceModel], schemas: SchemaSet, title: str | None, server: str | None
) -> dict[str, Any]:
    writer = _Writer()
    names = [m.name for m in models]
    for model in models:
        several = names.count(model.name) > 1  # versions side by side: ids name the version
        writer.service(model, component_key(f"{model.name}-{model.version}" if several else model.name))
    document: dict[str, Any] = {"asyncapi": "3.0.0", "info": _info(models, title)}
    if server:
        document["servers"] = _servers(server)
    document["channels"] = writer.channels
    document["operations"] = writer.operations
    document["components"] = {"schemas": schemas.components, "messages": writer.messages}
    fresh: dict[str, Any] = json.loads(json.dumps(document))  # no part shared with another document
    return fresh


def _info(models: Sequence[ServiceModel], title: str | None) -> Schema:
    versions = {m.version for m in models}
    if len(models) == 1:
        only = models[0]
        text = only.description
        version = only.version
    else:
        text = "\n".join(f"- **{m.name}** {m.version}" + (f": {m.description}" if m.description else "")
                         for m in models)  # fmt: skip
        version = versions.pop() if len(versions) == 1 else ", ".join(f"{m.name} {m.version}" for m in models)
    about = (
        "Messages are CloudEvents in the binary content mode of the NATS protocol binding (ce-* headers); "
        "RPC endpoints follow the NATS Service API (ADR-32)."
    )
    info: Schema = {
        "title": title or (models[0].name if len(models) == 1 else "eventmicro services"),
        "version": version or "0.0.0",
        "description": f"{text}\n\n{about}" if text else about,
    }
    tags = {m.name: {"name": m.name, "description": m.description} if m.description else {"name": m.name}
            for m in reversed(models)}  # fmt: skip
    if tags:
        info["tags"] = list(reversed(tags.values()))
    return info


def _servers(server: str) -> dict[str, Schema]:
    servers: dict[str, Schema] = {}
    for index, url in enumerate(part.strip() for part in server.split(",") if part.strip()):
        parts = urlsplit(url if "://" in url else f"nats://{url}")
        try:
            port = parts.port
        except ValueError:
            raise ValueError(f"{url!r} is not a NATS URL") from None
        if not parts.hostname:
            raise ValueError(f"{url!r} is not a NATS URL")
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        entry: Schema = {"host": f"{host}:{port}" if port else host, "protocol": "nats"}
        if parts.scheme in ("ws", "wss"):
            entry["protocol"] = parts.scheme
        elif parts.scheme == "tls":
            entry["description"] = "TLS"
        servers["nats" if index == 0 else f"nats-{index + 1}"] = entry
    if not servers:
        raise ValueError("no NATS URL given")
    return servers


class _Writer:
    """Channels, operations and messages of the document, filled service by service."""

    def __init__(self) -> None:
        self.channels: dict[str, Schema] = {}
        self.operations: dict[str, Schema] = {}
        self.messages: dict[str, Schema] = {}
        self._events: dict[str, str] = {}  # subject -> channel id

    def service(self, model: ServiceModel, prefix: str) -> None:
        tags = [{"name": model.name}]
        for body in model.publishes:
            channel = self._event_channel(event_subject(body.type))
            self.operations[_unique(self.operations, f"{prefix}.publish.{body.type}")] = {
                "action": "send",
                "channel": {"$ref": f"#/channels/{channel}"},
                "messages": [self._message(channel, component_key(body.type), _event(body))],
                "summary": f"{model.name} publishes {body.type}.",
                "description": "Published on the event's default subject; a durable publish (JetStream) "
                "also carries a Nats-Msg-Id header for deduplication.",
                "tags": tags,
            }
        for sub in model.subscriptions:
            channel = self._event_channel(sub.subject)
            operation: Schema = {
                "action": "receive",
                "channel": {"$ref": f"#/channels/{channel}"},
                "messages": [self._message(channel, component_key(b.type), _event(b)) for b in sub.events],
                "summary": f"{model.name}.{sub.name} handles {', '.join(b.type for b in sub.events)}.",
                "description": _delivery(model.name, sub),
                "tags": tags,
            }
            if sub.queue_group:
                operation["bindings"] = {"nats": {"queue": sub.queue_group, "bindingVersion": NATS_BINDING}}
            self.operations[_unique(self.operations, f"{prefix}.{sub.name}")] = operation
        for endpoint in model.endpoints:
            self._endpoint(model, endpoint, prefix, tags)

    def _endpoint(self, model: ServiceModel, endpoint: Endpoint, prefix: str, tags: list[Schema]) -> None:
        base = f"{prefix}.{endpoint.name}"
        channel = _unique(self.channels, base)
        self.channels[channel] = {
            "address": endpoint.subject,
            "messages": {},
            "description": f"Requests to endpoint {endpoint.name} of service {model.name}.",
        }
        request = self._message(channel, f"{base}.request", _request(endpoint, model.name))
        inbox = _unique(self.channels, f"{channel}.reply")
        self.channels[inbox] = {"address": None, "messages": {}, "description": _INBOX}
        several = len(endpoint.replies) > 1
        replies = [
            self._message(inbox, f"{base}.reply" + (f".{b.type}" if several else ""), _reply(b, endpoint))
            for b in endpoint.replies
        ]
        if endpoint.may_be_empty:
            replies.append(self._message(inbox, "eventmicro.EmptyReply", EMPTY_REPLY))
        replies.append(self._message(inbox, "eventmicro.ServiceError", ERROR_REPLY))
        types_ = " | ".join([b.type or "?" for b in endpoint.replies] + ["None"] * endpoint.may_be_empty)
        text = (
            f"Request/reply (NATS Service API): a request on {endpoint.subject} is answered on the caller's "
            "inbox with the reply, or with an error reply (Nats-Service-Error headers)."
        )
        if endpoint.queue_group:
            text += f" The instances share queue group {endpoint.queue_group}: each request reaches one."
        if endpoint.idempotent:
            text += " Idempotent: callers may retry it after a timeout."
        if not endpoint.cloudevents:
            text += " A service that does not describe its payloads (not eventmicro)."
        operation: Schema = {
            "action": "receive",
            "channel": {"$ref": f"#/channels/{channel}"},
            "messages": [request],
            "reply": {"channel": {"$ref": f"#/channels/{inbox}"}, "messages": replies},
            "summary": f"{model.name}.{endpoint.name}: {endpoint.request.type or '?'} -> {types_}",
            "description": text,
            "tags": tags,
        }
        if endpoint.queue_group:
            operation["bindings"] = {"nats": {"queue": endpoint.queue_group, "bindingVersion": NATS_BINDING}}
        self.operations[_unique(self.operations, base)] = operation

    def _event_channel(self, subject: str) -> str:
        channel = self._events.get(subject)
        if channel is None:
            channel = self._events[subject] = _unique(
                self.channels, subject.replace(">", "_all").replace("*", "_any")
            )
            text = f"Events on NATS subject {subject}."
            if "*" in subject or ">" in subject:
                text += (
                    " A NATS wildcard subject (`*`: one token, `>`: one or more): the handler receives the "
                    "events of every matching subject, told apart by ce-type."
                )
            self.channels[channel] = {"address": subject, "messages": {}, "description": text}
        return channel

    def _message(self, channel: str, key: str, message: Schema) -> Schema:
        key = component_key(key)
        self.messages.setdefault(key, message)
        self.channels[channel]["messages"][key] = {"$ref": f"#/components/messages/{key}"}
        return {"$ref": f"#/channels/{channel}/messages/{key}"}


def _delivery(service: str, sub: Subscription) -> str:
    if sub.delivery == "durable":
        consumer = sub.consumer or consumer_name(service, sub.name)
        return (
            f"JetStream durable consumer {consumer}, shared by the instances: each event reaches one, "
            "is acked after the handler returns, redelivered after a failure, and dead-lettered to "
            f"{dead_letter_subject(service, sub.name)} after the last attempt (at least once).{sub.detail}"
        )
    if sub.delivery == "ordered":
        return (
            "A JetStream ordered consumer per instance: every instance reads every stored event on the "
            f"subject, in order (for projections).{sub.detail}"
        )
    if sub.delivery != "core":
        return "Event handler; its delivery (queue group, JetStream) is not reported by the service."
    if sub.queue_group:
        return f"Core NATS, queue group {sub.queue_group}: each event reaches one instance (at most once)."
    return "Core NATS without a queue group (broadcast): every instance gets every event (at most once)."


def _event(body: Body) -> Schema:
    extra = {
        "Nats-Msg-Id": {"type": "string", "description": "JetStream deduplication id (durable publishes)"}
    }
    return _cloud_message(body, f"A {body.type} event.", extra)


def _request(endpoint: Endpoint, service: str) -> Schema:
    if not endpoint.cloudevents:
        return {"name": f"{service}.{endpoint.name}.request", "payload": endpoint.request.schema}
    budget = {
        f"ce-{TIMEOUT_EXTENSION}": {
            "type": "string",
            "pattern": "^[0-9]+$",
            "description": "the caller's remaining time in milliseconds (extension timeoutms); "
            "past it the service answers 504 without running the handler",
        }
    }
    return _cloud_message(endpoint.request, f"A request to {service}.{endpoint.name}.", budget)


def _reply(body: Body, endpoint: Endpoint) -> Schema:
    if not endpoint.cloudevents:
        return {"name": f"{endpoint.name}.reply", "payload": body.schema}
    return _cloud_message(body, f"The reply of {endpoint.name}.", {})


def _cloud_message(body: Body, summary: str, extra: Mapping[str, Schema]) -> Schema:
    message: Schema = {"name": body.type, "title": body.type.rpartition(".")[2], "summary": summary}
    if body.content_type:
        message["contentType"] = body.content_type
    message["headers"] = _headers(body, extra)
    message["payload"] = body.schema
    if body.content_type == PROTOBUF:
        message["description"] = (
            "The body is the serialized protobuf message; the payload schema is its proto3 JSON "
            "mapping, which eventmicro also accepts as application/json."
        )
    return message


def _headers(body: Body, extra: Mapping[str, Schema]) -> Schema:
    string: Schema = {"type": "string"}
    properties: dict[str, Schema] = {
        "ce-specversion": {"type": "string", "const": "1.0"},
        "ce-id": {"type": "string", "description": "unique for its source"},
        "ce-source": {"type": "string", "format": "uri-reference", "description": "the sender, /<service>"},
        "ce-type": {"type": "string", "const": body.type}
        if body.named
        else {"type": "string", "description": f"eventmicro sends {body.type}"},
        "ce-time": {"type": "string", "format": "date-time", "description": "RFC 3339"},
        "ce-subject": string,
        "ce-datacontenttype": {"type": "string", "const": body.content_type} if body.content_type else string,
        "ce-dataschema": {"type": "string", "const": body.dataschema} if body.dataschema else string,
        f"ce-{CORRELATION_EXTENSION}": {
            "type": "string",
            "description": "ties the requests and events of "
            "one piece of work together (extension correlationid)",
        },
        "ce-traceparent": {"type": "string", "pattern": _TRACEPARENT, "description": "W3C trace context"},
        "ce-tracestate": string,
        "traceparent": {"type": "string", "pattern": _TRACEPARENT, "description": "a copy of ce-traceparent"},
        "tracestate": {"type": "string", "description": "a copy of ce-tracestate"},
        **extra,
    }
    return {
        "type": "object",
        "properties": properties,
        "required": ["ce-specversion", "ce-id", "ce-source", "ce-type"],
        "description": "CloudEvents NATS binding, binary mode: one ce-<attribute> header per attribute, "
        "values percent-encoded where needed. Structured mode (Content-Type: "
        "application/cloudevents+json, the event as JSON) is accepted too.",
    }


def _unique(taken: Mapping[str, object], wanted: str) -> str:
    key = component_key(wanted)
    candidate, n = key, 1
    while candidate in taken:
        n += 1
        candidate = f"{key}-{n}"
    return candidate
