"""The context a handler gets: who it is, what it received, its deadline, and a way to act."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Protocol, TypeVar

from eventmicro._errors import ConfigurationError
from eventmicro.service.client import Client
from eventmicro.service.dependencies import Dependency
from eventmicro.service.retry import RetryPolicy
from eventmicro.transport.kv import Store, Stores
from eventmicro.wire.attributes import ExtensionValue
from eventmicro.wire.event import Event
from eventmicro.wire.trace import Trace

__all__ = ["Context", "ServiceIdentity"]

T = TypeVar("T")


class ServiceIdentity(Protocol):
    """The service a handler belongs to, as its context shows it."""

    @property
    def name(self) -> str: ...
    @property
    def version(self) -> str: ...


class Context:
    """Per-invocation context: ``ctx.publish`` and ``ctx.call`` carry the correlation id, the
    trace context and (for calls) what is left of this handler's deadline.
    """

    __slots__ = ("_client", "_stores", "event", "handler", "service", "trace")

    def __init__(
        self,
        service: ServiceIdentity,
        handler: str,
        event: Event,
        client: Client,
        trace: Trace,
        *,
        stores: Stores | None = None,
    ) -> None:
        self.service = service
        self.handler = handler
        self.event = event
        self._client = client
        self.trace = trace
        self._stores = stores  # the service instance's; made here (per invocation) when not given

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
        durable: bool = False,
    ) -> Event:
        """Publish an event from this service instance (source ``/<service>/<instance>``), in
        this invocation's trace; ``durable=True`` waits until a stream has stored it."""
        return await self._client.publish(
            message, subject=subject, type=type, trace=self.trace, extensions=extensions, durable=durable
        )

    async def call(
        self,
        name: str,
        request: object,
        *,
        returns: type[T],
        timeout: float | None = None,
        idempotent: bool = False,
        retry: RetryPolicy | None = None,
        version: int | None = None,
    ) -> T:
        """Call another endpoint within what is left of this handler's deadline, with the
        service's `RetryPolicy` and circuit breakers (``Service(retry=, breaker=)``), or ``retry``;
        ``version``: only instances of that major version (`Client.call`)."""
        return await self._client.call(
            name,
            request,
            returns=returns,
            timeout=timeout,
            idempotent=idempotent,
            trace=self.trace,
            retry=retry,
            version=version,
        )

    def get(self, dependency: Dependency[T]) -> T:
        """What ``dependency`` (declared with ``svc.dependency``) holds while the service serves,
        or its replacement (``svc.override``). Raises `ConfigurationError` for another
        service's dependency, or one not open."""
        if dependency.service != self.service.name:
            raise ConfigurationError(
                f"{dependency!r} belongs to service {dependency.service}, not {self.service.name}"
            )
        return dependency.get()

    async def store(self, bucket: str, value_type: type[T]) -> Store[T]:
        """The key-value store ``bucket`` holding ``value_type`` values, opened once per
        service instance; the bucket is created with default settings if it does not exist.

        ::

            carts = await ctx.store("carts", Cart)
            entry = await carts.get(req.customer_id)

        Declare the bucket in ``Service(stores=[...])``: a service's least-privilege NATS user
        may use only those (``docs/permissions.md``; otherwise `PermissionDenied`).

        Raises `ConfigurationError` for an invalid bucket name or an unsupported value type.
        """
        if self._stores is None:
            self._stores = Stores(self._client.connection)
        return await self._stores.open(bucket, value_type)
