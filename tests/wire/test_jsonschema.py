"""SchemaSet: payload types as JSON Schemas that real payloads (protobuf JSON mapping, pydantic,
dataclasses) validate against, under draft-07 (AsyncAPI) and 2020-12 (OpenAPI 3.1) alike."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import jsonschema
import pydantic
import pytest
from google.protobuf import (
    any_pb2,
    descriptor_pb2,
    descriptor_pool,
    duration_pb2,
    empty_pb2,
    field_mask_pb2,
    json_format,
    message_factory,
    struct_pb2,
    timestamp_pb2,
    wrappers_pb2,
)
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from eventmicro import event_type
from eventmicro.wire.jsonschema import MAX_PUBLISHED, SchemaSet, published_schema
from schemas.shop.billing.v1 import billing_pb2
from schemas.shop.inventory.v1 import inventory_pb2
from schemas.shop.notifications.v1 import notifications_pb2
from schemas.shop.orders.v1 import orders_pb2

SHOP: tuple[ModuleType, ...] = (orders_pb2, inventory_pb2, billing_pb2, notifications_pb2)
VALIDATORS = (jsonschema.Draft7Validator, jsonschema.Draft202012Validator)
ALLOWED = {"type", "properties", "items", "additionalProperties", "enum", "format", "$ref", "description",
           "oneOf", "anyOf", "const", "pattern", "contentEncoding", "minimum", "maximum"}  # fmt: skip
F = FieldDescriptor


def shop_messages() -> list[type[Message]]:
    classes = []
    for module in SHOP:
        for name in module.DESCRIPTOR.message_types_by_name:
            classes.append(getattr(module, name))
    return classes


def validator(schemas: SchemaSet, schema: dict[str, Any], draft: type[Any]) -> Any:
    """A validator whose root holds the components, so that ``#/components/schemas/...`` resolves."""
    root = {**schema, "components": {"schemas": schemas.components}}
    return draft(root)


def errors(schemas: SchemaSet, schema: dict[str, Any], instance: Any) -> list[list[str]]:
    return [
        [e.message for e in validator(schemas, schema, draft).iter_errors(instance)] for draft in VALIDATORS
    ]


def fill(message: Message, depth: int = 0) -> Message:
    """Every field of ``message`` set to a value that is not its default (recursion bounded)."""
    for field in message.DESCRIPTOR.fields:
        if field.containing_oneof is not None and field.containing_oneof.fields[0] is not field:
            continue  # one member per oneof
        value = getattr(message, field.name)
        entry = field.message_type
        if field.is_repeated and entry is not None and entry.GetOptions().map_entry:
            key_field, value_field = entry.fields_by_name["key"], entry.fields_by_name["value"]
            key = _scalar(key_field)
            if value_field.message_type is not None:
                if depth < 2:
                    fill(value[key], depth + 1)
            else:
                value[key] = _scalar(value_field)
        elif field.is_repeated:
            if entry is not None:
                if depth < 2:
                    fill(value.add(), depth + 1)
            else:
                value.extend([_scalar(field), _scalar(field)])
        elif entry is not None:
            if depth < 2:
                _fill_message(value, depth)
        else:
            setattr(message, field.name, _scalar(field))
    return message


def _fill_message(value: Message, depth: int) -> None:
    name = value.DESCRIPTOR.full_name
    if name == "google.protobuf.Timestamp":
        value.FromSeconds(1_700_000_000)  # type: ignore[attr-defined]
    elif name == "google.protobuf.Duration":
        value.FromMilliseconds(1500)  # type: ignore[attr-defined]
    elif name == "google.protobuf.Struct":
        value.update({"a": 1, "b": [True, None, "x"]})  # type: ignore[attr-defined]
    elif name == "google.protobuf.Value":
        value.string_value = "v"  # type: ignore[attr-defined]
    elif name == "google.protobuf.ListValue":
        value.extend([1, "two"])  # type: ignore[attr-defined]
    elif name == "google.protobuf.Any":
        value.Pack(timestamp_pb2.Timestamp(seconds=5))  # type: ignore[attr-defined]
    elif name == "google.protobuf.FieldMask":
        value.paths.extend(["order_id", "items"])  # type: ignore[attr-defined]
    elif name == "google.protobuf.Empty":
        value.SetInParent()
    else:
        value.SetInParent()
        fill(value, depth + 1)


