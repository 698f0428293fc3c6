"""The bytes codec: ``bytes``, ``bytearray`` and ``memoryview`` as ``application/octet-stream``, unchanged.

A ``bytes`` target takes the body as it came, whatever its content type; text data (structured
mode's ``data`` string) is taken as its UTF-8 bytes.
"""

from __future__ import annotations

from typing import Any, Final

from eventmicro._errors import PayloadDecodeError
from eventmicro.wire import media
from eventmicro.wire.codecs.base import Payload, Schema, SchemaBuilder
from eventmicro.wire.convert import json_name

__all__ = ["BytesCodec"]

_OCTET_STREAM: Final = media.OCTET_STREAM


class BytesCodec:
    """Raw bytes: written as they are, read into ``bytes`` targets."""

    name = "bytes"
    media_type = media.OCTET_STREAM

    def encodes(self, cls: type) -> bool:
        return issubclass(cls, bytes | bytearray | memoryview)

    def decodes(self, target: object) -> bool:
        return target is bytes

    def encode(self, value: Any) -> Payload:
        return Payload(bytes(value), _OCTET_STREAM)

    def decode(self, data: Any, content_type: str | None, target: Any, dataschema: str | None) -> Any:
        if isinstance(data, bytes):
            return data
        if isinstance(data, str):
            try:
                return data.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise PayloadDecodeError("binary data", "the text is not valid Unicode") from exc
        raise PayloadDecodeError("binary data", f"the data is {json_name(data)}, not binary data")

    def type_name(self, cls: type) -> str | None:
        return None

    def dataschema(self, cls: type) -> str | None:
        return None

    def json_schema(self, cls: type, schemas: SchemaBuilder) -> Schema | None:
        return {"type": "string", "contentEncoding": "base64"}
