"""The protobuf codec: messages as ``application/protobuf`` bytes, typed by their full name.

Values are written as their binary encoding with ``type`` = the message's full name and
``dataschema = type.googleapis.com/<full name>``. Targets read protobuf bytes under any of the
media type's names, and ``application/json`` written by the protobuf JSON mapping (as foreign
services may send); a ``dataschema`` naming another message raises `UnexpectedType`.
"""

from __future__ import annotations

from typing import Any, Final

from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import DecodeError, EncodeError, Message

from eventmicro._errors import ContentTypeMismatch, PayloadDecodeError, PayloadEncodeError, UnexpectedType
from eventmicro.wire import media
from eventmicro.wire.codecs.base import MAX_DEPTH, SHOWN, Payload, Schema, SchemaBuilder, parse_json
from eventmicro.wire.convert import json_name

__all__ = ["TYPE_URL_PREFIX", "ProtobufCodec", "unknown_field"]

TYPE_URL_PREFIX: Final = "type.googleapis.com/"
_PROTOBUF: Final = media.PROTOBUF

# The hot path's caches (Event.of and Event.data_as read them directly):
_proto_meta: dict[type, tuple[str, str]] = {}  # protobuf class -> (full name, dataschema)
_proto_targets: dict[Any, str] = {}  # protobuf class decoded before -> its dataschema


class ProtobufCodec:
    """Protobuf messages (any subclass of ``google.protobuf.message.Message``)."""

    name = "protobuf"
    media_type = media.PROTOBUF

    def encodes(self, cls: type) -> bool:
        return issubclass(cls, Message)

    def decodes(self, target: object) -> bool:
        return isinstance(target, type) and issubclass(target, Message)

    def encode(self, value: Any) -> Payload:
        cls = value.__class__
        meta = _proto_meta.get(cls)
        if meta is None:
            full_name = value.DESCRIPTOR.full_name
            meta = _proto_meta[cls] = (full_name, TYPE_URL_PREFIX + full_name)
        try:
            data = value.SerializeToString()
        except EncodeError as exc:  # a proto2 message with required fields unset
            raise PayloadEncodeError(f"{meta[0]} cannot be serialized: {exc}") from exc
        return Payload(data, _PROTOBUF, meta[0], meta[1])

    def decode(self, data: Any, content_type: str | None, target: Any, dataschema: str | None) -> Any:
        full_name = target.DESCRIPTOR.full_name
        _proto_targets[target] = TYPE_URL_PREFIX + full_name
        if (
            dataschema
            and dataschema.startswith(TYPE_URL_PREFIX)
            and dataschema[len(TYPE_URL_PREFIX) :] != full_name
        ):
            raise UnexpectedType((full_name,), dataschema[len(TYPE_URL_PREFIX) :])
        message = target()
        essence = media.essence(content_type)
        if essence in media.PROTOBUF_MEDIA or (essence is None and isinstance(data, bytes)):
            if not isinstance(data, bytes):
                raise PayloadDecodeError(full_name, "protobuf data must be bytes")
            try:
                message.ParseFromString(data)
            except (DecodeError, RuntimeError, ValueError) as exc:
                raise PayloadDecodeError(full_name, "the body is not a valid protobuf message") from exc
            return message
        if essence is None or media.is_json(essence):  # parsed structured data with no content type is JSON
            value = parse_json(data, full_name)  # a string is a JSON string, never re-parsed
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
        raise ContentTypeMismatch(_PROTOBUF, content_type)

    def type_name(self, cls: type) -> str | None:
        return cls.DESCRIPTOR.full_name  # type: ignore[attr-defined,no-any-return]

    def dataschema(self, cls: type) -> str | None:
        return TYPE_URL_PREFIX + cls.DESCRIPTOR.full_name  # type: ignore[attr-defined,no-any-return]

    def json_schema(self, cls: type, schemas: SchemaBuilder) -> Schema | None:
        return schemas.of_descriptor(cls.DESCRIPTOR)  # type: ignore[attr-defined]


def serialize(message: Message) -> bytes:
    """``message``'s binary encoding; a proto2 message missing required fields raises `PayloadEncodeError`."""
    try:
        return message.SerializeToString()
    except EncodeError as exc:  # a proto2 message with required fields unset
        raise PayloadEncodeError(f"{message.DESCRIPTOR.full_name} cannot be serialized: {exc}") from exc


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
        if depth > MAX_DEPTH:
            return f"{path or '<root>'} (nested too deeply)"
        fields = _json_fields(message)
        for key, member in item.items():
            field = fields.get(key)
            where = f"{path}.{key}" if path else str(key)
            if field is None:
                return f"'{where[:SHOWN]}'"
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
