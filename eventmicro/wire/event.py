"""The CloudEvent value eventmicro reads and writes: validated once, cheap to build.

`Event` implements the ``cloudevents.core.base.BaseCloudEvent`` protocol, so it works with the
SDK's formats and bindings, and it can be passed anywhere the SDK expects an event factory.
Unlike the SDK's ``CloudEvent`` it never invents attributes: ``Event(attributes, data)`` checks
what it is given; `Event.create` is the convenient constructor that fills ``id``, ``time`` and
``specversion`` for a new event.
"""

from __future__ import annotations

import time as _time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, NamedTuple, TypeVar

from cloudevents.core.base import BaseCloudEvent, EventFactory
from cloudevents.core.exceptions import BaseCloudEventException
from google.protobuf.message import DecodeError

from eventmicro._errors import (
    ConfigurationError,
    EnvelopeError,
    InvalidAttribute,
)
from eventmicro.wire.attributes import (
    _MAX_CACHED_TEXT,
    _STRING_ATTRIBUTES,
    CORE_ATTRIBUTES,
    SPECVERSION,
    EventData,
    ExtensionValue,
    check_attribute_name,
    check_extension_value,
    validate_attributes,
)
from eventmicro.wire.clock import _clock, _ids, parse_time, tick
from eventmicro.wire.codecs import decode_payload, encode_payload
from eventmicro.wire.codecs.protobuf import _proto_meta, _proto_targets
from eventmicro.wire.codecs.protobuf import serialize as _serialize
from eventmicro.wire.headervalues import encode_header_value
from eventmicro.wire.media import PROTOBUF
from eventmicro.wire.message import _warn_long_name

T = TypeVar("T")

# The protobuf codec's caches, read per event (a bound method: a name bound by an import would
# cost an attribute lookup per call)
_proto_meta_of = _proto_meta.get
_proto_target_of = _proto_targets.get

__all__ = ["Event"]


