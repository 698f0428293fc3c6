"""Payload codecs: Python values to event data and back, typed by the caller.

==============================  ==================================  ==========================
value / target type             datacontenttype                     CloudEvent type
==============================  ==================================  ==========================
protobuf message                ``application/protobuf``            the proto full name
dataclass, pydantic v2 model    ``application/json``                ``@event_type("...")``
dict, list (plain JSON)         ``application/json``                given by the caller
bytes                           ``application/octet-stream``        given by the caller
str                             ``text/plain; charset=utf-8``       given by the caller
==============================  ==================================  ==========================

Protobuf payloads also carry ``dataschema = type.googleapis.com/<full name>``. Decoding checks
the content type (protobuf targets also read ``application/json`` written by the protobuf JSON
mapping, as foreign services may send), the ``dataschema`` when present, and the body; each
mismatch raises a `PayloadError` saying what was expected and what came.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterable
from typing import Any, Final, NamedTuple, TypeVar, cast

from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import DecodeError, EncodeError, Message

from eventmicro._errors import (
    ContentTypeMismatch,
    PayloadDecodeError,
    PayloadEncodeError,
    UnexpectedType,
)
from eventmicro.wire import strictjson as strict_json
from eventmicro.wire.convert import convert, json_name, title, to_json

try:  # pydantic is optional
    import pydantic
except ImportError:  # pragma: no cover - exercised only without pydantic installed
    pydantic = None  # type: ignore[assignment]

__all__ = [
    "JSON",
    "OCTET_STREAM",
    "PROTOBUF",
    "TEXT",
    "Payload",
    "TypeRegistry",
    "decode_payload",
    "encode_payload",
    "event_type",
    "is_json_media",
    "python_type_name",
    "type_name_of",
    "wire_type_name",
]

T = TypeVar("T")
C = TypeVar("C", bound=type)

PROTOBUF: Final = "application/protobuf"
JSON: Final = "application/json"
OCTET_STREAM: Final = "application/octet-stream"
TEXT: Final = "text/plain; charset=utf-8"
TYPE_URL_PREFIX: Final = "type.googleapis.com/"
_PROTOBUF_TYPES: Final = frozenset({PROTOBUF, "application/x-protobuf", "application/vnd.google.protobuf"})
_TYPE_ATTR: Final = "__cloudevent_type__"


class Payload(NamedTuple):
    """Encoded event data with the attributes that describe it (a tuple: cheap on the hot path)."""

    data: bytes
    content_type: str
    type: str | None = None
    dataschema: str | None = None


def event_type(name: str) -> Callable[[C], C]:
    """Class decorator naming the CloudEvent type of a JSON payload class.

    >>> @event_type("shop.notes.v1.NoteAdded")
    ... @dataclasses.dataclass
    ... class NoteAdded:
    ...     text: str
    >>> type_name_of(NoteAdded)
    'shop.notes.v1.NoteAdded'
    """
    if not name:
        raise ValueError("an event type must not be empty")

    def mark(cls: C) -> C:
        setattr(cls, _TYPE_ATTR, name)
        return cls

    return mark


def python_type_name(value_or_type: object) -> str:
    """The CloudEvent type of a value or class, falling back to ``<module>.<qualname>``.

    Used for RPC requests and replies, whose types need no registration.
    """
    cls = value_or_type if isinstance(value_or_type, type) else type(value_or_type)
    return type_name_of(cls) or f"{cls.__module__}.{cls.__qualname__}"


def wire_type_name(cls: object) -> str:
    """How an error reply names a request or event type: its CloudEvent type, a class's own
    name, else its JSON shape (``an object``) — never a Python module path or builtin.

    >>> wire_type_name(dict)
    'an object'
    """
    return type_name_of(cls) or title(cls)


def type_name_of(value_or_type: object) -> str | None:
    """The CloudEvent type of a payload value or class, if it defines one."""
    cls = value_or_type if isinstance(value_or_type, type) else type(value_or_type)
    if issubclass(cls, Message):
        return cls.DESCRIPTOR.full_name
    name = getattr(cls, _TYPE_ATTR, None)
    return name if isinstance(name, str) else None


# --- encoding -----------------------------------------------------------------------------

_proto_meta: dict[type, tuple[str, str]] = {}
_proto_targets: dict[Any, str] = {}  # protobuf class -> its dataschema, for the decode fast path


def encode_payload(value: object) -> Payload:
    """Encode a value with the codec its type selects (see the module table)."""
    cls = type(value)
    if isinstance(value, Message):
        meta = _proto_meta.get(cls)
        if meta is None:
            full_name = value.DESCRIPTOR.full_name
            meta = _proto_meta[cls] = (full_name, TYPE_URL_PREFIX + full_name)
        return Payload(_serialize(value), PROTOBUF, meta[0], meta[1])
    if isinstance(value, bytes | bytearray | memoryview):
        return Payload(bytes(value), OCTET_STREAM)
    if isinstance(value, str):
        return Payload(_utf8(value, cls), TEXT)
    if pydantic is not None and isinstance(value, pydantic.BaseModel):
        try:
            text = value.model_dump_json(by_alias=True)
        except (TypeError, ValueError) as exc:  # PydanticSerializationError is a ValueError
            raise PayloadEncodeError(f"{cls.__name__} could not be serialized: {exc}") from exc
        return Payload(_utf8(text, cls), JSON, type_name_of(cls))
    if dataclasses.is_dataclass(value) or isinstance(value, dict | list | tuple):
        try:
            body = json.dumps(to_json(value), ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise PayloadEncodeError(f"{cls.__name__} is not JSON-serializable: {exc}") from exc
        return Payload(_utf8(body, cls), JSON, type_name_of(cls))
    raise PayloadEncodeError(
        f"no codec for {cls.__name__}: use a protobuf message, a dataclass, a pydantic model, "
        "a dict or list, bytes or str"
    )


def _serialize(message: Message) -> bytes:
    try:
        return message.SerializeToString()
    except EncodeError as exc:  # a proto2 message with required fields unset
        raise PayloadEncodeError(f"{message.DESCRIPTOR.full_name} cannot be serialized: {exc}") from exc


def _utf8(text: str, cls: type) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise PayloadEncodeError(
            f"{cls.__name__} holds text that is not valid Unicode ({exc.reason})"
        ) from exc


# --- decoding -----------------------------------------------------------------------------


def _media(content_type: str | None) -> str | None:
    if content_type is None:
        return None
    return content_type.split(";", 1)[0].strip().lower()


def _is_json(media: str | None) -> bool:
    return media is not None and (media.endswith("/json") or media.endswith("+json"))


def is_json_media(content_type: str) -> bool:
    """True for ``*/json`` and ``*/*+json`` media types, whatever their case and parameters."""
    return _is_json(_media(content_type))


def decode_payload(
    data: Any,
    content_type: str | None,
    target: type[T],
    *,
    dataschema: str | None = None,
) -> T:
    """Decode event data into ``target``.

    ``data`` is what the binding delivered: raw ``bytes`` (binary mode, or ``data_base64``)
    or an already-parsed JSON value / string (structured mode).

    Raises `ContentTypeMismatch`, `UnexpectedType` (wrong ``dataschema``) or
    `PayloadDecodeError`.
    """
    if content_type == PROTOBUF and data.__class__ is bytes:
        full_name = _proto_targets.get(target)
        if full_name is not None and (dataschema is None or dataschema == full_name):
            message = target()
            try:
                message.ParseFromString(data)  # type: ignore[attr-defined]
            except (DecodeError, RuntimeError, ValueError) as exc:
                raise PayloadDecodeError(
                    target.DESCRIPTOR.full_name,  # type: ignore[attr-defined]
                    "the body is not a valid protobuf message",
                ) from exc
            return message
    media = _media(content_type)
    if isinstance(target, type) and issubclass(target, Message):
        _proto_targets[target] = TYPE_URL_PREFIX + target.DESCRIPTOR.full_name
        return cast(T, _decode_protobuf(data, media, content_type, target, dataschema))
    if target is bytes:
        if isinstance(data, bytes):
            return cast(T, data)
        if isinstance(data, str):
            try:
                return cast(T, data.encode("utf-8"))
            except UnicodeEncodeError as exc:
                raise PayloadDecodeError("binary data", "the text is not valid Unicode") from exc
        raise PayloadDecodeError("binary data", f"the data is {json_name(data)}, not binary data")
    if target is str and not _is_json(media):
        if media is not None and not media.startswith("text/"):
            raise ContentTypeMismatch("text/*", content_type)
        if isinstance(data, str):
            return cast(T, data)
        if data is None:
            return cast(T, "")
        if not isinstance(data, bytes):
            raise PayloadDecodeError("text", f"the data is {json_name(data)}, not text")
        try:
            return cast(T, data.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise PayloadDecodeError("text", "the body is not valid UTF-8 text") from exc
    if media is not None and not _is_json(media):
        raise ContentTypeMismatch(JSON, content_type)
    value = _parse_json(data, target)
    if pydantic is not None and isinstance(target, type) and issubclass(target, pydantic.BaseModel):
        try:
            return cast(T, target.model_validate(value))
        except pydantic.ValidationError as exc:
            raise PayloadDecodeError(target.__name__, _pydantic_problems(exc)) from exc
    return cast(T, convert(value, target))


def _decode_protobuf(
    data: Any, media: str | None, content_type: str | None, target: type[Message], dataschema: str | None
) -> Message:
    full_name = target.DESCRIPTOR.full_name
    if (
        dataschema
        and dataschema.startswith(TYPE_URL_PREFIX)
        and dataschema[len(TYPE_URL_PREFIX) :] != full_name
    ):
        raise UnexpectedType((full_name,), dataschema[len(TYPE_URL_PREFIX) :])
    message = target()
    if media in _PROTOBUF_TYPES or (media is None and isinstance(data, bytes)):
        if not isinstance(data, bytes):
            raise PayloadDecodeError(full_name, "protobuf data must be bytes")
        try:
            message.ParseFromString(data)
        except (DecodeError, RuntimeError, ValueError) as exc:
            raise PayloadDecodeError(full_name, "the body is not a valid protobuf message") from exc
        return message
    if media is None or _is_json(media):  # parsed structured data with no content type is JSON
        value = _parse_json(data, full_name)  # a string is a JSON string, never re-parsed
        unknown = unknown_field(value, target.DESCRIPTOR)
        if unknown is not None:  # e.g. another type's body: refused, not read as defaults
            raise PayloadDecodeError(full_name, f"{unknown} is not a field of {full_name}")
        try:
            json_format.ParseDict(value, message)
        except (json_format.ParseError, ValueError, TypeError, RecursionError) as exc:
            # protobuf's text speaks Python ("NoneType", recursion depth): not shown
            problem = _shape_problem(value)
            raise PayloadDecodeError(full_name, f"the JSON body does not fit: {problem}") from exc
        return message
    raise ContentTypeMismatch(PROTOBUF, content_type)


def _parse_json(data: Any, target: object) -> Any:
    """The body read by the one strict JSON reader (eventmicro.wire.strictjson), whatever sent it."""
    name = target if isinstance(target, str) else title(target)
    if not isinstance(data, bytes | bytearray):
        return data  # already parsed (structured mode)
    try:
        return strict_json.loads(bytes(data), max_depth=_MAX_DEPTH)
    except strict_json.JSONError as exc:  # its words are JSON's, safe to send
        raise PayloadDecodeError(name, f"the body is not valid JSON: {exc}") from exc


_MAX_DEPTH: Final = 100  # nesting levels of a protobuf JSON body (protobuf's own limit)


def unknown_field(value: Any, descriptor: Any) -> str | None:
    """The path of the first JSON member that names no field of the message (``items[0].sku2``),
    or ``None``. Field names are read as protobuf's JSON mapping does: the JSON name
    (``customerId``) or the proto name (``customer_id``). Well-known types keep their own
    JSON forms and are not looked into. Iterative: a deep body raises nothing but its answer.
    """
    pending: list[tuple[Any, Descriptor, str, int]] = [(value, descriptor, "", 0)]
    while pending:
        item, message, path, depth = pending.pop()
        if not isinstance(item, dict) or message.full_name.startswith("google.protobuf."):
            continue  # not an object: the parser says what is wrong with it
        if depth > _MAX_DEPTH:
            return f"{path or '<root>'} (nested too deeply)"
        fields = _json_fields(message)
        for key, member in item.items():
            field = fields.get(key)
            where = f"{path}.{key}" if path else str(key)
            if field is None:
                return f"'{where[:_SHOWN]}'"
            sub = field.message_type
            if sub is None:
                continue
            if sub.GetOptions().map_entry:
                inner = sub.fields_by_name["value"].message_type
                if inner is not None and isinstance(member, dict):
                    pending.extend((v, inner, f"{where}.{k}", depth + 1) for k, v in member.items())
            elif field.is_repeated:  # not an array: the parser says so
                if isinstance(member, list):
                    pending.extend((v, sub, f"{where}[{i}]", depth + 1) for i, v in enumerate(member))
            else:
                pending.append((member, sub, where, depth + 1))
    return None


_SHOWN: Final = 120  # characters of a sender's field name quoted back
_json_field_cache: dict[str, dict[str, FieldDescriptor]] = {}


def _json_fields(message: Descriptor) -> dict[str, FieldDescriptor]:
    fields = _json_field_cache.get(message.full_name)
    if fields is None:
        fields = {}
        for field in message.fields:
            fields[field.name] = field
            fields[field.json_name] = field
        _json_field_cache[message.full_name] = fields
    return fields


def _shape_problem(value: Any) -> str:
    if not isinstance(value, dict):
        return f"expected an object, got {json_name(value)}"
    return "a field has a value of the wrong type"


_PYDANTIC: Final = {
    "missing": "missing field",
    "extra_forbidden": "unknown field",
    "model_type": "expected an object",
    "model_attributes_type": "expected an object",
    "dict_type": "expected an object",
    "list_type": "expected an array",
    "tuple_type": "expected an array",
    "set_type": "expected an array",
    "string_type": "expected a string",
    "int_type": "expected an integer",
    "int_parsing": "expected an integer",
    "int_from_float": "expected an integer",
    "float_type": "expected a number",
    "float_parsing": "expected a number",
    "bool_type": "expected a boolean",
    "bool_parsing": "expected a boolean",
    "none_required": "expected null",
    "literal_error": "not one of the allowed values",
    "enum": "not one of the allowed values",
    "datetime_type": "expected a date-time string (ISO 8601)",
    "datetime_parsing": "expected a date-time string (ISO 8601)",
    "datetime_from_date_parsing": "expected a date-time string (ISO 8601)",
    "date_parsing": "expected a date string (ISO 8601)",
    "date_from_datetime_parsing": "expected a date string (ISO 8601)",
    "uuid_parsing": "expected a UUID string",
    "uuid_type": "expected a UUID string",
    "decimal_parsing": "expected a decimal number",
    "recursion_loop": "the value nests too deeply",
}


def _pydantic_problems(exc: pydantic.ValidationError) -> str:
    """pydantic's errors in the wire's words: the field path and what was expected (its own
    messages name Python types and quote the model's validators, which stay on this side)."""
    problems = []
    for error in exc.errors(include_url=False, include_context=False)[:10]:
        where = ".".join(map(str, error["loc"]))[:_SHOWN] or "<root>"
        what = _PYDANTIC.get(error["type"], "the value is refused")
        if what.startswith("expected"):
            what += f", got {json_name(error.get('input'))}"
        problems.append(f"{where}: {what}")
    return "; ".join(problems)


# --- registry -----------------------------------------------------------------------------


class TypeRegistry:
    """Maps CloudEvent types to Python types, for handlers that receive several types.

    >>> registry = TypeRegistry()
    >>> registry.register(dict, "com.example.raw")
    >>> registry.lookup("com.example.raw")
    <class 'dict'>
    """

    def __init__(self, types_: Iterable[type] = ()) -> None:
        self._types: dict[str, type] = {}
        for cls in types_:
            self.register(cls)

    def register(self, cls: type, name: str | None = None) -> None:
        """Register ``cls`` under ``name`` (default: its protobuf full name or ``@event_type``)."""
        name = name or type_name_of(cls)
        if not name:
            raise ValueError(
                f"{cls.__name__} has no CloudEvent type: pass a name or decorate it with @event_type"
            )
        existing = self._types.get(name)
        if existing is not None and existing is not cls:
            raise ValueError(f"event type {name!r} is already registered to {existing.__name__}")
        self._types[name] = cls

    def lookup(self, name: str) -> type | None:
        """The Python type registered for a CloudEvent type, or ``None``."""
        return self._types.get(name)

    @property
    def names(self) -> tuple[str, ...]:
        """Every registered CloudEvent type, sorted."""
        return tuple(sorted(self._types))

    def decode(
        self, type_name: str, data: Any, content_type: str | None, dataschema: str | None = None
    ) -> object:
        """Decode data of CloudEvent type ``type_name`` into its registered Python type.

        Raises `UnexpectedType` for a type nobody registered.
        """
        cls = self._types.get(type_name)
        if cls is None:
            raise UnexpectedType(self.names, type_name)
        return decode_payload(data, content_type, cls, dataschema=dataschema)
