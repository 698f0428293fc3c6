"""eventmicro: Python microservices over NATS, with CloudEvents on the wire.

The public API is what ``__all__`` lists; everything else is internal.
"""

from __future__ import annotations

from typing import Any

from eventmicro._errors import (
    AuthorizationError,
    BucketNotFound,
    CircuitOpen,
    ConfigurationError,
    ConnectError,
    ConnectionClosed,
    ContentTypeMismatch,
    EnvelopeError,
    EventMicroError,
    HeaderDecodeError,
    InvalidAttribute,
    JetStreamError,
    MissingAttribute,
    NoResponders,
    NotStored,
    PayloadDecodeError,
    PayloadEncodeError,
    PayloadError,
    PayloadTooLarge,
    PermissionDenied,
    ServerNotFound,
    ServerStartError,
    StreamConflict,
    StructuredFormatError,
    Timeout,
    UnexpectedType,
    UnsupportedSpecVersion,
)
from eventmicro._version import __version__
from eventmicro.observability.tracing import disable as disable_tracing
from eventmicro.observability.tracing import enable as enable_tracing
from eventmicro.observability.tracing import enabled as tracing_enabled
from eventmicro.service.breaker import BreakerPolicy, CircuitState
from eventmicro.service.client import Client
from eventmicro.service.context import Context
from eventmicro.service.deadletters import DeadLetter, DeadLetters, Replayed, dead_letter_stream
from eventmicro.service.delivery import Broadcast, Durable, Ordered, Shared
from eventmicro.service.dependencies import Dependency
from eventmicro.service.discovery import discover
from eventmicro.service.lanes import PartitionKey
from eventmicro.service.later import Scheduled
from eventmicro.service.middleware import Middleware, logging_middleware, timing_middleware
from eventmicro.service.retry import RetryBudget, RetryPolicy
from eventmicro.service.service import Service
from eventmicro.transport.cluster import NatsCluster
from eventmicro.transport.config import ConnectOptions, TLSOptions
from eventmicro.transport.connection import Connection, ConnectionState, Message, Subscription
from eventmicro.transport.jetstream import Stored, Stream
from eventmicro.transport.kv import BucketConfig, Entry, Store, Watch
from eventmicro.transport.server import NatsServer, find_server_binary
from eventmicro.wire.codecs import (
    Codec,
    Payload,
    TypeRegistry,
    decode_payload,
    encode_payload,
    event_type,
    register_codec,
    type_name_of,
    unregister_codec,
)
from eventmicro.wire.event import Event
from eventmicro.wire.schedules import Tick
from eventmicro.wire.service_errors import (
    BadRequest,
    Conflict,
    DeadlineExceeded,
    InternalError,
    InvalidKey,
    NotFound,
    Overloaded,
    RevisionConflict,
    ServiceError,
    ServiceUnavailable,
    register_error,
)


def connect(servers: str | list[str] | None = None, **options: Any) -> Connection:
    """A `Connection` configured from arguments and the environment; open it with ``async with``.

    >>> async def main() -> None:          # doctest: +SKIP
    ...     async with eventmicro.connect("nats://127.0.0.1:4222") as conn:
    ...         await conn.publish("greet", b"hi")
    """
    return Connection(ConnectOptions.from_env(servers, **options))


__all__ = [
    "AuthorizationError",
    "BadRequest",
    "BreakerPolicy",
    "Broadcast",
    "BucketConfig",
    "BucketNotFound",
    "CircuitOpen",
    "CircuitState",
    "Client",
    "Codec",
    "ConfigurationError",
    "Conflict",
    "ConnectError",
    "ConnectOptions",
    "Connection",
    "ConnectionClosed",
    "ConnectionState",
    "ContentTypeMismatch",
    "Context",
    "DeadLetter",
    "DeadLetters",
    "DeadlineExceeded",
    "Dependency",
    "Durable",
    "Entry",
    "EnvelopeError",
    "Event",
    "EventMicroError",
    "HeaderDecodeError",
    "InternalError",
    "InvalidAttribute",
    "InvalidKey",
    "JetStreamError",
    "Message",
    "Middleware",
    "MissingAttribute",
    "NatsCluster",
    "NatsServer",
    "NoResponders",
    "NotFound",
    "NotStored",
    "Ordered",
    "Overloaded",
    "PartitionKey",
    "Payload",
    "PayloadDecodeError",
    "PayloadEncodeError",
    "PayloadError",
    "PayloadTooLarge",
    "PermissionDenied",
    "Replayed",
    "RetryBudget",
    "RetryPolicy",
    "RevisionConflict",
    "Scheduled",
    "ServerNotFound",
    "ServerStartError",
    "Service",
    "ServiceError",
    "ServiceUnavailable",
    "Shared",
    "Store",
    "Stored",
    "Stream",
    "StreamConflict",
    "StructuredFormatError",
    "Subscription",
    "TLSOptions",
    "Tick",
    "Timeout",
    "TypeRegistry",
    "UnexpectedType",
    "UnsupportedSpecVersion",
    "Watch",
    "__version__",
    "connect",
    "dead_letter_stream",
    "decode_payload",
    "disable_tracing",
    "discover",
    "enable_tracing",
    "encode_payload",
    "event_type",
    "find_server_binary",
    "logging_middleware",
    "register_codec",
    "register_error",
    "timing_middleware",
    "tracing_enabled",
    "type_name_of",
    "unregister_codec",
]
