"""The codec registry: a codec is one class and one registration line, and everything follows it.

`DecimalCodec` below is a whole codec (what a module in ``eventmicro/wire/codecs/`` holds):
once registered, ``Event.of`` writes decimals with it, the binding carries them in both content
modes, ``data_as`` reads them back, and type names, ``dataschema``, media type and JSON Schema
all come from it; unregistered, decimals go back to what the built-in codecs do.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from decimal import Decimal, InvalidOperation
from typing import Any

import pytest

from eventmicro import ConfigurationError, ContentTypeMismatch, Event, PayloadDecodeError, PayloadEncodeError
from eventmicro import cloudevents_nats as binding
from eventmicro.wire.codecs import (
    Payload,
    SchemaBuilder,
    codec_for,
    codec_for_target,
    dataschema_of,
    decode_payload,
    encode_payload,
    media_type_of,
    register_codec,
    registered_codecs,
    type_name_of,
    unregister_codec,
)
from eventmicro.wire.jsonschema import SchemaSet
from eventmicro.wire.media import JSON
from schemas.shop.orders.v1 import orders_pb2 as orders

DECIMAL_MEDIA = "application/vnd.example.decimal"
DECIMAL_TYPE = "example.money.v1.Decimal"
DECIMAL_SCHEMA = "urn:example:decimal"


class DecimalCodec:
    """Decimals as their exact text (``12.50``), under a media type of their own."""

    name = "decimal"
    media_type = DECIMAL_MEDIA

    def encodes(self, cls: type) -> bool:
        return issubclass(cls, Decimal)

    def decodes(self, target: object) -> bool:
        return target is Decimal

    def encode(self, value: Any) -> Payload:
        if not value.is_finite():
            raise PayloadEncodeError(f"{value} is not a finite decimal")
        return Payload(str(value).encode("ascii"), DECIMAL_MEDIA, DECIMAL_TYPE, DECIMAL_SCHEMA)

    def decode(self, data: Any, content_type: str | None, target: Any, dataschema: str | None) -> Any:
        if content_type is not None and content_type != DECIMAL_MEDIA:
            raise ContentTypeMismatch(DECIMAL_MEDIA, content_type)
        text = data.decode("ascii", "replace") if isinstance(data, bytes) else str(data)
        try:
            return Decimal(text)
        except InvalidOperation:
            raise PayloadDecodeError("a decimal", "the body is not a decimal number") from None

    def type_name(self, cls: type) -> str | None:
        return DECIMAL_TYPE

    def dataschema(self, cls: type) -> str | None:
        return DECIMAL_SCHEMA

    def json_schema(self, cls: type, schemas: SchemaBuilder) -> dict[str, Any] | None:
        return {"type": "string", "pattern": "^-?[0-9]+(\\.[0-9]+)?$"}


@pytest.fixture
def decimal_codec() -> Iterator[DecimalCodec]:
    codec = DecimalCodec()
    register_codec(codec)  # adding a codec: this line
    try:
        yield codec
    finally:
        unregister_codec(codec)


def test_an_event_round_trips_through_the_binding_with_a_new_codec(
    decimal_codec: DecimalCodec,
) -> None:
    event = Event.of(Decimal("12.50"), source="/prices")
    assert event.get_type() == DECIMAL_TYPE
    assert event.get_datacontenttype() == DECIMAL_MEDIA
    assert event.get_dataschema() == DECIMAL_SCHEMA
    assert event.get_data() == b"12.50"

    message = binding.to_binary(event, None)
    assert message.headers["ce-datacontenttype"] == DECIMAL_MEDIA
    assert message.data == b"12.50"
    received = binding.from_nats(message, None)
    amount = received.data_as(Decimal)
    assert amount == Decimal("12.50")
    assert amount.as_tuple() == Decimal("12.50").as_tuple()  # exact: the trailing zero kept

    structured = binding.to_structured(event, None)
    assert binding.from_nats(structured, None).data_as(Decimal) == Decimal("12.50")


def test_the_codec_answers_everything_a_type_needs(decimal_codec: DecimalCodec) -> None:
    assert codec_for(Decimal) is decimal_codec
    assert codec_for_target(Decimal) is decimal_codec
    assert registered_codecs()[0] is decimal_codec  # asked first
    assert type_name_of(Decimal) == DECIMAL_TYPE
    assert type_name_of(Decimal("1")) == DECIMAL_TYPE
    assert dataschema_of(Decimal) == DECIMAL_SCHEMA
    assert media_type_of(Decimal) == DECIMAL_MEDIA
    assert SchemaSet().of_type(Decimal) == {"type": "string", "pattern": "^-?[0-9]+(\\.[0-9]+)?$"}
    assert SchemaSet().of_type(Decimal | None) == {
        "anyOf": [{"type": "string", "pattern": "^-?[0-9]+(\\.[0-9]+)?$"}, {"type": "null"}]
    }


def test_its_errors_are_the_codecs_own(decimal_codec: DecimalCodec) -> None:
    with pytest.raises(PayloadEncodeError, match="not a finite decimal"):
        encode_payload(Decimal("NaN"))
    with pytest.raises(ContentTypeMismatch):
        decode_payload(b"1.5", JSON, Decimal)
    with pytest.raises(PayloadDecodeError, match="not a decimal number"):
        decode_payload(b"one", DECIMAL_MEDIA, Decimal)


def test_unregistered_the_built_in_codecs_take_over_again() -> None:
    codec = DecimalCodec()
    register_codec(codec)
    assert encode_payload(Decimal("2.5")).content_type == DECIMAL_MEDIA
    unregister_codec(codec)
    assert codec_for(Decimal) is None
    assert type_name_of(Decimal) is None
    with pytest.raises(PayloadEncodeError, match="no codec for Decimal"):
        encode_payload(Decimal("2.5"))
    assert decode_payload(b'"2.5"', JSON, Decimal) == Decimal("2.5")  # the JSON codec reads it again


def test_a_codec_registered_later_wins_for_the_types_it_claims() -> None:
    @dataclasses.dataclass
    class Reading:
        value: int

    class CompactJSON:  # writes a dataclass as a bare number: only this codec's business
        name = "reading"
        media_type = "application/vnd.example.reading"

        def encodes(self, cls: type) -> bool:
            return cls is Reading

        def decodes(self, target: object) -> bool:
            return target is Reading

        def encode(self, value: Any) -> Payload:
            return Payload(str(value.value).encode(), self.media_type)

        def decode(self, data: Any, content_type: str | None, target: Any, dataschema: str | None) -> Any:
            return Reading(int(data))

        def type_name(self, cls: type) -> str | None:
            return None

        def dataschema(self, cls: type) -> str | None:
            return None

        def json_schema(self, cls: type, schemas: SchemaBuilder) -> dict[str, Any] | None:
            return None  # no schema: any JSON value, as for a type nothing describes

    assert encode_payload(Reading(7)).data == b'{"value":7}'  # the built-in JSON codec
    codec = CompactJSON()
    register_codec(codec)
    try:
        assert encode_payload(Reading(7)) == Payload(b"7", "application/vnd.example.reading")
        assert decode_payload(b"7", "application/vnd.example.reading", Reading) == Reading(7)
        assert encode_payload({"value": 7}).data == b'{"value":7}'  # other types: untouched
        assert "is not described" in SchemaSet().of_type(Reading)["description"]  # its codec gave none
    finally:
        unregister_codec(codec)
    assert encode_payload(Reading(7)).data == b'{"value":7}'


def test_registering_clears_the_protobuf_fast_paths() -> None:
    placed = orders.OrderPlaced(order_id="o-1")
    payload = encode_payload(placed)  # fills the protobuf codec's caches
    assert Event.of(placed, source="/s").data_as(orders.OrderPlaced) == placed

    class RawProtobuf:  # claims OrderPlaced: written and read as octets, no type of its own
        name = "raw-order"
        media_type = "application/octet-stream"

        def encodes(self, cls: type) -> bool:
            return cls is orders.OrderPlaced

        def decodes(self, target: object) -> bool:
            return target is orders.OrderPlaced

        def encode(self, value: Any) -> Payload:
            return Payload(value.SerializeToString(), self.media_type)

        def decode(self, data: Any, content_type: str | None, target: Any, dataschema: str | None) -> Any:
            return orders.OrderPlaced.FromString(data)

        def type_name(self, cls: type) -> str | None:
            return None

        def dataschema(self, cls: type) -> str | None:
            return None

        def json_schema(self, cls: type, schemas: SchemaBuilder) -> dict[str, Any] | None:
            return None

    codec = RawProtobuf()
    register_codec(codec)
    try:
        assert encode_payload(placed) == Payload(payload.data, "application/octet-stream")
        assert type_name_of(orders.OrderPlaced) is None
        event = Event.of(placed, source="/s", type="com.example.raw")
        assert event.get_datacontenttype() == "application/octet-stream"
        assert event.data_as(orders.OrderPlaced) == placed
    finally:
        unregister_codec(codec)
    assert encode_payload(placed) == payload
    assert type_name_of(orders.OrderPlaced) == "shop.orders.v1.OrderPlaced"


def test_a_codec_is_registered_once_and_unregistered_once() -> None:
    codec = DecimalCodec()
    register_codec(codec)
    try:
        with pytest.raises(ConfigurationError, match="already registered"):
            register_codec(codec)
        with pytest.raises(ConfigurationError, match="already registered"):
            register_codec(DecimalCodec())  # another codec of the same name
    finally:
        unregister_codec(codec)
    with pytest.raises(ConfigurationError, match="not registered"):
        unregister_codec(codec)
