"""eventmicro's header handling over nats-py: nats-py's results, and nothing a client sends raises."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nats.aio.client import Client as NatsClient
from nats.aio.subscription import Subscription as NatsSubscription
from nats.protocol.parser import Parser

from eventmicro.transport.natspy import Client as _Client
from eventmicro.transport.natspy import ConnectionStats, MalformedHeaders, fits, parse_header_block
from eventmicro.wire.attributes import CORE_ATTRIBUTES
from eventmicro.wire.binary import to_binary
from eventmicro.wire.event import Event
from eventmicro.wire.message import HeaderBlock

header_text = st.text(st.characters(codec="utf-8"), max_size=12)
lines = st.lists(
    st.one_of(
        st.tuples(header_text, header_text).map(lambda kv: f"{kv[0]}:{kv[1]}".encode()),
        st.binary(max_size=20),
    ),
    max_size=8,
)


@given(lines)
@settings(max_examples=400)
def test_parsing_matches_nats_py(block: list[bytes]) -> None:
    raw = b"\r\n".join(block) + b"\r\n"
    assert _Client._parse_header_lines(raw) == NatsClient._parse_header_lines(raw)


ascii_text = st.text(alphabet="ab-Z: \t\x0b\x0c\x1c\x1f%\r\n", max_size=12)
ascii_line = st.tuples(ascii_text, ascii_text).map(lambda kv: f"{kv[0]}:{kv[1]}".encode())
ascii_lines = st.lists(ascii_line, max_size=8)


@given(ascii_lines)
@settings(max_examples=400)
def test_the_ascii_fast_path_matches_nats_py(block: list[bytes]) -> None:
    """ASCII blocks (every eventmicro message) take a faster path; whitespace rules stay nats-py's."""
    raw = b"\r\n".join(block) + b"\r\n"
    assert _Client._parse_header_lines(raw) == NatsClient._parse_header_lines(raw)


class Recorder:
    """Captures what a client would write, without a server."""

    def __init__(self, client: NatsClient) -> None:
        self.sent: list[bytes] = []
        client._send_command = self.capture  # type: ignore[method-assign]
        client._flush_queue = None

    async def capture(self, cmd: bytes, priority: bool = False) -> None:
        self.sent.append(bytes(cmd))


names = st.text(alphabet="abcXYZ-_.!#$%&'*+^`|~09 ", min_size=0, max_size=10)
values = st.text(st.characters(codec="utf-8"), max_size=15)


@given(st.dictionaries(names, values, max_size=6), st.binary(max_size=20))
@settings(max_examples=300)
def test_publishing_writes_the_same_bytes_as_nats_py(headers: dict[str, str], payload: bytes) -> None:
    ours, theirs = _Client(), NatsClient()
    ours_sent, theirs_sent = Recorder(ours), Recorder(theirs)
    outcomes = []
    for client in (ours, theirs):
        try:
            asyncio.run(client._send_publish("subj", "", payload, len(payload), headers))
            outcomes.append("ok")
        except Exception as exc:  # both must refuse the same invalid names
            outcomes.append(type(exc).__name__)
    assert outcomes[0] == outcomes[1]
    assert ours_sent.sent == theirs_sent.sent


attribute_text = st.text(
    st.characters(codec="utf-8", exclude_categories=("Cc", "Cs")), min_size=1, max_size=12
)
extension_values = st.one_of(attribute_text, st.integers(-(2**31), 2**31 - 1), st.booleans())
extensions = st.dictionaries(
    st.text(alphabet="abcxyz019", min_size=1, max_size=8), extension_values, max_size=4
)


@given(attribute_text, attribute_text, extensions, st.binary(max_size=20))
@settings(max_examples=300)
def test_an_encoded_header_block_is_the_bytes_nats_py_writes(
    type_: str, source: str, extras: dict[str, object], payload: bytes
) -> None:
    """Event.of's events carry their header block encoded once (HeaderBlock); the transport
    sends it as it is. It must be byte for byte what nats-py writes for the same headers."""
    extras = {name: value for name, value in extras.items() if name not in CORE_ATTRIBUTES}
    event = Event.of(payload, source=source, type=type_, extensions=extras)  # type: ignore[arg-type]
    wire = to_binary(event, None)
    assert isinstance(wire.headers, HeaderBlock)
    ours, theirs = _Client(), NatsClient()
    ours_sent, theirs_sent = Recorder(ours), Recorder(theirs)
    asyncio.run(ours._send_publish("subj", "", wire.data, len(wire.data), wire.headers))
    asyncio.run(theirs._send_publish("subj", "", wire.data, len(wire.data), dict(wire.headers)))
    assert ours_sent.sent == theirs_sent.sent
    assert fits(wire.headers, len(wire.data), 0) == fits(dict(wire.headers), len(wire.data), 0)


