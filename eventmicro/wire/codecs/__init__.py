"""Payload codecs: Python values to event data and back, typed by the caller; the built-in codecs' registry.

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

A codec is a class satisfying `Codec` (`eventmicro.wire.codecs.base`) in a module of its own,
added with one `register_codec` line; the registry (`eventmicro.wire.codecs.registry`) picks
one per Python type, asking the newest first. The built-in ones are registered below, most
general first. Media types are `eventmicro.wire.media`'s.
"""

from __future__ import annotations

from eventmicro.wire.codecs.base import Codec, Payload, SchemaBuilder, event_type
from eventmicro.wire.codecs.jsonvalues import JSONCodec
from eventmicro.wire.codecs.octets import BytesCodec
from eventmicro.wire.codecs.protobuf import TYPE_URL_PREFIX, ProtobufCodec, unknown_field
from eventmicro.wire.codecs.pydantic_models import PydanticCodec
from eventmicro.wire.codecs.registry import (
    TypeRegistry,
    codec_for,
    codec_for_target,
    dataschema_of,
    decode_payload,
    encode_payload,
    media_type_of,
    media_type_of_label,
    python_type_name,
    register_codec,
    registered_codecs,
    type_name_of,
    unregister_codec,
    wire_type_name,
)
from eventmicro.wire.codecs.text import TextCodec
from eventmicro.wire.media import JSON, OCTET_STREAM, PROTOBUF, TEXT

register_codec(JSONCodec())  # dataclasses, dicts, lists, tuples; every target no other codec reads
register_codec(PydanticCodec())  # pydantic v2 models
register_codec(TextCodec())  # str
register_codec(BytesCodec())  # bytes, bytearray, memoryview
register_codec(ProtobufCodec())  # protobuf messages

__all__ = [
    "JSON",
    "OCTET_STREAM",
    "PROTOBUF",
    "TEXT",
    "TYPE_URL_PREFIX",
    "Codec",
    "Payload",
    "SchemaBuilder",
    "TypeRegistry",
    "codec_for",
    "codec_for_target",
    "dataschema_of",
    "decode_payload",
    "encode_payload",
    "event_type",
    "media_type_of",
    "media_type_of_label",
    "python_type_name",
    "register_codec",
    "registered_codecs",
    "type_name_of",
    "unknown_field",
    "unregister_codec",
    "wire_type_name",
]
