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

import base64
import dataclasses
import datetime as dt
import enum
import json
import types
import typing
import uuid
from collections.abc import Callable, Iterable
from decimal import Decimal
from typing import Any, Final, NamedTuple, TypeVar, cast

from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message

from eventmicro._errors import (
    ContentTypeMismatch,
    PayloadDecodeError,
    PayloadEncodeError,
    UnexpectedType,
)

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
    "type_name_of",
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
        return Payload(value.SerializeToString(), PROTOBUF, meta[0], meta[1])
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
            body = json.dumps(_to_json(value), ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise PayloadEncodeError(f"{cls.__name__} is not JSON-serializable: {exc}") from exc
        return Payload(_utf8(body, cls), JSON, type_name_of(cls))
    raise PayloadEncodeError(
        f"no codec for {cls.__name__}: use a protobuf message, a dataclass, a pydantic model, "
        "a dict or list, bytes or str"
    )


def _utf8(text: str, cls: type) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise PayloadEncodeError(
            f"{cls.__name__} holds text that is not valid Unicode ({exc.reason})"
        ) from exc


def _to_json(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _to_json(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {_json_key(k): _to_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_to_json(v) for v in value]
    if isinstance(value, enum.Enum):
        return _to_json(value.value)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, uuid.UUID | Decimal):
        return str(value)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if pydantic is not None and isinstance(value, pydantic.BaseModel):
        return value.model_dump(mode="json", by_alias=True)
    return value


def _json_key(key: object) -> str:
    if isinstance(key, str):
        return key
    if isinstance(key, enum.Enum):
        return str(key.value)
    if isinstance(key, int | uuid.UUID):
        return str(key)
    raise TypeError(f"dict keys must be strings, not {type(key).__name__}")


# --- decoding -----------------------------------------------------------------------------


def _media(content_type: str | None) -> str | None:
    if content_type is None:
        return None
    return content_type.split(";", 1)[0].strip().lower()


def _is_json(media: str | None) -> bool:
    return media is not None and (media.endswith("/json") or media.endswith("+json"))


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
            return cast(T, data.encode("utf-8"))
        raise PayloadDecodeError("bytes", f"the data is a JSON {type(data).__name__}")
    if target is str and not _is_json(media):
        if media is not None and not media.startswith("text/"):
            raise ContentTypeMismatch("text/*", content_type)
        if isinstance(data, str):
            return cast(T, data)
        try:
            return cast(T, (data or b"").decode("utf-8"))
        except (UnicodeDecodeError, AttributeError) as exc:
            raise PayloadDecodeError("str", "the body is not valid UTF-8 text") from exc
    if media is not None and not _is_json(media):
        raise ContentTypeMismatch(JSON, content_type)
    value = _parse_json(data, target)
    if pydantic is not None and isinstance(target, type) and issubclass(target, pydantic.BaseModel):
        try:
            return cast(T, target.model_validate(value))
        except pydantic.ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or '<root>'}: {e['msg']}" for e in exc.errors()
            )
            raise PayloadDecodeError(target.__name__, problems) from exc
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
    if media is None or media in _PROTOBUF_TYPES:
        if not isinstance(data, bytes):
            raise PayloadDecodeError(full_name, "protobuf data must be bytes")
        try:
            message.ParseFromString(data)
        except (DecodeError, RuntimeError, ValueError) as exc:
            raise PayloadDecodeError(full_name, "the body is not a valid protobuf message") from exc
        return message
    if _is_json(media):
        try:
            if isinstance(data, bytes | str):
                json_format.Parse(data, message, ignore_unknown_fields=True)
            else:
                json_format.ParseDict(data, message, ignore_unknown_fields=True)
        except (json_format.ParseError, ValueError, TypeError) as exc:
            raise PayloadDecodeError(full_name, f"the JSON body does not fit: {exc}") from exc
        return message
    raise ContentTypeMismatch(PROTOBUF, content_type)


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _parse_json(data: Any, target: object) -> Any:
    if not isinstance(data, bytes | bytearray):
        return data  # already parsed (structured mode)
    try:
        return json.loads(data, parse_constant=_no_constants)
    except (UnicodeDecodeError, ValueError) as exc:
        raise PayloadDecodeError(_describe(target), "the body is not valid JSON") from exc


# --- JSON value -> typed value --------------------------------------------------------------

_hints_cache: dict[type, dict[str, Any]] = {}


def convert(value: Any, target: Any, path: str = "") -> Any:
    """Convert a parsed JSON value to ``target`` (dataclasses, containers, enums, datetimes...)."""
    try:
        return _convert(value, target, path)
    except PayloadDecodeError:
        raise
    except (TypeError, ValueError, ArithmeticError) as exc:
        raise PayloadDecodeError(_describe(target), f"{path or '<root>'}: {exc}") from exc


def _fail(target: Any, path: str, value: Any) -> PayloadDecodeError:
    return PayloadDecodeError(
        _describe(target), f"{path or '<root>'}: expected {_describe(target)}, got {_json_name(value)}"
    )


