"""What a payload codec is: the `Codec` protocol, the `Payload` it writes, and the helpers codecs share.

A codec module defines one class satisfying `Codec` and imports only this module (plus what it
encodes with); the registry (`eventmicro.wire.codecs.registry`) chooses among the registered
codecs by Python type. Nothing here knows any particular codec.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final, NamedTuple, Protocol, TypeVar

from eventmicro._errors import PayloadDecodeError, PayloadEncodeError
from eventmicro.wire import strictjson as strict_json
from eventmicro.wire.convert import title

__all__ = [
    "MAX_DEPTH",
    "Codec",
    "Payload",
    "Schema",
    "SchemaBuilder",
    "declared_type_name",
    "event_type",
    "parse_json",
    "utf8",
]

C = TypeVar("C", bound=type)
Schema = dict[str, Any]

MAX_DEPTH: Final = 100  # nesting levels of a JSON body (protobuf's own limit)
SHOWN: Final = 120  # characters of a sender's field name quoted back
_TYPE_ATTR: Final = "__cloudevent_type__"

# The names of classes, remembered (the registry fills them; a new mark or codec empties them)
type_names: dict[type, str | None] = {}  # class -> its CloudEvent type, if it has one
python_names: dict[type, str] = {}  # class -> its CloudEvent type, else <module>.<qualname>


class Payload(NamedTuple):
    """Encoded event data with the attributes that describe it (a tuple: cheap on the hot path)."""

    data: bytes
    content_type: str
    type: str | None = None
    dataschema: str | None = None


class SchemaBuilder(Protocol):
    """What a codec may call to describe its types in JSON Schema: `eventmicro.wire.jsonschema.SchemaSet`.

    Named schemas become components (``{"$ref": ref_prefix + name}``); ``of_type`` describes
    any other type or annotation (a codec's field types, say).
    """

    ref_prefix: str

    def of_type(self, cls: object) -> Schema: ...

    def of_descriptor(self, descriptor: Any) -> Schema: ...

    def lift(self, cls: type, schema: Schema) -> Schema: ...

    def of_dataclass(self, cls: type) -> Schema: ...


class Codec(Protocol):
    """A payload codec: Python values of some types to event data and back.

    The registry asks `encodes` once per Python class of a value, and `decodes` once per
    target type (a class or an annotation such as ``list[int]``); the answers are cached, so
    both may be slow. Later registrations are asked first. `encode` and `decode` run per
    message and raise a `PayloadError` (`PayloadEncodeError`, `PayloadDecodeError`,
    `ContentTypeMismatch`, `UnexpectedType`) saying what was expected and what came.
    """

    name: str
    """A short name for listings and errors (``"protobuf"``, ``"json"``)."""
    media_type: str
    """The ``datacontenttype`` `encode` writes (one of `eventmicro.wire.media`'s, or the codec's own)."""

    def encodes(self, cls: type) -> bool:
        """Whether values of ``cls`` are written by this codec."""
        ...

    def decodes(self, target: object) -> bool:
        """Whether data is read into ``target`` (a class or an annotation) by this codec."""
        ...

    def encode(self, value: Any) -> Payload:
        """The data of ``value``, its content type and, when the class fixes them, its CloudEvent
        type and ``dataschema``."""
        ...

    def decode(self, data: Any, content_type: str | None, target: Any, dataschema: str | None) -> Any:
        """``data`` as ``target``: raw ``bytes`` (binary mode, ``data_base64``) or an already
        parsed JSON value or string (structured mode); ``content_type`` as sent (may be ``None``)."""
        ...

    def type_name(self, cls: type) -> str | None:
        """The CloudEvent type the class itself fixes (protobuf: its full name), else ``None``
        (the ``@event_type`` mark then names it)."""
        ...

    def dataschema(self, cls: type) -> str | None:
        """The ``dataschema`` of values of ``cls`` (protobuf: its type URL), else ``None``."""
        ...

    def json_schema(self, cls: type, schemas: SchemaBuilder) -> Schema | None:
        """The JSON Schema of ``cls`` built with ``schemas``, or ``None`` (a generic one then)."""
        ...


def event_type(name: str) -> Callable[[C], C]:
    """Class decorator naming the CloudEvent type of a JSON payload class.

    >>> import dataclasses
    >>> @event_type("shop.notes.v1.NoteAdded")
    ... @dataclasses.dataclass
    ... class NoteAdded:
    ...     text: str
    >>> declared_type_name(NoteAdded)
    'shop.notes.v1.NoteAdded'
    """
    if not name:
        raise ValueError("an event type must not be empty")

    def mark(cls: C) -> C:
        setattr(cls, _TYPE_ATTR, name)
        type_names.clear()  # names of this class (and its subclasses) known before are stale
        python_names.clear()
        return cls

    return mark


def declared_type_name(cls: type) -> str | None:
    """The CloudEvent type ``@event_type`` gave ``cls`` (or a base class), if any."""
    name = getattr(cls, _TYPE_ATTR, None)
    return name if isinstance(name, str) else None


def utf8(text: str, cls: type) -> bytes:
    """``text`` as UTF-8; text that is not valid Unicode (lone surrogates) raises `PayloadEncodeError`."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise PayloadEncodeError(
            f"{cls.__name__} holds text that is not valid Unicode ({exc.reason})"
        ) from exc


def parse_json(data: Any, target: object) -> Any:
    """The body read by the one strict JSON reader (eventmicro.wire.strictjson), whatever sent it;
    already parsed data (structured mode) is returned as it is. Errors name ``target``."""
    name = target if isinstance(target, str) else title(target)
    if not isinstance(data, bytes | bytearray):
        return data  # already parsed (structured mode)
    try:
        return strict_json.loads(bytes(data), max_depth=MAX_DEPTH)
    except strict_json.JSONError as exc:  # its words are JSON's, safe to send
        raise PayloadDecodeError(name, f"the body is not valid JSON: {exc}") from exc