class Event:
    """A CloudEvent (spec 1.0): attributes plus data.

    ``Event(attributes, data)`` validates and never fills in defaults, so it is safe as the
    event factory of a decoder. Use `Event.create` to make a new event.

    >>> e = Event.create(type="com.example.ping", source="/pinger", data=b"hi")
    >>> e.get_type(), e.get_specversion(), e.get_data()
    ('com.example.ping', '1.0', b'hi')
    """

    # _time_text: the RFC 3339 text of "time" when it came off (or goes onto) the wire; the
    # datetime in _attributes["time"] is then made on first use. _template: what Event.of's
    # events of one type and source share (their binary-mode headers and header block, encoded
    # once), without id and time. _extra: the extension headers, encoded when Event.of made it.
    __slots__ = ("_attributes", "_data", "_extra", "_template", "_time_text")

    def __init__(self, attributes: Mapping[str, Any], data: EventData = None) -> None:
        attrs = dict(attributes)
        validate_attributes(attrs)
        self._attributes = attrs
        self._data = data
        self._template: Template | None = None
        self._extra: dict[str, str] | None = None
        self._time_text: str | None = None

    @classmethod
    def _validated(cls, attributes: dict[str, Any], data: EventData, time_text: str | None = None) -> Event:
        """Wrap attributes that the caller has already validated (the binding's decoders).

        ``time_text`` is a validated RFC 3339 time for an event whose attributes lack "time".
        """
        event = cls.__new__(cls)
        event._attributes = attributes
        event._data = data
        event._template = None
        event._extra = None
        event._time_text = time_text
        return event

    def _full(self) -> dict[str, Any]:
        """The attributes, with "time" as a datetime (made now if it was left as text)."""
        attributes = self._attributes
        if self._time_text is not None and "time" not in attributes:
            attributes["time"] = parse_time("time", self._time_text)
        return attributes

    @classmethod
    def create(
        cls,
        *,
        type: str,  # noqa: A002 - the CloudEvents attribute is called "type"
        source: str,
        data: EventData = None,
        id: str | None = None,  # noqa: A002 - the CloudEvents attribute is called "id"
        time: datetime | None = None,
        datacontenttype: str | None = None,
        dataschema: str | None = None,
        subject: str | None = None,
        extensions: Mapping[str, ExtensionValue] | None = None,
    ) -> Event:
        """Make a new event; ``id`` defaults to a fresh unique id and ``time`` to now (UTC)."""
        attributes: dict[str, Any] = {
            "specversion": SPECVERSION,
            "id": id or _ids.next(),
            "source": source,
            "type": type,
            "time": time or datetime.fromtimestamp(_time.time(), UTC),
        }
        if datacontenttype is not None:
            attributes["datacontenttype"] = datacontenttype
        if dataschema is not None:
            attributes["dataschema"] = dataschema
        if subject is not None:
            attributes["subject"] = subject
        for name, value in (("type", type), ("source", source), ("id", id)):
            if value is not None and (value.__class__ is not str or not value):
                raise InvalidAttribute(name, "must be a non-empty string")
        if time is not None and (not isinstance(time, datetime) or time.utcoffset() is None):
            raise InvalidAttribute("time", "must be a timezone-aware datetime")
        for name, value in (
            ("datacontenttype", datacontenttype),
            ("dataschema", dataschema),
            ("subject", subject),
        ):
            if value is not None and (value.__class__ is not str or not value):
                raise InvalidAttribute(name, "must be a non-empty string")
        if extensions:
            for name, extension in extensions.items():
                if name in CORE_ATTRIBUTES:
                    raise InvalidAttribute(name, "is a core attribute, not an extension")
                check_attribute_name(name)
                check_extension_value(name, extension)
            attributes.update(extensions)
        return cls._validated(attributes, data)

    @classmethod
    def of(
        cls,
        value: object,
        *,
        source: str,
        type: str | None = None,  # noqa: A002 - the CloudEvents attribute is called "type"
        subject: str | None = None,
        extensions: Mapping[str, ExtensionValue] | None = None,
    ) -> Event:
        """A new event carrying ``value``, encoded by its codec (see `encode_payload`).

        The type defaults to the value's own (protobuf full name, or ``@event_type``).

        >>> Event.of({"n": 1}, source="/counter", type="com.example.counted").get_data()
        b'{"n":1}'
        """
        meta = _proto_meta_of(value.__class__)
        payload_type: str | None
        dataschema: str | None
        if meta is not None:  # a protobuf class seen before: the common case, without a Payload
            data = _serialize(value)  # type: ignore[arg-type]
            content_type, payload_type, dataschema = PROTOBUF, meta[0], meta[1]
        else:
            data, content_type, payload_type, dataschema = encode_payload(value)
        event_type = type or payload_type
        if not event_type:
            raise ConfigurationError(
                f"{value.__class__.__name__} has no CloudEvent type: pass type=... "
                "or decorate its class with @event_type"
            )
        if subject is not None:
            return cls.create(
                type=event_type,
                source=source,
                data=data,
                datacontenttype=content_type,
                dataschema=dataschema,
                subject=subject,
                extensions=extensions,
            )
        key = (event_type, source, content_type, dataschema)
        template = _templates.get(key)
        if template is None:
            template = _template(event_type, source, content_type, dataschema)
            if len(event_type) + len(source) + len(content_type) + len(dataschema or "") <= _MAX_CACHED_TEXT:
                if len(_templates) >= 1024:
                    _templates.clear()
                _templates[key] = template
        event_id = f"{_ids.prefix}-{next(_ids.counter):x}"
        # now_text(), inlined: this runs for every event published
        second, micro = divmod(_time.time_ns() // 1000, 1_000_000)
        epoch, text = _clock.value
        if epoch != second:
            text = tick(second)
        time_text = f"{text}.{micro:06d}Z" if micro else f"{text}Z"
        attributes = template.attributes.copy()
        attributes["id"] = event_id
        event = cls.__new__(cls)
        event._attributes = attributes
        event._data = data
        event._time_text = time_text
        event._template = template  # shared, never mutated: to_binary copies its headers
        event._extra = None
        if extensions:
            event._extra = _extension_headers(extensions)  # validates them
            attributes.update(extensions)
        return event

    def data_as(self, target: type[T]) -> T:
        """Decode the data into ``target``; raises a `PayloadError` naming what was expected."""
        data = self._data
        attributes = self._attributes
        if data.__class__ is bytes and attributes.get("datacontenttype") == PROTOBUF:
            schema = _proto_target_of(target)  # the fast path for protobuf targets seen before
            if schema is not None and attributes.get("dataschema", schema) == schema:
                try:
                    return target.FromString(data)  # type: ignore[attr-defined,no-any-return]
                except (DecodeError, RuntimeError, ValueError):
                    pass  # the general path below raises the precise error
        return decode_payload(
            self._data,
            self._attributes.get("datacontenttype"),
            target,
            dataschema=self._attributes.get("dataschema"),
        )

    # BaseCloudEvent protocol
    def get_id(self) -> str:
        return str(self._attributes["id"])

    def get_source(self) -> str:
        return str(self._attributes["source"])

    def get_type(self) -> str:
        return str(self._attributes["type"])

    def get_specversion(self) -> str:
        return str(self._attributes["specversion"])

    def get_datacontenttype(self) -> str | None:
        value: str | None = self._attributes.get("datacontenttype")
        return value

    def get_dataschema(self) -> str | None:
        value: str | None = self._attributes.get("dataschema")
        return value

    def get_subject(self) -> str | None:
        value: str | None = self._attributes.get("subject")
        return value

    def get_time(self) -> datetime | None:
        value: datetime | None = self._full().get("time")
        return value

    def get_extension(self, extension_name: str) -> Any:
        if extension_name == "time":
            return self.get_time()
        return self._attributes.get(extension_name)

    def get_data(self) -> EventData:
        return self._data

    def get_attributes(self) -> dict[str, Any]:
        return dict(self._full())

    @property
    def extensions(self) -> dict[str, Any]:
        """The extension attributes (everything that is not a core attribute)."""
        return {k: v for k, v in self._attributes.items() if k not in CORE_ATTRIBUTES}

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Event):
            return NotImplemented
        return self._full() == other._full() and self._data == other._data

    __hash__ = None  # type: ignore[assignment]  # mutable data: events are not hashable

    def __repr__(self) -> str:
        size = len(self._data) if isinstance(self._data, bytes | str) else None
        data = f"{size} bytes" if size is not None else type(self._data).__name__
        return (
            f"Event(type={self.get_type()!r}, source={self.get_source()!r}, "
            f"id={self.get_id()!r}, data={data})"
        )


