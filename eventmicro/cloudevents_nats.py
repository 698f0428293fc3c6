"""CloudEvents NATS protocol binding (spec 1.0.3-wip): events to and from NATS messages.

Usable on its own with plain nats-py: it does no I/O. Functions mirror
``cloudevents.core.bindings.http``::

    binary mode                              structured mode
    HPUB subject                             HPUB subject
      ce-specversion: 1.0                      Content-Type: application/cloudevents+json
      ce-id: 9f3a...-1
      ce-source: /orders                       {"specversion": "1.0", "id": "...",
      ce-type: shop.orders.v1.OrderPlaced       "source": "/orders", "type": "...",
      ce-time: 2026-11-28T16:27:19.123456Z      "data": {...} | "data_base64": "..."}
      ce-datacontenttype: application/protobuf
      <body = the event data, byte for byte>

Receiving (``from_nats``) picks the mode by eventmicro's rule: a ``ce-specversion`` header
means binary; a ``Content-Type`` starting with ``application/cloudevents`` means structured;
a message with no CloudEvents headers is tried as structured JSON (NATS < 2.2, sdk-go). Header
names are matched case-insensitively. Header values are percent-encoded exactly as §3.1.3.2
requires (space, ``"``, ``%`` and non-printable-ASCII only, so ``/`` and ``:`` travel as they
are) and decoded strictly: broken escapes and invalid UTF-8 raise `HeaderDecodeError`.

Every invalid input raises an `EnvelopeError` subclass naming what is wrong.

>>> from eventmicro.cloudevents_nats import to_binary, from_nats
>>> from eventmicro import Event
>>> msg = to_binary(Event.create(type="com.example.hi", source="/hi", data=b"x"), None)
>>> msg.headers["ce-type"], msg.data
('com.example.hi', b'x')
>>> from_nats(msg, None).get_type()
'com.example.hi'
"""

from __future__ import annotations

import base64
import binascii
import enum
import json
import operator
import re
import warnings
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final, NamedTuple, Protocol, overload
from urllib.parse import quote, unquote_to_bytes

from cloudevents.core.base import BaseCloudEvent, EventFactory
from cloudevents.core.exceptions import BaseCloudEventException
from cloudevents.core.formats.base import Format
from cloudevents.core.formats.json import JSONFormat

from eventmicro._errors import (
    EnvelopeError,
    HeaderDecodeError,
    InvalidAttribute,
    MissingAttribute,
    StructuredFormatError,
    UnsupportedSpecVersion,
)
from eventmicro._event import (
    CORE_ATTRIBUTES,
    OPTIONAL_ATTRIBUTES,
    REQUIRED_ATTRIBUTES,
    SPECVERSION,
    Event,
    check_attribute_name,
    check_string,
    format_time,
    is_known_time,
    parse_time,
)

__all__ = [
    "CE_PREFIX",
    "CONTENT_TYPE_HEADER",
    "STRUCTURED_CONTENT_TYPE",
    "CloudEventsWarning",
    "Mode",
    "NATSMessage",
    "SupportsNATSMessage",
    "decode_header_value",
    "detect_mode",
    "encode_header_value",
    "from_binary",
    "from_binary_event",
    "from_nats",
    "from_nats_event",
    "from_structured",
    "from_structured_event",
    "is_json_content_type",
    "to_binary",
    "to_binary_event",
    "to_structured",
    "to_structured_event",
]

CE_PREFIX: Final = "ce-"
CONTENT_TYPE_HEADER: Final = "Content-Type"
STRUCTURED_CONTENT_TYPE: Final = "application/cloudevents+json"
TRACEPARENT: Final = "traceparent"
TRACESTATE: Final = "tracestate"

# §3.1.3.2: printable ASCII except space, '"' and '%' is sent as is; everything else is %XY.
_SAFE_CHARS: Final = "".join(c for c in map(chr, range(0x21, 0x7F)) if c not in '"%')
_NEEDS_ENCODING: Final = re.compile(r"[^\x21\x23\x24\x26-\x7e]")
_BAD_ESCAPE: Final = re.compile(r"%(?![0-9A-Fa-f]{2})")
_QUOTED_PAIR: Final = re.compile(r"\\(.)")
_JSON_CT: Final = re.compile(r"(?:application|text)/(?:[a-z0-9.\-]+\+)?json(?:\s*;.*)?", re.I | re.S)
_HEADER_FOR: Final = {name: CE_PREFIX + name for name in CORE_ATTRIBUTES}
_ATTRIBUTE_OF: dict[str, str] = {CE_PREFIX + name: name for name in CORE_ATTRIBUTES}
# Values such as type, source and content types repeat in every event: remember their codings.
_CACHE_LIMIT: Final = 4096
_encoded: dict[str, str] = {}
_decoded: dict[str, str] = {}
_UNCACHED: Final = frozenset({"id", "time"})
_CORE_HEADERS: Final = tuple(
    (CE_PREFIX + name, name) for name in (*REQUIRED_ATTRIBUTES, *OPTIONAL_ATTRIBUTES)
)
_STRING_OPTIONAL: Final = ("datacontenttype", "dataschema", "subject")
_MAX_NAME: Final = 20


