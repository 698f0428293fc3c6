"""Binary content mode: attributes in ``ce-`` headers, the data as the payload, byte for byte."""

from __future__ import annotations

import operator
from collections.abc import Mapping
from typing import Any, Final, overload

from cloudevents.core.base import BaseCloudEvent, EventFactory
from cloudevents.core.formats.base import Format

from eventmicro._errors import EnvelopeError, InvalidAttribute, MissingAttribute
from eventmicro.wire.attributes import (
    _CACHE_LIMIT,
    _MAX_CACHED_TEXT,
    CORE_ATTRIBUTES,
    REQUIRED_ATTRIBUTES,
    SPECVERSION,
    check_attribute_name,
    check_string,
)
from eventmicro.wire.clock import is_known_time, parse_time
from eventmicro.wire.event import Event, _build
from eventmicro.wire.headervalues import (
    _UNCACHED,
    _decode_value,
    _encoded,
    decode_header_value,
    encode_header_value,
)
from eventmicro.wire.message import (
    _MAX_NAME,
    CE_PREFIX,
    TRACEPARENT,
    TRACESTATE,
    HeaderBlock,
    NATSMessage,
    SupportsNATSMessage,
    _check_required,
    _warn_long_name,
    _write_data,
)

__all__ = ["from_binary", "to_binary"]

_HEADER_FOR: Final = {name: CE_PREFIX + name for name in CORE_ATTRIBUTES}
_ATTRIBUTE_OF: dict[str, str] = {CE_PREFIX + name: name for name in CORE_ATTRIBUTES}


# --- binary mode --------------------------------------------------------------------------


def to_binary(event: BaseCloudEvent, event_format: Format | None) -> NATSMessage:
    """Binary mode: every attribute in its own ``ce-`` header, the data as the payload.

    ``event_format`` serializes non-bytes data (``None``: data must be ``bytes``, ``str`` or
    ``None``). A ``traceparent`` extension is also copied to a plain ``traceparent`` header
    (and ``tracestate`` likewise), as the distributed-tracing extension asks.
    """
    if isinstance(event, Event):
        template = event._template
        if template is not None:  # made by Event.of: the shared headers were encoded already
            headers = template.headers.copy()
            event_id = headers["ce-id"] = event._attributes["id"]  # generated: header-safe as it is
            time_text = headers["ce-time"] = event._time_text  # type: ignore[assignment]  # Event.of's
            head, middle, tail = template.block
            extra = event._extra
            if extra is None:
                block = f"{head}{event_id}{middle}{time_text}{tail}\r\n"
            else:
                headers.update(extra)
                lines = "".join([f"{name}: {value}\r\n" for name, value in extra.items()])
                block = f"{head}{event_id}{middle}{time_text}{tail}{lines}\r\n"
            encoded = HeaderBlock(headers)  # dict's own copy: no Python call
            encoded.block = block.encode()
            data = event._data
            return NATSMessage(
                encoded, data if data.__class__ is bytes else _write_data(event, None, event_format)
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
                if name not in _UNCACHED and len(value) <= _MAX_CACHED_TEXT:
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
    if event_format is None:
        data: Any = message.data
    else:
        try:
            data = event_format.read_data(message.data, attributes.get("datacontenttype"))
        except (ValueError, TypeError, RecursionError) as exc:
            raise EnvelopeError(f"the event format could not read the data: {exc}") from exc
    if event_factory is None:
        return Event._validated(attributes, data, time_text)
    if time_text is not None and "time" not in attributes:
        attributes["time"] = parse_time("time", time_text)
    return _build(event_factory, attributes, data)


_GET6: Final = operator.itemgetter(
    "ce-specversion", "ce-id", "ce-source", "ce-type", "ce-time", "ce-datacontenttype"
)


# read by the itemgetters above; every other header of the fast path goes through _ATTRIBUTE_OF
_CORE_HEADER_NAMES: Final = frozenset(
    ("ce-specversion", "ce-id", "ce-source", "ce-type", "ce-time", "ce-datacontenttype", "ce-dataschema")
)
_PLAIN_TRACE: Final = frozenset({"traceparent", "tracestate"})
_statics: dict[tuple[str, str, str, str, str | None], dict[str, Any]] = {}


def _core_only(headers: Mapping[str, str]) -> tuple[dict[str, Any], str] | None:
    """Fast path for what eventmicro sends: exactly the canonical core headers, with or
    without ``ce-dataschema``. Returns the attributes (without "time") and the time text;
    ``None`` sends the message down the general path, which also names any error.
    """
    extensions: list[tuple[str, str, str]] = []
    count = len(headers)
    if count < 6:
        return None
    try:
        specversion, event_id, source, type_, time, content_type = _GET6(headers)
    except KeyError:
        return None
    schema = headers.get("ce-dataschema")
    if count > (6 if schema is None else 7):  # extensions too (RPC budgets, trace context)
        for header, raw in headers.items():
            if header in _CORE_HEADER_NAMES or header in _PLAIN_TRACE:
                continue
            name = _ATTRIBUTE_OF.get(header)  # canonical extension names seen before
            if name is None:
                return None
            extensions.append((header, name, raw))
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
        if not all(static.values()):
            return None  # an empty value once decoded: the general path names it
        if len(source) + len(type_) + len(content_type) + len(schema or "") <= _MAX_CACHED_TEXT:
            if len(_statics) >= _CACHE_LIMIT:
                _statics.clear()
            _statics[key] = static
    if not time.isprintable() or "%" in time or time[:1] == '"':
        time = decode_header_value("ce-time", time)
    attributes = static.copy()
    attributes["id"] = event_id
    for header, name, raw in extensions:
        value = _decode_value(header, name, raw)
        if not value:
            return None
        attributes[name] = value
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
            if not header.isascii():
                raise InvalidAttribute(header, "header names are ASCII")
            check_attribute_name(name)
            if lowered == header:  # a canonical extension header: remember its name
                if len(header) <= _MAX_CACHED_TEXT and len(_ATTRIBUTE_OF) < _CACHE_LIMIT:
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
    if (
        "datacontenttype" not in attributes
        and content_type is not None
        and content_type.strip()
        and not content_type.strip().lower().startswith("application/cloudevents")
    ):
        check_string("datacontenttype", content_type)
        attributes["datacontenttype"] = content_type.strip()
    return attributes
