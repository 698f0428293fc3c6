"""What the gateway answers when something is wrong, and the request checks that find it.

Every error is JSON, one shape for all of them::

    {"error": {"code": 404, "id": "eventmicro.gateway.UnknownEndpoint", "detail": "..."}}

``code`` is the HTTP status; ``id`` names the kind of error (a service's own error id when a
service answered the error); ``detail`` is a sentence for a person. Internals (tracebacks,
exception reprs) are logged, never answered.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any, Final

from google.protobuf.message import DecodeError, Message
from starlette.requests import Request
from starlette.responses import JSONResponse

from eventmicro.transport.connection import Connection
from eventmicro.wire import strictjson as strict_json
from eventmicro.wire.media import PROTOBUF_MEDIA

__all__ = [
    "MAX_DEPTH",
    "PRINTABLE",
    "Problem",
    "call_timeout",
    "load_json",
    "media_type",
    "problem_response",
    "protobuf_body",
    "read_body",
    "require_nats",
    "trace_context",
    "unavailable",
    "wants_protobuf",
]

log = logging.getLogger("eventmicro.gateway")

MAX_DEPTH: Final = 100  # nesting of a JSON body (protobuf's JSON parser stops at the same depth)
PRINTABLE: Final = re.compile(r"[\x20-\x7e]{1,512}")  # a header value the gateway passes on
_TRACEPARENT: Final = re.compile(r"[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}")
_STATUS_TEXT: Final = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    408: "Request Timeout",
    409: "Conflict",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


class Problem(Exception):
    """An HTTP error answer: raise it from a route, the app turns it into the JSON error."""

    def __init__(
        self, status: int, kind: str, detail: str, *, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.id = kind if "." in kind else f"eventmicro.gateway.{kind}"
        self.detail = detail
        self.headers = dict(headers or {})


def problem_response(problem: Problem) -> JSONResponse:
    """The JSON error answer of ``problem``."""
    body = {
        "error": {
            "code": problem.status,
            "status": _STATUS_TEXT.get(problem.status, ""),
            "id": problem.id,
            "detail": problem.detail,
        }
    }
    return JSONResponse(body, status_code=problem.status, headers=problem.headers)


def unavailable() -> Problem:
    """503: the gateway's NATS connection is closed, or down and reconnecting."""
    return Problem(503, "Unavailable", "the gateway is not connected to NATS")


def require_nats(connection: Connection) -> None:
    """Raise `unavailable` unless ``connection`` is connected now. A request made while it
    reconnects would wait out its timeout and look like an unknown service (404) or a slow
    one (504); a NATS outage is neither."""
    if not connection.is_connected:
        raise unavailable()


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, at most ``limit`` bytes (413 beyond, checked while reading)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise Problem(400, "BadRequest", "Content-Length is not a number") from None
        if size > limit:
            raise _too_large(limit)
    chunks = []
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > limit:  # a chunked body, or a Content-Length that lied
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def load_json(body: bytes) -> Any:
    """The parsed JSON of a request body, read strictly (`eventmicro.wire.strictjson`): 400 when it is not
    UTF-8 JSON, holds NaN, Infinity, a number too large for a double, a member name twice, a lone
    surrogate, or nests arrays and objects deeper than `MAX_DEPTH` (the encoders that send it on
    recurse, and would fail on it)."""
    try:
        return strict_json.loads(body, max_depth=MAX_DEPTH)
    except strict_json.JSONError as exc:
        raise Problem(400, "BadRequest", f"the body is not valid JSON: {exc}") from None


def protobuf_body(cls: type[Message], body: bytes) -> Message:
    """A request body parsed as a protobuf ``cls``: 400 when it is not one."""
    try:
        return cls.FromString(body)
    except (DecodeError, RuntimeError, ValueError):  # RuntimeError: upb on some broken input
        raise Problem(400, "BadRequest", f"the body is not a protobuf {cls.DESCRIPTOR.full_name}") from None


def _too_large(limit: int) -> Problem:
    return Problem(
        413, "BodyTooLarge", f"the request body is larger than the gateway's limit of {limit} bytes"
    )


def unsupported_media(media: str | None, wanted: str) -> Problem:
    """415 naming the media type received (``curl -d`` sends a form) and the ones ``wanted``."""
    got = (
        "no media type"
        if media is None
        else "".join(c for c in media[:100] if c.isprintable() and c.isascii())
    )
    hint = " (curl -d sends a form: add -H 'content-type: application/json')" if media == _FORM else ""
    return Problem(415, "UnsupportedMediaType", f"send {wanted}, not {got}{hint}")


_FORM: Final = "application/x-www-form-urlencoded"


def media_type(request: Request) -> str | None:
    """The request's media type, lower case, without parameters (``None`` when not given)."""
    header = request.headers.get("content-type")
    if not header:
        return None
    return header.split(";", 1)[0].strip().lower() or None


def call_timeout(request: Request, default: float, cap: float) -> float:
    """Seconds a call may take: ``X-Timeout`` header or ``?timeout=`` (seconds), capped at ``cap``."""
    raw = request.headers.get("x-timeout") or request.query_params.get("timeout")
    if raw is None:
        return default
    try:
        seconds = float(raw)
    except ValueError:
        seconds = float("nan")
    if not seconds > 0:  # NaN, zero, negative
        raise Problem(400, "BadRequest", f"timeout must be a positive number of seconds, not {raw[:40]!r}")
    return min(seconds, cap)


def trace_context(request: Request) -> tuple[str | None, str | None]:
    """The caller's W3C ``traceparent`` and ``tracestate`` headers, each ``None`` when absent or
    invalid (an invalid traceparent is ignored and a new trace starts, as W3C Trace Context says)."""
    traceparent = request.headers.get("traceparent")
    if traceparent is None or not _TRACEPARENT.fullmatch(traceparent):
        return None, None
    tracestate = request.headers.get("tracestate")
    return traceparent, tracestate if tracestate and PRINTABLE.fullmatch(tracestate) else None


def wants_protobuf(request: Request) -> bool:
    """Whether the caller asked for a protobuf reply (``Accept``), JSON being the default.

    The first media type listed with the highest ``q`` wins; 406 when none of JSON, protobuf
    or a wildcard is acceptable.
    """
    header = request.headers.get("accept")
    if not header:
        return False
    best: tuple[float, bool] | None = None
    for item in header.split(","):
        media, *params = (part.strip() for part in item.split(";"))
        media = media.lower()
        quality = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if quality <= 0:
            continue
        if media in PROTOBUF_MEDIA:
            choice = True
        elif media in ("application/json", "application/*", "*/*") or media.endswith("+json"):
            choice = False
        else:
            continue
        if best is None or quality > best[0]:
            best = (quality, choice)
    if best is None:
        raise Problem(406, "NotAcceptable", "the gateway answers application/json or application/protobuf")
    return best[1]
