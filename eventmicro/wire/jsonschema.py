"""JSON Schemas of payload types, for AsyncAPI and OpenAPI documents (no I/O).

================================  ===============================================================
payload type                      schema
================================  ===============================================================
protobuf message                  ``{"$ref": prefix + full name}``, its proto3 JSON mapping
pydantic model, dataclass         ``{"$ref": prefix + CloudEvent type or module.qualname}``
str / bytes                       string / string with ``contentEncoding: base64``
dict, list, Any                   object, array, any JSON value
``X | None``                      ``anyOf: [X, {"type": "null"}]``
================================  ===============================================================

Only keywords valid in both OpenAPI 3.1 (JSON Schema 2020-12) and AsyncAPI 3.0 (a draft-07
superset) are written: ``type``, ``properties``, ``items``, ``additionalProperties``, ``enum``,
``format``, ``$ref``, ``description``, ``anyOf``, ``const``, ``pattern``, ``contentEncoding``,
``minimum``, ``maximum``. Protobuf integers carry their ranges (int32 and uint32 as numbers
with ``minimum``/``maximum``, 64-bit ones as strings whose ``pattern`` admits exactly the
range), so every value a schema allows is one the service's decoder accepts.

>>> from google.protobuf import timestamp_pb2
>>> schemas = SchemaSet()
>>> schemas.of_type(timestamp_pb2.Timestamp)
{'$ref': '#/components/schemas/google.protobuf.Timestamp'}
>>> schemas.components["google.protobuf.Timestamp"]["format"]
'date-time'
"""

from __future__ import annotations

import copy
import dataclasses
import datetime
import enum
import json
import re
import types
import typing
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, Final

from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor

from eventmicro.wire import strictjson as strict_json
from eventmicro.wire.codecs import codec_for_target, dataschema_of, python_type_name
from eventmicro.wire.types import message_descriptor

try:  # pydantic is optional: it describes dataclasses best when present
    import pydantic
except ImportError:  # pragma: no cover - exercised only without pydantic installed
    pydantic = None  # type: ignore[assignment]

__all__ = ["MAX_PUBLISHED", "SchemaSet", "published_schema"]

Schema = dict[str, Any]
F = FieldDescriptor


def _at_most(limit: int) -> str:
    """A regex (no anchors) of the decimal strings of 0..``limit``, leading zeros allowed up to its
    length (what protobuf's JSON parser reads): exact, so a schema's valid strings all fit."""
    digits = str(limit)
    shorter = f"[0-9]{{1,{len(digits) - 1}}}" if len(digits) > 1 else None
    same = [
        digits[:i] + f"[0-{int(d) - 1}]" + (f"[0-9]{{{len(digits) - i - 1}}}" if i < len(digits) - 1 else "")
        for i, d in enumerate(digits)
        if d != "0"
    ]
    return "(" + "|".join(filter(None, [shorter, *same, digits])) + ")"


