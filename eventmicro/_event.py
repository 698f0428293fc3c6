"""The CloudEvent value eventmicro reads and writes: validated once, cheap to build.

`Event` implements the ``cloudevents.core.base.BaseCloudEvent`` protocol, so it works with the
SDK's formats and bindings, and it can be passed anywhere the SDK expects an event factory.
Unlike the SDK's ``CloudEvent`` it never invents attributes: ``Event(attributes, data)`` checks
what it is given; `Event.create` is the convenient constructor that fills ``id``, ``time`` and
``specversion`` for a new event.
"""

from __future__ import annotations

import itertools
import os
import re
import secrets
import time as _time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final, TypeVar

from eventmicro._codecs import decode_payload, encode_payload
from eventmicro._errors import (
    ConfigurationError,
    InvalidAttribute,
    MissingAttribute,
    UnsupportedSpecVersion,
)

T = TypeVar("T")

__all__ = [
    "CORE_ATTRIBUTES",
    "Event",
    "EventData",
    "ExtensionValue",
    "check_attribute_name",
    "check_string",
    "format_time",
    "new_event_id",
    "parse_time",
]

SPECVERSION: Final = "1.0"
REQUIRED_ATTRIBUTES: Final = ("id", "source", "specversion", "type")
OPTIONAL_ATTRIBUTES: Final = ("datacontenttype", "dataschema", "subject", "time")
CORE_ATTRIBUTES: Final = frozenset(REQUIRED_ATTRIBUTES + OPTIONAL_ATTRIBUTES)
_STRING_ATTRIBUTES: Final = ("datacontenttype", "dataschema", "subject")

EventData = Any
"""Event data: raw ``bytes`` off the wire, ``str``, a parsed JSON value, or ``None``."""
ExtensionValue = str | int | bool | bytes | datetime
"""The CloudEvents types an extension may hold (URI types travel as ``str``)."""

_NAME_RE: Final = re.compile(r"[a-z0-9]+")
_INT32_MIN: Final = -(2**31)
_INT32_MAX: Final = 2**31 - 1


def _forbidden_class() -> str:
    # CloudEvents String: no C0/C1 controls, no Unicode noncharacters, no surrogates.
    ranges = ["\x00-\x1f", "\x7f-\x9f", "\ufdd0-\ufdef", "\ud800-\udfff"]
    ranges += [f"{chr(plane * 0x10000 + 0xFFFE)}{chr(plane * 0x10000 + 0xFFFF)}" for plane in range(17)]
    return "[" + "".join(ranges) + "]"


_FORBIDDEN_RE: Final = re.compile(_forbidden_class())
_RFC3339_RE: Final = re.compile(r"\d{4}-\d\d-\d\d[Tt ]\d\d:\d\d:\d\d(?:\.\d+)?(?:[Zz]|[+-]\d\d:\d\d)")


def check_attribute_name(name: str) -> None:
    """Raise `InvalidAttribute` unless ``name`` is a legal CloudEvents attribute name."""
    if name == "data" or not _NAME_RE.fullmatch(name):
        reason = (
            "'data' is reserved" if name == "data" else "names use only lowercase ASCII letters and digits"
        )
        raise InvalidAttribute(name, reason)


def check_string(name: str, value: str) -> None:
    """Raise `InvalidAttribute` if ``value`` holds a character the CloudEvents String type forbids."""
    found = _FORBIDDEN_RE.search(value)
    if found is not None:
        raise InvalidAttribute(name, f"contains the forbidden character U+{ord(found.group()):04X}")


def parse_time(name: str, value: str) -> datetime:
    """Parse an RFC 3339 timestamp into an aware `datetime` (nanoseconds are truncated)."""
    if not _RFC3339_RE.fullmatch(value):
        raise InvalidAttribute(name, f"{value!r} is not an RFC 3339 timestamp")
    try:
        return datetime.fromisoformat(value.upper())
    except ValueError as exc:
        raise InvalidAttribute(name, f"{value!r} is not a valid timestamp") from exc


_second_cache: list[Any] = [None, ""]


def format_time(value: datetime) -> str:
    """Write an aware `datetime` as RFC 3339 in UTC with a ``Z`` suffix."""
    offset = value.utcoffset()
    if offset is None:
        raise InvalidAttribute("time", "a timestamp must be timezone-aware")
    if offset:
        value = value.astimezone(UTC)
    key = value.replace(microsecond=0, tzinfo=None)
    if _second_cache[0] != key:
        _second_cache[0] = key
        _second_cache[1] = key.isoformat()
    micro = value.microsecond
    if micro:
        return f"{_second_cache[1]}.{micro:06d}Z"
    return f"{_second_cache[1]}Z"