class Template(NamedTuple):
    """What events of one (type, source, content type, schema) share, encoded once: their
    binary-mode headers and attributes (Event.of copies both and adds the id and time), and
    their NATS header block as text around the id and the time (``block[0] + id + block[1] +
    time + block[2]``, then the extension lines and the blank line that ends the block)."""

    headers: dict[str, str]
    attributes: dict[str, Any]
    block: tuple[str, str, str]


_templates: dict[tuple[str, str, str, str | None], Template] = {}


_extension_names: set[str] = set()  # names already checked


def _extension_headers(extensions: Mapping[str, ExtensionValue]) -> dict[str, str]:
    """Binary-mode headers of extension attributes (plus plain trace headers), validated."""
    headers: dict[str, str] = {}
    for name, value in extensions.items():
        if name not in _extension_names:
            if name in CORE_ATTRIBUTES:
                raise InvalidAttribute(name, "is a core attribute, not an extension")
            check_attribute_name(name)
            if len(name) > 20:
                _warn_long_name(name, stacklevel=4)
            elif len(_extension_names) < 4096:
                _extension_names.add(name)
        check_extension_value(name, value)
        headers["ce-" + name] = encode_header_value(name, value)
    traceparent = headers.get("ce-traceparent")
    if traceparent is not None:
        headers["traceparent"] = traceparent
        if "ce-tracestate" in headers:
            headers["tracestate"] = headers["ce-tracestate"]
    return headers


def _template(event_type: str, source: str, content_type: str, dataschema: str | None) -> Template:
    """Encode (and so validate) the shared attributes once."""
    headers = {"ce-specversion": SPECVERSION, "ce-id": "", "ce-source": "", "ce-type": "", "ce-time": ""}
    attributes: dict[str, Any] = {"specversion": SPECVERSION, "id": ""}
    for name, value in (
        ("source", source),
        ("type", event_type),
        ("datacontenttype", content_type),
        ("dataschema", dataschema),
    ):
        if value is not None:
            if value.__class__ is not str or not value:
                raise InvalidAttribute(name, "must be a non-empty string")
            headers["ce-" + name] = encode_header_value(name, value)
            attributes[name] = value
    # encoded values are printable ASCII without spaces (headervalues), so each line is
    # "name: value" as it is: the same bytes any NATS client writes for these headers
    lines = [f"{name}: {value}\r\n" for name, value in headers.items()]
    block = (
        "NATS/1.0\r\n" + lines[0] + "ce-id: ",
        "\r\n" + "".join(lines[2:4]) + "ce-time: ",
        "\r\n" + "".join(lines[5:]),
    )
    return Template(headers, attributes, block)


def _build(factory: EventFactory | None, attributes: dict[str, Any], data: Any) -> BaseCloudEvent:
    """The event a decoder read: an `Event` of attributes it validated (``factory`` ``None``),
    else what ``factory`` makes of them (its refusal raised as an `EnvelopeError`)."""
    if factory is None:
        for name in _STRING_ATTRIBUTES:
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
