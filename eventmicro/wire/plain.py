"""Bare payloads from plain NATS clients: told from CloudEvents, read by the handler's type.

A request or event that carries no CloudEvent (what ``nats req``, plain nats-py or another
framework sends) is read as the handler's declared type::

    ce-specversion header?  --yes--> binary-mode CloudEvent (eventmicro's own; the hot path)
      | no
    another ce-* header, or Content-Type application/cloudevents*?  --yes--> a CloudEvent
      | no                                                                   (its errors named)
    a JSON object with a top-level "specversion"?  --yes--> structured CloudEvent (sdk-go)
      | no
    a bare payload: Content-Type, when present, says how to read it (application/json,
    application/protobuf, text/*, ...); without one the handler's type decides: protobuf
    types read binary protobuf (a JSON object falls back to the protobuf JSON mapping),
    JSON types (dataclass, pydantic, dict, list) parse JSON, bytes and str take the body.

A bare request is answered in kind: no ``ce-*`` headers, a ``Content-Type`` header, and the
request's encoding (a protobuf reply to a JSON request is written in the protobuf JSON
mapping). Error replies are the usual ones (``Nats-Service-Error`` headers, a JSON body).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Final

from google.protobuf import json_format
from google.protobuf.message import Message

from eventmicro._errors import PayloadDecodeError, PayloadEncodeError
from eventmicro.wire import strictjson as strict_json
from eventmicro.wire.codecs import decode_payload, encode_payload
from eventmicro.wire.media import JSON, PROTOBUF, is_json
from eventmicro.wire.message import CONTENT_TYPE_HEADER, NATSMessage, SupportsNATSMessage

__all__ = ["Bare", "bare_payload", "bare_reply", "decode_bare"]

_NOT_JSON: Final = object()


@dataclass(frozen=True, slots=True)
class Bare:
    """A payload that is not a CloudEvent: its body, its ``Content-Type`` (if any), and the
    body parsed as JSON when it is a JSON object (else ``None``)."""

    data: bytes
    content_type: str | None
    document: dict[str, Any] | None


def bare_payload(message: SupportsNATSMessage) -> Bare | None:
    """The bare payload of ``message``, or ``None`` when it is a CloudEvent in any mode (see
    the module docstring for the rule)."""
    headers = message.headers
    content_type = None
    if headers:
        for name, value in headers.items():
            lowered = name.lower()
            if lowered.startswith("ce-"):
                return None
            if lowered == "content-type":
                content_type = value
        if content_type is not None and content_type.strip().lower().startswith("application/cloudevents"):
            return None
    data = message.data
    document = None
    if data.lstrip()[:1] == b"{":
        try:
            parsed = strict_json.loads(data)
        except strict_json.JSONError:
            parsed = _NOT_JSON
        if isinstance(parsed, dict):
            if "specversion" in parsed:
                return None  # a structured-mode CloudEvent without its Content-Type
            document = parsed
    return Bare(data, content_type, document)


def decode_bare(bare: Bare, target: type) -> tuple[Any, str | None]:
    """The payload as ``target``, and the media type a reply is written in (``None``: the
    reply's own codec). Raises a `PayloadError` naming what is wrong."""
    content_type = bare.content_type
    if content_type is not None and content_type.strip():
        value: Any = decode_payload(bare.data, content_type.strip(), target)
        return value, (JSON if is_json(content_type) else None)
    if isinstance(target, type) and issubclass(target, Message):
        try:
            return decode_payload(bare.data, PROTOBUF, target), PROTOBUF
        except PayloadDecodeError:
            if bare.document is None:
                raise
        return decode_payload(bare.document, None, target), JSON  # the protobuf JSON mapping
    return decode_payload(bare.data, None, target), None


def bare_reply(result: object, media: str | None) -> NATSMessage:
    """``result`` written for a plain client: the body and a ``Content-Type`` header only.

    Raises `PayloadEncodeError` when no codec can write it.
    """
    if media == JSON and isinstance(result, Message):
        try:
            document = json_format.MessageToDict(result)
            body = json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        except (ValueError, TypeError, RecursionError) as exc:
            raise PayloadEncodeError(f"{result.DESCRIPTOR.full_name} has no JSON form") from exc
        return NATSMessage({CONTENT_TYPE_HEADER: JSON}, body)
    payload = encode_payload(result)
    return NATSMessage({CONTENT_TYPE_HEADER: payload.content_type}, payload.data)
