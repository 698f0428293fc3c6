"""Structured content mode: the whole event as one JSON document (JSON event format §2-§4)."""

from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime
from typing import Any, overload

from cloudevents.core.base import BaseCloudEvent, EventFactory
from cloudevents.core.exceptions import BaseCloudEventException
from cloudevents.core.formats.base import Format
from cloudevents.core.formats.json import JSONFormat

from eventmicro._errors import (
    EnvelopeError,
    InvalidAttribute,
    MissingAttribute,
    StructuredFormatError,
)
from eventmicro.wire import strictjson as strict_json
from eventmicro.wire.attributes import (
    CORE_ATTRIBUTES,
    REQUIRED_ATTRIBUTES,
    check_attribute_name,
    check_string,
)
from eventmicro.wire.clock import format_time, parse_time
from eventmicro.wire.event import Event, _build
from eventmicro.wire.message import (
    _MAX_NAME,
    CONTENT_TYPE_HEADER,
    STRUCTURED_CONTENT_TYPE,
    NATSMessage,
    SupportsNATSMessage,
    _check_required,
    _warn_long_name,
    is_json_content_type,
)

__all__ = ["from_structured", "to_structured"]

# --- structured mode ----------------------------------------------------------------------


def to_structured(event: BaseCloudEvent, event_format: Format | None) -> NATSMessage:
    """Structured mode: ``Content-Type: application/cloudevents+json`` and the whole event as JSON.

    With the JSON format (or ``None``), bytes data with a JSON content type is embedded as a
    JSON value in ``data``; other bytes go to ``data_base64``. Another `Format` writes the
    body itself and names its own content type.
    """
    if event_format is not None and not isinstance(event_format, JSONFormat):
        try:
            body = event_format.write(event)
        except (ValueError, TypeError) as exc:
            raise EnvelopeError(f"the event format could not write the event: {exc}") from exc
        return NATSMessage({CONTENT_TYPE_HEADER: event_format.get_content_type()}, body)
    document: dict[str, Any] = {}
    attributes = event.get_attributes()
    for name in REQUIRED_ATTRIBUTES:
        if attributes.get(name) is None:
            raise MissingAttribute(name)
    for name, value in attributes.items():
        if value is None:
            continue
        if name not in CORE_ATTRIBUTES:
            check_attribute_name(name)
            if len(name) > _MAX_NAME:
                _warn_long_name(name)
        document[name] = _json_attribute(name, value)
    _put_data(document, event.get_data(), attributes.get("datacontenttype"))
    try:
        text = json.dumps(document, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        body = text.encode("utf-8")
    except (TypeError, ValueError, RecursionError) as exc:  # UnicodeEncodeError is a ValueError
        raise EnvelopeError(f"event data is not JSON-serializable: {exc}") from exc
    return NATSMessage({CONTENT_TYPE_HEADER: STRUCTURED_CONTENT_TYPE}, body)


@overload
def from_structured(
    message: SupportsNATSMessage, event_format: Format | None, event_factory: None = None
) -> Event: ...


@overload
def from_structured(
    message: SupportsNATSMessage, event_format: Format | None, event_factory: EventFactory
) -> BaseCloudEvent: ...


def from_structured(
    message: SupportsNATSMessage,
    event_format: Format | None,
    event_factory: EventFactory | None = None,
) -> BaseCloudEvent:
    """Read a structured-mode message (a UTF-8 JSON object; ``null`` members mean unset)."""
    if event_format is not None and not isinstance(event_format, JSONFormat):
        try:
            return event_format.read(event_factory or Event, message.data)
        except EnvelopeError:
            raise
        except (ValueError, TypeError, KeyError, BaseCloudEventException) as exc:
            raise StructuredFormatError(f"structured event could not be read: {exc}") from exc
    try:
        document = strict_json.loads(message.data)
    except strict_json.JSONError as exc:
        raise StructuredFormatError(f"structured event body is not valid JSON ({exc})") from exc
    if not isinstance(document, dict):
        raise StructuredFormatError(
            f"structured event body must be a JSON object, not {_json_type(document)}"
        )
    if document.get("data") is not None and document.get("data_base64") is not None:
        raise StructuredFormatError("'data' and 'data_base64' are mutually exclusive")
    data: Any = document.pop("data", None)
    encoded = document.pop("data_base64", None)
    if encoded is not None:
        if not isinstance(encoded, str):
            raise StructuredFormatError("'data_base64' must be a string")
        try:
            data = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise StructuredFormatError("'data_base64' is not valid base64") from exc
    attributes: dict[str, Any] = {}
    for name, value in document.items():
        if value is None:
            continue
        check_attribute_name(name)
        attributes[name] = _read_json_attribute(name, value)
    _check_required(attributes)
    # JSON values stay as parsed; a JSON string stays a string, never re-parsed (§3.1.2).
    return _build(event_factory, attributes, data)


def _json_attribute(name: str, value: Any) -> Any:
    if isinstance(value, str):
        if not value:
            raise InvalidAttribute(name, "must not be empty")
        check_string(name, value)
        return value
    if isinstance(value, bool | int):
        return value
    if isinstance(value, datetime):
        return format_time(value)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    raise InvalidAttribute(name, f"type {type(value).__name__} has no CloudEvents JSON form")


def _read_json_attribute(name: str, value: Any) -> Any:
    if isinstance(value, str):
        if not value:
            raise InvalidAttribute(name, "must not be empty")
        check_string(name, value)
        if name == "time":
            return parse_time(name, value)
        return value
    if name in CORE_ATTRIBUTES:
        raise InvalidAttribute(name, f"must be a string, not {_json_type(value)}")
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        if not -(2**31) <= value < 2**31:
            raise InvalidAttribute(name, "integers must fit in 32 signed bits")
        return value
    raise InvalidAttribute(
        name, f"extension values must be strings, integers or booleans, not {_json_type(value)}"
    )


def _json_type(value: Any) -> str:
    """What a JSON value is, in JSON's words."""
    if value is None:
        return "null"
    return {
        dict: "an object",
        list: "an array",
        str: "a string",
        bool: "a boolean",
        int: "a number",
        float: "a number with a fraction",
    }.get(type(value), "a value of another kind")


def _put_data(document: dict[str, Any], data: Any, content_type: Any) -> None:
    if data is None:
        return
    if isinstance(data, bytes | bytearray):
        # Bytes labelled JSON travel as a JSON value (no base64 of JSON); any other bytes, and
        # bytes with no content type at all, go to data_base64 (JSON format §3.1.1).
        if content_type is not None and is_json_content_type(content_type):
            try:
                document["data"] = strict_json.loads(bytes(data))
                return
            except strict_json.JSONError:
                pass  # not JSON after all: keep it lossless as base64
        document["data_base64"] = base64.b64encode(data).decode("ascii")
    else:
        document["data"] = data
