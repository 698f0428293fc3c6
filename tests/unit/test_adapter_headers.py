"""eventmicro's faster header handling gives exactly nats-py's results."""

from __future__ import annotations

import asyncio

from hypothesis import given, settings
from hypothesis import strategies as st
from nats.aio.client import Client as NatsClient

from eventmicro._adapter import _Client

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
