"""Header values of binary mode: percent-encoding exactly as §3.1.3.2 asks, strict decoding, caches."""

from __future__ import annotations

import base64
import re
from datetime import datetime
from typing import Final
from urllib.parse import quote, unquote_to_bytes

from eventmicro._errors import (
    HeaderDecodeError,
    InvalidAttribute,
)
from eventmicro.wire.attributes import (
    _CACHE_LIMIT,
    _MAX_CACHED_TEXT,
    check_string,
)
from eventmicro.wire.clock import format_time

__all__ = ["CE_PREFIX", "decode_header_value", "encode_header_value"]

CE_PREFIX: Final = "ce-"  # binary mode: attribute <name> travels in header ce-<name>

# §3.1.3.2: printable ASCII except space, '"' and '%' is sent as is; everything else is %XY.
_SAFE_CHARS: Final = "".join(c for c in map(chr, range(0x21, 0x7F)) if c not in '"%')
_NEEDS_ENCODING: Final = re.compile(r"[^\x21\x23\x24\x26-\x7e]")
_BAD_ESCAPE: Final = re.compile(r"%(?![0-9A-Fa-f]{2})")
_QUOTED_PAIR: Final = re.compile(r"\\(.)")
_encoded: dict[str, str] = {}
_decoded: dict[str, str] = {}
_UNCACHED: Final = frozenset({"id", "time"})


# --- header values ----------------------------------------------------------------------


def encode_header_value(name: str, value: object) -> str:
    """Canonical string of a CloudEvents attribute value, percent-encoded for a NATS header.

    Only space, ``"``, ``%`` and characters outside printable ASCII are encoded (upper-case
    hex of their UTF-8 bytes); ``/`` and ``:`` are never encoded.

    >>> encode_header_value("subject", "Euro € 😀")
    'Euro%20%E2%82%AC%20%F0%9F%98%80'
    >>> encode_header_value("source", "urn:uuid:1")
    'urn:uuid:1'
    """
    if isinstance(value, str):
        text = value
    elif isinstance(value, bool):
        return "true" if value else "false"
    elif isinstance(value, int):
        return str(value)
    elif isinstance(value, datetime):
        return format_time(value)
    elif isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    else:
        raise InvalidAttribute(name, f"type {type(value).__name__} has no CloudEvents string form")
    if not text:
        raise InvalidAttribute(name, "must not be empty")
    if _NEEDS_ENCODING.search(text) is None:
        return text
    check_string(name, text)
    return quote(text, safe=_SAFE_CHARS)


def decode_header_value(header: str, value: str) -> str:
    """Undo RFC 7230 quoting, then percent-decode exactly once, strictly.

    Lower-case hex and needlessly encoded characters are accepted; a ``%`` without two hex
    digits, or bytes that are not valid UTF-8 (such as the overlong ``%C0%A0``), raise
    `HeaderDecodeError`; a decoded control character raises `InvalidAttribute`.
    """
    if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        value = _QUOTED_PAIR.sub(r"\1", value[1:-1])
    if "%" in value:
        if _BAD_ESCAPE.search(value) is not None:
            raise HeaderDecodeError(header, "'%' must be followed by two hex digits")
        try:
            value = unquote_to_bytes(value).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise HeaderDecodeError(header, f"not valid UTF-8 ({exc.reason})") from exc
        except UnicodeEncodeError as exc:
            raise HeaderDecodeError(header, "contains an unencodable character") from exc
    elif _NEEDS_ENCODING.search(value) is None:
        return value
    check_string(header[len(CE_PREFIX) :] if header.startswith(CE_PREFIX) else header, value)
    return value


def _decode_value(header: str, name: str, raw: str) -> str:
    value = _decoded.get(raw)
    if value is None:
        if raw.isprintable() and "%" not in raw and raw[:1] != '"':
            value = raw
        else:
            value = decode_header_value(header, raw)
        if name not in _UNCACHED and len(raw) <= _MAX_CACHED_TEXT:
            if len(_decoded) >= _CACHE_LIMIT:
                _decoded.clear()
            _decoded[raw] = value
    return value
