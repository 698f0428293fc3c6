"""The JSON codec: dataclasses, dicts, lists and tuples as ``application/json``, read back by `convert`.

Written compactly (no spaces, UTF-8, no NaN); a dataclass carries its ``@event_type``. As a
target it reads anything no other codec claims — dataclasses, containers, enums, dates,
UUIDs, ``X | None``, ... — from a JSON body (or structured mode's parsed data) through
`eventmicro.wire.convert`.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Final

from eventmicro._errors import ContentTypeMismatch, PayloadEncodeError
from eventmicro.wire import media
from eventmicro.wire.codecs.base import Payload, Schema, SchemaBuilder, declared_type_name, parse_json, utf8
from eventmicro.wire.convert import convert, to_json

__all__ = ["JSONCodec"]

_JSON: Final = media.JSON


class JSONCodec:
    """JSON values: dataclasses and plain dicts, lists and tuples; the fallback for every target."""

    name = "json"
    media_type = media.JSON

    def encodes(self, cls: type) -> bool:
        return dataclasses.is_dataclass(cls) or issubclass(cls, dict | list | tuple)

    def decodes(self, target: object) -> bool:
        return True

    def encode(self, value: Any) -> Payload:
        cls = type(value)
        try:
            body = json.dumps(to_json(value), ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise PayloadEncodeError(f"{cls.__name__} is not JSON-serializable: {exc}") from exc
        return Payload(utf8(body, cls), _JSON, declared_type_name(cls))

    def decode(self, data: Any, content_type: str | None, target: Any, dataschema: str | None) -> Any:
        if content_type is not None and content_type != _JSON and not media.is_json(content_type):
            raise ContentTypeMismatch(_JSON, content_type)
        return convert(parse_json(data, target), target)

    def type_name(self, cls: type) -> str | None:
        return None

    def dataschema(self, cls: type) -> str | None:
        return None

    def json_schema(self, cls: type, schemas: SchemaBuilder) -> Schema | None:
        if dataclasses.is_dataclass(cls):
            return schemas.of_dataclass(cls)
        return None  # containers, enums, dates...: the generic schemas say it
