"""Typed calls from discovery alone: an endpoint's types from ``$SRV.INFO``, requests built from JSON.

Shared by ``eventmicro call`` and the HTTP gateway, which both call services whose Python
code they do not have::

    $SRV.INFO.orders -> endpoint place: subject orders.place,
                        metadata eventmicro.request_schema = type.googleapis.com/shop.orders.v1.PlaceOrder
    JSON {"customerId": "c-1"} -> PlaceOrder (protobuf JSON mapping) -> Client.call -> OrderAccepted -> JSON

Protobuf types are looked up among the installed schema modules (`load_schemas`); endpoints
whose types are not protobuf get the JSON as it is. Only `service_info` does I/O.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping
from typing import Any, Final

from google.protobuf import json_format
from google.protobuf.message import Message

from eventmicro._errors import EventMicroError, NoResponders, Timeout
from eventmicro.transport.connection import Connection
from eventmicro.wire import strictjson as strict_json
from eventmicro.wire.codecs import TYPE_URL_PREFIX, event_type, unknown_field
from eventmicro.wire.types import message_class

__all__ = [
    "EndpointNotFound",
    "RequestInvalid",
    "TypeNotInstalled",
    "build_request",
    "endpoint_metadata",
    "find_endpoint",
    "parse_message",
    "protobuf_type",
    "reply_to_json",
    "reply_type",
    "service_info",
]

SERVICE_NAME: Final = re.compile(r"[A-Za-z0-9\-_]+")
_TYPE_NAME: Final = re.compile(r"[A-Za-z_][\w.]*")


class EndpointNotFound(EventMicroError, LookupError):
    """No such service, or the service has no such endpoint."""


class TypeNotInstalled(EventMicroError, LookupError):
    """The endpoint's protobuf type is not among the installed schema modules."""

    def __init__(self, role: str, name: str) -> None:
        super().__init__(f"the {role} type {name} is not installed")
        self.role = role
        self.name = name


class RequestInvalid(EventMicroError, ValueError):
    """A request (or event data) that does not fit its type."""


async def service_info(connection: Connection, service: str, timeout: float) -> dict[str, Any]:
    """The ``$SRV.INFO`` answer of the first instance of ``service`` to answer.

    Raises `EndpointNotFound` when no instance answers within ``timeout`` or the answer is not
    a JSON object.
    """
    if not SERVICE_NAME.fullmatch(service):
        raise EndpointNotFound(f"{service!r} is not a service name")
    try:
        answer = await connection.request(f"$SRV.INFO.{service}", b"", timeout=timeout)
    except (NoResponders, Timeout) as exc:
        raise EndpointNotFound(f"no service named {service!r} answers") from exc
    try:
        info = strict_json.loads(answer.data)
    except ValueError:
        info = None
    if not isinstance(info, dict):
        raise EndpointNotFound(f"service {service!r} answered $SRV.INFO with something that is not JSON")
    return info


def find_endpoint(info: Mapping[str, Any], service: str, endpoint: str) -> dict[str, Any]:
    """The endpoint ``endpoint`` (its name, or its subject ``service.endpoint``) of a ``$SRV.INFO`` answer."""
    listed = info.get("endpoints")
    endpoints = [e for e in listed if isinstance(e, dict)] if isinstance(listed, list) else []
    for candidate in endpoints:
        if candidate.get("name") == endpoint or candidate.get("subject") == f"{service}.{endpoint}":
            return candidate
    names = ", ".join(sorted(str(e.get("name")) for e in endpoints)) or "none"
    raise EndpointNotFound(f"service {service!r} has no endpoint {endpoint!r} (its endpoints: {names})")


def endpoint_metadata(endpoint: Mapping[str, Any]) -> dict[str, str]:
    """An endpoint's ``metadata`` from ``$SRV.INFO``, its string values only (ADR-32 says a map of
    strings; a foreign service may answer anything, and the gateway reads it for every call)."""
    metadata = endpoint.get("metadata")
    if not isinstance(metadata, Mapping):
        return {}
    return {str(key): value for key, value in metadata.items() if isinstance(value, str)}