def _scalar(field: Any) -> Any:
    if field.enum_type is not None:
        return field.enum_type.values[-1].number
    return {
        F.TYPE_STRING: "text",
        F.TYPE_BYTES: b"\x00\xffbytes",
        F.TYPE_BOOL: True,
        F.TYPE_DOUBLE: 2.5,
        F.TYPE_FLOAT: 1.5,
        F.TYPE_INT64: -(2**60),
        F.TYPE_SINT64: -7,
        F.TYPE_SFIXED64: -8,
        F.TYPE_UINT64: 2**63,
        F.TYPE_FIXED64: 9,
    }.get(field.type, 7)


def wrong(field: Any) -> Any:
    """A JSON value of the wrong type for ``field``."""
    return 42 if field.message_type is not None or field.enum_type is not None else {"wrong": True}


# --- the reference shop's messages ------------------------------------------------------------


@pytest.mark.parametrize("cls", shop_messages(), ids=lambda cls: cls.DESCRIPTOR.full_name)
def test_every_shop_message_validates_its_json_form_and_rejects_a_wrong_field(cls: type[Message]) -> None:
    schemas = SchemaSet()
    schema = schemas.of_type(cls)
    assert schema == {"$ref": f"#/components/schemas/{cls.DESCRIPTOR.full_name}"}
    document = json_format.MessageToDict(fill(cls()))
    assert document, f"{cls.DESCRIPTOR.full_name} was not filled"
    assert errors(schemas, schema, document) == [[], []]
    first = cls.DESCRIPTOR.fields[0]
    broken = {**document, first.json_name: wrong(first)}
    assert all(found for found in errors(schemas, schema, broken)), broken


def test_shop_order_follows_the_proto3_json_mapping() -> None:
    schemas = SchemaSet()
    schemas.of_type(orders_pb2.Order)
    order = schemas.components["shop.orders.v1.Order"]
    properties = order["properties"]
    assert set(properties) == {"orderId", "customerId", "items", "totalCents", "currency", "status",
                               "reason", "placedAt"}  # fmt: skip
    assert properties["totalCents"]["type"] == "string"  # int64 as a string
    assert properties["totalCents"]["format"] == "int64"
    assert properties["items"] == {
        "type": "array",
        "items": {"$ref": "#/components/schemas/shop.orders.v1.LineItem"},
    }
    assert properties["status"] == {"$ref": "#/components/schemas/shop.orders.v1.OrderStatus"}
    statuses = ["UNSPECIFIED", "PENDING", "CONFIRMED", "CANCELLED"]
    assert schemas.components["shop.orders.v1.OrderStatus"]["enum"] == [f"ORDER_STATUS_{s}" for s in statuses]
    assert schemas.components["google.protobuf.Timestamp"] == {
        "type": "string",
        "format": "date-time",
        "description": "RFC 3339, UTC",
    }
    assert errors(schemas, {"$ref": "#/components/schemas/shop.orders.v1.Order"}, {"status": "SHIPPED"})[0]


# --- every kind of field ----------------------------------------------------------------------


