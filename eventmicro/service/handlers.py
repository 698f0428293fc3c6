"""Handler specs: what a decorator records about a function, checked when the decorator runs.

A handler is ``async def f(message: T) -> R`` or ``async def f(message: T, ctx: Context) -> R``.
``T`` (the request or event type) and, for RPC, ``R`` (the reply type) come from the
annotations; an event handler may take a union of types and is dispatched by CloudEvent type.
"""

from __future__ import annotations

import dataclasses
import enum
import inspect
import types
import typing
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import Message

from eventmicro._errors import ConfigurationError
from eventmicro.service.context import Context
from eventmicro.service.delivery import Durable, Ordered
from eventmicro.service.lanes import KeyOf
from eventmicro.wire.codecs import type_name_of
from eventmicro.wire.names import consumer_name

__all__ = ["HandlerKind", "HandlerSpec", "describe", "inspect_handler"]

Handler = Callable[..., Awaitable[Any]]


class HandlerKind(enum.Enum):
    """What a handler serves."""

    RPC = "rpc"
    EVENT = "event"


@dataclass(frozen=True, slots=True)
class HandlerSpec:
    """A registered handler: its function, its types and how it is served."""

    kind: HandlerKind
    name: str
    function: Handler
    message_types: tuple[type, ...]
    reply_type: Any
    takes_context: bool
    subject: str
    queue: str | None
    concurrency: int
    idempotent: bool = False
    backlog: int = 0  # RPC: requests that may wait for a free slot; beyond, 503 Overloaded at once
    balance: str = "random"  # RPC: "room": a full instance leaves its queue group (service.balance)
    versioned: str | None = None  # RPC: <service>.v<major>.<endpoint>, for callers asking for a major
    durable: Durable | None = None  # JetStream consumption policy of a durable event handler
    ordered: Ordered | None = None  # an ordered consumer per instance (projections, replays)
    ordered_by: KeyOf | None = None  # events of one key one at a time, in order (service.lanes)

    @property
    def allows_none(self) -> bool:
        """Whether the handler may return ``None`` (``-> None`` or an optional reply type)."""
        reply = self.reply_type
        if reply is None or reply is type(None):
            return True
        return type(None) in typing.get_args(reply)

    @property
    def type_names(self) -> dict[str, type]:
        """CloudEvent type -> Python type, for the message types that have a type name."""
        return {name: cls for cls in self.message_types if (name := type_name_of(cls))}


def describe(spec: HandlerSpec, service: str) -> str:
    """One line for the start-up log: what the handler listens on and how it gets messages.

    >>> describe(spec, "orders")                               # doctest: +SKIP
    "endpoint place on subject 'orders.place' (queue group 'orders', 16 at a time)"
    """
    if spec.kind is HandlerKind.RPC:
        return (
            f"endpoint {spec.name} on subject '{spec.subject}' "
            f"(queue group '{spec.queue}', {spec.concurrency} at a time)"
        )
    if spec.durable is not None:
        stream = f"stream {spec.durable.stream}" if spec.durable.stream else "the stream holding it"
        dead = ", then dead-lettered" if spec.durable.dead_letter else ""
        delivery = (
            f"durable: at least once, JetStream consumer '{consumer_name(service, spec.name)}' on {stream}, "
            f"up to {spec.durable.max_deliver} deliveries{dead}"
        )
    elif spec.ordered is not None:
        stream = f"stream {spec.ordered.stream}" if spec.ordered.stream else "the stream holding it"
        delivery = f"ordered replay from {stream} to every instance (deliver {spec.ordered.deliver})"
    elif spec.queue is None:
        delivery = "core NATS, at most once, to every instance"
    else:
        delivery = f"core NATS, at most once, to one instance of queue group '{spec.queue}'"
    if spec.ordered_by is not None:
        delivery += ", in order per key"
    return f"event handler {spec.name} on subject '{spec.subject}' ({delivery})"


def inspect_handler(function: Handler, kind: HandlerKind) -> tuple[tuple[type, ...], Any, bool]:
    """The message types, reply type and whether the handler takes a context.

    Raises `ConfigurationError` naming the function when its shape is wrong.
    """
    label = getattr(function, "__qualname__", repr(function))
    if not inspect.iscoroutinefunction(function):
        raise ConfigurationError(f"handler {label} must be an 'async def' function")
    parameters = list(inspect.signature(function).parameters.values())
    positional = [
        p
        for p in parameters
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
    ]
    if len(positional) not in (1, 2) or len(positional) != len(parameters):
        raise ConfigurationError(
            f"handler {label} must take (message) or (message, ctx), not {len(parameters)} parameters"
        )
    try:
        hints = typing.get_type_hints(function)
    except (NameError, TypeError) as exc:
        raise ConfigurationError(f"handler {label} has annotations that cannot be resolved: {exc}") from exc
    first = positional[0].name
    if first not in hints:
        raise ConfigurationError(f"handler {label} needs a type annotation on '{first}' (the message type)")
    if _is_context(hints[first]):
        raise ConfigurationError(
            f"handler {label}: its first parameter '{first}' is annotated Context, but the message "
            "comes first: (message: T, ctx: Context)"
        )
    message_types = _types_of(hints[first], label)
    if kind is HandlerKind.RPC and len(message_types) != 1:
        raise ConfigurationError(f"RPC handler {label} takes exactly one request type")
    if kind is HandlerKind.EVENT and len(message_types) > 1:
        for cls in message_types:
            if not type_name_of(cls):
                raise ConfigurationError(
                    f"handler {label}: {cls.__name__} in a union needs a CloudEvent type "
                    "(a protobuf message, or @event_type on the class)"
                )
    if "return" not in hints:
        raise ConfigurationError(f"handler {label} needs a return annotation ('-> None' for no reply)")
    reply = hints["return"]
    if kind is HandlerKind.EVENT and reply not in (None, type(None)):
        raise ConfigurationError(f"event handler {label} must return None")
    if kind is HandlerKind.RPC:
        for member in _types_of(reply, label):
            if member is not type(None) and not _encodable(member):
                raise ConfigurationError(
                    f"RPC handler {label}: replies of type {getattr(member, '__name__', member)} cannot "
                    "be encoded (use a protobuf message, a dataclass, a pydantic model, dict, list, "
                    "bytes or str)"
                )
    return message_types, reply, len(positional) == 2


def _is_context(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, Context)


def _encodable(cls: Any) -> bool:
    if not isinstance(cls, type):
        return typing.get_origin(cls) in (dict, list)
    if issubclass(cls, Message) or dataclasses.is_dataclass(cls):
        return True
    if issubclass(cls, (dict, list, bytes, str)):
        return True
    try:
        import pydantic
    except ImportError:  # pragma: no cover - only without pydantic
        return False
    return issubclass(cls, pydantic.BaseModel)


def _types_of(annotation: Any, label: str) -> tuple[type, ...]:
    if annotation is None:
        return (type(None),)
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin is types.UnionType:
        members = typing.get_args(annotation)
    else:
        members = (annotation,)
    for member in members:
        if not isinstance(member, type) and typing.get_origin(member) not in (dict, list):
            raise ConfigurationError(f"handler {label}: {member!r} is not a message type")
    return tuple(typing.cast(type, m) for m in members)
