"""JSON values to typed Python values and back: dataclasses, containers, enums, dates, UUIDs.

Errors name the field path in the wire's words, never Python's
(``lines[1].quantity: expected an integer, got a string``).
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
from collections.abc import Callable
from decimal import Decimal
from typing import Any, Final

from eventmicro._errors import PayloadDecodeError

try:  # pydantic is optional
    import pydantic
except ImportError:  # pragma: no cover - exercised only without pydantic installed
    pydantic = None  # type: ignore[assignment]

__all__ = ["convert", "describe", "json_name", "title", "to_json"]


def to_json(value: Any) -> Any:
    """A JSON-serializable form of ``value`` (dataclasses, enums, dates, UUIDs, bytes as base64)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_json(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {_json_key(k): to_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [to_json(v) for v in value]
    if isinstance(value, enum.Enum):
        return to_json(value.value)
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


# --- JSON value -> typed value --------------------------------------------------------------

_hints_cache: dict[type, dict[str, Any]] = {}


def convert(value: Any, target: Any, path: str = "") -> Any:
    """Convert a parsed JSON value to ``target`` (dataclasses, containers, enums, datetimes...)."""
    try:
        return _convert(value, target, path)
    except PayloadDecodeError as exc:
        if exc.expected == title(target):
            raise
        raise PayloadDecodeError(title(target), exc.reason) from exc  # named by the whole, not a leaf
    except (TypeError, ValueError, ArithmeticError) as exc:  # their text is Python's: not shown
        raise PayloadDecodeError(title(target), f"{path or '<root>'}: the value does not fit") from exc
    except RecursionError as exc:
        raise PayloadDecodeError(title(target), "the value nests too deeply") from exc


def _fail(target: Any, path: str, value: Any) -> PayloadDecodeError:
    return PayloadDecodeError(
        title(target), f"{path or '<root>'}: expected {describe(target)}, got {json_name(value)}"
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
        raise PayloadDecodeError(title(target), "unsupported annotation")
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
    raise PayloadDecodeError(title(target), f"{path or '<root>'}: unsupported type")


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
        raise _fail(target, path, value) from exc


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
        raise _fail(key_type, path, key)
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
    try:
        return target(**kwargs)
    except Exception as exc:  # the class's own checks: their text stays on this side
        raise PayloadDecodeError(target.__name__, f"{path or '<root>'}: the values were refused") from exc


_SHAPES: Final[dict[Any, str]] = {
    dict: "an object",
    list: "an array",
    tuple: "an array",
    set: "an array",
    frozenset: "an array",
    str: "a string",
    bool: "a boolean",
    int: "an integer",
    float: "a number",
    type(None): "null",
    None: "null",
    Decimal: "a decimal number",
    dt.datetime: "a date-time string (ISO 8601)",
    dt.date: "a date string (ISO 8601)",
    dt.time: "a time string (ISO 8601)",
    uuid.UUID: "a UUID string",
    bytes: "a base64 string",
    Any: "any value",
    object: "any value",
}


def describe(target: Any) -> str:
    """What a type or annotation expects, in JSON's words (``an array``, ``null``,
    ``one of 'red', 'green'``), for error messages: never a Python type name."""
    shape = _SHAPES.get(target)
    if shape is not None:
        return shape
    origin = typing.get_origin(target)
    if origin is typing.Annotated:
        return describe(typing.get_args(target)[0])
    if origin is typing.Union or origin is types.UnionType:
        return " or ".join(dict.fromkeys(describe(option) for option in typing.get_args(target)))
    if origin is typing.Literal:
        return "one of " + ", ".join(json.dumps(v) for v in typing.get_args(target))
    if origin is tuple and typing.get_args(target) and typing.get_args(target)[-1] is not Ellipsis:
        return f"an array of {len(typing.get_args(target))} items"
    if origin is not None:
        return _SHAPES.get(origin, "a value")
    if isinstance(target, type) and issubclass(target, enum.Enum):
        return "one of " + ", ".join(json.dumps(to_json(m.value)) for m in target)
    if isinstance(target, type) and (
        dataclasses.is_dataclass(target) or (pydantic is not None and issubclass(target, pydantic.BaseModel))
    ):
        return f"an object ({target.__name__})"
    return "a value"


def title(target: Any) -> str:
    """The name a decode error gives its target: a class's own name (``Note``), else its shape."""
    if isinstance(target, type) and (
        dataclasses.is_dataclass(target) or (pydantic is not None and issubclass(target, pydantic.BaseModel))
    ):
        return target.__name__
    return describe(target)


def json_name(value: Any) -> str:
    """What a parsed JSON value is (``an object``, ``null``), for error messages."""
    return _SHAPES.get(type(value), "a value")
