"""Errors that services answer with, and how they cross the wire (NATS service error headers).

::

    EventMicroError
    └── ServiceError                     a service's answer: code, status, detail, id
        ├── BadRequest          400      the request does not fit (also: undecodable payloads)
        │   └── InvalidKey      400      a store key ADR-8 does not allow (also a ValueError)
        ├── NotFound            404      unknown endpoint or entity
        ├── Conflict            409
        │   └── RevisionConflict 409     a store write expected another revision of its key
        ├── InternalError       500      anything unexpected; the detail stays generic
        ├── ServiceUnavailable  503
        └── DeadlineExceeded    504      the caller's deadline passed before the work was done

On the wire (ADR-32 plus eventmicro's JSON body)::

    Nats-Service-Error: <detail>
    Nats-Service-Error-Code: <code>
    {"id": "<error id>", "code": <code>, "status": "<status>", "detail": "<detail>"}

A 500 the service did not mean (an `InternalError` answered by the error boundary) also carries
an error id, in an ``Eventmicro-Error-Id`` header and the body's ``error_id``: random, so that it
tells nothing of the service, and written on the service's log line for the failure, so that an
operator greps the id a caller reports. Callers read it as `ServiceError.incident`.

Subclass `ServiceError` for domain errors and `register_error` them; callers get the same class
back. Only a `ServiceError`'s own detail crosses the wire — never a traceback or ``repr(exc)``.
`InvalidKey` and `RevisionConflict` keep their parents' ids: a caller gets a `BadRequest` or a
`Conflict` whose detail names the key (and the revisions).
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Mapping
from typing import Any, ClassVar, Final, TypeVar

from eventmicro._errors import EventMicroError
from eventmicro.wire import strictjson as strict_json

__all__ = [
    "ERROR_CODE_HEADER",
    "ERROR_HEADER",
    "ERROR_ID_HEADER",
    "BadRequest",
    "Conflict",
    "DeadlineExceeded",
    "InternalError",
    "InvalidKey",
    "NotFound",
    "Overloaded",
    "RevisionConflict",
    "ServiceError",
    "ServiceUnavailable",
    "error_from_reply",
    "error_reply",
    "new_error_id",
    "register_error",
]

ERROR_HEADER: Final = "Nats-Service-Error"
ERROR_CODE_HEADER: Final = "Nats-Service-Error-Code"
GENERIC_DETAIL: Final = "internal error"
ERROR_ID_HEADER: Final = "Eventmicro-Error-Id"
_ERROR_ID: Final = re.compile(r"[0-9A-Za-z_-]{1,40}")  # what is read back from a reply

E = TypeVar("E", bound=type["ServiceError"])


class ServiceError(EventMicroError):
    """An error answered by a service. Raise it (or a subclass) from a handler.

    ``id`` names the kind of error across languages (default: the class's registered id);
    ``incident`` is the error id of one unexpected failure (see the module's docstring), or None.
    """

    code: ClassVar[int] = 500
    status: ClassVar[str] = "Internal Server Error"
    error_id: ClassVar[str] = "eventmicro.ServiceError"

    def __init__(self, detail: str = "", *, code: int | None = None, id: str | None = None) -> None:  # noqa: A002
        super().__init__(detail or self.status)
        self.detail = detail or self.status
        self.instance_code = code if code is not None else type(self).code
        self.id = id or type(self).error_id
        self.incident: str | None = None

    def __str__(self) -> str:
        said = f"{self.instance_code} {self.detail}"
        return said if self.incident is None else f"{said} (error id {self.incident})"


class BadRequest(ServiceError):
    """The request (or its payload) does not fit the endpoint."""

    code = 400
    status = "Bad Request"
    error_id = "eventmicro.BadRequest"


class NotFound(ServiceError):
    """No such endpoint or entity."""

    code = 404
    status = "Not Found"
    error_id = "eventmicro.NotFound"


class Conflict(ServiceError):
    """The request conflicts with the current state."""

    code = 409
    status = "Conflict"
    error_id = "eventmicro.Conflict"


class InvalidKey(BadRequest, ValueError):
    """A key-value store key that ADR-8 does not allow; raised before anything is sent.

    Keys use ``A-Z a-z 0-9 - / _ = .``, with no empty token (no leading, trailing or double dot).
    """

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"{key!r} is not a valid key: {reason}")
        self.key = key
        self.reason = reason


class RevisionConflict(Conflict):
    """A store write expected another revision of its key (create-only or compare-and-set).

    ``expected`` is 0 for a create-only write; ``current`` is the key's revision when known
    (0: the key does not exist). Letting it escape a handler answers 409 Conflict.
    """

    def __init__(self, bucket: str, key: str, expected: int, current: int | None) -> None:
        if expected == 0:
            wanted = "expected it not to exist (create-only)"
            found = "but it exists" if current is None else f"but it exists at revision {current}"
        else:
            wanted = f"expected revision {expected}"
            if current is None:
                found = "but it has changed"
            elif current == 0:
                found = "but the key does not exist"
            else:
                found = f"but its current revision is {current}"
        super().__init__(f"revision conflict on key '{key}' in bucket '{bucket}': {wanted}, {found}")
        self.bucket = bucket
        self.key = key
        self.expected = expected
        self.current = current


class InternalError(ServiceError):
    """Something unexpected failed in the handler; details stay in the service's log."""

    code = 500
    status = "Internal Server Error"
    error_id = "eventmicro.InternalError"


class ServiceUnavailable(ServiceError):
    """The service cannot take the request now."""

    code = 503
    status = "Service Unavailable"
    error_id = "eventmicro.ServiceUnavailable"


class Overloaded(ServiceUnavailable):
    """The endpoint's backlog is full: answered at once, the handler did not run (safe to retry)."""

    error_id = "eventmicro.Overloaded"


class DeadlineExceeded(ServiceError, TimeoutError):
    """The caller's deadline passed before the work was done."""

    code = 504
    status = "Gateway Timeout"
    error_id = "eventmicro.DeadlineExceeded"


_by_id: dict[str, type[ServiceError]] = {}
_by_code: dict[int, type[ServiceError]] = {}
_STATUS: Final = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
                  409: "Conflict", 429: "Too Many Requests", 500: "Internal Server Error",
                  501: "Not Implemented", 503: "Service Unavailable", 504: "Gateway Timeout"}  # fmt: skip


def register_error(cls: E) -> E:
    """Class decorator: callers rebuild this error type from replies carrying its ``error_id``."""
    existing = _by_id.get(cls.error_id)
    if existing is not None and existing is not cls:
        raise ValueError(f"error id {cls.error_id!r} is already registered to {existing.__name__}")
    _by_id[cls.error_id] = cls
    return cls


for _cls in (
    ServiceError,
    BadRequest,
    NotFound,
    Conflict,
    InternalError,
    ServiceUnavailable,
    Overloaded,
    DeadlineExceeded,
):
    register_error(_cls)
    _by_code.setdefault(_cls.code, _cls)


def new_error_id() -> str:
    """A new error id: 12 random hex digits, nothing about the service or the failure."""
    return secrets.token_hex(6)


def error_reply(error: ServiceError) -> tuple[dict[str, str], bytes]:
    """Headers and JSON body of an error reply."""
    code = error.instance_code
    detail = " ".join(error.detail.split())  # one line: it goes into a header too
    body: dict[str, Any] = {"id": error.id, "code": code, "status": _STATUS.get(code, error.status),
                            "detail": detail}  # fmt: skip
    headers = {ERROR_HEADER: detail, ERROR_CODE_HEADER: str(code)}
    if error.incident is not None:
        body["error_id"] = headers[ERROR_ID_HEADER] = error.incident
    return headers, json.dumps(body, ensure_ascii=False).encode("utf-8")


def error_from_reply(headers: Mapping[str, str] | None, body: bytes) -> ServiceError | None:
    """The `ServiceError` an error reply stands for, or ``None`` for a normal reply.

    Foreign services answer with the two headers only; eventmicro services add a JSON body
    whose ``id`` brings back a registered error type.
    """
    if not headers:
        return None
    raw_code = headers.get(ERROR_CODE_HEADER)
    detail = headers.get(ERROR_HEADER)
    if raw_code is None and detail is None:
        return None
    try:
        code = int(str(raw_code).strip())
    except ValueError:
        code = 500
    document: dict[str, Any] = {}
    if body:
        try:
            parsed = strict_json.loads(body)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict):
            document = parsed
    error_id = document.get("id") if isinstance(document.get("id"), str) else None
    detail = str(document.get("detail") or detail or "")
    cls = _by_id.get(error_id or "") or _by_code.get(code) or ServiceError
    try:
        error = cls(detail, code=code, id=error_id)
    except TypeError:  # a domain error with its own constructor: fill the fields directly
        error = cls.__new__(cls)
        ServiceError.__init__(error, detail, code=code, id=error_id)
    incident = headers.get(ERROR_ID_HEADER) or document.get("error_id")
    if isinstance(incident, str) and _ERROR_ID.fullmatch(incident):  # anything else is not ours
        error.incident = incident
    return error