class CloudEventsWarning(UserWarning):
    """A CloudEvents SHOULD that an event breaks (for example an attribute name over 20 chars)."""


class Mode(enum.Enum):
    """The content mode of a CloudEvent on NATS."""

    BINARY = "binary"
    STRUCTURED = "structured"


class SupportsNATSMessage(Protocol):
    """Anything with ``headers`` and ``data``: `NATSMessage`, nats-py's ``Msg``, eventmicro's ``Message``."""

    @property
    def headers(self) -> Mapping[str, str] | None: ...

    @property
    def data(self) -> bytes: ...


class NATSMessage(NamedTuple):
    """A NATS message as the binding sees it: headers and the payload bytes (immutable)."""

    headers: dict[str, str]
    data: bytes


def is_json_content_type(content_type: str | None) -> bool:
    """True for ``*/json`` and ``*/*+json`` media types (and for a missing one, per the JSON format)."""
    return content_type is None or _JSON_CT.fullmatch(content_type.strip()) is not None


# --- header values ----------------------------------------------------------------------


def encode_header_value(name: str, value: object) -> str:
    """Canonical string of a CloudEvents attribute value, percent-encoded for a NATS header.

    Only space, ``"``, ``%`` and characters outside printable ASCII are encoded (upper-case
    hex of their UTF-8 bytes); ``/`` and ``:`` are never encoded.

    >>> encode_header_value("subject", "Euro € 😀")
    'Euro%20%E2%82%AC%20%F0%9F%98%80'
    >>> encode_header_value("source", "urn:uuid:1")
    'urn:uuid:1'
    """
    if isinstance(value, str):
        text = value
    elif isinstance(value, bool):
        return "true" if value else "false"
    elif isinstance(value, int):
        return str(value)
    elif isinstance(value, datetime):
        return format_time(value)
    elif isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    else:
        raise InvalidAttribute(name, f"type {type(value).__name__} has no CloudEvents string form")
    if not text:
        raise InvalidAttribute(name, "must not be empty")
    if _NEEDS_ENCODING.search(text) is None:
        return text
    check_string(name, text)
    return quote(text, safe=_SAFE_CHARS)


def decode_header_value(header: str, value: str) -> str:
    """Undo RFC 7230 quoting, then percent-decode exactly once, strictly.

    Lower-case hex and needlessly encoded characters are accepted; a ``%`` without two hex
    digits, or bytes that are not valid UTF-8 (such as the overlong ``%C0%A0``), raise
    `HeaderDecodeError`; a decoded control character raises `InvalidAttribute`.
    """
    if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        value = _QUOTED_PAIR.sub(r"\1", value[1:-1])
    if "%" in value:
        if _BAD_ESCAPE.search(value) is not None:
            raise HeaderDecodeError(header, "'%' must be followed by two hex digits")
        try:
            value = unquote_to_bytes(value).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise HeaderDecodeError(header, f"not valid UTF-8 ({exc.reason})") from exc
        except UnicodeEncodeError as exc:
            raise HeaderDecodeError(header, "contains an unencodable character") from exc
    elif _NEEDS_ENCODING.search(value) is None:
        return value
    check_string(header[len(CE_PREFIX) :] if header.startswith(CE_PREFIX) else header, value)
    return value


# --- binary mode --------------------------------------------------------------------------


