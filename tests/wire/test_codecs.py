"""Payload codecs: round trips for every codec, every error path, the type registry and Event glue."""

import dataclasses
import datetime as dt
import enum
import json
import math
import re
import uuid
from decimal import Decimal
from typing import Any, Literal

import pydantic
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eventmicro import (
    ConfigurationError,
    ContentTypeMismatch,
    Event,
    Payload,
    PayloadDecodeError,
    PayloadEncodeError,
    PayloadError,
    TypeRegistry,
    UnexpectedType,
    decode_payload,
    encode_payload,
    event_type,
    type_name_of,
)
from eventmicro.wire.convert import convert
from schemas.shop.orders.v1 import orders_pb2 as orders

UTC = dt.UTC
PLACED_AT = dt.datetime(2024, 5, 17, 9, 30, 15, 250000, tzinfo=UTC)
PLACE_ORDER_SCHEMA = "type.googleapis.com/shop.orders.v1.PlaceOrder"
ORDER_PLACED_SCHEMA = "type.googleapis.com/shop.orders.v1.OrderPlaced"
ORDER_ACCEPTED_SCHEMA = "type.googleapis.com/shop.orders.v1.OrderAccepted"
GARBAGE_PROTOBUF = b"\x0a\xff"  # field 1, length-delimited, claims 255 bytes but the body ends


# --- payload classes ------------------------------------------------------------------------------


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"


@dataclasses.dataclass
class Address:
    street: str
    city: str


@dataclasses.dataclass
class Line:
    sku: str
    quantity: int


@event_type("shop.customers.v1.CustomerRegistered")
@dataclasses.dataclass
class Customer:
    name: str
    address: Address
    lines: list[Line]
    favourite: Color
    registered_at: dt.datetime
    nickname: str | None = None
    tags: tuple[str, ...] = ()


@dataclasses.dataclass
class Kitchen:
    """One field per scalar and container type `convert` knows."""

    id: uuid.UUID
    amount: Decimal
    blob: bytes
    day: dt.date
    labels: set[str]
    scores: dict[str, float]
    pair: tuple[int, ...]
    mode: Literal["fast", "slow"]
    either: int | str
    flag: bool
    ratio: float
    anything: Any


@dataclasses.dataclass
class Untyped:
    """A dataclass without @event_type."""

    note: str


@dataclasses.dataclass
class Priced:
    amount: Decimal


@dataclasses.dataclass
class Counts:
    by_id: dict[int, int]


@dataclasses.dataclass
class Alarm:
    at: dt.time


@event_type("shop.reviews.v1.ReviewPosted")
class Review(pydantic.BaseModel):
    product: str
    stars: int
    posted_at: dt.datetime
    tags: list[str] = pydantic.Field(default_factory=list)


class AliasedOrder(pydantic.BaseModel):
    order_id: str = pydantic.Field(alias="orderId")


class Loose(pydantic.BaseModel):
    value: Any


def make_customer() -> Customer:
    return Customer(
        name="Ada",
        address=Address(street="1 Loop Rd", city="Zürich"),
        lines=[Line(sku="A-1", quantity=2), Line(sku="B-2", quantity=1)],
        favourite=Color.GREEN,
        registered_at=PLACED_AT,
        nickname="ada",
        tags=("vip", "beta"),
    )


def customer_json() -> dict[str, Any]:
    """What a structured-mode decoder hands over for `make_customer()`: a parsed JSON object."""
    return {
        "name": "Ada",
        "address": {"street": "1 Loop Rd", "city": "Zürich"},
        "lines": [{"sku": "A-1", "quantity": 2}, {"sku": "B-2", "quantity": 1}],
        "favourite": "green",
        "registered_at": "2024-05-17T09:30:15.250000+00:00",
        "nickname": "ada",
        "tags": ["vip", "beta"],
    }


def make_order_placed() -> orders.OrderPlaced:
    message = orders.OrderPlaced(
        order_id="o-1",
        customer_id="c-9",
        items=[orders.LineItem(sku="A-1", quantity=2, unit_price_cents=1250)],
        total_cents=2500,
        currency="EUR",
    )
    message.placed_at.FromDatetime(PLACED_AT)
    return message


def encode_json(value: object) -> bytes:
    return json.dumps(value).encode("utf-8")


# --- round trips ----------------------------------------------------------------------------------


def test_protobuf_round_trip_carries_full_name_and_dataschema() -> None:
    message = make_order_placed()

    payload = encode_payload(message)

    assert payload.content_type == "application/protobuf"
    assert payload.type == "shop.orders.v1.OrderPlaced"
    assert payload.dataschema == ORDER_PLACED_SCHEMA
    assert payload.data == message.SerializeToString()
    decoded = decode_payload(
        payload.data, payload.content_type, orders.OrderPlaced, dataschema=payload.dataschema
    )
    assert decoded == message
    assert decoded.placed_at.ToDatetime(tzinfo=UTC) == PLACED_AT


def test_dataclass_round_trip_with_nested_list_optional_enum_and_datetime() -> None:
    customer = make_customer()

    payload = encode_payload(customer)

    assert payload.content_type == "application/json"
    assert payload.type == "shop.customers.v1.CustomerRegistered"
    assert payload.dataschema is None
    assert json.loads(payload.data) == customer_json()
    assert decode_payload(payload.data, payload.content_type, Customer) == customer