def protobuf_type(metadata: Mapping[str, str], role: str) -> type[Message] | None:
    """The protobuf class of the endpoint's ``role`` ("request" or "reply"), ``None`` when not protobuf.

    Raises `TypeNotInstalled` when the metadata names a protobuf type that is not installed.
    """
    schema = metadata.get(f"eventmicro.{role}_schema")
    if schema:
        cls = message_class(schema)
        if cls is None:
            raise TypeNotInstalled(role, schema.removeprefix(TYPE_URL_PREFIX))
        return cls
    label = metadata.get(f"eventmicro.{role}")  # a foreign service may name a protobuf type here
    return message_class(label) if label and _TYPE_NAME.fullmatch(label) else None


def parse_message(value: Any, cls: type[Message], what: str) -> Message:
    """A protobuf message from parsed JSON (the protobuf JSON mapping; unknown fields fail)."""
    name = cls.DESCRIPTOR.full_name
    if not isinstance(value, dict) and not name.startswith("google.protobuf."):
        raise RequestInvalid(f"{what} for {name} must be a JSON object, not {_json_kind(value)}")
    unknown = unknown_field(value, cls.DESCRIPTOR)
    if unknown is not None:
        raise RequestInvalid(f"{what} does not fit {name}: {unknown} is not a field of {name}")
    try:
        return json_format.ParseDict(value, cls())
    except (json_format.ParseError, ValueError, TypeError, RecursionError) as exc:
        raise RequestInvalid(f"{what} does not fit {name}: {_field_problem(exc)}") from exc


_FAILED_FIELD: Final = re.compile(r"Failed to parse (\w+) field")


def _field_problem(exc: Exception) -> str:
    """Which field of a protobuf JSON parse failed, in the schema's words. protobuf's own text
    is not passed on: it speaks Python (``['sku', 'quantity']``, ``Bool value True``) and
    quotes the sender's value back whole (a 4,300-digit number)."""
    path = ".".join(_FAILED_FIELD.findall(str(exc)))  # field names come from the descriptor
    if path:
        return f"{path}: a value of the wrong type or out of range"
    return "a field has a value of the wrong type or out of range"


def build_request(value: Any, metadata: Mapping[str, str]) -> object:
    """The request object for parsed JSON ``value``: a protobuf message, or JSON typed by the label."""
    cls = protobuf_type(metadata, "request")
    if cls is not None:
        return parse_message(value, cls, "the request")
    label = metadata.get("eventmicro.request")
    if isinstance(value, dict | list):  # sent as application/json, typed as the endpoint's request
        if not label or not _TYPE_NAME.fullmatch(label) or label in ("builtins.dict", "builtins.list"):
            return value
        typed: type[Any] = type("JSONRequest", (dict if isinstance(value, dict) else list,), {})
        return event_type(label)(typed)(value)
    if isinstance(value, str):
        return value  # text/plain, for endpoints that take a str
    raise RequestInvalid(f"the request must be a JSON object, array or string, not {json.dumps(value)}")


def reply_type(metadata: Mapping[str, str]) -> type[Any]:
    """What to decode the endpoint's reply as: its protobuf class, ``str``, ``bytes``, ``None`` or JSON."""
    cls = protobuf_type(metadata, "reply")
    if cls is not None:
        return cls
    label = metadata.get("eventmicro.reply")
    simple: dict[str | None, type[Any]] = {"none": type(None), "builtins.str": str, "builtins.bytes": bytes}
    return simple.get(label, object)


def reply_to_json(reply: object) -> Any:
    """A decoded reply as a JSON value (protobuf by its JSON mapping, bytes as base64)."""
    if isinstance(reply, Message):
        return json_format.MessageToDict(reply)
    if isinstance(reply, bytes):
        return base64.b64encode(reply).decode("ascii")
    return reply


def _json_kind(value: Any) -> str:
    kinds = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    return kinds.get(type(value), "a number")
