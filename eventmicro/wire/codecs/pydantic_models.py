"""The pydantic codec: pydantic v2 models as ``application/json``, validated by the model on the way in.

Written with ``model_dump_json(by_alias=True)`` and the model's ``@event_type``; read with
``model_validate``, whose errors are given in the wire's words (field path, what was expected),
never pydantic's own (they name Python types and quote the model's validators). Without
pydantic installed the codec claims nothing.
"""

from __future__ import annotations

from typing import Any, Final

from eventmicro._errors import ContentTypeMismatch, PayloadDecodeError, PayloadEncodeError
from eventmicro.wire import media
from eventmicro.wire.codecs.base import (
    SHOWN,
    Payload,
    Schema,
    SchemaBuilder,
    declared_type_name,
    parse_json,
    utf8,
)
from eventmicro.wire.convert import json_name

try:  # pydantic is optional
    import pydantic
except ImportError:  # pragma: no cover - exercised only without pydantic installed
    pydantic = None  # type: ignore[assignment]

__all__ = ["PydanticCodec"]

_JSON: Final = media.JSON


class PydanticCodec:
    """pydantic v2 models (``pydantic.BaseModel`` subclasses)."""

    name = "pydantic"
    media_type = media.JSON

    def encodes(self, cls: type) -> bool:
        return pydantic is not None and issubclass(cls, pydantic.BaseModel)

    def decodes(self, target: object) -> bool:
        return pydantic is not None and isinstance(target, type) and issubclass(target, pydantic.BaseModel)

    def encode(self, value: Any) -> Payload:
        cls = type(value)
        try:
            text = value.model_dump_json(by_alias=True)
        except (TypeError, ValueError) as exc:  # PydanticSerializationError is a ValueError
            raise PayloadEncodeError(f"{cls.__name__} could not be serialized: {exc}") from exc
        return Payload(utf8(text, cls), _JSON, declared_type_name(cls))

    def decode(self, data: Any, content_type: str | None, target: Any, dataschema: str | None) -> Any:
        if content_type is not None and content_type != _JSON and not media.is_json(content_type):
            raise ContentTypeMismatch(_JSON, content_type)
        value = parse_json(data, target)
        try:
            return target.model_validate(value)
        except pydantic.ValidationError as exc:
            raise PayloadDecodeError(target.__name__, _problems(exc)) from exc

    def type_name(self, cls: type) -> str | None:
        return None

    def dataschema(self, cls: type) -> str | None:
        return None

    def json_schema(self, cls: type, schemas: SchemaBuilder) -> Schema | None:
        try:
            model_schema = cls.model_json_schema(ref_template=schemas.ref_prefix + "{model}")  # type: ignore[attr-defined]
        except pydantic.PydanticUserError:  # a field type with no JSON Schema
            name = declared_type_name(cls) or f"{cls.__module__}.{cls.__qualname__}"
            return {"description": f"any JSON value ({name} has no JSON Schema)"}
        return schemas.lift(cls, model_schema)


_WORDS: Final = {
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


def _problems(exc: pydantic.ValidationError) -> str:
    """pydantic's errors in the wire's words: the field path and what was expected (its own
    messages name Python types and quote the model's validators, which stay on this side)."""
    problems = []
    for error in exc.errors(include_url=False, include_context=False)[:10]:
        where = ".".join(map(str, error["loc"]))[:SHOWN] or "<root>"
        what = _WORDS.get(error["type"], "the value is refused")
        if what.startswith("expected"):
            what += f", got {json_name(error.get('input'))}"
        problems.append(f"{where}: {what}")
    return "; ".join(problems)