def test_dataclass_round_trip_fills_defaults_for_absent_optional_fields() -> None:
    customer = dataclasses.replace(make_customer(), nickname=None, tags=())
    body = customer_json()
    del body["nickname"], body["tags"]

    assert json.loads(encode_payload(customer).data)["nickname"] is None
    assert decode_payload(encode_payload(customer).data, "application/json", Customer) == customer
    assert decode_payload(encode_json(body), "application/json", Customer) == customer


def test_dataclass_round_trip_of_every_scalar_and_container_type() -> None:
    kitchen = Kitchen(
        id=uuid.UUID("12345678-1234-5678-1234-567812345678"),
        amount=Decimal("12.30"),
        blob=b"\x00\xffraw",
        day=dt.date(2024, 2, 29),
        labels={"a", "b"},
        scores={"x": 0.5, "y": 2.0},
        pair=(7, 8),
        mode="slow",
        either="text",
        flag=False,
        ratio=3.0,
        anything={"free": ["form", 1]},
    )

    payload = encode_payload(kitchen)
    body = json.loads(payload.data)

    assert payload.type is None
    assert body["id"] == "12345678-1234-5678-1234-567812345678"
    assert body["amount"] == "12.30"
    assert body["blob"] == "AP9yYXc="
    assert body["day"] == "2024-02-29"
    assert sorted(body["labels"]) == ["a", "b"]
    assert body["pair"] == [7, 8]
    decoded = decode_payload(payload.data, payload.content_type, Kitchen)
    assert decoded == kitchen
    assert isinstance(decoded.pair, tuple)
    assert isinstance(decoded.labels, set)
    assert decoded.amount.as_tuple() == Decimal("12.30").as_tuple()  # trailing zero kept


def test_convert_accepts_json_integers_for_float_fields() -> None:
    assert convert({"x": 1}, dict[str, float]) == {"x": 1.0}
    assert isinstance(convert(1, float), float)


def test_pydantic_round_trip_uses_event_type() -> None:
    review = Review(product="kettle", stars=4, posted_at=PLACED_AT, tags=["loud"])

    payload = encode_payload(review)

    assert payload.content_type == "application/json"
    assert payload.type == "shop.reviews.v1.ReviewPosted"
    assert json.loads(payload.data)["product"] == "kettle"
    assert decode_payload(payload.data, payload.content_type, Review) == review


def test_dict_round_trip_is_compact_utf8_json() -> None:
    value: dict[str, Any] = {"a": [1, 2.5, None, True], "b": {"c": "ü✓"}}

    payload = encode_payload(value)

    assert payload == Payload(
        b'{"a":[1,2.5,null,true],"b":{"c":"\xc3\xbc\xe2\x9c\x93"}}',
        "application/json",
        None,
        None,
    )
    assert decode_payload(payload.data, payload.content_type, dict[str, Any]) == value


def test_dict_keys_of_int_uuid_and_enum_are_written_as_strings() -> None:
    key = uuid.UUID(int=1)

    payload = encode_payload({1: "int", key: "uuid", Color.RED: "enum"})

    assert json.loads(payload.data) == {"1": "int", str(key): "uuid", "red": "enum"}


def test_list_and_tuple_round_trip() -> None:
    value: list[Any] = [1, "two", {"three": 3}, [4.5]]

    payload = encode_payload(value)

    assert payload.content_type == "application/json"
    assert payload.type is None
    assert decode_payload(payload.data, payload.content_type, list[Any]) == value
    tuple_payload = encode_payload((1, "x"))
    assert tuple_payload.data == b'[1,"x"]'
    assert decode_payload(tuple_payload.data, tuple_payload.content_type, tuple[Any, ...]) == (1, "x")


def test_bytes_round_trip_is_octet_stream() -> None:
    value = b"\x00\xff\x10raw"

    payload = encode_payload(value)

    assert payload == Payload(value, "application/octet-stream", None, None)
    assert decode_payload(payload.data, payload.content_type, bytes) == value
    assert encode_payload(bytearray(b"ab")).data == b"ab"
    assert encode_payload(memoryview(b"cd")).data == b"cd"


def test_str_round_trip_is_utf8_text() -> None:
    value = "héllo ✓ 🚀"

    payload = encode_payload(value)

    assert payload == Payload(value.encode("utf-8"), "text/plain; charset=utf-8", None, None)
    assert decode_payload(payload.data, payload.content_type, str) == value


def test_str_target_reads_a_json_string_body() -> None:
    assert decode_payload(b'"quoted \\u00fc"', "application/json", str) == "quoted ü"


# --- structured mode: already-parsed data ---------------------------------------------------------


def test_structured_mode_dict_decodes_into_dataclass() -> None:
    assert decode_payload(customer_json(), "application/json", Customer) == make_customer()


def test_structured_mode_dict_decodes_into_pydantic_model() -> None:
    data = {"product": "kettle", "stars": 5, "posted_at": "2024-05-17T09:30:15.25Z"}

    review = decode_payload(data, "application/json", Review)

    assert review == Review(product="kettle", stars=5, posted_at=PLACED_AT)