def to_binary(event: BaseCloudEvent, event_format: Format | None) -> NATSMessage:
    """Binary mode: every attribute in its own ``ce-`` header, the data as the payload.

    ``event_format`` serializes non-bytes data (``None``: data must be ``bytes``, ``str`` or
    ``None``). A ``traceparent`` extension is also copied to a plain ``traceparent`` header
    (and ``tracestate`` likewise), as the distributed-tracing extension asks.
    """
    if isinstance(event, Event):
        ready = event._headers
        if ready is not None:  # made by Event.of: its headers were encoded when it was made
            data = event._data
            return NATSMessage(
                ready.copy(), data if data.__class__ is bytes else _write_data(event, None, event_format)
            )
        attributes = event._attributes  # validated already; no copy needed
        headers = _binary_headers(attributes, event._time_text)
    else:
        attributes = event.get_attributes()
        headers = _binary_headers(attributes, None)
    if "ce-datacontenttype" not in headers and not isinstance(event.get_data(), bytes | None):
        # Structured mode implies application/json; moving to binary mode writes it out (§1 2.).
        headers["ce-datacontenttype"] = "application/json"
    return NATSMessage(headers, _write_data(event, attributes.get("datacontenttype"), event_format))


def _binary_headers(attributes: Mapping[str, Any], time_text: str | None) -> dict[str, str]:
    headers: dict[str, str] = {}
    if time_text is not None:
        headers["ce-time"] = time_text  # a lazily parsed time goes out as the text it came in
    for name, value in attributes.items():
        if value is None:
            continue
        header = _HEADER_FOR.get(name)
        if header is None:
            check_attribute_name(name)
            if len(name) > _MAX_NAME:
                _warn_long_name(name, stacklevel=4)
            header = CE_PREFIX + name
        if value.__class__ is str:
            text = _encoded.get(value)
            if text is None:
                text = encode_header_value(name, value)
                if name not in _UNCACHED:
                    if len(_encoded) >= _CACHE_LIMIT:
                        _encoded.clear()
                    _encoded[value] = text
            headers[header] = text
        else:
            headers[header] = encode_header_value(name, value)
    for name in REQUIRED_ATTRIBUTES:
        if attributes.get(name) is None:
            raise MissingAttribute(name)
    traceparent = headers.get("ce-traceparent")
    if traceparent is not None:
        headers[TRACEPARENT] = traceparent
        tracestate = headers.get("ce-tracestate")
        if tracestate is not None:
            headers[TRACESTATE] = tracestate
    return headers


@overload
def from_binary(
    message: SupportsNATSMessage, event_format: Format | None, event_factory: None = None
) -> Event: ...
@overload
def from_binary(
    message: SupportsNATSMessage, event_format: Format | None, event_factory: EventFactory
) -> BaseCloudEvent: ...
def from_binary(
    message: SupportsNATSMessage,
    event_format: Format | None,
    event_factory: EventFactory | None = None,
) -> BaseCloudEvent:
    """Read a binary-mode message. ``event_format=None`` keeps the payload as raw ``bytes``.

    ``ce-datacontenttype`` wins over ``Content-Type``, which is read only as a fallback
    (sdk-go writes it). The factory defaults to `eventmicro.Event`.
    """
    headers = message.headers or {}
    fast = _core_only(headers)
    if fast is not None:
        attributes, time_text = fast
    else:
        attributes = _read_headers(headers)
        time_text = attributes.pop("time", None)
        _check_required(attributes)
    if time_text is not None and not is_known_time(time_text):
        attributes["time"] = parse_time("time", time_text)  # validates; remembers the second
    data: Any = (
        message.data
        if event_format is None
        else event_format.read_data(message.data, attributes.get("datacontenttype"))
    )
    if event_factory is None:
        return Event._validated(attributes, data, time_text)
    if time_text is not None and "time" not in attributes:
        attributes["time"] = parse_time("time", time_text)
    return _build(event_factory, attributes, data)


def _decode_value(header: str, name: str, raw: str) -> str:
    value = _decoded.get(raw)
    if value is None:
        if raw.isprintable() and "%" not in raw and raw[:1] != '"':
            value = raw
        else:
            value = decode_header_value(header, raw)
        if name not in _UNCACHED:
            if len(_decoded) >= _CACHE_LIMIT:
                _decoded.clear()
            _decoded[raw] = value
    return value


_GET7: Final = operator.itemgetter(
    "ce-specversion", "ce-id", "ce-source", "ce-type", "ce-time", "ce-datacontenttype", "ce-dataschema"
)
_GET6: Final = operator.itemgetter(
    "ce-specversion", "ce-id", "ce-source", "ce-type", "ce-time", "ce-datacontenttype"
)
_statics: dict[tuple[str, str, str, str, str | None], dict[str, Any]] = {}


