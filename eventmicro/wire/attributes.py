"""CloudEvents attribute rules: names, the String type, required and optional attributes."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Final

from eventmicro._errors import (
    InvalidAttribute,
    MissingAttribute,
    UnsupportedSpecVersion,
)

__all__ = [
    "CORE_ATTRIBUTES",
    "OPTIONAL_ATTRIBUTES",
    "REQUIRED_ATTRIBUTES",
    "SPECVERSION",
    "EventData",
    "ExtensionValue",
    "check_attribute_name",
    "check_extension_value",
    "check_string",
    "validate_attributes",
]

SPECVERSION: Final = "1.0"
REQUIRED_ATTRIBUTES: Final = ("id", "source", "specversion", "type")
OPTIONAL_ATTRIBUTES: Final = ("datacontenttype", "dataschema", "subject", "time")
CORE_ATTRIBUTES: Final = frozenset(REQUIRED_ATTRIBUTES + OPTIONAL_ATTRIBUTES)
_STRING_ATTRIBUTES: Final = ("datacontenttype", "dataschema", "subject")
# The longest text (a header name or value) the binding's caches keep: with at most a few
# thousand entries each, they stay within a few MiB whatever senders put in their headers.
_MAX_CACHED_TEXT: Final = 256
# Values such as type, source and content types repeat in every event: the binding remembers
# their codings, in caches of at most this many entries.
_CACHE_LIMIT: Final = 4096

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


def validate_attributes(attrs: dict[str, Any]) -> None:
    """Raise an `EnvelopeError` unless ``attrs`` form a valid CloudEvent 1.0."""
    for name in REQUIRED_ATTRIBUTES:
        value = attrs.get(name)
        if value is None:
            raise MissingAttribute(name)
        if type(value) is not str or not value:
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
        check_extension_value(name, value)


def check_extension_value(name: str, value: object) -> None:
    """Raise `InvalidAttribute` unless ``value`` has a CloudEvents type."""
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