def test_structured_mode_dict_decodes_into_protobuf() -> None:
    data = {
        "orderId": "o-1",
        "customerId": "c-9",
        "items": [{"sku": "A-1", "quantity": 2, "unitPriceCents": "1250"}],
        "totalCents": "2500",
        "currency": "EUR",
        "placedAt": "2024-05-17T09:30:15.250Z",
    }

    assert decode_payload(data, "application/json", orders.OrderPlaced) == make_order_placed()


def test_structured_mode_string_data_decodes_into_str_and_bytes() -> None:
    assert decode_payload("plain", "text/plain", str) == "plain"
    assert decode_payload("plain", "text/plain", bytes) == b"plain"


@pytest.mark.parametrize(
    "body",
    [
        b'{"order_id": "o-1", "customer_id": "c-9", "items": [{"sku": "A-1", "quantity": 2, '
        b'"unit_price_cents": 1250}], "total_cents": 2500, "currency": "EUR", '
        b'"placed_at": "2024-05-17T09:30:15.250Z"}',
        b'{"orderId": "o-1", "customerId": "c-9", "items": [{"sku": "A-1", "quantity": 2, '
        b'"unitPriceCents": "1250"}], "totalCents": "2500", "currency": "EUR", '
        b'"placedAt": "2024-05-17T09:30:15.250Z"}',
    ],
    ids=["proto-field-names", "json-names"],
)
def test_protobuf_target_reads_json_body_from_foreign_services(body: bytes) -> None:
    decoded = decode_payload(body, "application/json", orders.OrderPlaced, dataschema=ORDER_PLACED_SCHEMA)

    assert decoded == make_order_placed()


# --- content type matching ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    ["Application/JSON; charset=utf-8", "APPLICATION/JSON", "application/vnd.shop+json", None],
)
def test_json_content_type_match_ignores_case_and_parameters(content_type: str | None) -> None:
    assert decode_payload(b'{"k": [1]}', content_type, dict[str, list[int]]) == {"k": [1]}


@pytest.mark.parametrize(
    "content_type",
    [
        "Application/Protobuf",
        "application/protobuf; proto=shop.orders.v1.OrderPlaced",
        "application/x-protobuf",
    ],
)
def test_protobuf_content_type_match_ignores_case_and_parameters(content_type: str) -> None:
    message = make_order_placed()

    assert decode_payload(message.SerializeToString(), content_type, orders.OrderPlaced) == message


@pytest.mark.parametrize("content_type", ["TEXT/Plain; charset=UTF-8", "text/markdown", None])
def test_text_content_type_match_ignores_case_and_parameters(content_type: str | None) -> None:
    assert decode_payload("ü".encode(), content_type, str) == "ü"


def test_bytes_target_returns_the_raw_body_whatever_the_content_type() -> None:
    assert decode_payload(b'{"a":1}', "application/json", bytes) == b'{"a":1}'


# --- decode errors --------------------------------------------------------------------------------


@pytest.mark.parametrize("content_type", ["application/octet-stream", "application/protobuf", "image/png"])
def test_str_target_rejects_non_text_content_type(content_type: str) -> None:
    with pytest.raises(ContentTypeMismatch) as caught:
        decode_payload(b"hello", content_type, str)

    assert caught.value.expected == "text/*"
    assert caught.value.received == content_type
    assert caught.value.code == 400


@pytest.mark.parametrize("target", [Customer, Review, dict[str, Any], list[int]])
@pytest.mark.parametrize("content_type", ["text/plain", "application/octet-stream"])
def test_json_targets_reject_non_json_content_type(target: type[object], content_type: str) -> None:
    with pytest.raises(ContentTypeMismatch) as caught:
        decode_payload(b"{}", content_type, target)

    assert caught.value.expected == "application/json"
    assert caught.value.received == content_type


def test_protobuf_target_rejects_text_content_type() -> None:
    with pytest.raises(ContentTypeMismatch) as caught:
        decode_payload(b"x", "text/plain", orders.OrderPlaced)

    assert caught.value.expected == "application/protobuf"
    assert caught.value.received == "text/plain"


def test_bytes_target_rejects_parsed_json_data() -> None:
    with pytest.raises(PayloadDecodeError) as caught:
        decode_payload({"a": 1}, "application/json", bytes)

    assert caught.value.expected == "binary data"
    assert caught.value.reason == "the data is an object, not binary data"


def test_str_target_rejects_invalid_utf8() -> None:
    with pytest.raises(PayloadDecodeError) as caught:
        decode_payload(b"caf\xe9", "text/plain; charset=utf-8", str)

    assert caught.value.expected == "text"
    assert caught.value.reason == "the body is not valid UTF-8 text"
    assert isinstance(caught.value.__cause__, UnicodeDecodeError)


@pytest.mark.parametrize(
    "body", [b"{not json", b'{"name": "\xff"}', b""], ids=["syntax", "bad-utf8", "empty"]
)
@pytest.mark.parametrize(("target", "expected"), [(Customer, "Customer"), (dict[str, Any], "an object")])
def test_invalid_json_body(body: bytes, target: type[object], expected: str) -> None:
    with pytest.raises(PayloadDecodeError) as caught:
        decode_payload(body, "application/json", target)

    assert caught.value.expected == expected
    assert caught.value.reason.startswith("the body is not valid JSON: ")  # then which rule, in JSON's words