class _IdSource:
    """Unique event ids: a random per-process prefix and a counter (reset after fork)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.prefix = secrets.token_hex(8)
        self.counter = itertools.count(1)

    def next(self) -> str:
        return f"{self.prefix}-{next(self.counter):x}"


_ids = _IdSource()
os.register_at_fork(after_in_child=_ids.reset)


def new_event_id() -> str:
    """Return an id unique within this process and, with overwhelming odds, across processes."""
    return _ids.next()


class Event:
    """A CloudEvent (spec 1.0): attributes plus data.

    ``Event(attributes, data)`` validates and never fills in defaults, so it is safe as the
    event factory of a decoder. Use `Event.create` to make a new event.

    >>> e = Event.create(type="com.example.ping", source="/pinger", data=b"hi")
    >>> e.get_type(), e.get_specversion(), e.get_data()
    ('com.example.ping', '1.0', b'hi')
    """

    __slots__ = ("_attributes", "_data")

    def __init__(self, attributes: Mapping[str, Any], data: EventData = None) -> None:
        attrs = dict(attributes)
        for name in REQUIRED_ATTRIBUTES:
            value = attrs.get(name)
            if value is None:
                raise MissingAttribute(name)
            if not isinstance(value, str) or not value:
                raise InvalidAttribute(name, "must be a non-empty string")
        if attrs["specversion"] != SPECVERSION:
            raise UnsupportedSpecVersion(attrs["specversion"])
        for name, value in attrs.items():
            if name in CORE_ATTRIBUTES:
                if name == "time":
                    if not isinstance(value, datetime) or value.utcoffset() is None:
                        raise InvalidAttribute("time", "must be a timezone-aware datetime")
                elif name in _STRING_ATTRIBUTES and (not isinstance(value, str) or not value):
                    raise InvalidAttribute(name, "must be a non-empty string")
                continue
            check_attribute_name(name)
            _check_extension_value(name, value)
        self._attributes = attrs
        self._data = data

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
            "id": id or new_event_id(),
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
        if extensions:
            for name in extensions:
                if name in CORE_ATTRIBUTES:
                    raise InvalidAttribute(name, "is a core attribute, not an extension")
            attributes.update(extensions)
        return cls(attributes, data)

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
        payload = encode_payload(value)
        event_type = type or payload.type
        if not event_type:
            raise ConfigurationError(
                f"{value.__class__.__name__} has no CloudEvent type: pass type=... "
                "or decorate its class with @event_type"
            )
        return cls.create(
            type=event_type,
            source=source,
            data=payload.data,
            datacontenttype=payload.content_type,
            dataschema=payload.dataschema,
            subject=subject,
            extensions=extensions,
        )

    def data_as(self, target: type[T]) -> T:
        """Decode the data into ``target``; raises a `PayloadError` naming what was expected."""
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
        value: datetime | None = self._attributes.get("time")
        return value

    def get_extension(self, extension_name: str) -> Any:
        return self._attributes.get(extension_name)

    def get_data(self) -> EventData:
        return self._data

    def get_attributes(self) -> dict[str, Any]:
        return dict(self._attributes)

    @property
    def extensions(self) -> dict[str, Any]:
        """The extension attributes (everything that is not a core attribute)."""
        return {k: v for k, v in self._attributes.items() if k not in CORE_ATTRIBUTES}

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Event):
            return NotImplemented
        return self._attributes == other._attributes and self._data == other._data

    __hash__ = None  # type: ignore[assignment]  # mutable data: events are not hashable

    def __repr__(self) -> str:
        size = len(self._data) if isinstance(self._data, bytes | str) else None
        data = f"{size} bytes" if size is not None else type(self._data).__name__
        return (
            f"Event(type={self.get_type()!r}, source={self.get_source()!r}, "
            f"id={self.get_id()!r}, data={data})"
        )


def _check_extension_value(name: str, value: object) -> None:
    if isinstance(value, bool | bytes):
        return
    if isinstance(value, str):
        if not value:
            raise InvalidAttribute(name, "must not be empty")
        return
    if isinstance(value, int):
        if not _INT32_MIN <= value <= _INT32_MAX:
            raise InvalidAttribute(name, "integers must fit in 32 signed bits")
        return
    if isinstance(value, datetime):
        if value.utcoffset() is None:
            raise InvalidAttribute(name, "timestamps must be timezone-aware")
        return
    raise InvalidAttribute(
        name, f"type {type(value).__name__} is not a CloudEvents type (str, int, bool, bytes, datetime)"
    )