def _convert(value: Any, target: Any, path: str) -> Any:
    if target is Any or target is object:
        return value
    origin = typing.get_origin(target)
    if origin is typing.Annotated:
        return _convert(value, typing.get_args(target)[0], path)
    if target is None or target is type(None):
        if value is not None:
            raise _fail(target, path, value)
        return None
    if origin is typing.Union or origin is types.UnionType:
        for option in typing.get_args(target):
            try:
                return _convert(value, option, path)
            except (PayloadDecodeError, TypeError, ValueError):
                continue
        raise _fail(target, path, value)
    if origin is typing.Literal:
        if value not in typing.get_args(target):
            raise _fail(target, path, value)
        return value
    if origin in (list, set, frozenset, tuple) or target in (list, set, frozenset, tuple):
        if not isinstance(value, list):
            raise _fail(target, path, value)
        args = typing.get_args(target)
        kind = origin or target
        if kind is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
            if len(args) != len(value):
                raise _fail(target, path, value)
            return tuple(
                _convert(v, a, f"{path}[{i}]") for i, (a, v) in enumerate(zip(args, value, strict=True))
            )
        item = args[0] if args else Any
        return kind(_convert(v, item, f"{path}[{i}]") for i, v in enumerate(value))
    if origin is dict or target is dict:
        if not isinstance(value, dict):
            raise _fail(target, path, value)
        key_type, value_type = typing.get_args(target) or (str, Any)
        return {
            _convert_key(k, key_type, _join(path, k)): _convert(v, value_type, _join(path, k))
            for k, v in value.items()
        }
    if not isinstance(target, type):
        raise PayloadDecodeError(_describe(target), "unsupported annotation")
    if dataclasses.is_dataclass(target):
        return _convert_dataclass(value, target, path)
    if pydantic is not None and issubclass(target, pydantic.BaseModel):
        return target.model_validate(value)
    if issubclass(target, enum.Enum):
        return _leaf(target, value, path, target)
    if target is bool:
        if not isinstance(value, bool):
            raise _fail(target, path, value)
        return value
    if target is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _fail(target, path, value)
        return value
    if target is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _fail(target, path, value)
        return float(value)
    if target is str:
        if not isinstance(value, str):
            raise _fail(target, path, value)
        return value
    parse = _TEXT_PARSERS.get(target)
    if parse is not None:
        return _leaf(parse, _need_str(value, target, path), path, target)
    if target is Decimal:
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise _fail(target, path, value)
        return _leaf(Decimal, str(value), path, target)
    raise PayloadDecodeError(_describe(target), f"{path or '<root>'}: unsupported type")


def _b64(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


_TEXT_PARSERS: Final[dict[Any, Callable[[str], Any]]] = {
    dt.datetime: dt.datetime.fromisoformat,
    dt.date: dt.date.fromisoformat,
    dt.time: dt.time.fromisoformat,
    uuid.UUID: uuid.UUID,
    bytes: _b64,
}


def _leaf(parse: Callable[[Any], Any], value: Any, path: str, target: Any) -> Any:
    """Parse a leaf value; a failure names the field path."""
    try:
        return parse(value)
    except (TypeError, ValueError, ArithmeticError) as exc:  # binascii.Error is a ValueError
        raise PayloadDecodeError(_describe(target), f"{path or '<root>'}: {exc}") from exc


def _join(path: str, key: object) -> str:
    return f"{path}.{key}" if path else str(key)


def _convert_key(key: str, key_type: Any, path: str) -> Any:
    """JSON object keys are strings; turn them back into int, UUID or enum keys."""
    if key_type is int:
        return _leaf(int, key, path, int)
    if isinstance(key_type, type) and issubclass(key_type, enum.Enum):
        for member in key_type:
            if str(member.value) == key:
                return member
        raise PayloadDecodeError(_describe(key_type), f"{path}: {key!r} is not a {key_type.__name__}")
    return _convert(key, key_type, path)


def _need_str(value: Any, target: Any, path: str) -> str:
    if not isinstance(value, str):
        raise _fail(target, path, value)
    return value


def _convert_dataclass(value: Any, target: type, path: str) -> Any:
    if not isinstance(value, dict):
        raise _fail(target, path, value)
    hints = _hints_cache.get(target)
    if hints is None:
        hints = _hints_cache[target] = typing.get_type_hints(target, include_extras=True)
    kwargs: dict[str, Any] = {}
    for field in dataclasses.fields(target):
        if not field.init:
            continue
        if field.name in value:
            kwargs[field.name] = _convert(value[field.name], hints[field.name], _join(path, field.name))
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise PayloadDecodeError(target.__name__, f"missing field '{_join(path, field.name)}'")
    return target(**kwargs)


def _describe(target: Any) -> str:
    return target.__name__ if isinstance(target, type) else str(target).replace("typing.", "")


def _json_name(value: Any) -> str:
    names = {
        dict: "an object",
        list: "an array",
        str: "a string",
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        type(None): "null",
    }
    return names.get(type(value), type(value).__name__)


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