def _everything() -> tuple[Descriptor, descriptor_pool.DescriptorPool]:
    """A message with every scalar, map, oneof, enum, recursion and well-known type, in a pool
    of its own (the default pool stays as it is)."""
    pool = descriptor_pool.DescriptorPool()
    for module in (any_pb2, duration_pb2, empty_pb2, field_mask_pb2, struct_pb2, timestamp_pb2, wrappers_pb2):
        proto = descriptor_pb2.FileDescriptorProto()
        module.DESCRIPTOR.CopyToProto(proto)
        pool.Add(proto)
    file = descriptor_pb2.FileDescriptorProto(
        name="test/everything.proto", package="test.v1", syntax="proto3"
    )
    file.dependency.extend(
        f"google/protobuf/{name}.proto"
        for name in ("any", "duration", "empty", "field_mask", "struct", "timestamp", "wrappers")
    )
    file.enum_type.add(name="Color").value.extend(
        [
            descriptor_pb2.EnumValueDescriptorProto(name=n, number=i)
            for i, n in enumerate(["COLOR_NONE", "RED"])
        ]
    )
    message = file.message_type.add(name="Everything")
    scalars = {"double": F.TYPE_DOUBLE, "float": F.TYPE_FLOAT, "int32": F.TYPE_INT32, "int64": F.TYPE_INT64,
               "uint32": F.TYPE_UINT32, "uint64": F.TYPE_UINT64, "sint32": F.TYPE_SINT32,
               "sint64": F.TYPE_SINT64, "fixed32": F.TYPE_FIXED32, "fixed64": F.TYPE_FIXED64,
               "sfixed32": F.TYPE_SFIXED32, "sfixed64": F.TYPE_SFIXED64, "bool": F.TYPE_BOOL,
               "string": F.TYPE_STRING, "bytes": F.TYPE_BYTES}  # fmt: skip
    number = 0

    def add(name: str, type_: int, *, type_name: str = "", repeated: bool = False, **more: Any) -> None:
        nonlocal number
        number += 1
        label = F.LABEL_REPEATED if repeated else F.LABEL_OPTIONAL
        if type_name:
            more["type_name"] = type_name
        message.field.add(name=name, number=number, type=type_, label=label, **more)

    for kind, type_ in scalars.items():
        add(f"a_{kind}", type_)
    add("many_int64", F.TYPE_INT64, repeated=True)
    add("color", F.TYPE_ENUM, type_name=".test.v1.Color")
    add("child", F.TYPE_MESSAGE, type_name=".test.v1.Everything")  # recursive
    add("children", F.TYPE_MESSAGE, type_name=".test.v1.Everything", repeated=True)
    wkt = {"at": "Timestamp", "took": "Duration", "meta": "Struct", "value": "Value", "list": "ListValue",
           "nothing": "Empty", "packed": "Any", "mask": "FieldMask", "maybe_count": "Int64Value",
           "maybe_text": "StringValue", "maybe_bytes": "BytesValue"}  # fmt: skip
    for name, type_name in wkt.items():
        add(name, F.TYPE_MESSAGE, type_name=f".google.protobuf.{type_name}")
    for name, key, value in (
        ("labels", F.TYPE_STRING, F.TYPE_INT64),
        ("by_id", F.TYPE_INT32, F.TYPE_MESSAGE),
    ):
        entry = message.nested_type.add(name=f"{name.title().replace('_', '')}Entry")
        entry.options.map_entry = True
        entry.field.add(name="key", number=1, type=key, label=F.LABEL_OPTIONAL)
        entry.field.add(name="value", number=2, type=value, label=F.LABEL_OPTIONAL)
        if value == F.TYPE_MESSAGE:
            entry.field[1].type_name = ".test.v1.Everything"
        add(name, F.TYPE_MESSAGE, type_name=f".test.v1.Everything.{entry.name}", repeated=True)
    message.oneof_decl.add(name="choice")
    add("pick_text", F.TYPE_STRING, oneof_index=0)
    add("pick_number", F.TYPE_INT32, oneof_index=0)
    message.oneof_decl.add(name="_maybe")  # a proto3 `optional` field: a oneof of one
    add("maybe", F.TYPE_INT32, oneof_index=1, proto3_optional=True)
    pool.Add(file)
    return pool.FindMessageTypeByName("test.v1.Everything"), pool


def test_every_field_kind_validates_a_filled_message_and_its_json_names() -> None:
    descriptor, pool = _everything()
    schemas = SchemaSet()
    schema = schemas.of_descriptor(descriptor)
    message = fill(message_factory.GetMessageClass(descriptor)())
    document = json_format.MessageToDict(message, descriptor_pool=pool)
    assert {"aInt64", "manyInt64", "maybeCount", "labels", "byId", "child", "packed", "pickText"} <= set(
        document
    )
    assert errors(schemas, schema, document) == [[], []]
    everything = schemas.components["test.v1.Everything"]
    properties = everything["properties"]
    assert properties["child"] == {"$ref": "#/components/schemas/test.v1.Everything"}  # no loop
    assert properties["aInt64"]["type"] == properties["aUint64"]["type"] == "string"
    assert properties["aInt32"] == {
        "type": "integer",
        "format": "int32",
        "minimum": -(2**31),
        "maximum": 2**31 - 1,
    }
    assert properties["aBytes"] == {"type": "string", "contentEncoding": "base64"}
    assert properties["manyInt64"]["type"] == "array"
    assert properties["labels"] == {"type": "object", "additionalProperties": properties["aInt64"]}
    assert properties["byId"] == {
        "type": "object",
        "additionalProperties": {"$ref": "#/components/schemas/test.v1.Everything"},
    }
    assert properties["color"] == {"$ref": "#/components/schemas/test.v1.Color"}
    assert "at most one of: pickText, pickNumber (oneof choice)" in everything["description"]
    assert "_maybe" not in everything["description"]
    wkt = schemas.components
    assert wkt["google.protobuf.Duration"]["type"] == "string"
    assert wkt["google.protobuf.Struct"] == {"type": "object"}
    assert wkt["google.protobuf.ListValue"] == {"type": "array"}
    assert wkt["google.protobuf.Empty"] == {"type": "object"}
    assert wkt["google.protobuf.FieldMask"]["type"] == "string"
    assert wkt["google.protobuf.Any"]["properties"] == {"@type": {"type": "string"}}
    assert wkt["google.protobuf.Int64Value"]["anyOf"][1] == {"type": "null"}
    # wrappers are nullable, Value takes anything, NaN is a float
    fine: list[tuple[str, Any]] = [("maybeCount", None), ("value", {"any": ["thing"]}), ("aDouble", "NaN")]
    for key, value in fine:
        assert errors(schemas, schema, {**document, key: value}) == [[], []], key
    bad: list[tuple[str, Any]] = [("aInt64", 5.5), ("aBytes", 3), ("aBool", "yes"), ("labels", {"k": True}),
                                  ("at", 1700000000), ("color", "BLUE"), ("manyInt64", "1")]  # fmt: skip
    for key, value in bad:
        assert all(errors(schemas, schema, {**document, key: value})), key


