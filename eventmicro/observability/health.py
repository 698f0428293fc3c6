"""Liveness and readiness of a running service instance.

- **live**: the instance can still do its job without a restart: its connection is not closed
  for good (nats-py gave up reconnecting), unless the instance is stopping on purpose.
- **ready**: started (every handler subscribed, ``$SRV`` answering), connected, every
  subscription still held, every durable consumer reachable, and no subscription dropped
  messages in the last `SLOW_WINDOW` seconds (a slow consumer, listed in ``slow_consumers``);
  false from the moment `Running.stop` begins (drain), so a probe takes the instance out
  before it goes away.

Durable consumers are marked reachable or not by their fetch loop (a failed fetch: not
reachable; the next successful one, even empty: reachable again) and, on demand, by `probe`,
which asks the server for each consumer (what ``/readyz`` does). ``$SRV.STATS`` reports the
last known state in ``data.health`` without asking the server.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from eventmicro._errors import EventMicroError
from eventmicro.transport.connection import ConnectionState

if TYPE_CHECKING:  # pragma: no cover
    from eventmicro.observability.instance import Instance

__all__ = ["SLOW_WINDOW", "Health", "check", "probe"]

SLOW_WINDOW: Final = 30.0  # seconds a dropped message keeps an instance not ready


@dataclass(frozen=True, slots=True)
class Health:
    """One instance's health; `as_dict` is what ``$SRV.STATS`` and the HTTP probes show."""

    service: str
    instance: str
    state: str  # "starting", "serving" or "stopping"
    live: bool
    ready: bool
    connected: bool
    subscriptions: bool
    consumers: dict[str, bool] = field(default_factory=dict)
    slow_consumers: dict[str, int] = field(default_factory=dict)  # subject -> messages dropped

    def as_dict(self) -> dict[str, Any]:
        return {
            "service": self.service,
            "instance": self.instance,
            "state": self.state,
            "live": self.live,
            "ready": self.ready,
            "connected": self.connected,
            "subscriptions": self.subscriptions,
            "consumers": dict(self.consumers),
            "slow_consumers": dict(self.slow_consumers),
        }


def check(running: Instance) -> Health:
    """The instance's health from what it knows now (no I/O)."""
    stopping = not running.accepting()
    watching = running.watching()
    started = bool(watching.discovery)  # subscribed last in start()
    connection = running.connection
    connected = connection.is_connected
    subscriptions = (
        started
        and all(subscription.active for subscription in watching.intake)
        and all(subscription.active for subscription in watching.discovery)
    )
    consumers = {
        intake.name: intake.consumer is not None and intake.reachable for intake in watching.durables
    }
    slow = {s.subject: s.dropped for s in watching.intake if s.slow(SLOW_WINDOW)}
    state = "stopping" if stopping else "serving" if started else "starting"
    return Health(
        service=running.service.name,
        instance=running.id,
        state=state,
        live=stopping or connection.state is not ConnectionState.CLOSED,
        ready=not stopping
        and started
        and connected
        and subscriptions
        and all(consumers.values())
        and not slow,
        connected=connected,
        subscriptions=subscriptions,
        consumers=consumers,
        slow_consumers=slow,
    )


async def probe(running: Instance, timeout: float = 2.0) -> Health:
    """`check`, after asking the server whether each durable consumer is still there."""
    if running.accepting() and running.connection.is_connected:
        for intake in running.watching().durables:
            consumer = intake.consumer
            if consumer is None:
                continue
            try:
                async with asyncio.timeout(timeout):
                    intake.reachable = await consumer.exists()
            except (EventMicroError, TimeoutError):
                intake.reachable = False
    return check(running)
