"""eventmicro.wire.strictjson.loads: strict JSON, refusals that speak JSON, never a Python exception type."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eventmicro.wire.strictjson import JSONError, loads

PYTHON_ISMS = ("NoneType", "builtins", "__main__", "recursion", "Traceback", "sys.", "utf-8-sig")

REFUSED = {
    "NaN": b'{"total": NaN}',
    "Infinity": b"[Infinity]",
    "-Infinity": b"-Infinity",
    "overflow": b'{"total": 1e400}',
    "negative overflow": b"[-1.5e309]",
    "duplicate": b'{"a": 1, "b": 2, "a": 3}',
    "nested duplicate": b'[{"x": {"k": 1, "k": 1}}]',
    "lone surrogate": b'"\\ud800"',
    "lone surrogate name": b'{"\\udfff": 1}',
    "too deep": b"[" * 101 + b"]" * 101,
    "absurdly deep": b'{"a":' * 100_000,
    "not utf-8": b'{"a": "\xff"}',
    "byte order mark": b'\xef\xbb\xbf{"a": 1}',
    "huge integer": b"1" * 5000,
    "empty": b"",
    "truncated": b'{"a": [1, 2',
    "trailing data": b'{"a": 1} {"b": 2}',
    "single quotes": b"{'a': 1}",
}


@pytest.mark.parametrize("text", list(REFUSED.values()), ids=list(REFUSED))
def test_refused_with_a_wire_safe_message(text: bytes) -> None:
    with pytest.raises(JSONError) as caught:
        loads(text)
    message = str(caught.value)
    assert message
    assert not any(word in message for word in PYTHON_ISMS), message
    assert isinstance(caught.value, ValueError)


def test_messages_name_the_problem() -> None:
    def message(text: bytes | str) -> str:
        with pytest.raises(JSONError) as caught:
            loads(text)
        return str(caught.value)

    assert message(b"[NaN]") == "NaN is not a JSON number"
    assert message(b"1e400") == "a number is too large for a double"
    assert message(b'{"a": 1, "a": 2}') == 'the member name "a" appears twice in one object'
    assert message(b"[" * 101 + b"]" * 101) == "arrays and objects are nested deeper than 100 levels"
    assert "line 1 column 6" in message(b'{"a" 1}')
    long_name = "k\x1b[31m" * 100  # a terminal escape in a member name is quoted, and cut
    shown = message(json.dumps({long_name: 1})[:-1] + f", {json.dumps(long_name)}: 2}}")
    assert "\x1b" not in shown
    assert len(shown) < 200


def test_depth_limit_is_the_callers() -> None:
    assert loads(b"[" * 100 + b"]" * 100, max_depth=100) is not None
    with pytest.raises(JSONError, match="deeper than 10 levels"):
        loads(b"[" * 11 + b"]" * 11, max_depth=10)
    assert loads(b'{"a": {"b": 1}}', max_depth=2) == {"a": {"b": 1}}
    with pytest.raises(JSONError):
        loads(b'{"a": {"b": {}}}', max_depth=2)


def test_what_json_allows_is_read_as_json_does() -> None:
    assert loads(b'{"a": [1, -0, 2.5e-400, true, null, "\\ud83d\\ude00"]}') == {
        "a": [1, 0, 0.0, True, None, "\U0001f600"]
    }
    assert loads(" 12 ") == 12


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=30,
)


@given(json_values)
@settings(max_examples=300)
def test_round_trips_what_json_dumps_writes(value: Any) -> None:
    assert loads(json.dumps(value).encode()) == value


@given(st.binary(max_size=64))
@settings(max_examples=500)
def test_arbitrary_bytes_give_a_value_or_json_error(data: bytes) -> None:
    with contextlib.suppress(JSONError):
        loads(data)