def test_components_are_valid_schemas_with_portable_keywords_and_keys() -> None:
    descriptor, _ = _everything()
    schemas = SchemaSet()
    schemas.of_descriptor(descriptor)
    for cls in shop_messages():
        schemas.of_type(cls)
    for name, component in schemas.components.items():
        assert re.fullmatch(r"[\w.\-]+", name), name
        for draft in VALIDATORS:
            draft.check_schema(component)
        assert set(_keywords(component)) <= ALLOWED, name


def _keywords(schema: Any) -> Iterator[str]:
    if isinstance(schema, list):
        for item in schema:
            yield from _keywords(item)
    elif isinstance(schema, dict):
        for key, value in schema.items():
            yield key
            if key == "properties":
                for sub in value.values():
                    yield from _keywords(sub)
            elif key in ("items", "additionalProperties", "anyOf", "oneOf"):
                yield from _keywords(value)


# --- Python types -----------------------------------------------------------------------------


@dataclasses.dataclass
class Line:
    sku: str
    quantity: int = 1


@event_type("shop.notes.v1.Basket")
@dataclasses.dataclass
class Basket:
    lines: list[Line]
    note: str | None = None


class Tree(pydantic.BaseModel):
    name: str
    children: list[Tree] = []


class Forest(pydantic.BaseModel):
    trees: list[Tree]
    owner: Line


def test_python_types() -> None:
    schemas = SchemaSet()
    assert schemas.of_type(str) == {"type": "string"}
    assert schemas.of_type(bytes) == {"type": "string", "contentEncoding": "base64"}
    assert schemas.of_type(None) == schemas.of_type(type(None)) == {"type": "null"}
    assert schemas.of_type(dict) == {"type": "object"}
    assert schemas.of_type(dict[str, int]) == {"type": "object", "additionalProperties": {"type": "integer"}}
    assert schemas.of_type(list[str]) == {"type": "array", "items": {"type": "string"}}
    assert schemas.of_type(Any) == {}
    assert schemas.of_type(str | None) == {"anyOf": [{"type": "string"}, {"type": "null"}]}
    assert schemas.of_type(orders_pb2.GetOrder | None) == {
        "anyOf": [{"$ref": "#/components/schemas/shop.orders.v1.GetOrder"}, {"type": "null"}]
    }
    assert schemas.of_type(orders_pb2.OrderPlaced | billing_pb2.PaymentFailed) == {
        "anyOf": [
            {"$ref": "#/components/schemas/shop.orders.v1.OrderPlaced"},
            {"$ref": "#/components/schemas/shop.billing.v1.PaymentFailed"},
        ]
    }