def test_missing_required_dataclass_field() -> None:
    body = customer_json()
    del body["address"]

    with pytest.raises(PayloadDecodeError) as caught:
        decode_payload(encode_json(body), "application/json", Customer)

    assert caught.value.expected == "Customer"
    assert caught.value.reason == "missing field 'address'"


def test_missing_nested_dataclass_field_names_its_path() -> None:
    body = customer_json()
    del body["lines"][1]["quantity"]

    with pytest.raises(PayloadDecodeError) as caught:
        decode_payload(encode_json(body), "application/json", Customer)

    assert caught.value.expected == "Customer"  # the whole is named, the path finds the part
    assert caught.value.reason == "missing field 'lines[1].quantity'"


@pytest.mark.parametrize(
    ("path", "value", "reason"),
    [
        (["name"], 5, "name: expected a string, got an integer"),
        (["address", "city"], None, "address.city: expected a string, got null"),
        (["lines", 1, "quantity"], "two", "lines[1].quantity: expected an integer, got a string"),
        (["lines", 0, "quantity"], True, "lines[0].quantity: expected an integer, got a boolean"),
        (["lines"], {"sku": "A-1"}, "lines: expected an array, got an object"),
        (["address"], ["1 Loop Rd"], "address: expected an object (Address), got an array"),
        (
            ["registered_at"],
            1715938215,
            "registered_at: expected a date-time string (ISO 8601), got an integer",
        ),
        (["nickname"], 5, "nickname: expected a string or null, got an integer"),
    ],
)
def test_wrong_json_type_names_the_field_path(path: list[str | int], value: object, reason: str) -> None:
    body = customer_json()
    node: Any = body
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = value

    with pytest.raises(PayloadDecodeError) as caught:
        decode_payload(encode_json(body), "application/json", Customer)

    assert caught.value.reason.startswith(reason)
    assert str(caught.value).startswith("payload does not decode as ")


def test_top_level_json_of_wrong_shape_for_dataclass() -> None:
    with pytest.raises(PayloadDecodeError) as caught:
        decode_payload(b"[1, 2]", "application/json", Customer)

    assert caught.value.expected == "Customer"
    assert caught.value.reason == "<root>: expected an object (Customer), got an array"


def test_missing_data_for_dataclass() -> None:
    with pytest.raises(PayloadDecodeError) as caught:
        decode_payload(None, "application/json", Customer)

    assert caught.value.reason == "<root>: expected an object (Customer), got null"


@pytest.mark.parametrize(
    ("value", "target", "reason"),
    [
        ("medium", Literal["fast", "slow"], '<root>: expected one of "fast", "slow", got a string'),
        ([1, "x", 3], tuple[int, str], "<root>: expected an array of 2 items, got an array"),
        (1.5, int | str, "<root>: expected an integer or a string, got a number"),
        ({"a": 1}, list[int], "<root>: expected an array, got an object"),
        ("yes", bool, "<root>: expected a boolean, got a string"),
        ("AP9yYXc", bytes, "<root>: expected a base64 string, got a string"),
        ("AP9y!YXc=", bytes, "<root>: expected a base64 string, got a string"),
    ],
)
def test_convert_errors(value: object, target: object, reason: str) -> None:
    with pytest.raises(PayloadDecodeError) as caught:
        convert(value, target)

    assert caught.value.reason.startswith(reason)


def test_convert_rejects_unsupported_annotation() -> None:
    with pytest.raises(PayloadDecodeError) as caught:
        convert(1, complex)

    assert caught.value.reason == "<root>: unsupported type"


def test_pydantic_validation_error_names_the_field() -> None:
    with pytest.raises(PayloadDecodeError) as caught:
        decode_payload(b'{"product": "kettle", "stars": "many"}', "application/json", Review)

    assert caught.value.expected == "Review"
    assert "stars: expected an integer, got a string" in caught.value.reason
    assert "posted_at: missing field" in caught.value.reason
    assert isinstance(caught.value.__cause__, pydantic.ValidationError)


@pytest.mark.parametrize("content_type", ["application/x-protobuf", None])
def test_protobuf_garbage_body(content_type: str | None) -> None:
    with pytest.raises(PayloadDecodeError) as caught:
        decode_payload(GARBAGE_PROTOBUF, content_type, orders.PlaceOrder)

    assert caught.value.expected == "shop.orders.v1.PlaceOrder"
    assert caught.value.reason == "the body is not a valid protobuf message"


def test_protobuf_garbage_body_on_the_fast_path_still_raises() -> None:
    decode_payload(b"", "application/protobuf", orders.PlaceOrder)  # the codec now knows the target

    with pytest.raises(PayloadDecodeError) as caught:
        decode_payload(GARBAGE_PROTOBUF, "application/protobuf", orders.PlaceOrder)

    assert caught.value.reason == "the body is not a valid protobuf message"
    assert "PlaceOrder" in caught.value.expected


