"""The context a handler gets: who it is, what it received, its deadline, and a way to act."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, TypeVar

from eventmicro._attributes import ExtensionValue
from eventmicro._client import Client, Trace
from eventmicro._event import Event

if TYPE_CHECKING:  # pragma: no cover
    from eventmicro._service import Service

__all__ = ["Context"]

T = TypeVar("T")


class Context:
    """Per-invocation context: ``ctx.publish`` and ``ctx.call`` carry the correlation id, the
    trace context and (for calls) what is left of this handler's deadline.
    """

    __slots__ = ("_client", "event", "handler", "service", "trace")

    def __init__(self, service: Service, handler: str, event: Event, client: Client, trace: Trace) -> None:
        self.service = service
        self.handler = handler
        self.event = event
        self._client = client
        self.trace = trace

    @property
    def deadline(self) -> float | None:
        """``time.monotonic()`` by which the caller wants an answer (``None``: no deadline)."""
        return self.trace.deadline

    def remaining(self) -> float | None:
        """Seconds left before the caller's deadline, or ``None`` when there is none."""
        if self.trace.deadline is None:
            return None
        return max(0.0, self.trace.deadline - time.monotonic())

    @property
    def correlation_id(self) -> str | None:
        return self.trace.correlation_id

    async def publish(
        self,
        message: object,
        *,
        subject: str | None = None,
        type: str | None = None,  # noqa: A002 - the CloudEvents attribute is called "type"
        extensions: Mapping[str, ExtensionValue] | None = None,
    ) -> Event:
        """Publish an event from this service instance (source ``/<service>/<instance>``), in
        this invocation's trace."""
        return await self._client.publish(
            message, subject=subject, type=type, trace=self.trace, extensions=extensions
        )

    async def call(
        self,
        name: str,
        request: object,
        *,
        returns: type[T],
        timeout: float | None = None,
        idempotent: bool = False,
    ) -> T:
        """Call another endpoint within what is left of this handler's deadline."""
        return await self._client.call(
            name, request, returns=returns, timeout=timeout, idempotent=idempotent, trace=self.trace
        )
