"""Property-based round trips through both content modes, and a fuzz of the decoder."""

from __future__ import annotations

import contextlib
import json
import random
import string
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventmicro import Event, EventMicroError, InvalidAttribute
from eventmicro import cloudevents_nats as binding
from eventmicro.cloudevents_nats import NATSMessage
from eventmicro.wire.attributes import check_string

# Characters the CloudEvents String type allows: everything but C0/C1 controls,
# noncharacters and surrogates. Includes space, '%', '"', unicode and emoji.
allowed_char = st.characters(
    blacklist_categories=("Cs", "Cc"),
    blacklist_characters="".join(chr(c) for c in range(0xFDD0, 0xFDF0)) + "\ufffe\uffff",
).filter(lambda c: (ord(c) & 0xFFFE) != 0xFFFE)
ce_string = st.text(allowed_char, min_size=1, max_size=40)
extension_name = st.text(string.ascii_lowercase + string.digits, min_size=1, max_size=20).filter(
    lambda n: (
        n not in {"data", "id", "source", "type", "specversion", "time", "subject"}
        and n not in {"datacontenttype", "dataschema"}
    )
)
extension_value = st.one_of(ce_string, st.booleans(), st.integers(-(2**31), 2**31 - 1))
aware_time = st.datetimes(
    min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.just(UTC)
)


@st.composite
def events(draw: st.DrawFn) -> Event:
    extensions = draw(st.dictionaries(extension_name, extension_value, max_size=4))
    return Event.create(
        id=draw(ce_string),
        source=draw(ce_string),
        type=draw(ce_string),
        time=draw(aware_time),
        subject=draw(st.none() | ce_string),
        datacontenttype=draw(st.sampled_from(["application/octet-stream", "application/protobuf"])),
        data=draw(st.binary(max_size=64)),
        extensions=extensions,
    )


def comparable(event: Event) -> dict[str, object]:
    """Attributes as they survive binary mode: extension values travel as strings."""
    out: dict[str, object] = {}
    for name, value in event.get_attributes().items():
        if isinstance(value, bool):
            out[name] = "true" if value else "false"
        elif isinstance(value, int) and name not in {"time"}:
            out[name] = str(value)
        else:
            out[name] = value
    return out


@given(events())
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
def test_binary_mode_round_trips_every_allowed_value(event: Event) -> None:
    message = binding.to_binary(event, None)
    assert all(value.isascii() and value.isprintable() for value in message.headers.values())
    assert all("%" not in v or "%25" in v or "%" in v for v in message.headers.values())
    back = binding.from_nats(message, None)
    assert comparable(back) == comparable(event)
    assert back.get_data() == event.get_data()


@given(events())
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
def test_structured_mode_round_trips_every_allowed_value(event: Event) -> None:
    message = binding.to_structured(event, None)
    back = binding.from_nats(message, None)
    assert back.get_attributes() == event.get_attributes()
    assert back.get_data() == event.get_data()


@given(ce_string)
def test_encoded_values_only_use_printable_ascii_and_decode_back(value: str) -> None:
    encoded = binding.encode_header_value("subject", value)
    assert all(0x21 <= ord(c) <= 0x7E and c not in '"' for c in encoded)
    assert binding.decode_header_value("ce-subject", encoded) == value
    if all(0x21 <= ord(c) <= 0x7E and c not in '"%' for c in value):
        assert encoded == value  # nothing is encoded that need not be


forbidden_char = st.one_of(
    st.characters(min_codepoint=0, max_codepoint=0x1F),
    st.characters(min_codepoint=0x7F, max_codepoint=0x9F),
    st.sampled_from(["\ufdd0", "\ufffe", "\U0001ffff"]),
)


@given(st.text(allowed_char, max_size=5), forbidden_char, st.text(allowed_char, max_size=5))
def test_values_with_forbidden_characters_are_rejected_on_encode_and_decode(
    before: str, bad: str, after: str
) -> None:
    value = before + bad + after
    with pytest.raises(InvalidAttribute):
        check_string("subject", value)
    with pytest.raises(InvalidAttribute):
        binding.to_binary(Event.create(type="t", source="/s", subject=value), None)
    encoded = "".join(f"%{b:02X}" for b in value.encode("utf-8", "surrogatepass"))
    headers = {
        "ce-specversion": "1.0",
        "ce-id": "1",
        "ce-source": "/s",
        "ce-type": "t",
        "ce-subject": encoded,
    }
    with pytest.raises(EventMicroError):
        binding.from_nats(NATSMessage(headers, b""), None)