def test_dataclasses_and_pydantic_models_become_components() -> None:
    schemas = SchemaSet()
    assert schemas.of_type(Basket) == {"$ref": "#/components/schemas/shop.notes.v1.Basket"}  # its event type
    forest = schemas.of_type(Forest)
    assert forest == {"$ref": f"#/components/schemas/{__name__}.Forest"}
    tree = schemas.of_type(Tree)  # recursive: lifted from pydantic's $defs, under its own name
    assert tree == {"$ref": f"#/components/schemas/{__name__}.Tree"}
    assert schemas.components[f"{__name__}.Tree"]["properties"]["children"]["items"] == tree
    for value, schema in (
        (dataclasses.asdict(Basket([Line("a", 2)], note=None)), schemas.of_type(Basket)),
        (
            Forest(trees=[Tree(name="oak", children=[Tree(name="twig")])], owner=Line("x")).model_dump(),
            forest,
        ),
    ):
        assert errors(schemas, schema, value) == [[], []]
    assert all(errors(schemas, schemas.of_type(Basket), {"lines": [{"sku": 5}]}))
    assert all(errors(schemas, forest, {"trees": "none", "owner": {"sku": "x"}}))
    for component in schemas.components.values():
        for draft in VALIDATORS:
            draft.check_schema(component)
        assert "$defs" not in component


def test_labels_from_discovery_metadata() -> None:
    schemas = SchemaSet()
    assert schemas.of_label("builtins.str") == {"type": "string"}
    assert schemas.of_label("builtins.bytes") == {"type": "string", "contentEncoding": "base64"}
    assert schemas.of_label("none") == {"type": "null"}
    ref = {"$ref": "#/components/schemas/shop.orders.v1.PlaceOrder"}
    assert schemas.of_label("shop.orders.v1.PlaceOrder") == ref  # an installed protobuf type
    assert schemas.of_label("anything", "type.googleapis.com/shop.orders.v1.PlaceOrder") == ref
    assert "shop.orders.v1.PlaceOrder" in schemas.components
    unknown = schemas.of_label("myapp.models.Sum")
    assert set(unknown) == {"description"}
    assert "myapp.models.Sum" in unknown["description"]
    missing = schemas.of_label("x.Y", "type.googleapis.com/acme.v1.Missing")
    assert set(missing) == {"description"}
    assert "acme.v1.Missing" in missing["description"]
    assert set(schemas.of_label(None)) == {"description"}


def test_a_ref_prefix_of_ones_own() -> None:
    schemas = SchemaSet(ref_prefix="#/$defs/")
    assert schemas.of_type(orders_pb2.OrderAccepted) == {"$ref": "#/$defs/shop.orders.v1.OrderAccepted"}
    forest = schemas.of_type(Forest)
    assert schemas.components[forest["$ref"].removeprefix("#/$defs/")]["properties"]["owner"][
        "$ref"
    ].startswith("#/$defs/")


