"""Untrusted text made safe for a terminal: what the CLI prints from NATS never drives it.

Service names, descriptions, metadata, event attributes and data, error details and dead
letters come from whoever can publish. Printed raw, ``\\x1b[2J`` clears the screen, an OSC
sequence retitles the window or plants a link, ``\\x07`` rings, U+202E reverses what follows.
Every CLI printer of such text passes it through `printable` (or `json_text`), which shows
each control character as a visible escape::

    C0 controls, DEL, C1 controls (U+0080-U+009F)    ->  \\x1b  \\x07  \\x9b  (\\n \\r \\t)
    bidirectional controls, line/paragraph separators ->  \\u202e  \\u2066  \\u2028
    lone surrogates (undecodable bytes)               ->  \\udcff

Newlines stay where they are structure (``keep_newlines=True``: the lines of a text the
caller indents); everywhere else (a table cell, a header line) they are escaped too.
"""

from __future__ import annotations

import json
import re
from typing import Any, Final

__all__ = ["json_text", "printable"]

_CONTROLS: Final = "\x00-\x09\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069\ud800-\udfff"
_UNSAFE: Final = re.compile(f"[\n{_CONTROLS}]")
_UNSAFE_BUT_NEWLINE: Final = re.compile(f"[{_CONTROLS}]")
_SHORT: Final = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    code = ord(char)
    return _SHORT.get(char) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


def _json_escape(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


def printable(text: object, *, keep_newlines: bool = False) -> str:
    """``str(text)`` with every control character shown as an escape (see the module).

    >>> printable("a\\x1b[2Jb\\u202ec")
    'a\\\\x1b[2Jb\\\\u202ec'
    >>> printable("one\\ntwo", keep_newlines=True)
    'one\\ntwo'
    """
    return (_UNSAFE_BUT_NEWLINE if keep_newlines else _UNSAFE).sub(_escape, str(text))


def json_text(document: Any, *, indent: int | None = None) -> str:
    """``document`` as JSON that is safe to print and still valid JSON with the same value.

    ``json.dumps`` escapes C0 controls itself; DEL, C1, bidirectional controls and lone
    surrogates are written as ``\\uXXXX`` escapes instead of raw characters. Other non-ASCII
    text (names, accents) stays readable.

    >>> json_text({"name": "x\\u202e\\x9b"})
    '{"name": "x\\\\u202e\\\\u009b"}'
    """
    text = json.dumps(document, indent=indent, ensure_ascii=False, default=str)
    return _UNSAFE_BUT_NEWLINE.sub(_json_escape, text)  # raw ones occur only inside strings
