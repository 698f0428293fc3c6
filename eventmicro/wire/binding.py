"""CloudEvents NATS protocol binding (spec 1.0.3-wip): events to and from NATS messages.

The implementation of the public `eventmicro.cloudevents_nats`; its docstring shows the wire.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import overload

from cloudevents.core.base import BaseCloudEvent, EventFactory
from cloudevents.core.formats.base import Format
from cloudevents.core.formats.json import JSONFormat

from eventmicro._errors import (
    MissingAttribute,
    StructuredFormatError,
)
from eventmicro.wire.binary import from_binary, to_binary
from eventmicro.wire.event import Event
from eventmicro.wire.headervalues import decode_header_value, encode_header_value
from eventmicro.wire.message import (
    CE_PREFIX,
    CONTENT_TYPE_HEADER,
    STRUCTURED_CONTENT_TYPE,
    CloudEventsWarning,
    Mode,
    NATSMessage,
    SupportsNATSMessage,
    is_json_content_type,
)
from eventmicro.wire.structured import from_structured, to_structured

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
