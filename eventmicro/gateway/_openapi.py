"""The gateway's OpenAPI 3.1 document, built from ``$SRV.INFO`` answers alone.

One operation per discovered endpoint, ``POST /api/{service}/{endpoint}``, with the request
and reply schemas of its types (protobuf types installed in the gateway get full schemas,
others are described by their label); ``POST /events/{type}`` for publishing. Instances of
one service are merged; when they run different versions, the endpoints of all of them are
listed and the versions named.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from eventmicro.gateway._config import GatewayConfig
from eventmicro.service.endpoints import endpoint_metadata
from eventmicro.wire.jsonschema import SchemaSet
from eventmicro.wire.names import EVENT_PREFIX, MAX_SUBJECT_LENGTH, event_subject

__all__ = ["openapi_document"]

OPENAPI_VERSION: Final = "3.1.0"
ERROR_SCHEMA: Final = "eventmicro.gateway.Error"
MIN_TIMEOUT: Final = 0.1  # seconds: the X-Timeout the schema asks for at least (the gateway takes > 0)
# a NATS subject token as the gateway checks it (eventmicro.wire.names.check_subject): printable
# ASCII but '.', '*' and '>'; in the {type} path segment also not '/'
_SUBJECT_WORD: Final = "[!-)+,\\-/-=?-~]+"
_TYPE_WORD: Final = "[!-)+,\\-0-=?-~]+"
_ERRORS: Final = {
    "400": "the body is not JSON or does not fit the request type",
    "404": "no such service or endpoint (or the service's own not-found error)",
    "406": "the reply cannot be given in the media type asked for",
    "409": "a conflict reported by the service",
    "413": "the body is larger than the gateway's limit",
    "415": "a body that is neither JSON nor protobuf",
    "500": "the service failed",
    "501": "the gateway does not have the endpoint's protobuf type installed",
    "502": "the service's reply could not be decoded, or its endpoint's subject cannot be called",
    "503": "no instance of the service answers",
    "504": "the service did not answer in time",
}

_CLIENT_ERRORS: Final = {  # with a clients file (GatewayConfig.clients)
    "401": "no bearer token, or not a client's",
    "403": "out of the client's scope",
    "429": "over the client's rate: try again after Retry-After seconds",
}


def openapi_document(
    infos: Sequence[Mapping[str, Any]], config: GatewayConfig, *, version: str
) -> dict[str, Any]:
    """The OpenAPI document of the services that answered ``$SRV.INFO``."""
    schemas = SchemaSet("#/components/schemas/")
    paths: dict[str, Any] = {}
    tags = []
    for name, service in sorted(_merge(infos).items()):
        versions = ", ".join(sorted(service["versions"]))
        tags.append({"name": name, "description": service["description"] or f"{name} {versions}"})
        for endpoint in sorted(service["endpoints"].values(), key=lambda e: str(e.get("name"))):
            path = f"/api/{name}/{endpoint.get('name')}"
            paths[path] = {"post": _operation(name, endpoint, schemas, versions, config)}
    paths["/events/{type}"] = {"post": _publish_operation()}
    components: dict[str, Any] = {"schemas": {**schemas.components, ERROR_SCHEMA: _error_schema()}}
    document: dict[str, Any] = {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "eventmicro gateway",
            "version": version,
            "description": "Services found by NATS $SRV discovery, called over NATS request-reply.",
        },
        "tags": tags,
        "paths": paths,
        "components": components,
    }
    if config.token is not None or config.clients:
        components["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
        document["security"] = [{"bearer": []}]
    return document


def _merge(infos: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    services: dict[str, dict[str, Any]] = {}
    for info in infos:
        name = info.get("name")
        if not isinstance(name, str):
            continue
        service = services.setdefault(name, {"versions": set(), "description": "", "endpoints": {}})
        service["versions"].add(str(info.get("version") or "?"))
        service["description"] = service["description"] or str(info.get("description") or "")
        listed = info.get("endpoints")
        for endpoint in listed if isinstance(listed, list) else []:
            if isinstance(endpoint, dict) and isinstance(endpoint.get("name"), str):
                service["endpoints"].setdefault(endpoint["name"], endpoint)
    return services


def _operation(
    service: str, endpoint: Mapping[str, Any], schemas: SchemaSet, versions: str, config: GatewayConfig
) -> dict[str, Any]:
    metadata = endpoint_metadata(endpoint)
    name = str(endpoint.get("name"))
    subject = str(endpoint.get("subject") or f"{service}.{name}")
    request_label = metadata.get("eventmicro.request")
    reply_label = metadata.get("eventmicro.reply")
    request_url = metadata.get("eventmicro.request_schema")
    reply_url = metadata.get("eventmicro.reply_schema")
    request_content: dict[str, Any] = {
        "application/json": {
            "schema": schemas.of_label(
                request_label, request_url, metadata.get("eventmicro.request_json_schema")
            )
        }
    }
    if request_url:
        request_content["application/protobuf"] = {"schema": {"type": "string", "format": "binary"}}
    responses: dict[str, Any] = {}
    if reply_label == "none":
        responses["204"] = {"description": "done; the endpoint answers nothing"}
    else:
        reply_content: dict[str, Any] = {
            "application/json": {
                "schema": schemas.of_label(
                    reply_label, reply_url, metadata.get("eventmicro.reply_json_schema")
                )
            }
        }
        if reply_url:
            reply_content["application/protobuf"] = {"schema": {"type": "string", "format": "binary"}}
        responses["200"] = {
            "description": f"the reply ({reply_label or 'any JSON'})",
            "content": reply_content,
        }
    errors = {**_ERRORS, **_CLIENT_ERRORS} if config.clients else _ERRORS
    for status, description in sorted(errors.items()):
        responses[status] = {"description": description, "content": _error_content()}
    idempotent = metadata.get("eventmicro.idempotent") == "true"
    return {
        "operationId": f"{service}.{name}",
        "tags": [service],
        "summary": f"call {subject}",
        "description": (
            f"NATS request-reply on `{subject}` (queue group `{endpoint.get('queue_group')}`), "
            f"service versions {versions}. Request type `{request_label}`, reply type `{reply_label}`."
            + (" Idempotent: retried after a lost attempt." if idempotent else "")
        ),
        "parameters": [
            {
                "name": "X-Timeout",
                "in": "header",
                "required": False,
                "description": (
                    f"seconds the call may take, capped at {config.max_timeout:g} (default "
                    f"{config.default_timeout:g}); the gateway takes any positive number, the schema "
                    f"asks for at least {MIN_TIMEOUT:g} s, enough for a reply to arrive"
                ),
                "schema": {"type": "number", "minimum": MIN_TIMEOUT},
            }
        ],
        "requestBody": {"required": False, "content": request_content},
        "responses": responses,
    }


def _publish_operation() -> dict[str, Any]:
    accepted = {
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "source": {"type": "string"},
            "type": {"type": "string"},
            "subject": {"type": "string"},
            "stream": {"type": "string"},
            "seq": {"type": "integer"},
            "duplicate": {"type": "boolean"},
        },
        "required": ["id", "source", "type", "subject"],
    }
    return {
        "operationId": "events.publish",
        "tags": ["events"],
        "summary": "publish a CloudEvent on events.{type}",
        "description": (
            "The body is the event's data (JSON, or protobuf when the type is installed), or a "
            "whole CloudEvent in HTTP binary mode (ce-* headers) or structured mode "
            "(application/cloudevents+json, or a -batch+json array), forwarded unchanged."
        ),
        "parameters": [
            {
                "name": "type",
                "in": "path",
                "required": True,
                "description": "the CloudEvent type; with no ?subject=, it must make a NATS subject",
                "schema": {
                    "type": "string",
                    "pattern": f"^{_TYPE_WORD}(\\.{_TYPE_WORD})*$",
                    "maxLength": MAX_SUBJECT_LENGTH - len(event_subject("")),
                },
            },
            {"name": "durable", "in": "query", "required": False, "schema": {"type": "boolean"}},
            {
                "name": "subject",
                "in": "query",
                "required": False,
                "description": f"a NATS subject under {EVENT_PREFIX}. (no wildcards), not events.<type>",
                "schema": {
                    "type": "string",
                    "pattern": f"^{EVENT_PREFIX}(\\.{_SUBJECT_WORD})+$",
                    "maxLength": MAX_SUBJECT_LENGTH,
                },
            },
        ],
        "requestBody": {
            "required": False,
            "content": {
                "application/json": {"schema": {}},
                "application/protobuf": {"schema": {"type": "string", "format": "binary"}},
                "application/cloudevents+json": {"schema": {"type": "object"}},
                "application/cloudevents-batch+json": {
                    "schema": {"type": "array", "items": {"type": "object"}}
                },
            },
        },
        "responses": {
            "202": {"description": "published", "content": {"application/json": {"schema": accepted}}},
            "201": {
                "description": "stored by a stream",
                "content": {"application/json": {"schema": accepted}},
            },
            "400": {"description": "not a valid event", "content": _error_content()},
            "413": {"description": "too large", "content": _error_content()},
            "503": {"description": "no stream stored it (durable)", "content": _error_content()},
        },
    }


def _error_content() -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": f"#/components/schemas/{ERROR_SCHEMA}"}}}


def _error_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "id", "detail"],
                "properties": {
                    "code": {"type": "integer", "description": "the HTTP status"},
                    "status": {"type": "string"},
                    "id": {"type": "string", "description": "the kind of error, e.g. eventmicro.NotFound"},
                    "detail": {"type": "string"},
                },
            }
        },
    }
