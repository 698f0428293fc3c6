"""JSON documents of received NATS messages: a CloudEvent's attributes and data, or a foreign message.

What ``eventmicro tail`` prints and the dashboard's live events show, decoded once, here::

    event_document(msg)    {"nats_subject", "mode", <every attribute>, "data" | "data_base64"}
    foreign_document(msg)  {"nats_subject", "cloudevent": false, "reason", "headers", "data" | ...}

Data becomes JSON where it has a JSON form (`data_to_json`): JSON content, protobuf of an
installed type, text; anything else is base64. The documents hold what the sender sent, as
is: whoever prints them escapes control characters. Pure: no I/O.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

from google.protobuf import json_format
from google.protobuf.message import DecodeError

from eventmicro.wire import binding
from eventmicro.wire import strictjson as strict_json
from eventmicro.wire.media import OCTET_STREAM, essence, is_json, is_protobuf
from eventmicro.wire.types import message_class

__all__ = [
    "ReceivedMessage",
    "data_to_json",
    "event_document",
    "foreign_document",
    "one_line",
    "time_text",
]


class ReceivedMessage(Protocol):
    """A message as received: its subject, headers and data (eventmicro's ``Message`` is one)."""

    @property
    def subject(self) -> str: ...

    @property
    def headers(self) -> Mapping[str, str] | None: ...

    @property
    def data(self) -> bytes: ...


def one_line(text: object) -> str:
    """``text`` with its whitespace (protobuf's multi-line errors) folded into single spaces."""
    return " ".join(str(text).split())


def time_text(value: datetime) -> str:
    """A time as RFC 3339 in UTC, ``Z`` for its offset."""
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def event_document(msg: ReceivedMessage) -> dict[str, Any]:
    """The CloudEvent ``msg`` carries, as JSON: its NATS subject and mode, every attribute and the data.

    Raises what the binding raises (an `EventMicroError`, `ValueError` or `TypeError`) when
    ``msg`` is not a valid CloudEvent.
    """
    mode = binding.detect_mode(msg.headers)
    event = binding.from_nats(msg, None)
    attributes: dict[str, Any] = {}
    for name, value in event.get_attributes().items():
        attributes[name] = time_text(value) if isinstance(value, datetime) else value
    schema = event.get_dataschema()
    key, data = data_to_json(event.get_data(), event.get_datacontenttype(), schema or event.get_type())
    document = {"nats_subject": msg.subject, "mode": mode.value, **attributes, key: data}
    document.update(nats_subject=msg.subject, mode=mode.value)  # not an extension of that name
    return document


def foreign_document(msg: ReceivedMessage, reason: str) -> dict[str, Any]:
    """A message that is not a CloudEvent, as JSON: its subject, ``reason``, headers and data."""
    content_type = next((v for k, v in (msg.headers or {}).items() if k.lower() == "content-type"), None)
    key, data = data_to_json(msg.data, content_type or OCTET_STREAM, None)
    document: dict[str, Any] = {"nats_subject": msg.subject, "cloudevent": False, "reason": reason}
    if msg.headers:
        document["headers"] = dict(msg.headers)
    document[key] = data
    return document


def data_to_json(data: Any, content_type: str | None, type_hint: str | None) -> tuple[str, Any]:
    """Event data as ``("data", JSON value)``, or ``("data_base64", text)`` when it has no JSON form.

    Protobuf data is decoded when its type (``type_hint``: the dataschema or event type) is
    installed; JSON content is read strictly (`eventmicro.wire.strictjson`: NaN, duplicate names or deep
    nesting are shown as the bytes they are, never raise or pass for other JSON); text stays text.
    """
    if not isinstance(data, bytes | bytearray):
        return "data", data  # structured mode: already a JSON value
    data = bytes(data)
    if not data:
        return "data", None
    media = essence(content_type) if content_type else None  # "": no type, as None
    if is_protobuf(media):
        cls = message_class(type_hint) if type_hint else None
        if cls is not None:
            try:
                return "data", json_format.MessageToDict(cls.FromString(data))
            except (DecodeError, RuntimeError, ValueError):
                pass  # not that type after all: shown as bytes
        return "data_base64", base64.b64encode(data).decode("ascii")
    if media is None or is_json(media):
        try:
            return "data", strict_json.loads(data)
        except strict_json.JSONError:
            if media is not None:
                return "data_base64", base64.b64encode(data).decode("ascii")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return "data_base64", base64.b64encode(data).decode("ascii")
    if text.isprintable() or (media is not None and media.startswith("text/")):
        return "data", text
    return "data_base64", base64.b64encode(data).decode("ascii")