_INT32_RANGE: Final = {"minimum": -(2**31), "maximum": 2**31 - 1}
_UINT32_RANGE: Final = {"minimum": 0, "maximum": 2**32 - 1}
_INT64: Final = {
    "type": "string",
    "format": "int64",
    "pattern": f"^(-?{_at_most(2**63 - 1)}|-{2**63})$",
    "description": "a decimal string, -2^63 to 2^63-1 (proto3 JSON)",
}
_UINT64: Final = {
    "type": "string",
    "format": "uint64",
    "pattern": f"^{_at_most(2**64 - 1)}$",
    "description": "a decimal string, 0 to 2^64-1 (proto3 JSON)",
}
_FLOAT: Final = {"anyOf": [{"type": "number"}, {"type": "string", "enum": ["NaN", "Infinity", "-Infinity"]}]}
_BYTES: Final = {"type": "string", "contentEncoding": "base64"}
_SCALARS: Final[dict[int, Schema]] = {
    F.TYPE_DOUBLE: _FLOAT,
    F.TYPE_FLOAT: _FLOAT,
    F.TYPE_INT32: {"type": "integer", "format": "int32", **_INT32_RANGE},
    F.TYPE_SINT32: {"type": "integer", "format": "int32", **_INT32_RANGE},
    F.TYPE_SFIXED32: {"type": "integer", "format": "int32", **_INT32_RANGE},
    F.TYPE_UINT32: {"type": "integer", "format": "uint32", **_UINT32_RANGE},
    F.TYPE_FIXED32: {"type": "integer", "format": "uint32", **_UINT32_RANGE},
    F.TYPE_INT64: _INT64,
    F.TYPE_SINT64: _INT64,
    F.TYPE_SFIXED64: _INT64,
    F.TYPE_UINT64: _UINT64,
    F.TYPE_FIXED64: _UINT64,
    F.TYPE_BOOL: {"type": "boolean"},
    F.TYPE_STRING: {"type": "string"},
    F.TYPE_BYTES: _BYTES,
}
_WRAPPERS: Final = frozenset(
    f"google.protobuf.{kind}Value"
    for kind in ("Double", "Float", "Int64", "UInt64", "Int32", "UInt32", "Bool", "String", "Bytes")
)
_WELL_KNOWN: Final[dict[str, Schema]] = {
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time", "description": "RFC 3339, UTC"},
    "google.protobuf.Duration": {
        "type": "string",
        "pattern": "^-?[0-9]+(\\.[0-9]{1,9})?s$",
        "description": "seconds with an 's' suffix, e.g. '1.5s'",
    },
    "google.protobuf.Struct": {"type": "object"},
    "google.protobuf.Value": {"description": "any JSON value"},
    "google.protobuf.ListValue": {"type": "array"},
    "google.protobuf.Empty": {"type": "object"},
    "google.protobuf.Any": {
        "type": "object",
        "properties": {"@type": {"type": "string"}},
        "description": "the packed message's fields and '@type', its type URL",
    },
    "google.protobuf.FieldMask": {"type": "string", "description": "comma-separated lowerCamelCase paths"},
}
_PLAIN: Final[dict[object, Schema]] = {
    str: {"type": "string"},
    bytes: _BYTES,
    bytearray: _BYTES,
    bool: {"type": "boolean"},
    int: {"type": "integer"},
    float: {"type": "number"},
    dict: {"type": "object"},
    list: {"type": "array"},
    tuple: {"type": "array"},
    datetime.datetime: {"type": "string", "format": "date-time"},
    datetime.date: {"type": "string", "format": "date"},
    uuid.UUID: {"type": "string", "format": "uuid"},
    Any: {},
    object: {},
}
_LABELS: Final[dict[str, Schema]] = {
    "none": {"type": "null"},
    "builtins.str": {"type": "string"},
    "builtins.bytes": _BYTES,
    "builtins.dict": {"type": "object"},
    "builtins.list": {"type": "array"},
}
_KEY: Final = re.compile(r"[^\w.\-]")  # component keys: ^[\w\d.\-_]+$ (OpenAPI and AsyncAPI)
_DEFS: Final = "#/$defs/"
MAX_PUBLISHED: Final = 16 * 1024  # characters of one published schema (eventmicro.*_json_schema)


