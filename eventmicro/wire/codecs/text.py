"""The text codec: ``str`` as ``text/plain; charset=utf-8``.

A ``str`` target reads any ``text/*`` body as UTF-8 (no content type: text too); a JSON body is
read as a JSON string, as the JSON codec would; any other media type raises `ContentTypeMismatch`.
"""

from __future__ import annotations

from typing import Any, Final

from eventmicro._errors import ContentTypeMismatch, PayloadDecodeError
from eventmicro.wire import media
from eventmicro.wire.codecs.base import Payload, Schema, SchemaBuilder, parse_json, utf8
from eventmicro.wire.convert import convert, json_name

__all__ = ["TextCodec"]

_TEXT: Final = media.TEXT


class TextCodec:
    """Text: ``str`` values (and subclasses) written as UTF-8, read into ``str`` targets."""

    name = "text"
    media_type = media.TEXT

    def encodes(self, cls: type) -> bool:
        return issubclass(cls, str)

    def decodes(self, target: object) -> bool:
        return target is str

    def encode(self, value: Any) -> Payload:
        return Payload(utf8(value, type(value)), _TEXT)

    def decode(self, data: Any, content_type: str | None, target: Any, dataschema: str | None) -> Any:
        if content_type is not None and content_type != _TEXT:  # (what this codec writes: text)
            essence = media.essence(content_type) or ""
            if media.is_json(essence):  # a JSON string
                return convert(parse_json(data, target), target)
            if not essence.startswith("text/"):
                raise ContentTypeMismatch("text/*", content_type)
        if isinstance(data, str):
            return data
        if data is None:
            return ""
        if not isinstance(data, bytes):
            raise PayloadDecodeError("text", f"the data is {json_name(data)}, not text")
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise PayloadDecodeError("text", "the body is not valid UTF-8 text") from exc

    def type_name(self, cls: type) -> str | None:
        return None

    def dataschema(self, cls: type) -> str | None:
        return None

    def json_schema(self, cls: type, schemas: SchemaBuilder) -> Schema | None:
        return {"type": "string"}