def _core_only(headers: Mapping[str, str]) -> tuple[dict[str, Any], str] | None:
    """Fast path for what eventmicro sends: exactly the canonical core headers, with or
    without ``ce-dataschema``. Returns the attributes (without "time") and the time text;
    ``None`` sends the message down the general path, which also names any error.
    """
    try:
        if len(headers) == 7:
            specversion, event_id, source, type_, time, content_type, schema = _GET7(headers)
        elif len(headers) == 6:
            specversion, event_id, source, type_, time, content_type = _GET6(headers)
            schema = None
        else:
            return None
    except KeyError:
        return None
    if not event_id or not event_id.isprintable() or "%" in event_id or event_id[0] == '"':
        return None
    key = (specversion, source, type_, content_type, schema)
    static = _statics.get(key)
    if static is None:
        if specversion != SPECVERSION or not (source and type_ and content_type and schema != ""):
            return None
        static = {
            "specversion": specversion,
            "source": _decode_value("ce-source", "source", source),
            "type": _decode_value("ce-type", "type", type_),
            "datacontenttype": _decode_value("ce-datacontenttype", "datacontenttype", content_type),
        }
        if schema is not None:
            static["dataschema"] = _decode_value("ce-dataschema", "dataschema", schema)
        if len(_statics) >= _CACHE_LIMIT:
            _statics.clear()
        _statics[key] = static
    attributes = static.copy()
    attributes["id"] = event_id
    return attributes, time