def test_protobuf_garbage_error_names_the_message_the_same_way_on_every_path() -> None:
    decode_payload(b"", "application/protobuf", orders.PlaceOrder)  # the codec now knows the target

    with pytest.raises(PayloadDecodeError) as general:
        decode_payload(GARBAGE_PROTOBUF, "application/x-protobuf", orders.PlaceOrder)
    with pytest.raises(PayloadDecodeError) as fast:
        decode_payload(GARBAGE_PROTOBUF, "application/protobuf", orders.PlaceOrder)

    assert fast.value.expected == general.value.expected == "shop.orders.v1.PlaceOrder"


def test_protobuf_target_needs_bytes_for_a_binary_body() -> None:
    with pytest.raises(PayloadDecodeError) as caught:
        decode_payload("not bytes", "application/protobuf", orders.PlaceOrder)

    assert caught.value.reason == "protobuf data must be bytes"


@pytest.mark.parametrize(
    "body",
    [b"not json", b'{"totalCents": "lots"}', {"items": "nope"}],
    ids=["syntax", "bad-int", "parsed-bad-list"],
)
def test_protobuf_json_body_that_does_not_fit(body: object) -> None:
    with pytest.raises(PayloadDecodeError) as caught:
        decode_payload(body, "application/json", orders.OrderPlaced)

    assert caught.value.expected == "shop.orders.v1.OrderPlaced"
    assert caught.value.reason.startswith(("the JSON body does not fit: ", "the body is not valid JSON"))


@pytest.mark.parametrize(
    "content_type", ["application/protobuf", "application/x-protobuf", "application/json"]
)
def test_protobuf_wrong_dataschema_is_unexpected_type(content_type: str) -> None:
    message = orders.PlaceOrder(customer_id="c-9")
    decode_payload(message.SerializeToString(), "application/protobuf", orders.PlaceOrder)  # warm fast path
    body = message.SerializeToString() if "protobuf" in content_type else b'{"customerId": "c-9"}'

    with pytest.raises(UnexpectedType) as caught:
        decode_payload(body, content_type, orders.PlaceOrder, dataschema=ORDER_ACCEPTED_SCHEMA)

    assert caught.value.expected == ("shop.orders.v1.PlaceOrder",)
    assert caught.value.received == "shop.orders.v1.OrderAccepted"
    assert isinstance(caught.value, PayloadError)


def test_protobuf_matching_or_foreign_dataschema_is_accepted() -> None:
    message = orders.PlaceOrder(customer_id="c-9")
    body = message.SerializeToString()

    assert (
        decode_payload(body, "application/protobuf", orders.PlaceOrder, dataschema=PLACE_ORDER_SCHEMA)
        == message
    )
    assert (
        decode_payload(
            body, "application/protobuf", orders.PlaceOrder, dataschema="https://schemas.example/po"
        )
        == message
    )


# --- encode errors --------------------------------------------------------------------------------


class Opaque:
    pass


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"thing": Opaque()}, "dict is not JSON-serializable"),
        ({"x": math.nan}, "dict is not JSON-serializable"),
        ([math.inf], "list is not JSON-serializable"),
        ({("a", "b"): 1}, "dict is not JSON-serializable: dict keys must be strings, not tuple"),
    ],
    ids=["object", "nan", "inf", "tuple-key"],
)
def test_non_serializable_values(value: object, message: str) -> None:
    with pytest.raises(PayloadEncodeError) as caught:
        encode_payload(value)

    assert str(caught.value).startswith(message)


def test_nan_inside_a_dataclass_is_refused() -> None:
    @dataclasses.dataclass
    class Reading:
        value: float

    with pytest.raises(PayloadEncodeError, match="Reading is not JSON-serializable"):
        encode_payload(Reading(value=math.nan))


@pytest.mark.parametrize(
    "value", [42, 1.5, None, {1, 2}, Opaque()], ids=["int", "float", "none", "set", "object"]
)
def test_values_without_codec(value: object) -> None:
    with pytest.raises(PayloadEncodeError, match=f"^no codec for {type(value).__name__}: "):
        encode_payload(value)


@pytest.mark.parametrize("value", [{"k": "\ud800"}, "\ud800"], ids=["dict", "str"])
def test_lone_surrogate_is_a_payload_encode_error(value: object) -> None:
    with pytest.raises(PayloadEncodeError):
        encode_payload(value)


def test_pydantic_model_that_cannot_serialize_is_a_payload_encode_error() -> None:
    with pytest.raises(PayloadEncodeError):
        encode_payload(Loose(value=Opaque()))


# --- round-trip asymmetries -----------------------------------------------------------------------


def test_pydantic_model_with_alias_round_trips() -> None:
    order = AliasedOrder(orderId="o-1")

    payload = encode_payload(order)

    assert decode_payload(payload.data, payload.content_type, AliasedOrder) == order


@pytest.mark.parametrize(
    ("value", "target", "expected"),
    [([1, "x"], tuple[int, str], (1, "x")), ([[1, 2], "y"], tuple[list[int], str], ([1, 2], "y"))],
)
def test_fixed_length_tuple_decodes(value: object, target: object, expected: object) -> None:
    assert convert(value, target) == expected


def test_fixed_length_tuple_wrong_item_names_its_index() -> None:
    with pytest.raises(PayloadDecodeError) as caught:
        convert([1, 2], tuple[int, str])

    assert caught.value.reason == "[1]: expected a string, got an integer"


