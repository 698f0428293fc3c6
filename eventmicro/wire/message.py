"""What both content modes share: the message shape, constants, required checks, data writing."""

from __future__ import annotations

import enum
import json
import warnings
from collections.abc import Callable, Mapping
from typing import Any, Final, NamedTuple, Protocol

from cloudevents.core.base import BaseCloudEvent
from cloudevents.core.formats.base import Format

from eventmicro._errors import (
    EnvelopeError,
    InvalidAttribute,
    MissingAttribute,
    UnsupportedSpecVersion,
)
from eventmicro.wire.attributes import REQUIRED_ATTRIBUTES, SPECVERSION
from eventmicro.wire.headervalues import CE_PREFIX
from eventmicro.wire.media import is_json

__all__ = [
    "CE_PREFIX",
    "CONTENT_TYPE_HEADER",
    "STRUCTURED_CONTENT_TYPE",
    "TRACEPARENT",
    "TRACESTATE",
    "CloudEventsWarning",
    "HeaderBlock",
    "Mode",
    "NATSMessage",
    "SupportsNATSMessage",
    "is_json_content_type",
]

CONTENT_TYPE_HEADER: Final = "Content-Type"
STRUCTURED_CONTENT_TYPE: Final = "application/cloudevents+json"
TRACEPARENT: Final = "traceparent"
TRACESTATE: Final = "tracestate"
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


def _forgets_block(method: Callable[..., Any]) -> Callable[..., Any]:
    def changing(self: HeaderBlock, *args: Any, **kwargs: Any) -> Any:
        self.block = None  # stale now: the transport encodes the headers as they are
        return method(self, *args, **kwargs)

    return changing


class HeaderBlock(dict[str, str]):
    """Headers whose NATS header block (``NATS/1.0`` line to blank line) is encoded already.

    `to_binary` returns these for events `Event.of` made, whose header lines are shared per
    type and source: the transport sends ``block`` as it is instead of encoding each header
    again. Changing the headers drops the block (``None``), and they are encoded as usual.
    """

    __slots__ = ("block",)
    block: bytes | None  # set right after construction: HeaderBlock(headers), then .block = ...

    __setitem__ = _forgets_block(dict.__setitem__)
    __delitem__ = _forgets_block(dict.__delitem__)
    __ior__ = _forgets_block(dict.__ior__)
    update = _forgets_block(dict.update)
    pop = _forgets_block(dict.pop)
    popitem = _forgets_block(dict.popitem)
    clear = _forgets_block(dict.clear)
    setdefault = _forgets_block(dict.setdefault)

    def __reduce__(self) -> tuple[Any, ...]:  # copy/pickle: a plain dict (the block stays behind)
        return dict, (dict(self),)


class NATSMessage(NamedTuple):
    """A NATS message as the binding sees it: headers and the payload bytes (immutable)."""

    headers: dict[str, str]
    data: bytes


def is_json_content_type(content_type: str | None) -> bool:
    """True for ``*/json`` and ``*/*+json`` media types (and for a missing one, per the JSON format)."""
    return content_type is None or is_json(content_type)


# --- helpers --------------------------------------------------------------------------------


def _warn_long_name(name: str, stacklevel: int = 3) -> None:
    # one text, without the name: Python keeps every distinct warning text it has shown, and
    # names can come from anyone (e.g. through the gateway)
    warnings.warn(
        "a CloudEvents attribute name is longer than 20 characters",
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


def _write_data(event: BaseCloudEvent, content_type: Any, event_format: Format | None) -> bytes:
    data = event.get_data()
    if data is None:
        return b""
    if isinstance(data, bytes):
        return data
    try:
        if is_json_content_type(content_type):
            # A parsed JSON value (from structured mode) goes back to its JSON text; a JSON
            # string value stays a JSON string, quotes included (the SDK's format would not).
            text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
            return text.encode("utf-8")
        if event_format is not None:
            return event_format.write_data(data, content_type)
        if isinstance(data, str):
            return data.encode("utf-8")
    except (TypeError, ValueError, RecursionError) as exc:  # UnicodeEncodeError is a ValueError
        raise EnvelopeError(f"event data could not be serialized: {exc}") from exc
    raise EnvelopeError(f"data of type {type(data).__name__} needs an event format to be serialized")