def test_changed_encoded_headers_are_sent_as_changed() -> None:
    """A user may add a header to what to_binary returned: the encoded block is dropped then,
    and what goes out is the changed headers, as nats-py writes them."""
    wire = to_binary(Event.of(b"x", source="/s", type="t.x"), None)
    headers = wire.headers
    assert isinstance(headers, HeaderBlock)
    assert block_of(headers) is not None
    headers["Nats-Msg-Id"] = "dedupe-1"
    assert block_of(headers) is None
    ours, theirs = _Client(), NatsClient()
    ours_sent, theirs_sent = Recorder(ours), Recorder(theirs)
    asyncio.run(ours._send_publish("subj", "", wire.data, len(wire.data), headers))
    asyncio.run(theirs._send_publish("subj", "", wire.data, len(wire.data), dict(headers)))
    assert ours_sent.sent == theirs_sent.sent
    assert b"Nats-Msg-Id: dedupe-1\r\n" in ours_sent.sent[0]
    assert fits(headers, len(wire.data), 0) == fits(dict(headers), len(wire.data), 0)
    changes: list[Callable[[HeaderBlock], object]] = [
        lambda h: h.update({"a": "b"}),
        lambda h: h.pop("ce-id"),
        lambda h: h.setdefault("z", "y"),
        lambda h: h.__delitem__("ce-type"),
        lambda h: h.popitem(),
        lambda h: h.clear(),
    ]
    for change in changes:
        fresh = to_binary(Event.of(b"x", source="/s", type="t.x"), None).headers
        assert isinstance(fresh, HeaderBlock)
        change(fresh)
        assert block_of(fresh) is None


def block_of(headers: HeaderBlock) -> bytes | None:
    return headers.block  # read through a call: mypy would keep an earlier narrowing


# --- hostile header blocks: nothing a client sends may raise out of the reader -----------------

blocks = st.one_of(
    st.binary(max_size=64),
    st.builds(lambda tail: b"NATS/1.0" + tail, st.binary(max_size=48)),
    st.builds(
        lambda status, rest: b"NATS/1.0 " + status + b"\r\n" + rest,
        st.binary(max_size=12),
        st.binary(max_size=40),
    ),
)


@given(blocks)
@settings(max_examples=2000)
def test_header_blocks_parse_or_raise_only_malformed_headers(block: bytes) -> None:
    try:
        headers = parse_header_block(block)
    except MalformedHeaders:
        return
    assert headers is None or all(isinstance(k, str) and isinstance(v, str) for k, v in headers.items())


well_formed = st.builds(lambda block: b"NATS/1.0\r\n" + b"\r\n".join(block) + b"\r\n\r\n", lines)


@given(well_formed)
@settings(max_examples=500)
def test_well_formed_blocks_read_as_nats_py_reads_them(block: bytes) -> None:
    theirs = asyncio.run(NatsClient()._process_headers(block))
    assert (parse_header_block(block) or None) == (theirs or None)  # None and {}: no headers


@pytest.mark.parametrize(
    "block",
    [
        b"NATS/1.0 503\r\n\r\n",
        b"NATS/1.0 404 No Messages\r\n\r\n",
        b"NATS/1.0 100 Idle Heartbeat\r\nNats-Last-Consumer: 1016\r\nNats-Last-Stream: 1024\r\n\r\n",
        b"NATS/1.0 408 Request Timeout\r\nNats-Pending-Messages: 1\r\nNats-Pending-Bytes: 0\r\n\r\n",
    ],
)
def test_status_messages_read_as_nats_py_reads_them(block: bytes) -> None:
    """The server's status messages (no responders, JetStream pull and heartbeat statuses)."""
    theirs = asyncio.run(NatsClient()._process_headers(block))
    assert parse_header_block(block) == theirs


@given(st.binary(max_size=40), st.binary(max_size=24), st.binary(max_size=8))
@settings(max_examples=1000)
def test_no_frame_raises_out_of_the_reader(header: bytes, subject: bytes, token: bytes) -> None:
    """Whole HMSG frames with arbitrary headers and subjects go through nats-py's parser into
    eventmicro's message handling, for a subscription and for a reply: nothing raises."""

    async def feed() -> int:
        client = _Client()
        client.counters = ConnectionStats()
        delivered: list[object] = []

        async def cb(msg: object) -> None:
            delivered.append(msg)

        client._subs[1] = NatsSubscription(client, 1, "s", cb=cb)
        client._resp_sid = 2
        client._resp_sub_prefix = bytearray(b"_INBOX.p.")
        client._resp_map["t"] = asyncio.get_running_loop().create_future()
        parser = Parser(client)
        safe_subject = b"".join(subject.split()) or b"s"  # the server frames subjects without whitespace
        for sid, subj in ((1, safe_subject), (2, b"_INBOX.p." + (b"".join(token.split()) or b"t"))):
            frame = b"HMSG %s %d %d %d\r\n" % (subj, sid, len(header), len(header) + 3) + header + b"abc\r\n"
            await parser.parse(frame)  # raises only if something escaped the message handling
        return client.counters.malformed

    assert asyncio.run(feed()) >= 0