def test_dict_with_int_keys_round_trips() -> None:
    counts = Counts(by_id={1: 10, 2: 20})

    payload = encode_payload(counts)

    assert decode_payload(payload.data, payload.content_type, Counts) == counts


def test_time_field_round_trips() -> None:
    alarm = Alarm(at=dt.time(6, 30))

    payload = encode_payload(alarm)

    assert decode_payload(payload.data, payload.content_type, Alarm) == alarm


@pytest.mark.parametrize("amount", ["abc", None, [1]])
def test_invalid_decimal_is_a_payload_decode_error(amount: object) -> None:
    with pytest.raises(PayloadDecodeError) as caught:
        decode_payload(encode_json({"amount": amount}), "application/json", Priced)

    assert caught.value.reason.startswith("amount: ")


@pytest.mark.parametrize(
    ("field", "value"),
    [("registered_at", "yesterday"), ("favourite", "purple")],
)
def test_value_errors_name_the_field_path(field: str, value: str) -> None:
    body = customer_json()
    body[field] = value

    with pytest.raises(PayloadDecodeError) as caught:
        decode_payload(encode_json(body), "application/json", Customer)

    assert caught.value.reason.startswith(f"{field}: ")


def test_value_errors_are_still_payload_decode_errors() -> None:
    body = customer_json()
    body["favourite"] = "purple"

    with pytest.raises(PayloadDecodeError) as caught:
        decode_payload(encode_json(body), "application/json", Customer)

    assert caught.value.reason == 'favourite: expected one of "red", "green", got a string'


# --- type names and the registry ------------------------------------------------------------------


def test_type_name_of_protobuf_decorated_and_plain_values() -> None:
    assert type_name_of(orders.PlaceOrder) == "shop.orders.v1.PlaceOrder"
    assert type_name_of(orders.PlaceOrder()) == "shop.orders.v1.PlaceOrder"
    assert type_name_of(Customer) == "shop.customers.v1.CustomerRegistered"
    assert type_name_of(make_customer()) == "shop.customers.v1.CustomerRegistered"
    assert type_name_of(Review) == "shop.reviews.v1.ReviewPosted"
    assert type_name_of(Untyped("x")) is None
    assert type_name_of({"a": 1}) is None


def test_event_type_rejects_an_empty_name() -> None:
    with pytest.raises(ValueError, match="must not be empty"):
        event_type("")


def test_registry_decodes_each_type_into_its_class() -> None:
    registry = TypeRegistry([Customer, orders.PlaceOrder, Review])
    registry.register(dict, "com.example.raw")

    assert registry.names == (
        "com.example.raw",
        "shop.customers.v1.CustomerRegistered",
        "shop.orders.v1.PlaceOrder",
        "shop.reviews.v1.ReviewPosted",
    )
    assert registry.lookup("shop.orders.v1.PlaceOrder") is orders.PlaceOrder
    assert registry.lookup("shop.orders.v1.Nope") is None
    message = orders.PlaceOrder(customer_id="c-9")
    decoded = registry.decode(
        "shop.orders.v1.PlaceOrder", message.SerializeToString(), "application/protobuf", PLACE_ORDER_SCHEMA
    )
    assert decoded == message
    customer = registry.decode("shop.customers.v1.CustomerRegistered", customer_json(), "application/json")
    assert customer == make_customer()
    assert registry.decode("com.example.raw", b'{"n": 1}', "application/json") == {"n": 1}


def test_registry_passes_dataschema_checks_through() -> None:
    registry = TypeRegistry([orders.PlaceOrder])

    with pytest.raises(UnexpectedType) as caught:
        registry.decode("shop.orders.v1.PlaceOrder", b"", "application/protobuf", ORDER_ACCEPTED_SCHEMA)

    assert caught.value.received == "shop.orders.v1.OrderAccepted"


def test_registry_refuses_two_classes_under_one_name() -> None:
    registry = TypeRegistry([Customer])
    registry.register(Customer)  # the same class again is fine

    with pytest.raises(
        ValueError,
        match=re.escape("'shop.customers.v1.CustomerRegistered' is already registered to Customer"),
    ):
        registry.register(Untyped, "shop.customers.v1.CustomerRegistered")

    assert registry.lookup("shop.customers.v1.CustomerRegistered") is Customer


def test_registry_refuses_a_class_without_type_name() -> None:
    with pytest.raises(ValueError, match="Untyped has no CloudEvent type"):
        TypeRegistry([Untyped])


def test_registry_unknown_type_lists_registered_names() -> None:
    registry = TypeRegistry([orders.PlaceOrder, Customer])

    with pytest.raises(UnexpectedType) as caught:
        registry.decode("shop.orders.v1.Refund", b"", "application/protobuf")

    assert caught.value.expected == ("shop.customers.v1.CustomerRegistered", "shop.orders.v1.PlaceOrder")
    assert caught.value.received == "shop.orders.v1.Refund"
    assert "shop.customers.v1.CustomerRegistered, shop.orders.v1.PlaceOrder" in str(caught.value)


