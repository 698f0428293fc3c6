"""One strict JSON reader for everything that arrives from outside (HTTP bodies, event data).

``json.loads`` accepts what RFC 8259 does not: ``NaN``, ``Infinity`` and ``-Infinity``,
numbers that overflow a double into ``inf`` (``1e400``), duplicate member names (the last
one silently wins), lone UTF-16 surrogates (``"\\ud800"``, unencodable as UTF-8), and it
recurses as deep as the input nests. `loads` refuses each of them with a `JSONError` whose
message speaks JSON, not Python, so it may be sent to the caller as it is::

    >>> loads(b'{"a": 1}')
    {'a': 1}
    >>> loads('{"a": NaN}')
    Traceback (most recent call last):
    ...
    eventmicro.wire.strictjson.JSONError: NaN is not a JSON number
"""

from __future__ import annotations

import json
import re
import sys
from typing import Any, Final, NoReturn

__all__ = ["MAX_DIGITS", "JSONError", "loads"]

MAX_DIGITS: Final = 4300  # digits of an integer (Python's own int/str conversion limit)
_SURROGATE_ESCAPE: Final = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
_SHOWN: Final = 60  # characters of a member name quoted in a message
_INF: Final = float("inf")


class JSONError(ValueError):
    """The text is not strict JSON; ``str(error)`` is a sentence safe to show a remote caller."""


def loads(data: bytes | str, *, max_depth: int = 100) -> Any:
    """The value of the JSON text ``data`` (bytes must be UTF-8).

    Raises `JSONError` for invalid JSON, a text that is not UTF-8 or starts with a byte order
    mark, ``NaN``/``Infinity``/``-Infinity``, a number too large for a double or an integer of
    more than `MAX_DIGITS` digits, a member name given twice in one object, a lone surrogate,
    or arrays and objects nested deeper than ``max_depth``.
    """
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise JSONError("the JSON text is not UTF-8") from None
    else:
        text = data
    if text.startswith("\ufeff"):
        raise JSONError("the JSON text starts with a byte order mark")
    try:
        value = _DECODER.decode(text)
    except json.JSONDecodeError as exc:
        what = exc.msg.removesuffix(" at")  # "Unterminated string starting at" + the position
        raise JSONError(f"{what[:1].lower()}{what[1:]} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:  # nested deeper than the parser goes: deeper than any max_depth it can check
        _too_deep(max_depth)
    except JSONError:
        raise
    except ValueError:  # Python's own limit on the digits of an int (sys.get_int_max_str_digits)
        raise JSONError(f"an integer has more than {MAX_DIGITS} digits") from None
    unicode = _SURROGATE_ESCAPE.search(text) is not None
    # the walk is needed only when the text could break a rule the decoder does not check
    if unicode or text.count("[") + text.count("{") > max_depth:
        _check(value, max_depth, unicode=unicode)
    return value


def _constant(name: str) -> NoReturn:
    raise JSONError(f"{name} is not a JSON number")


def _float(text: str) -> float:
    number = float(text)
    if number in (_INF, -_INF):
        raise JSONError("a number is too large for a double")
    return number


def _int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_DIGITS:
        raise JSONError(f"an integer has more than {MAX_DIGITS} digits")
    return int(text)


def _members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    members = dict(pairs)
    if len(members) != len(pairs):
        seen: set[str] = set()
        for name, _ in pairs:
            if name in seen:
                raise JSONError(f"the member name {_quote(name)} appears twice in one object")
            seen.add(name)
    return members


def _check(value: Any, max_depth: int, *, unicode: bool) -> None:
    """Raise when ``value`` nests deeper than ``max_depth`` or (``unicode``) holds a lone
    surrogate; iterative, so a deep value cannot exhaust the stack."""
    pending: list[tuple[Any, int]] = [(value, 0)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, dict):
            if depth >= max_depth:
                _too_deep(max_depth)
            for name, child in item.items():
                if unicode:
                    _check_string(name)
                pending.append((child, depth + 1))
        elif isinstance(item, list):
            if depth >= max_depth:
                _too_deep(max_depth)
            pending.extend((child, depth + 1) for child in item)
        elif unicode and isinstance(item, str):
            _check_string(item)


def _check_string(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise JSONError("a string holds a lone surrogate (\\ud800-\\udfff unpaired)") from None


def _too_deep(max_depth: int) -> NoReturn:
    raise JSONError(f"arrays and objects are nested deeper than {max_depth} levels")


def _quote(name: str) -> str:
    """A member name for a message: JSON-quoted (control characters escaped), cut when long."""
    shown = json.dumps(name[:_SHOWN], ensure_ascii=True)
    return f"{shown}..." if len(name) > _SHOWN else shown


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else f"{text[:limit]}..."


# One decoder, built once (json.loads with hooks builds one per call). Integers are checked by
# Python's own digit limit when it is on and at most MAX_DIGITS; otherwise by a hook.
_INT_LIMIT = sys.get_int_max_str_digits()
_DECODER: Final = json.JSONDecoder(
    parse_constant=_constant,
    parse_float=_float,
    object_pairs_hook=_members,
    parse_int=None if 0 < _INT_LIMIT <= MAX_DIGITS else _int,
)
