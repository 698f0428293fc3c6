"""The shapes of a dead letter (pure): the last one always fits, a wrapped one reads back as the
original, and the delay after a dead letter that was not stored is bounded."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from eventmicro.service.deadletters import _letter, _shapes
from eventmicro.service.delivery import RETRY_MAX, Durable
from eventmicro.transport.connection import headers_size
from eventmicro.transport.jetstream import MSG_ID_HEADER, StoredMessage

MSG_ID = "dlq-S-1-c" + "x" * 40
FAILURE = {"dlqservice": "svc", "dlqhandler": "h", "dlqcode": "500", "dlqreason": "RuntimeError"}

# what the connection's parser hands over: names without ':' or whitespace, values stripped
names = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters=":"), min_size=1)
values = st.text(st.characters(exclude_characters="\r\n", exclude_categories=["Cs"]), max_size=300).map(
    str.strip
)
header_maps = st.dictionaries(names, values, max_size=12)


@given(header_maps, st.integers(0, 4096), st.sampled_from([1024, 4096, 65_536]))
def test_the_last_shape_always_fits_max_payload(headers: dict[str, str], body: int, limit: int) -> None:
    *_, (last_headers, last_body) = _shapes(headers, b"b" * body, FAILURE, limit, MSG_ID)
    assert headers_size({**last_headers, MSG_ID_HEADER: MSG_ID}) + len(last_body) <= limit


@given(header_maps, st.binary(max_size=200))
def test_a_wrapped_dead_letter_reads_back_as_the_original(headers: dict[str, str], body: bytes) -> None:
    shapes = list(_shapes(headers, body, FAILURE, 1 << 20, MSG_ID))
    wrapped_headers, wrapped_body = shapes[-3]  # shape 3: failure headers, block + body
    letter = _letter(StoredMessage("DEADLETTERS", 7, "deadletter.svc.h", wrapped_body, wrapped_headers))
    assert letter is not None
    assert (letter.headers, letter.data) == (headers, body)
    assert (letter.service, letter.reason, letter.body_dropped, letter.headers_truncated) == (
        "svc",
        "RuntimeError",
        False,
        False,
    )


def test_a_dead_letter_shadowing_header_is_wrapped_not_merged() -> None:
    """An original ``ce-dlqheaders`` header would make the dead letter read as another shape."""
    first_headers, _ = next(_shapes({"ce-dlqheaders": "99"}, b"x", FAILURE, 1 << 20, MSG_ID))
    assert "ce-dlqheaders" not in first_headers
    assert first_headers["eventmicro-dlqheaders"] == str(len(b"NATS/1.0\r\nce-dlqheaders: 99\r\n\r\n"))


def test_headers_cut_to_fit_keep_whole_lines_and_say_so() -> None:
    headers = {"ce-id": "e-1", "X-Big": "v" * 3000, "ce-type": "t"}
    *_, (cut_headers, cut_body) = _shapes(headers, b"", FAILURE, 2048, MSG_ID)
    letter = _letter(StoredMessage("DEADLETTERS", 1, "deadletter.svc.h", cut_body, cut_headers))
    assert letter is not None
    assert letter.headers == {"ce-id": "e-1", "ce-type": "t"}
    assert letter.headers_truncated
    assert letter.body_dropped


def test_a_malformed_dead_letter_in_the_stream_is_read_without_raising() -> None:
    """Anyone who may publish on ``deadletter.>`` can store anything there."""
    stored = StoredMessage(
        "DEADLETTERS",
        3,
        "deadletter.x.y",
        b"junk",
        {"eventmicro-dlqservice": "x", "eventmicro-dlqreason": "%zz", "eventmicro-dlqheaders": "999"},
        datetime.now(UTC),
    )
    letter = _letter(stored)
    assert letter is not None
    assert (letter.reason, letter.data, dict(letter.headers)) == ("%zz", b"junk", {})


def test_the_delay_after_a_dead_letter_not_stored_doubles_and_is_bounded() -> None:
    policy = Durable(max_deliver=3, backoff=(0.05,))
    assert [policy.dead_letter_retry(n) for n in (3, 4, 5, 6)] == [1.0, 2.0, 4.0, 8.0]
    assert policy.dead_letter_retry(10_000) == RETRY_MAX
    assert Durable(backoff=(1.0, 120.0)).dead_letter_retry(50) == 120.0  # a longer backoff wins