def test_empty_registry_says_it_expects_nothing() -> None:
    with pytest.raises(UnexpectedType) as caught:
        TypeRegistry().decode("x", b"", None)

    assert caught.value.expected == ()
    assert str(caught.value).endswith("expected nothing")


# --- Event.of / Event.data_as ---------------------------------------------------------------------


def test_event_of_dataclass_without_type_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="Untyped has no CloudEvent type"):
        Event.of(Untyped("hi"), source="/notes")


@pytest.mark.parametrize("value", [{"a": 1}, b"raw", "text"], ids=["dict", "bytes", "str"])
def test_event_of_plain_value_without_type_is_a_configuration_error(value: object) -> None:
    with pytest.raises(ConfigurationError):
        Event.of(value, source="/notes")


def test_event_of_dataclass_with_explicit_type() -> None:
    event = Event.of(Untyped("hi"), source="/notes", type="shop.notes.v1.NoteAdded")

    assert event.get_type() == "shop.notes.v1.NoteAdded"
    assert event.get_datacontenttype() == "application/json"
    assert event.get_data() == b'{"note":"hi"}'
    assert event.data_as(Untyped) == Untyped("hi")


def test_event_of_decorated_dataclass_and_pydantic_model() -> None:
    customer_event = Event.of(make_customer(), source="/crm", subject="c-9")
    review = Review(product="kettle", stars=2, posted_at=PLACED_AT)
    review_event = Event.of(review, source="/reviews")

    assert customer_event.get_type() == "shop.customers.v1.CustomerRegistered"
    assert customer_event.get_subject() == "c-9"
    assert customer_event.get_dataschema() is None
    assert customer_event.data_as(Customer) == make_customer()
    assert review_event.get_type() == "shop.reviews.v1.ReviewPosted"
    assert review_event.data_as(Review) == review


def test_event_of_protobuf_round_trips_through_data_as() -> None:
    message = make_order_placed()

    for _ in range(2):  # the second time takes the cached fast paths of Event.of and data_as
        event = Event.of(message, source="/orders")
        assert event.get_type() == "shop.orders.v1.OrderPlaced"
        assert event.get_datacontenttype() == "application/protobuf"
        assert event.get_dataschema() == ORDER_PLACED_SCHEMA
        assert event.data_as(orders.OrderPlaced) == message


def test_event_of_str_and_bytes_with_type() -> None:
    text_event = Event.of("ping ✓", source="/p", type="com.example.ping")
    raw_event = Event.of(b"\x00\x01", source="/p", type="com.example.raw")

    assert text_event.get_datacontenttype() == "text/plain; charset=utf-8"
    assert text_event.data_as(str) == "ping ✓"
    assert raw_event.get_datacontenttype() == "application/octet-stream"
    assert raw_event.data_as(bytes) == b"\x00\x01"


def test_data_as_wrong_dataschema_raises_unexpected_type() -> None:
    message = orders.PlaceOrder(customer_id="c-9")
    assert Event.of(message, source="/o").data_as(orders.PlaceOrder) == message  # warm the fast path
    event = Event.create(
        type="shop.orders.v1.OrderAccepted",
        source="/o",
        data=message.SerializeToString(),
        datacontenttype="application/protobuf",
        dataschema=ORDER_ACCEPTED_SCHEMA,
    )

    with pytest.raises(UnexpectedType) as caught:
        event.data_as(orders.PlaceOrder)

    assert caught.value.expected == ("shop.orders.v1.PlaceOrder",)
    assert caught.value.received == "shop.orders.v1.OrderAccepted"


def test_data_as_garbage_protobuf_body_raises_payload_decode_error() -> None:
    message = orders.PlaceOrder(customer_id="c-9")
    assert Event.of(message, source="/o").data_as(orders.PlaceOrder) == message  # warm the fast path
    event = Event.create(
        type="shop.orders.v1.PlaceOrder",
        source="/o",
        data=GARBAGE_PROTOBUF,
        datacontenttype="application/protobuf",
        dataschema=PLACE_ORDER_SCHEMA,
    )

    with pytest.raises(PayloadDecodeError) as caught:
        event.data_as(orders.PlaceOrder)

    assert caught.value.reason == "the body is not a valid protobuf message"
    assert "PlaceOrder" in caught.value.expected


def test_data_as_wrong_content_type_raises_content_type_mismatch() -> None:
    event = Event.of("hello", source="/p", type="com.example.text")

    with pytest.raises(ContentTypeMismatch) as caught:
        event.data_as(Customer)

    assert caught.value.expected == "application/json"
    assert caught.value.received == "text/plain; charset=utf-8"


# --- properties -----------------------------------------------------------------------------------

json_scalars = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text()
)
json_values: st.SearchStrategy[Any] = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(), children, max_size=5),
    max_leaves=20,
)


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(st.text(), json_values, max_size=6))
def test_json_dicts_round_trip(value: dict[str, Any]) -> None:
    payload = encode_payload(value)

    assert payload.content_type == "application/json"
    assert decode_payload(payload.data, payload.content_type, dict[str, Any]) == value
    assert decode_payload(json.loads(payload.data), payload.content_type, dict[str, Any]) == value


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=256))
def test_bytes_round_trip(value: bytes) -> None:
    payload = encode_payload(value)

    assert decode_payload(payload.data, payload.content_type, bytes) == value


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=256))
def test_text_round_trip(value: str) -> None:
    payload = encode_payload(value)

    assert decode_payload(payload.data, payload.content_type, str) == value


