"""A received NATS message, as eventmicro hands it to handlers (one type for every layer)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import NamedTuple

__all__ = ["Message", "MessageHandler"]


class Message(NamedTuple):
    """A received NATS message. ``headers`` is ``None`` when the message had none.

    ``received`` is the `time.monotonic` moment the connection's reader took it off the
    socket (0.0 when unknown), so a deadline can count from arrival, not from dequeue.
    Immutable; a tuple, so that making one per message costs little.
    """

    subject: str
    data: bytes
    headers: Mapping[str, str] | None
    reply: str
    received: float = 0.0


MessageHandler = Callable[[Message], Awaitable[None]]
