"""The one error tree of eventmicro: every error the library raises derives from `EventMicroError`.

::

    EventMicroError
    ├── ConfigurationError (ValueError)        bad options, names, signatures — found at start-up
    ├── ServerNotFound (FileNotFoundError)     no nats-server binary to start
    ├── ServerStartError (RuntimeError)        nats-server did not come up in time
    ├── ConnectError (ConnectionError)         cannot reach / authenticate with NATS
    │   └── AuthorizationError                 the server refused the credentials
    ├── ConnectionClosed (ConnectionError)     the connection is closed or draining
    ├── EnvelopeError (ValueError)             a message is not a valid CloudEvent        code 400
    │   ├── MissingAttribute                   a required attribute is absent
    │   ├── InvalidAttribute                   a value or name breaks the spec
    │   ├── UnsupportedSpecVersion             specversion is not "1.0"
    │   ├── HeaderDecodeError                  undecodable percent-encoding / bad UTF-8
    │   └── StructuredFormatError              the structured body is not a JSON object
    ├── PayloadError (ValueError)              the data does not fit the expected type     code 400
    │   ├── ContentTypeMismatch                wrong datacontenttype for the codec
    │   ├── PayloadDecodeError                 the body does not decode
    │   ├── UnexpectedType                     an event type nobody expected
    │   └── PayloadEncodeError                 a value no codec can encode
    ├── PayloadTooLarge (ValueError)           headers + body exceed the server's max_payload  code 413
    ├── NoResponders                           nobody listens on the subject             code 503
    │   └── CircuitOpen                        the caller's breaker for the target is open: not sent  503
    ├── PermissionDenied                       the server refused a publish or subscribe  code 403
    ├── Timeout (TimeoutError)                 no answer before the deadline             code 504
    └── JetStreamError                         a JetStream API error (err_code kept)      code 500
        ├── StreamConflict (ValueError)        a declared stream differs from the server's one  409
        ├── NotStored                          a durable publish was not acknowledged     code 503
        └── BucketNotFound (LookupError)       no key-value bucket of that name           code 404

Each error carries structured attributes (``attribute``, ``expected``, ``received``, ``size``,
``limit``, ...) and a class-level ``code`` that the RPC layer maps to a NATS service error code.
Errors from nats-py are translated once, in the adapter, with ``raise ... from exc``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

__all__ = [
    "AuthorizationError",
    "BucketNotFound",
    "CircuitOpen",
    "ConfigurationError",
    "ConnectError",
    "ConnectionClosed",
    "ContentTypeMismatch",
    "EnvelopeError",
    "EventMicroError",
    "HeaderDecodeError",
    "InvalidAttribute",
    "JetStreamError",
    "MissingAttribute",
    "NoResponders",
    "NotStored",
    "PayloadDecodeError",
    "PayloadEncodeError",
    "PayloadError",
    "PayloadTooLarge",
    "PermissionDenied",
    "ServerNotFound",
    "ServerStartError",
    "StreamConflict",
    "StructuredFormatError",
    "Timeout",
    "UnexpectedType",
    "UnsupportedSpecVersion",
]


class EventMicroError(Exception):
    """Root of every eventmicro error.

    ``code`` is an HTTP-like status number used as the NATS service error code when the
    error crosses the wire; ``message`` is safe to show to a remote caller.
    """

    code: ClassVar[int] = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigurationError(EventMicroError, ValueError):
    """Options, names or handler signatures that cannot work; raised at configuration time."""

    code = 500


class ServerNotFound(EventMicroError, FileNotFoundError):
    """No ``nats-server`` binary could be found; the message says how to get one."""


class ServerStartError(EventMicroError, RuntimeError):
    """A ``nats-server`` process exited or did not become ready before its deadline."""

    def __init__(self, message: str, *, log_tail: str = "") -> None:
        super().__init__(message)
        self.log_tail = log_tail


class ConnectError(EventMicroError, ConnectionError):
    """The NATS servers could not be reached within the connect attempts."""

    code = 503

    def __init__(self, message: str, *, servers: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.servers = servers


class AuthorizationError(ConnectError):
    """The server refused the credentials (user/password, token, nkey, creds or TLS identity)."""


class ConnectionClosed(EventMicroError, ConnectionError):
    """The operation needs an open connection, and this one is closed or draining."""

    code = 503


class EnvelopeError(EventMicroError, ValueError):
    """A message is not a valid CloudEvent under the NATS binding."""

    code = 400


class MissingAttribute(EnvelopeError):
    """A required CloudEvents attribute (``id``, ``source``, ``specversion``, ``type``) is absent."""

    def __init__(self, attribute: str) -> None:
        super().__init__(f"CloudEvent is missing the required attribute '{attribute}'")
        self.attribute = attribute


class InvalidAttribute(EnvelopeError):
    """An attribute's name or value breaks the CloudEvents rules."""

    def __init__(self, attribute: str, reason: str) -> None:
        super().__init__(f"CloudEvent attribute '{attribute}' is invalid: {reason}")
        self.attribute = attribute
        self.reason = reason


class UnsupportedSpecVersion(EnvelopeError):
    """``specversion`` is not ``"1.0"``, the only version eventmicro reads and writes."""

    def __init__(self, received: str) -> None:
        super().__init__(f"unsupported CloudEvents specversion {received!r}; expected '1.0'")
        self.expected = "1.0"
        self.received = received


class HeaderDecodeError(EnvelopeError):
    """A ``ce-`` header value has broken percent-encoding or is not valid UTF-8 once decoded."""

    def __init__(self, header: str, reason: str) -> None:
        super().__init__(f"header '{header}' cannot be decoded: {reason}")
        self.header = header
        self.reason = reason


