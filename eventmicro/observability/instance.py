"""What observers read of a running service instance: a small protocol, never its privates.

A running instance (`eventmicro.service.running.Running`) satisfies `Instance`; health,
metrics, logs and the operations endpoint take one, so they do not depend on the service
layer that drives them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:  # pragma: no cover
    from eventmicro.observability.stats import EndpointStats
    from eventmicro.transport.connection import Connection

__all__ = [
    "CircuitView",
    "ConsumerProbe",
    "DurableState",
    "GatewayView",
    "Instance",
    "Named",
    "RetriesView",
    "Watched",
    "Watching",
]


class Named(Protocol):
    """Anything with a name: a service, a handler."""

    @property
    def name(self) -> str: ...


class Watched(Protocol):
    """A subscription as health sees it."""

    @property
    def subject(self) -> str: ...
    @property
    def active(self) -> bool: ...
    @property
    def dropped(self) -> int: ...
    def slow(self, window: float) -> bool: ...


class ConsumerProbe(Protocol):
    """A durable consumer that can be asked whether the server still has it."""

    async def exists(self) -> bool: ...


class DurableState(Protocol):
    """A durable handler's intake: its consumer (None until created) and whether it is reachable."""

    @property
    def name(self) -> str: ...
    @property
    def consumer(self) -> ConsumerProbe | None: ...

    reachable: bool


class Watching(Protocol):
    """What an instance listens on, for health: its handlers' subscriptions, its ``$SRV``
    subscriptions (empty until it has started) and its durable intakes."""

    @property
    def intake(self) -> Sequence[Watched]: ...
    @property
    def discovery(self) -> Sequence[Watched]: ...
    @property
    def durables(self) -> Sequence[DurableState]: ...


class Instance(Protocol):
    """One running instance of a service."""

    @property
    def id(self) -> str: ...
    @property
    def service(self) -> Named: ...
    @property
    def connection(self) -> Connection: ...
    @property
    def stats(self) -> Mapping[str, EndpointStats]: ...
    @property
    def event_stats(self) -> Mapping[str, EndpointStats]: ...
    @property
    def schedule_stats(self) -> Mapping[str, EndpointStats]: ...
    def accepting(self) -> bool: ...
    def watching(self) -> Watching: ...


class GatewayView(Protocol):
    """A gateway's requests per (client id, outcome), as metrics read them."""

    @property
    def counts(self) -> dict[tuple[str, str], int]: ...


class CircuitView(Protocol):
    """A caller's circuit breaker as metrics read it."""

    @property
    def owner(self) -> str: ...
    @property
    def target(self) -> str: ...
    @property
    def state_name(self) -> str: ...
    @property
    def opened(self) -> int: ...
    @property
    def rejected(self) -> int: ...


class RetriesView(Protocol):
    """A client's retries as metrics read them: per target endpoint, attempts after the first."""

    @property
    def owner(self) -> str: ...
    @property
    def retried(self) -> Mapping[str, int]: ...