def test_dataclasses_without_pydantic(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("eventmicro.wire.jsonschema.pydantic", None)
    schemas = SchemaSet()
    assert schemas.of_type(Basket) == {"$ref": "#/components/schemas/shop.notes.v1.Basket"}
    basket = schemas.components["shop.notes.v1.Basket"]
    assert basket["required"] == ["lines"]
    assert basket["properties"]["lines"] == {
        "type": "array",
        "items": {"$ref": f"#/components/schemas/{__name__}.Line"},
    }
    assert basket["properties"]["note"] == {"anyOf": [{"type": "string"}, {"type": "null"}]}
    value = dataclasses.asdict(Basket([Line("a", 2)], note="x"))
    assert errors(schemas, schemas.of_type(Basket), value) == [[], []]
    assert all(errors(schemas, schemas.of_type(Basket), {"lines": [{"quantity": 1}]}))  # sku is required


def test_models_of_the_same_name_from_two_places_keep_apart() -> None:
    other_line = dataclasses.make_dataclass("Line", [("code", int)])
    other_line.__module__ = "elsewhere"
    holder = dataclasses.make_dataclass("Holder", [("line", other_line)])
    holder.__module__ = "elsewhere"
    schemas = SchemaSet()
    schemas.of_type(Basket)  # takes "Line" for this module's Line
    schemas.of_type(holder)
    assert schemas.components["Line"]["properties"]["sku"] == {"title": "Sku", "type": "string"}
    moved = schemas.components["elsewhere.Holder"]["properties"]["line"]
    assert moved == {"$ref": "#/components/schemas/elsewhere.Holder.Line"}
    assert schemas.components["elsewhere.Holder.Line"]["properties"]["code"]["type"] == "integer"


class Opaque:
    """A class with no JSON form."""


@dataclasses.dataclass
class Holds:
    thing: Opaque
    count: int = 0


class HoldsToo(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(arbitrary_types_allowed=True)
    thing: Opaque


def test_types_without_a_json_schema_are_described_not_raised() -> None:
    schemas = SchemaSet()
    holds = schemas.components[schemas.of_type(Holds)["$ref"].rpartition("/")[2]]
    assert holds["properties"]["count"] == {"type": "integer"}
    assert "Opaque is not described" in holds["properties"]["thing"]["description"]
    assert "has no JSON Schema" in schemas.of_type(HoldsToo)["description"]
    assert "is not described" in schemas.of_type(Opaque)["description"]


# --- what the services check: integer ranges -------------------------------------------------

_EDGES = (0, 1, -1, 2**31 - 1, 2**31, -(2**31), -(2**31) - 1, 2**32 - 1, 2**32, 2**63 - 1, 2**63,
          -(2**63), -(2**63) - 1, 2**64 - 1, 2**64, 10**30)  # fmt: skip


@pytest.mark.parametrize(
    "kind",
    ["int32", "sint32", "sfixed32", "uint32", "fixed32", "int64", "sint64", "sfixed64", "uint64", "fixed64"],
)
def test_an_integer_the_schema_allows_is_one_protobuf_reads_and_no_other(kind: str) -> None:
    descriptor, pool = _everything()
    schemas = SchemaSet()
    schema = schemas.of_descriptor(descriptor)
    cls = message_factory.GetMessageClass(descriptor)
    field = descriptor.fields_by_name[f"a_{kind}"].json_name
    sixty_four = kind.endswith("64")
    for number in _EDGES:
        value: Any = str(number) if sixty_four else number  # proto3 JSON: 64-bit ones as strings
        try:
            json_format.ParseDict({field: value}, cls(), descriptor_pool=pool)
            parsed = True
        except json_format.ParseError:
            parsed = False
        allowed = errors(schemas, schema, {field: value}) == [[], []]
        assert allowed == parsed, (kind, number)


# --- schemas published in $SRV.INFO by JSON-typed endpoints -----------------------------------


def test_a_published_schema_describes_the_model_where_it_is_read() -> None:
    text = published_schema(Basket)
    assert text is not None
    assert len(text) <= MAX_PUBLISHED
    schemas = SchemaSet()  # the gateway's side: only the text, no Python class
    schema = schemas.of_published("tests.Basket", text)
    assert schema is not None
    basket = {"lines": [{"sku": "A-1", "quantity": 2}], "note": None}
    assert errors(schemas, schema, basket) == [[], []]
    assert all(errors(schemas, schema, {"lines": [{"quantity": 2}]}))  # sku is required
    assert all(errors(schemas, schema, {"lines": "A-1"}))
    for name, component in schemas.components.items():
        assert re.fullmatch(r"[\w.\-]+", name), name
        for draft in VALIDATORS:
            draft.check_schema(component)
    assert schemas.of_label("tests.Basket", None, text) == schema
    assert published_schema(Tree) is not None  # recursive: refers to itself under $defs


def test_only_models_publish_a_schema_and_a_long_one_is_left_out() -> None:
    assert published_schema(str) is None
    assert published_schema(dict[str, int]) is None
    assert published_schema(orders_pb2.PlaceOrder) is None  # a type URL says it already
    wide = pydantic.create_model("Wide", **{f"field_{i:04}": (int, 0) for i in range(600)})  # type: ignore[call-overload]
    assert published_schema(wide) is None


def test_a_published_schema_from_another_process_stays_inside_the_document() -> None:
    schemas = SchemaSet()
    elsewhere = (
        '{"type":"object","properties":{"a":{"$ref":"https://attacker.example/x.json"},'
        '"b":{"$ref":"#/$defs/B"}},"$defs":{"B":{"type":"string"},"bad key/..":{"type":"integer"}}}'
    )
    schema = schemas.of_published("other.Thing", elsewhere)
    assert schema == {"$ref": "#/components/schemas/other.Thing"}
    thing = schemas.components["other.Thing"]
    assert thing["properties"]["a"] == {}  # the foreign reference is dropped
    assert thing["properties"]["b"] == {"$ref": "#/components/schemas/B"}
    assert "bad_key_.." in schemas.components
    assert schemas.of_published("x.Y", "x" * (MAX_PUBLISHED + 1)) is None
    assert schemas.of_published("x.Y", "[1, 2]") is None
    assert schemas.of_published("x.Y", "{not json") is None
    assert schemas.of_published("x.Y", '{"a": NaN}') is None
    fallback = schemas.of_label("x.Y", None, "[1, 2]")
    assert set(fallback) == {"description"}