def test_protobuf_json_with_a_field_the_type_does_not_have_is_refused() -> None:
    """Another type's JSON body (or a newer schema's) is refused, never read as a default-filled
    message: a PaymentFailed body must not decode as an OrderPlaced. Binary protobuf still skips
    unknown fields (its numbers cannot be confused with names)."""
    with pytest.raises(PayloadDecodeError) as caught:
        decode_payload(b'{"orderId": "o-7", "addedInV2": {"x": 1}}', "application/json", orders.OrderAccepted)
    assert caught.value.reason == "'addedInV2' is not a field of shop.orders.v1.OrderAccepted"


def test_a_structured_json_string_is_not_parsed_again_for_protobuf_targets() -> None:
    from google.protobuf.struct_pb2 import Struct
    from google.protobuf.timestamp_pb2 import Timestamp

    with pytest.raises(PayloadDecodeError):
        decode_payload('{"a": 1}', "application/json", Struct)
    stamp = decode_payload("1970-01-01T00:00:01Z", "application/json", Timestamp)
    assert stamp.seconds == 1


def test_parsed_structured_data_without_a_content_type_reads_as_json_for_protobuf() -> None:
    from google.protobuf.struct_pb2 import Struct

    assert dict(decode_payload({"a": 1}, None, Struct)) == {"a": 1.0}


@pytest.mark.parametrize("data", [0, False, [], {}])
def test_text_targets_refuse_non_text_json_values(data: object) -> None:
    with pytest.raises(PayloadDecodeError):
        decode_payload(data, "text/plain", str)


def test_deeply_nested_json_is_a_payload_decode_error() -> None:
    with pytest.raises(PayloadDecodeError):
        decode_payload(b"[" * 100_000 + b"]" * 100_000, "application/json", list)


# --- protobuf JSON: unknown fields are refused (issue 12, item 7) ----------------------------------


def test_a_payment_failed_json_body_is_not_an_order_placed() -> None:
    from google.protobuf import json_format

    from schemas.shop.billing.v1 import billing_pb2 as billing

    failed = json_format.MessageToJson(billing.PaymentFailed(order_id="o-1", reason="card declined"))
    with pytest.raises(PayloadDecodeError) as caught:
        decode_payload(failed.encode(), "application/json", orders.OrderPlaced)
    assert caught.value.reason == "'reason' is not a field of shop.orders.v1.OrderPlaced"


def test_an_unknown_field_inside_a_repeated_message_is_named_by_its_path() -> None:
    body = {"orderId": "o-1", "items": [{"sku": "a", "quantity": 1}, {"sku": "b", "qty": 2}]}
    with pytest.raises(PayloadDecodeError) as caught:
        decode_payload(body, "application/json", orders.OrderPlaced)
    assert caught.value.reason == "'items[1].qty' is not a field of shop.orders.v1.OrderPlaced"


@pytest.mark.parametrize("preserving_proto_field_name", [False, True], ids=["json-names", "proto-names"])
def test_what_protobufs_own_json_mapping_writes_still_decodes(preserving_proto_field_name: bool) -> None:
    from google.protobuf import json_format
    from google.protobuf.timestamp_pb2 import Timestamp

    placed = orders.OrderPlaced(
        order_id="o-1",
        customer_id="c-1",
        items=[orders.LineItem(sku="apple", quantity=3, unit_price_cents=50)],
        total_cents=150,
        currency="EUR",
        placed_at=Timestamp(seconds=1_700_000_000, nanos=5),
    )
    text = json_format.MessageToJson(placed, preserving_proto_field_name=preserving_proto_field_name)
    assert decode_payload(text.encode(), "application/json", orders.OrderPlaced) == placed
    as_dict = json_format.MessageToDict(placed, preserving_proto_field_name=preserving_proto_field_name)
    assert decode_payload(as_dict, "application/json", orders.OrderPlaced) == placed


def test_protobuf_json_nested_ten_thousand_levels_is_refused_in_plain_words() -> None:
    body = b'{"orderId": ' + b"[" * 10_000 + b"]" * 10_000 + b"}"
    with pytest.raises(PayloadDecodeError) as caught:
        decode_payload(body, "application/json", orders.OrderPlaced)
    assert (
        caught.value.reason
        == "the body is not valid JSON: arrays and objects are nested deeper than 100 levels"
    )


@pytest.mark.parametrize(
    "target", [dict[str, Any], Customer, Review, orders.OrderPlaced, list[int], bytes, str, int]
)
@pytest.mark.parametrize("data", [None, [1, {"a": None}], {"x": {"y": [None]}}, "text", 1.5, True], ids=repr)
def test_decode_errors_never_name_python_types(target: Any, data: object) -> None:
    try:
        decode_payload(data, "application/json", target)
    except PayloadDecodeError as exc:
        text = str(exc)
        for python in (
            "NoneType",
            "builtins",
            "__main__",
            "dict[",
            "list[",
            "Traceback",
            "recursion",
            "str ",
            "int ",
        ):
            assert python not in text, text
