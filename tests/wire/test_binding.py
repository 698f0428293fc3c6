"""The CloudEvents NATS binding against the interop checklist of protocols.md (items 1-13)."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent as SdkCloudEvent

from eventmicro import (
    EnvelopeError,
    Event,
    HeaderDecodeError,
    InvalidAttribute,
    MissingAttribute,
    StructuredFormatError,
    UnsupportedSpecVersion,
)
from eventmicro import cloudevents_nats as binding
from eventmicro.cloudevents_nats import CloudEventsWarning, Mode, NATSMessage
from schemas.shop.orders.v1 import orders_pb2 as orders

TIME = datetime(2018, 4, 5, 3, 56, 24, tzinfo=UTC)


def make(**attributes: object) -> Event:
    base: dict[str, object] = {
        "specversion": "1.0",
        "id": "evt-1",
        "source": "/svc/orders",
        "type": "com.example.order.placed",
    }
    base.update(attributes)
    return Event(base, attributes.pop("data", None) if "data" in attributes else b"payload")


def binary(headers: dict[str, str], data: bytes = b"") -> Event:
    return binding.from_nats(NATSMessage(headers, data), None)


# 1. required headers, exact lowercase names, body byte for byte
def test_binary_mode_writes_lowercase_required_headers_and_raw_body() -> None:
    message = binding.to_binary(make(), None)
    assert message.headers["ce-specversion"] == "1.0"
    assert message.headers["ce-id"] == "evt-1"
    assert message.headers["ce-source"] == "/svc/orders"
    assert message.headers["ce-type"] == "com.example.order.placed"
    assert all(name == name.lower() for name in message.headers)
    assert message.data == b"payload"


def test_event_of_writes_the_same_headers_as_the_general_encoder() -> None:
    placed = orders.OrderPlaced(order_id="o-1")
    fast = Event.of(placed, source="/svc/orders")
    general = Event(fast.get_attributes(), fast.get_data())
    assert binding.to_binary(fast, None) == binding.to_binary(general, None)


# 2. datacontenttype as ce-datacontenttype, never Content-Type
def test_binary_mode_sends_datacontenttype_as_ce_header() -> None:
    message = binding.to_binary(make(datacontenttype="application/json"), None)
    assert message.headers["ce-datacontenttype"] == "application/json"
    assert not any(name.lower() == "content-type" for name in message.headers)


# 3. ce-time in RFC 3339 with Z, parsed back equal and aware
@pytest.mark.parametrize(
    ("value", "text"),
    [
        (TIME, "2018-04-05T03:56:24Z"),
        (TIME.replace(microsecond=120), "2018-04-05T03:56:24.000120Z"),
        (datetime(2018, 4, 5, 5, 56, 24, tzinfo=timezone(timedelta(hours=2))), "2018-04-05T03:56:24Z"),
        (datetime(1, 1, 1, tzinfo=UTC), "0001-01-01T00:00:00Z"),
    ],
)
def test_time_is_rfc3339_utc_with_z_and_round_trips(value: datetime, text: str) -> None:
    message = binding.to_binary(make(time=value), None)
    assert message.headers["ce-time"] == text
    parsed = binding.from_nats(message, None).get_time()
    assert parsed is not None
    assert parsed.tzinfo is not None
    assert parsed == value


def test_time_from_other_producers_is_read() -> None:
    base = {"ce-specversion": "1.0", "ce-id": "1", "ce-source": "/s", "ce-type": "t"}
    nanos = binary({**base, "ce-time": "2018-04-05T03:56:24.123456789Z"}).get_time()
    assert nanos == datetime(2018, 4, 5, 3, 56, 24, 123456, tzinfo=UTC)
    offset = binary({**base, "ce-time": "2018-04-05T05:56:24+02:00"}).get_time()
    assert offset == TIME


@pytest.mark.parametrize("text", ["2018-04-05", "2018-04-05T03:56:24", "yesterday", "2018-13-45T03:56:24Z"])
def test_invalid_time_is_rejected_at_decode(text: str) -> None:
    headers = {"ce-specversion": "1.0", "ce-id": "1", "ce-source": "/s", "ce-type": "t", "ce-time": text}
    with pytest.raises(InvalidAttribute) as caught:
        binary(headers)
    assert caught.value.attribute == "time"


# 4. exact percent-encoding; '/' and ':' untouched
def test_values_are_percent_encoded_exactly_as_the_spec_requires() -> None:
    message = binding.to_binary(make(subject="Euro € 😀", source="/svc/orders", id="urn:uuid:1"), None)
    assert message.headers["ce-subject"] == "Euro%20%E2%82%AC%20%F0%9F%98%80"
    assert message.headers["ce-source"] == "/svc/orders"
    assert message.headers["ce-id"] == "urn:uuid:1"


def test_quote_and_percent_are_encoded() -> None:
    assert binding.encode_header_value("subject", 'say "100%"') == "say%20%22100%25%22"


# 5. lower-case hex, quoted values, overlong UTF-8 rejected
def test_decoder_accepts_lowercase_hex_and_quoted_values() -> None:
    base = {"ce-specversion": "1.0", "ce-id": "1", "ce-type": "t"}
    event = binary({**base, "ce-source": "/s", "ce-subject": "%e2%82%ac"})
    assert event.get_subject() == "€"
    quoted = binary({**base, "ce-source": '"a b"'})
    assert quoted.get_source() == "a b"
    needless = binary({**base, "ce-source": "%2Fsvc%2Forders"})
    assert needless.get_source() == "/svc/orders"


@pytest.mark.parametrize("value", ["%C0%A0", "%E2%82", "%FF", "abc%", "%G1", "%2"])
def test_decoder_rejects_broken_percent_encoding(value: str) -> None:
    headers = {"ce-specversion": "1.0", "ce-id": "1", "ce-source": "/s", "ce-type": "t", "ce-subject": value}
    with pytest.raises(HeaderDecodeError) as caught:
        binary(headers)
    assert caught.value.header == "ce-subject"


# 6. header names case-insensitive
def test_header_names_are_matched_case_insensitively() -> None:
    headers = {"CE-SpecVersion": "1.0", "Ce-Id": "1", "CE-SOURCE": "/s", "ce-Type": "t", "CE-Color": "red"}
    assert binding.detect_mode(headers) is Mode.BINARY
    event = binary(headers)
    assert (event.get_id(), event.get_source(), event.get_type()) == ("1", "/s", "t")
    assert event.get_extension("color") == "red"


def test_the_same_attribute_twice_in_different_case_is_rejected() -> None:
    headers = {"ce-specversion": "1.0", "ce-id": "1", "CE-ID": "2", "ce-source": "/s", "ce-type": "t"}
    with pytest.raises(InvalidAttribute) as caught:
        binary(headers)
    assert caught.value.attribute == "id"


# 7. structured mode: Content-Type, no ce- headers, JSON object body
def test_structured_mode_has_content_type_and_json_body_only() -> None:
    message = binding.to_structured(make(datacontenttype="application/octet-stream"), None)
    assert message.headers == {"Content-Type": "application/cloudevents+json"}
    document = json.loads(message.data.decode("utf-8"))
    assert document["specversion"] == "1.0"
    assert document["source"] == "/svc/orders"


# 8. data_base64 for bytes, JSON value for JSON data
def test_structured_bytes_go_to_data_base64() -> None:
    message = binding.to_structured(make(datacontenttype="application/protobuf"), None)
    document = json.loads(message.data)
    assert "data" not in document
    assert base64.b64decode(document["data_base64"]) == b"payload"


def test_structured_json_data_is_a_json_object_not_a_string() -> None:
    event = Event(
        {"specversion": "1.0", "id": "1", "source": "/s", "type": "t", "datacontenttype": "application/json"},
        {"n": 1},
    )
    document = json.loads(binding.to_structured(event, None).data)
    assert document["data"] == {"n": 1}
    from_bytes = Event(event.get_attributes(), b'{"n": 1}')
    assert json.loads(binding.to_structured(from_bytes, None).data)["data"] == {"n": 1}


def test_structured_string_data_is_not_parsed_again() -> None:
    body = json.dumps(
        {"specversion": "1.0", "id": "1", "source": "/s", "type": "t", "data": '{"not": "parsed"}'}
    ).encode()
    event = binding.from_nats(NATSMessage({"content-type": "application/cloudevents+json"}, body), None)
    assert event.get_data() == '{"not": "parsed"}'


# 9. no headers + JSON body = structured (NATS < 2.2, sdk-go)
def test_message_without_headers_is_read_as_structured() -> None:
    body = json.dumps(
        {"specversion": "1.0", "id": "1", "source": "/s", "type": "t", "data": {"a": 1}}
    ).encode()
    headers: dict[str, str] | None
    for headers in ({}, None):
        message = NATSMessage(headers or {}, body)
        assert binding.detect_mode(headers) is Mode.STRUCTURED
        assert binding.from_nats(message, None).get_data() == {"a": 1}


# 10. sdk-go fallback: content-type header when ce-datacontenttype is missing
def test_content_type_header_is_a_fallback_for_datacontenttype() -> None:
    headers = {"ce-specversion": "1.0", "ce-id": "1", "ce-source": "/s", "ce-type": "t"}
    assert binary({**headers, "content-type": "application/json"}).get_datacontenttype() == "application/json"
    both = {**headers, "content-type": "text/plain", "ce-datacontenttype": "application/json"}
    assert binary(both).get_datacontenttype() == "application/json"


# 11. forbidden extension names fail; long names warn
@pytest.mark.parametrize("name", ["TraceParent", "data", "my-ext", "ünï", ""])
def test_forbidden_extension_names_are_rejected(name: str) -> None:
    with pytest.raises(InvalidAttribute) as caught:
        Event.create(type="t", source="/s", extensions={name: "x"})
    assert caught.value.attribute == name


def test_an_extension_name_over_20_characters_warns() -> None:
    event = Event.create(type="t", source="/s", extensions={"averyveryverylongname1": "x"})
    with pytest.warns(CloudEventsWarning, match="longer than 20"):
        binding.to_binary(event, None)
    with pytest.warns(CloudEventsWarning, match="longer than 20"):
        binding.to_structured(event, None)


# 12. protobuf payload: content type, dataschema, body
def test_protobuf_payload_headers_and_body() -> None:
    placed = orders.OrderPlaced(order_id="o-1", total_cents=42)
    message = binding.to_binary(Event.of(placed, source="/svc/orders"), None)
    assert message.headers["ce-datacontenttype"] == "application/protobuf"
    assert message.headers["ce-dataschema"] == "type.googleapis.com/shop.orders.v1.OrderPlaced"
    assert message.headers["ce-type"] == "shop.orders.v1.OrderPlaced"
    assert message.data == placed.SerializeToString()
    assert binding.from_nats(message, None).data_as(orders.OrderPlaced) == placed


# 13. traceparent: both ce-traceparent and a plain traceparent header
def test_traceparent_goes_to_ce_header_and_plain_header() -> None:
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    event = Event.create(type="t", source="/s", extensions={"traceparent": parent, "tracestate": "a=b"})
    message = binding.to_binary(event, None)
    assert message.headers["ce-traceparent"] == parent
    assert message.headers["traceparent"] == parent
    assert message.headers["tracestate"] == "a=b"
    assert binding.from_nats(message, None).get_extension("traceparent") == parent


# invalid input: specific errors naming the problem
def test_missing_required_attribute_is_named() -> None:
    with pytest.raises(MissingAttribute) as caught:
        binary({"ce-specversion": "1.0", "ce-id": "1", "ce-source": "/s"})
    assert caught.value.attribute == "type"


def test_ce_headers_without_specversion_name_the_missing_specversion() -> None:
    with pytest.raises(MissingAttribute) as caught:
        binary({"ce-id": "1", "ce-source": "/s", "ce-type": "t"}, b"raw")
    assert caught.value.attribute == "specversion"


def test_bad_specversion_is_rejected_in_both_modes() -> None:
    with pytest.raises(UnsupportedSpecVersion) as caught:
        binary({"ce-specversion": "0.3", "ce-id": "1", "ce-source": "/s", "ce-type": "t"})
    assert caught.value.received == "0.3"
    body = json.dumps({"specversion": "2.0", "id": "1", "source": "/s", "type": "t"}).encode()
    with pytest.raises(UnsupportedSpecVersion):
        binding.from_nats(NATSMessage({}, body), None)


@pytest.mark.parametrize(
    "body",
    [b"not json", b"[1, 2]", b'"a string"', b"\xff\xfe", b'{"specversion": "1.0", "id": "1", "source": "/s"'],
)
def test_non_json_structured_body_is_rejected(body: bytes) -> None:
    message = NATSMessage({"Content-Type": "application/cloudevents+json"}, body)
    with pytest.raises(StructuredFormatError):
        binding.from_nats(message, None)


def test_unsupported_structured_format_is_named() -> None:
    message = NATSMessage({"content-type": "application/cloudevents+protobuf"}, b"\x08\x01")
    with pytest.raises(StructuredFormatError, match="not supported"):
        binding.from_nats(message, None)


def test_structured_null_attributes_mean_unset() -> None:
    body = json.dumps(
        {"specversion": "1.0", "id": "1", "source": "/s", "type": "t", "subject": None}
    ).encode()
    event = binding.from_nats(NATSMessage({}, body), None)
    assert event.get_subject() is None


def test_structured_data_and_data_base64_together_are_rejected() -> None:
    body = json.dumps(
        {"specversion": "1.0", "id": "1", "source": "/s", "type": "t", "data": 1, "data_base64": "AA=="}
    ).encode()
    with pytest.raises(StructuredFormatError, match="mutually exclusive"):
        binding.from_nats(NATSMessage({}, body), None)


@pytest.mark.parametrize(
    ("extra", "attribute"),
    [
        ({"id": 5}, "id"),
        ({"weight": 1.5}, "weight"),
        ({"nested": {"a": 1}}, "nested"),
        ({"big": 2**40}, "big"),
    ],
)
def test_structured_attribute_types_are_checked(extra: dict[str, object], attribute: str) -> None:
    document: dict[str, object] = {"specversion": "1.0", "id": "1", "source": "/s", "type": "t"}
    document.update(extra)
    with pytest.raises(InvalidAttribute) as caught:
        binding.from_nats(NATSMessage({}, json.dumps(document).encode()), None)
    assert caught.value.attribute == attribute


def test_control_characters_are_rejected_on_both_sides() -> None:
    with pytest.raises(InvalidAttribute, match="U\\+0007"):
        binding.to_binary(make(subject="bell\x07"), None)
    headers = {
        "ce-specversion": "1.0",
        "ce-id": "1",
        "ce-source": "/s",
        "ce-type": "t",
        "ce-subject": "a%0Ab",
    }
    with pytest.raises(InvalidAttribute, match="U\\+000A"):
        binary(headers)


# the SDK side: the binding works with cloudevents.core events and formats
def test_sdk_events_and_json_format_work_with_the_binding() -> None:
    sdk_event = SdkCloudEvent(
        {"type": "t", "source": "/s", "id": "1", "time": TIME, "datacontenttype": "application/json"},
        {"hello": "world"},
    )
    message = binding.to_binary_event(sdk_event)
    assert json.loads(message.data) == {"hello": "world"}
    back = binding.from_nats_event(message)
    assert back.get_data() == {"hello": "world"}
    assert back.get_time() == TIME
    as_sdk = binding.from_nats(message, JSONFormat(), SdkCloudEvent)
    assert isinstance(as_sdk, SdkCloudEvent)
    assert as_sdk.get_id() == "1"


def test_factory_rejection_becomes_an_envelope_error() -> None:
    def picky(attributes: dict[str, object], data: object) -> Event:
        raise ValueError("no thanks")

    headers = {"ce-specversion": "1.0", "ce-id": "1", "ce-source": "/s", "ce-type": "t"}
    with pytest.raises(EnvelopeError, match="no thanks"):
        binding.from_nats(NATSMessage(headers, b""), None, picky)


def test_decoded_event_re_encodes_to_the_same_headers() -> None:
    original = binding.to_binary(Event.of(orders.OrderAccepted(order_id="x"), source="/s"), None)
    again = binding.to_binary(binding.from_nats(original, None), None)
    assert again.headers == original.headers
    assert again.data == original.data


def test_event_of_needs_a_type_for_plain_json() -> None:
    from eventmicro import ConfigurationError

    with pytest.raises(ConfigurationError, match="no CloudEvent type"):
        Event.of({"a": 1}, source="/s")


# --- regressions found in review: each decoder path gives the same answer ------------------

CANONICAL = {
    "ce-specversion": "1.0",
    "ce-id": "1",
    "ce-source": "/s",
    "ce-type": "t",
    "ce-time": "2020-01-01T00:00:00Z",
    "ce-datacontenttype": "text/plain",
}


@pytest.mark.parametrize("header", ["ce-source", "ce-type", "ce-datacontenttype"])
@pytest.mark.parametrize("extra", [{}, {"ce-subject": "x"}], ids=["fast-path", "general-path"])
def test_an_empty_quoted_value_is_rejected_on_every_path(header: str, extra: dict[str, str]) -> None:
    with pytest.raises(InvalidAttribute, match="must not be empty"):
        binary({**CANONICAL, header: '""', **extra})


@pytest.mark.parametrize("extra", [{}, {"ce-subject": "x"}], ids=["fast-path", "general-path"])
@pytest.mark.parametrize("time", ['"2020-01-01T00:00:00Z"', "2020-01-01T00:00:00%2B00:00"])
def test_a_quoted_or_encoded_time_is_decoded_on_every_path(time: str, extra: dict[str, str]) -> None:
    event = binary({**CANONICAL, "ce-time": time, **extra})
    assert event.get_time() == datetime(2020, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize("digits", ["²²²²²²", "１２３４５６"])
def test_non_ascii_digits_in_a_time_are_rejected_even_within_a_known_second(digits: str) -> None:
    binary({**CANONICAL, "ce-time": "2020-01-01T00:00:00.000001Z"})  # the second is now known
    with pytest.raises(InvalidAttribute):
        binary({**CANONICAL, "ce-time": f"2020-01-01T00:00:00.{digits}Z"})


def test_a_lazily_parsed_time_is_also_seen_through_get_extension() -> None:
    event = binary({**CANONICAL, "ce-time": "2021-02-03T04:05:06.000007Z"})
    assert event.get_extension("time") == datetime(2021, 2, 3, 4, 5, 6, 7, tzinfo=UTC)
    assert event.get_attributes()["time"] == event.get_time()


def test_absurdly_nested_json_is_an_envelope_error_not_a_recursion_error() -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    body = b'{"specversion":"1.0","id":"1","source":"/s","type":"t","data":' + deep + b"}"
    with pytest.raises(StructuredFormatError):
        binding.from_nats(NATSMessage({"Content-Type": "application/cloudevents+json"}, body), None)
    headers = {**CANONICAL, "ce-datacontenttype": "application/json"}
    with pytest.raises(EnvelopeError):
        binding.from_nats_event(NATSMessage(headers, deep))


@pytest.mark.parametrize(
    "body",
    [
        b'{"specversion":"1.0","id":"1","source":"/s","type":"t","data":"\\ud800"}',
        b'{"specversion":"1.0","id":"1","source":"/s","type":"t","data":NaN}',
        b'{"specversion":"1.0","id":"1","id":"2","source":"/s","type":"t"}',
    ],
    ids=["lone-surrogate", "nan", "duplicate-member"],
)
def test_structured_bodies_that_are_not_strict_json_are_rejected(body: bytes) -> None:
    with pytest.raises(StructuredFormatError):
        binding.from_nats(NATSMessage({}, body), None)


def test_structured_data_null_next_to_data_base64_means_unset() -> None:
    body = b'{"specversion":"1.0","id":"1","source":"/s","type":"t","data":null,"data_base64":"AAE="}'
    assert binding.from_nats(NATSMessage({}, body), None).get_data() == b"\x00\x01"


def test_bytes_without_a_content_type_go_to_data_base64() -> None:
    event = Event.create(type="t", source="/s", data=b"123")
    document = json.loads(binding.to_structured(event, None).data)
    assert document["data_base64"] == "MTIz"
    assert "data" not in document
    assert binding.from_nats(binding.to_structured(event, None), None).get_data() == b"123"


def test_bytes_labelled_json_that_are_not_json_stay_lossless() -> None:
    event = Event.create(type="t", source="/s", data=b"NaN", datacontenttype="application/json")
    document = json.loads(binding.to_structured(event, None).data)
    assert base64.b64decode(document["data_base64"]) == b"NaN"


@pytest.mark.parametrize("to_binary", [binding.to_binary_event, lambda e: binding.to_binary(e, None)])
def test_a_json_string_value_goes_to_binary_mode_as_json_text(to_binary: object) -> None:
    body = b'{"specversion":"1.0","id":"1","source":"/s","type":"t","data":"hello"}'
    event = binding.from_nats(NATSMessage({}, body), None)
    message = to_binary(event)  # type: ignore[operator]
    assert message.headers["ce-datacontenttype"] == "application/json"
    assert message.data == b'"hello"'
    assert binding.from_nats(message, None).data_as(str) == "hello"


def test_lone_surrogates_in_event_data_are_errors_when_encoding() -> None:
    text = Event.create(type="t", source="/s", data="\ud800", datacontenttype="text/plain")
    with pytest.raises(EnvelopeError):
        binding.to_binary(text, None)
    with pytest.raises(EnvelopeError):
        binding.to_structured(text, None)


def test_the_structured_marker_is_not_taken_as_datacontenttype() -> None:
    headers = {"ce-specversion": "1.0", "ce-id": "1", "ce-source": "/s", "ce-type": "t"}
    event = binary({**headers, "Content-Type": "application/cloudevents+json"})
    assert event.get_datacontenttype() is None


def test_non_ascii_header_names_are_rejected() -> None:
    headers = {"ce-specversion": "1.0", "ce-id": "1", "ce-source": "/s", "ce-type": "t", "ce-\u212aind": "x"}
    with pytest.raises(InvalidAttribute, match="ASCII"):
        binary(headers)


def test_event_of_with_extensions_matches_the_general_encoder() -> None:
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    fast = Event.of(
        orders.OrderAccepted(order_id="x"), source="/s", extensions={"traceparent": parent, "n": 3}
    )
    general = Event(fast.get_attributes(), fast.get_data())
    assert binding.to_binary(fast, None) == binding.to_binary(general, None)
    assert binding.to_binary(fast, None).headers["traceparent"] == parent
    with pytest.warns(CloudEventsWarning):
        Event.of(b"x", source="/s", type="t", extensions={"averyveryverylongname1": "x"})
    with pytest.raises(InvalidAttribute):
        Event.of(b"x", source="/s", type="t", extensions={"Bad": "x"})


def test_the_fast_path_keeps_subject_and_extensions() -> None:
    for _ in range(2):  # the first message teaches the decoder the extension's name
        event = Event.of(
            orders.OrderPlaced(order_id="o"), source="/s", subject="o-1", extensions={"tenant": "t1"}
        )
        back = binding.from_nats(binding.to_binary(event, None), None)
        assert back.get_subject() == "o-1"
        assert back.get_extension("tenant") == "t1"
        assert back == Event(event.get_attributes(), event.get_data())