@given(st.text(min_size=1, max_size=25))
def test_extension_names_outside_the_alphabet_are_rejected(name: str) -> None:
    valid = all(c in string.ascii_lowercase + string.digits for c in name) and name != "data"
    if valid:
        return
    with pytest.raises(InvalidAttribute):
        Event.create(type="t", source="/s", extensions={name: "x"})
    headers = {"ce-specversion": "1.0", "ce-id": "1", "ce-source": "/s", "ce-type": "t", f"ce-{name}": "x"}
    try:
        event = binding.from_nats(NATSMessage(headers, b""), None)
    except EventMicroError:
        return
    # header names are case-insensitive: an upper-case name may fold to a valid one
    assert name.lower() in event.get_attributes()


# --- fuzz: the decoder returns an event or raises an eventmicro error, nothing else ----------

SEEDS: list[NATSMessage] = [
    binding.to_binary(Event.create(type="t", source="/s", subject="Euro € 😀", data=b"x"), None),
    binding.to_binary(Event.create(type="t.y", source="/a/b", extensions={"n": 3, "ok": True}), None),
    binding.to_structured(Event.create(type="t", source="/s", data=b"\x00\x01"), None),
    NATSMessage(
        {"content-type": "application/cloudevents+json"},
        json.dumps(
            {"specversion": "1.0", "id": "1", "source": "/s", "type": "t", "data": {"a": [1]}}
        ).encode(),
    ),
]
PIECES = ["%", "%C0%A0", "%e2%82%ac", '"', "\\", "\x00", "\n", "é", "😀", "ce-", "1.0", "0.3", "", " ", "Z"]


def mutate_text(rng: random.Random, text: str) -> str:
    choice = rng.randrange(5)
    if choice == 0 or not text:
        return rng.choice(PIECES)
    position = rng.randrange(len(text) + 1)
    if choice == 1:
        return text[:position] + rng.choice(PIECES) + text[position:]
    if choice == 2:
        return text[:position] + text[position + 1 :]
    if choice == 3:
        return text.upper()
    return "".join(rng.choice(string.printable) for _ in range(rng.randrange(12)))


def mutate(rng: random.Random, message: NATSMessage) -> NATSMessage:
    headers = dict(message.headers)
    data = bytearray(message.data)
    for _ in range(rng.randrange(1, 4)):
        action = rng.randrange(6)
        if action == 0 and headers:
            key = rng.choice(list(headers))
            headers[key] = mutate_text(rng, headers[key])
        elif action == 1 and headers:
            key = rng.choice(list(headers))
            value = headers.pop(key)
            headers[mutate_text(rng, key)] = value
        elif action == 2 and headers:
            headers.pop(rng.choice(list(headers)))
        elif action == 3:
            headers[rng.choice(["ce-time", "ce-specversion", "Content-Type", "ce-x", "CE-ID"])] = mutate_text(
                rng, rng.choice(PIECES)
            )
        elif action == 4 and data:
            index = rng.randrange(len(data))
            data[index] = rng.randrange(256)
        else:
            cut = rng.randrange(len(data) + 1)
            data = data[:cut] + bytes(rng.randrange(256) for _ in range(rng.randrange(4)))
    return NATSMessage(headers, bytes(data))


def random_message(rng: random.Random) -> NATSMessage:
    headers = {
        "".join(rng.choice(string.printable) for _ in range(rng.randrange(1, 10))): mutate_text(rng, "")
        for _ in range(rng.randrange(6))
    }
    if rng.random() < 0.5:
        headers["ce-specversion"] = "1.0"
    return NATSMessage(headers, bytes(rng.randrange(256) for _ in range(rng.randrange(40))))


def test_fuzzed_messages_decode_or_raise_an_eventmicro_error() -> None:
    rng = random.Random(20261128)
    outcomes = {"event": 0, "error": 0}
    for i in range(6000):
        message = random_message(rng) if i % 4 == 0 else mutate(rng, rng.choice(SEEDS))
        try:
            event = binding.from_nats(message, None)
        except EventMicroError:
            outcomes["error"] += 1
            continue
        outcomes["event"] += 1
        assert event.get_specversion() == "1.0"
        assert event.get_id()
        assert event.get_source()
        assert event.get_type()
        binding.to_binary(event, None)  # whatever decodes also encodes again
    # both outcomes are exercised, so the fuzz explores more than one path
    assert outcomes["event"] > 100
    assert outcomes["error"] > 100


@given(st.dictionaries(st.text(max_size=12), st.text(max_size=30), max_size=8), st.binary(max_size=60))
@settings(max_examples=500)
def test_arbitrary_headers_and_bodies_never_escape_the_error_tree(
    headers: dict[str, str], data: bytes
) -> None:
    with contextlib.suppress(EventMicroError):  # any other exception fails the test
        binding.from_nats(NATSMessage(headers, data), None)
