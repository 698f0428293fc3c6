"""Media types eventmicro reads and writes: the one table every codec, tool and edge consults."""

from __future__ import annotations

from typing import Final

__all__ = [
    "JSON",
    "OCTET_STREAM",
    "PROTOBUF",
    "PROTOBUF_MEDIA",
    "TEXT",
    "essence",
    "is_json",
    "is_protobuf",
]

PROTOBUF: Final = "application/protobuf"
JSON: Final = "application/json"
OCTET_STREAM: Final = "application/octet-stream"
TEXT: Final = "text/plain; charset=utf-8"
# every name a protobuf payload goes by (the IANA registration and two older ones still sent)
PROTOBUF_MEDIA: Final = frozenset({PROTOBUF, "application/x-protobuf", "application/vnd.google.protobuf"})


def essence(content_type: str | None) -> str | None:
    """The media type without parameters, lower case (``None`` stays ``None``)."""
    if content_type is None:
        return None
    return content_type.partition(";")[0].strip().lower()


def is_protobuf(content_type: str | None) -> bool:
    """Whether ``content_type`` names protobuf bytes, under any of its names."""
    return essence(content_type) in PROTOBUF_MEDIA


def is_json(content_type: str | None) -> bool:
    """Whether ``content_type`` is JSON: any ``*/json`` or ``*/*+json`` type, whatever its case
    and parameters."""
    media = essence(content_type)
    return media is not None and (media.endswith("/json") or media.endswith("+json"))