class SchemaSet:
    """JSON Schemas of payload types; protobuf messages (and pydantic/dataclass models) become
    named components referenced by $ref."""

    def __init__(self, ref_prefix: str = "#/components/schemas/") -> None:
        self.ref_prefix = ref_prefix
        self.components: dict[str, Schema] = {}  # name -> schema, filled as types are added

    def of_type(self, cls: object) -> Schema:
        """The schema of a Python payload type (an annotation: unions, ``list[X]``, ``None``...)."""
        if cls is None or cls is type(None):
            return {"type": "null"}
        origin, args = typing.get_origin(cls), typing.get_args(cls)
        if origin is typing.Union or origin is types.UnionType:
            return _union([self.of_type(arg) for arg in args])
        if origin is typing.Annotated:
            return self.of_type(args[0])
        if origin is typing.Literal:
            return {"enum": list(args)}
        if isinstance(origin, type) and issubclass(origin, Mapping):
            return {"type": "object", "additionalProperties": self.of_type(args[1]) if args else {}}
        if origin is tuple and args and args[-1] is not Ellipsis:  # tuple[A, B]: items of either type
            return {"type": "array", "items": _union([self.of_type(arg) for arg in args])}
        if isinstance(origin, type) and issubclass(origin, Sequence | set | frozenset):
            return {"type": "array", "items": self.of_type(args[0]) if args else {}}
        if not isinstance(cls, type):
            return {} if cls is Any else {"description": f"any JSON value ({cls!r} is not described)"}
        codec = codec_for_target(cls)  # protobuf, pydantic, dataclasses, ...: their codec says
        if codec is not None and (schema := codec.json_schema(cls, self)) is not None:
            return schema
        if issubclass(cls, enum.Enum):
            return {"enum": [member.value for member in cls]}
        for base in cls.__mro__[:-1] if cls is not object else (object,):
            if base in _PLAIN:
                return copy.deepcopy(_PLAIN[base])
        return {"description": f"any JSON value ({python_type_name(cls)} is not described)"}

    def of_descriptor(self, descriptor: Descriptor) -> Schema:
        """``{"$ref": prefix + full_name}``; the message's components are added recursively."""
        name = descriptor.full_name
        if name not in self.components:
            self.components[name] = {}  # taken first: a recursive message refers to itself
            self.components[name] = self._message(descriptor)
        return {"$ref": self.ref_prefix + name}

    def of_label(
        self, label: str | None, type_url: str | None = None, published: str | None = None
    ) -> Schema:
        """The schema of a type named in ``$SRV.INFO`` metadata (``eventmicro.request`` etc.).

        An installed protobuf type (``type_url``, or ``label`` as a full name) gives its
        ``$ref``; a schema the service published (``published``, see `published_schema`) its
        ``$ref``; ``builtins.str``, ``builtins.bytes`` and ``none`` their JSON forms; any other
        label any JSON value, with a description naming it.
        """
        full_name = type_url.rpartition("/")[2] if type_url else None
        for candidate in (full_name, label):
            descriptor = _installed(candidate)
            if descriptor is not None:
                return self.of_descriptor(descriptor)
        if not full_name and (lifted := self.of_published(label, published)) is not None:
            return lifted
        if full_name:
            return {"description": f"protobuf message {full_name} (its schema is not installed here)"}
        if label in _LABELS:
            return copy.deepcopy(_LABELS[label])
        if not label:
            return {"description": "any JSON value (the service does not name this type)"}
        return {"description": f"{label} (any JSON value: its schema is not known here)"}

    def of_published(self, label: str | None, text: str | None) -> Schema | None:
        """The schema a service published for a JSON type (`published_schema`), its ``$defs``
        registered as components; ``None`` when ``text`` is absent, too long or not such a document.

        The text comes from another process: only ``#/$defs/`` references are kept (any other
        ``$ref`` is dropped, so no tool is sent elsewhere), names are made component keys.
        """
        if not label or not text or len(text) > MAX_PUBLISHED:
            return None
        try:
            document = strict_json.loads(text)
        except ValueError:
            return None
        if not isinstance(document, dict):
            return None
        defs = document.pop("$defs", None)
        defs = {str(key): body for key, body in defs.items()} if isinstance(defs, dict) else {}
        renames = {key: _key(key) for key in defs}
        for key, body in defs.items():  # same name, other schema (another service's class)
            taken = self.components.get(renames[key])
            if taken is not None and taken != self._local(body, renames):
                renames[key] = _key(f"{label}.{key}")
        for key, body in defs.items():
            self.components[renames[key]] = self._local(body, renames)
        top = self._local(document, renames)
        if set(top) == {"$ref"}:
            return typing.cast(Schema, top)  # the usual form: {"$ref": "#/$defs/<model>", "$defs": {...}}
        name = _key(label)
        self.components[name] = top
        return {"$ref": self.ref_prefix + name}

    def _local(self, value: Any, renames: Mapping[str, str]) -> Any:
        if isinstance(value, list):
            return [self._local(item, renames) for item in value]
        if not isinstance(value, dict):
            return value
        out = {str(key): self._local(item, renames) for key, item in value.items() if key != "$ref"}
        ref = value.get("$ref")
        if isinstance(ref, str) and ref.startswith(_DEFS) and ref.removeprefix(_DEFS) in renames:
            out["$ref"] = self.ref_prefix + renames[ref.removeprefix(_DEFS)]
        return out

    # --- protobuf ------------------------------------------------------------------------------

    def _message(self, descriptor: Descriptor) -> Schema:
        name = descriptor.full_name
        if name in _WELL_KNOWN:
            return copy.deepcopy(_WELL_KNOWN[name])
        if name in _WRAPPERS:  # null means unset
            inner = self._field(descriptor.fields_by_name["value"], repeated=False)
            return _union([inner, {"type": "null"}])
        properties = {field.json_name: self._field(field) for field in descriptor.fields}
        schema: Schema = {"type": "object", "properties": properties}
        text = f"{name} (proto3 JSON mapping)"
        choices = [o for o in descriptor.oneofs if len(o.fields) > 1]  # not proto3 `optional`
        if choices:
            sets = "; ".join(", ".join(f.json_name for f in o.fields) + f" (oneof {o.name})" for o in choices)
            text += f"; at most one of: {sets}"
        schema["description"] = text
        return schema

    def _field(self, field: FieldDescriptor, *, repeated: bool | None = None) -> Schema:
        if repeated is None:
            repeated = field.is_repeated
        message = field.message_type
        if repeated and message is not None and message.GetOptions().map_entry:
            value = self._field(message.fields_by_name["value"], repeated=False)
            return {"type": "object", "additionalProperties": value}
        if field.enum_type is not None:
            single = self._enum(field.enum_type)
        elif message is not None:
            single = self.of_descriptor(message)
        else:
            single = copy.deepcopy(_SCALARS[field.type])
        return {"type": "array", "items": single} if repeated else single

    def _enum(self, descriptor: EnumDescriptor) -> Schema:
        name = descriptor.full_name
        if name == "google.protobuf.NullValue":
            return {"type": "null"}
        if name not in self.components:
            values = [value.name for value in descriptor.values]
            self.components[name] = {"type": "string", "enum": values, "description": f"{name} (enum)"}
        return {"$ref": self.ref_prefix + name}

    # --- pydantic and dataclasses -------------------------------------------------------------

    def lift(self, cls: type, schema: Schema) -> Schema:
        """Register a schema generated for ``cls`` (pydantic's, say) as a component, its ``$defs``
        as components too; returns its ``$ref``."""
        name = _key(python_type_name(cls))
        defs: dict[str, Schema] = schema.pop("$defs", {})
        renames: dict[str, str] = {}
        if set(schema) == {"$ref"}:  # a recursive model: pydantic puts it in $defs itself
            top = schema["$ref"].removeprefix(self.ref_prefix)
            schema = defs.pop(top)
            renames[top] = name
        for key in defs:
            renames.setdefault(key, _key(key))
        for key, body in defs.items():  # same name, other schema (another module's class)
            taken = self.components.get(renames[key])
            if taken is not None and taken != self._renamed(body, renames):
                renames[key] = _key(f"{name}.{key}")
        for key, body in defs.items():
            self.components[renames[key]] = self._renamed(body, renames)
        self.components[name] = self._renamed(schema, renames)
        return {"$ref": self.ref_prefix + name}

    def _renamed(self, value: Any, renames: Mapping[str, str]) -> Any:
        if isinstance(value, list):
            return [self._renamed(item, renames) for item in value]
        if not isinstance(value, dict):
            return value
        out = {key: self._renamed(item, renames) for key, item in value.items()}
        ref = out.get("$ref")
        if isinstance(ref, str) and ref.startswith(self.ref_prefix):
            target = ref.removeprefix(self.ref_prefix)
            out["$ref"] = self.ref_prefix + renames.get(target, target)
        return out

    def of_dataclass(self, cls: type) -> Schema:
        """A dataclass's schema: pydantic's (``TypeAdapter``) when installed and able, else one
        made from its fields; a component, so the answer is its ``$ref``."""
        adapter = getattr(pydantic, "TypeAdapter", None)  # None without pydantic
        try:
            if adapter is not None:
                return self.lift(cls, adapter(cls).json_schema(ref_template=self.ref_prefix + "{model}"))
        except pydantic.PydanticUserError:
            pass  # a field type pydantic cannot describe: the plain mapping says what it can
        return self._fields(cls)

    def _fields(self, cls: type) -> Schema:  # without pydantic
        name = _key(python_type_name(cls))
        if name not in self.components:
            self.components[name] = {}
            hints = typing.get_type_hints(cls)
            fields = dataclasses.fields(cls)
            self.components[name] = {
                "type": "object",
                "properties": {f.name: self.of_type(hints.get(f.name, Any)) for f in fields},
                "required": [
                    f.name
                    for f in fields
                    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
                ],
            }
        return {"$ref": self.ref_prefix + name}


def published_schema(cls: object) -> str | None:
    """The JSON Schema a service publishes in ``$SRV.INFO`` for a dataclass or pydantic payload
    type: one self-contained document (its models under ``$defs``), compact JSON of at most
    `MAX_PUBLISHED` characters; ``None`` for other types, types without a schema, or longer ones
    (ADR-33 bounds all metadata together at 128 KB)."""
    if not isinstance(cls, type) or dataschema_of(cls) is not None:
        return None  # not a class, or one its dataschema names (protobuf: the type URL)
    schemas = SchemaSet(_DEFS)
    top = schemas.of_type(cls)
    if "$ref" not in top:
        return None
    document = {"$ref": top["$ref"], "$defs": schemas.components}
    text = json.dumps(document, separators=(",", ":"), ensure_ascii=False)
    return text if len(text) <= MAX_PUBLISHED else None


def _union(members: list[Schema]) -> Schema:
    unique = [m for i, m in enumerate(members) if m not in members[:i]]
    return unique[0] if len(unique) == 1 else {"anyOf": unique}


def _installed(name: str | None) -> Descriptor | None:
    if not name or name.startswith("builtins."):
        return None
    return message_descriptor(name)


def _key(name: str) -> str:
    return _KEY.sub("_", name)