class StructuredFormatError(EnvelopeError):
    """A structured-mode body is not a UTF-8 JSON object (or uses an unsupported format)."""


class PayloadError(EventMicroError, ValueError):
    """The event data does not fit the type the receiver asked for."""

    code = 400


class ContentTypeMismatch(PayloadError):
    """The event's ``datacontenttype`` is not one the chosen codec reads."""

    def __init__(self, expected: str, received: str | None) -> None:
        super().__init__(f"expected datacontenttype {expected!r}, received {received or 'none'!r}")
        self.expected = expected
        self.received = received


class PayloadDecodeError(PayloadError):
    """The body could not be decoded into the expected type."""

    def __init__(self, expected: str, reason: str) -> None:
        super().__init__(f"payload does not decode as {expected}: {reason}")
        self.expected = expected
        self.reason = reason


class UnexpectedType(PayloadError):
    """The event's type (or ``dataschema``) is not the one, or one of those, expected."""

    def __init__(self, expected: tuple[str, ...], received: str) -> None:
        wanted = ", ".join(expected) or "nothing"
        super().__init__(f"unexpected event type {received!r}; expected {wanted}")
        self.expected = expected
        self.received = received


class PayloadEncodeError(PayloadError):
    """A value that no codec can encode (or that its codec refused)."""


class PayloadTooLarge(EventMicroError, ValueError):
    """Headers plus body exceed the server's ``max_payload``; nothing was sent."""

    code = 413

    def __init__(self, subject: str, size: int, limit: int) -> None:
        super().__init__(
            f"message for '{subject}' is {size} bytes with headers, "
            f"over the server's max_payload of {limit} bytes; it was not sent"
        )
        self.subject = subject
        self.size = size
        self.limit = limit


class NoResponders(EventMicroError):
    """A request found no subscriber on its subject (NATS status 503), without waiting."""

    code = 503

    def __init__(self, subject: str) -> None:
        super().__init__(f"no responders on '{subject}'")
        self.subject = subject


class CircuitOpen(NoResponders):
    """The caller's circuit breaker for ``target`` is open: the request was not sent.

    A `NoResponders` to callers that treat "nobody can answer" alike (a handler letting it
    escape answers 502, as for a missing dependency), but never retried: it fails fast.
    ``retry_after`` is how many seconds remain until the breaker lets a probe call through.
    """

    def __init__(self, target: str, retry_after: float) -> None:
        EventMicroError.__init__(
            self, f"circuit open for '{target}': not called (a probe in {max(0.0, retry_after):.3g}s)"
        )
        self.subject = target
        self.target = target
        self.retry_after = max(0.0, retry_after)


class PermissionDenied(EventMicroError):
    """The NATS server refused this connection's user a publish or a subscription on ``subject``.

    ``operation`` is ``"publish"`` (a request or a publish) or ``"subscribe"``. A request
    fails with it at once instead of timing out; a subscription (a handler, the reply inbox)
    fails with it when made; a plain publish is fire-and-forget, so its refusal is logged
    and counted instead (see ``docs/permissions.md``).
    """

    code = 403

    def __init__(self, subject: str, operation: str = "publish") -> None:
        super().__init__(f"permission denied: this connection's NATS user may not {operation} to '{subject}'")
        self.subject = subject
        self.operation = operation


class Timeout(EventMicroError, TimeoutError):
    """No reply arrived before the deadline."""

    code = 504

    def __init__(self, subject: str, timeout: float) -> None:
        super().__init__(f"no reply on '{subject}' within {timeout:g}s")
        self.subject = subject
        self.timeout = timeout


class JetStreamError(EventMicroError):
    """JetStream refused an operation; ``err_code`` is the server's (e.g. 10071), or 0."""

    code = 500

    def __init__(self, message: str, *, err_code: int = 0, status: int = 0) -> None:
        super().__init__(message)
        self.err_code = err_code
        self.status = status


class StreamConflict(JetStreamError, ValueError):
    """A stream declared in code cannot be reconciled with the one on the server."""

    code = 409

    def __init__(self, stream: str, differences: Mapping[str, tuple[object, object]] | str) -> None:
        if isinstance(differences, str):
            detail, found = differences, {}
        else:
            detail = "; ".join(f"{k}: server has {v[1]!r}, declared {v[0]!r}" for k, v in differences.items())
            found = dict(differences)
        super().__init__(f"stream {stream} conflicts with its declaration: {detail}")
        self.stream = stream
        self.differences: dict[str, tuple[object, object]] = found


class NotStored(JetStreamError):
    """A durable publish got no acknowledgement: no stream stores the subject, or JetStream is
    unavailable; the message may not be stored (publishing again is safe: it is deduplicated)."""

    code = 503

    def __init__(self, subject: str, reason: str) -> None:
        super().__init__(f"event on '{subject}' not stored: {reason}")
        self.subject = subject
        self.reason = reason
        self.event: object = None  # the Event, set by the client: publish it again to retry it


class BucketNotFound(JetStreamError, LookupError):
    """No key-value bucket of that name exists (and the store was opened with ``create=False``)."""

    code = 404

    def __init__(self, bucket: str) -> None:
        super().__init__(
            f"key-value bucket '{bucket}' does not exist; create it first, or open it with create=True",
            err_code=10059,  # JSStreamNotFoundErr: the bucket's stream KV_<bucket> is missing
            status=404,
        )
        self.bucket = bucket