def _read_headers(headers: Mapping[str, str]) -> dict[str, Any]:
    """Every header, any case: ``ce-`` ones become attributes, ``Content-Type`` a fallback."""
    attributes: dict[str, Any] = {}
    content_type: str | None = None
    folded: list[str] = []  # attributes whose header name was not in canonical lowercase
    for header, raw in headers.items():
        name = _ATTRIBUTE_OF.get(header)
        if name is None:
            lowered = header.lower()
            if not lowered.startswith(CE_PREFIX):
                if lowered == "content-type":
                    content_type = raw
                continue
            name = lowered[3:]
            check_attribute_name(name)
            if lowered == header:  # a canonical extension header: remember its name
                if len(_ATTRIBUTE_OF) < _CACHE_LIMIT:
                    _ATTRIBUTE_OF[header] = name
            else:
                if name in attributes or name in folded:
                    raise InvalidAttribute(name, "appears in more than one header")
                folded.append(name)
        value = _decode_value(header, name, raw)
        if not value:
            raise InvalidAttribute(name, "must not be empty")
        attributes[name] = value
    for name in folded:
        if CE_PREFIX + name in headers:
            raise InvalidAttribute(name, "appears in more than one header")
    if "datacontenttype" not in attributes and content_type is not None and content_type.strip():
        check_string("datacontenttype", content_type)
        attributes["datacontenttype"] = content_type.strip()
    return attributes


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
    except (TypeError, ValueError) as exc:
        raise EnvelopeError(f"event data is not JSON-serializable: {exc}") from exc
    return NATSMessage({CONTENT_TYPE_HEADER: STRUCTURED_CONTENT_TYPE}, text.encode("utf-8"))


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
        document = json.loads(message.data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise StructuredFormatError("structured event body is not valid UTF-8") from exc
    except ValueError as exc:
        raise StructuredFormatError(f"structured event body is not JSON ({exc})") from exc
    if not isinstance(document, dict):
        raise StructuredFormatError(
            f"structured event body must be a JSON object, not {type(document).__name__}"
        )
    has_data, has_base64 = "data" in document, "data_base64" in document
    if has_data and has_base64:
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


# --- detection ----------------------------------------------------------------------------


def detect_mode(headers: Mapping[str, str] | None) -> Mode:
    """Which content mode a message with these headers is in (eventmicro's receive rule).

    Raises `MissingAttribute` for ``ce-`` headers without ``ce-specversion``, and
    `StructuredFormatError` for a structured format other than JSON.
    """
    if not headers:
        return Mode.STRUCTURED
    content_type = None
    has_ce = False
    for header, value in headers.items():
        lowered = header.lower()
        if lowered == "ce-specversion":
            return Mode.BINARY
        if lowered.startswith(CE_PREFIX):
            has_ce = True
        elif lowered == "content-type":
            content_type = value
    if content_type is not None:
        media = content_type.split(";", 1)[0].strip().lower()
        if media.startswith("application/cloudevents"):
            if media != STRUCTURED_CONTENT_TYPE:
                raise StructuredFormatError(
                    f"structured format {media!r} is not supported; use {STRUCTURED_CONTENT_TYPE!r}"
                )
            return Mode.STRUCTURED
    if has_ce:
        raise MissingAttribute("specversion")
    return Mode.STRUCTURED


@overload
def from_nats(
    message: SupportsNATSMessage, event_format: Format | None, event_factory: None = None
) -> Event: ...
@overload
def from_nats(
    message: SupportsNATSMessage, event_format: Format | None, event_factory: EventFactory
) -> BaseCloudEvent: ...
def from_nats(
    message: SupportsNATSMessage,
    event_format: Format | None,
    event_factory: EventFactory | None = None,
) -> BaseCloudEvent:
    """Read a message in either mode (see the module docstring for how the mode is chosen)."""
    headers = message.headers
    if (headers is not None and "ce-specversion" in headers) or detect_mode(headers) is Mode.BINARY:
        return from_binary(message, event_format, event_factory)
    return from_structured(message, event_format, event_factory)


# --- convenience wrappers (JSON format by default, like the SDK's) -----------------------


def to_binary_event(event: BaseCloudEvent, event_format: Format | None = None) -> NATSMessage:
    """`to_binary` with the JSON format as default."""
    return to_binary(event, event_format or JSONFormat())


def from_binary_event(message: SupportsNATSMessage, event_format: Format | None = None) -> BaseCloudEvent:
    """`from_binary` with the JSON format as default."""
    return from_binary(message, event_format or JSONFormat())


def to_structured_event(event: BaseCloudEvent, event_format: Format | None = None) -> NATSMessage:
    """`to_structured` with the JSON format as default."""
    return to_structured(event, event_format or JSONFormat())


def from_structured_event(message: SupportsNATSMessage, event_format: Format | None = None) -> BaseCloudEvent:
    """`from_structured` with the JSON format as default."""
    return from_structured(message, event_format or JSONFormat())


def from_nats_event(message: SupportsNATSMessage, event_format: Format | None = None) -> BaseCloudEvent:
    """`from_nats` with the JSON format as default."""
    return from_nats(message, event_format or JSONFormat())


# --- helpers --------------------------------------------------------------------------------


def _warn_long_name(name: str, stacklevel: int = 3) -> None:
    warnings.warn(
        f"CloudEvents attribute name {name!r} is longer than 20 characters",
        CloudEventsWarning,
        stacklevel=stacklevel,
    )


def _check_required(attributes: dict[str, Any]) -> None:
    specversion = attributes.get("specversion")
    if specversion is None:
        raise MissingAttribute("specversion")
    if specversion != SPECVERSION:
        raise UnsupportedSpecVersion(str(specversion))
    for name in REQUIRED_ATTRIBUTES:
        value = attributes.get(name)
        if value is None:
            raise MissingAttribute(name)
        if not value:
            raise InvalidAttribute(name, "must not be empty")


def _build(factory: EventFactory | None, attributes: dict[str, Any], data: Any) -> BaseCloudEvent:
    if factory is None:
        for name in _STRING_OPTIONAL:
            value = attributes.get(name)
            if value is not None and (value.__class__ is not str or not value):
                raise InvalidAttribute(name, "must be a non-empty string")
        return Event._validated(attributes, data)
    try:
        return factory(attributes, data)
    except EnvelopeError:
        raise
    except (BaseCloudEventException, ValueError, TypeError) as exc:
        raise EnvelopeError(f"the event factory rejected the event: {exc}") from exc


def _write_data(event: BaseCloudEvent, content_type: Any, event_format: Format | None) -> bytes:
    data = event.get_data()
    if data is None:
        return b""
    if isinstance(data, bytes):
        return data
    if event_format is not None:
        try:
            return event_format.write_data(data, content_type)
        except (TypeError, ValueError) as exc:
            raise EnvelopeError(f"event data could not be serialized: {exc}") from exc
    if is_json_content_type(content_type):
        # A parsed JSON value (from structured mode) goes back to its JSON text; a JSON string
        # value stays a JSON string, quotes included.
        try:
            return json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
        except (TypeError, ValueError) as exc:
            raise EnvelopeError(f"event data is not JSON-serializable: {exc}") from exc
    if isinstance(data, str):
        return data.encode("utf-8")
    raise EnvelopeError(f"data of type {type(data).__name__} needs an event format to be serialized")


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
    return {dict: "an object", list: "an array", float: "a number with a fraction"}.get(
        type(value), type(value).__name__
    )


def _put_data(document: dict[str, Any], data: Any, content_type: Any) -> None:
    if data is None:
        return
    if isinstance(data, bytes | bytearray):
        if is_json_content_type(content_type):
            try:
                document["data"] = json.loads(data)
                return
            except ValueError:
                pass  # not JSON after all: keep it lossless as base64
        document["data_base64"] = base64.b64encode(data).decode("ascii")
    else:
        document["data"] = data
