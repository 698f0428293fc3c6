"""Load-aware intake of an RPC endpoint: an instance that is full leaves the queue group.

NATS hands each request of a queue group to a member picked at random, whatever its load, so
an instance at its concurrency limit keeps receiving its share while another has room. An
endpoint declared ``@svc.rpc(balance="room")`` leaves the group when a request has to wait for
a slot (its subscription drained: what the server had already sent is still admitted, nothing
is lost) and joins again once no request waits and at most half its slots are taken. While it
is out, the server sends the group's requests to the members still in; when every member is
out, callers get "no responders" at once (`NoResponders`, which `Client.call` retries within
its deadline) instead of waiting in a queue.

The switch runs in a task of its own; admission only sets an event: a request that has to
wait sets `Balancer.full`, a finished one with nothing waiting, at half the slots or below,
sets `Balancer.roomy`. Nothing runs per request while the endpoint has room.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from eventmicro._errors import EventMicroError
from eventmicro.transport.connection import Connection, Message, Subscription

__all__ = ["BALANCES", "Balancer"]

BALANCES = ("random", "room")  # the values of @svc.rpc(balance=...)
_RETRY: float = 0.5  # seconds before joining the group again after a failed subscribe

log = logging.getLogger("eventmicro.service")


class Balancer:
    """One endpoint's membership in its queue group, taken out while the endpoint is full."""

    __slots__ = (
        "connection",
        "full",
        "left",
        "on_request",
        "out",
        "queue",
        "roomy",
        "subject",
        "subscription",
    )

    def __init__(
        self,
        connection: Connection,
        subscription: Subscription,
        on_request: Callable[[Message], Awaitable[None]],
    ) -> None:
        self.connection = connection
        self.subscription = subscription  # the current one: a new one each time it joins again
        self.subject = subscription.subject
        self.queue = subscription.queue
        self.on_request = on_request
        self.full = asyncio.Event()  # a request had to wait for a slot
        self.roomy = asyncio.Event()  # out of the group, and room again
        self.out = False
        self.left = 0  # times it left the group

    # --- what health, stats and stop read of it, as of a subscription --------------------

    @property
    def active(self) -> bool:
        """True while in the group with a working subscription, or out of it on purpose."""
        return self.out or self.subscription.active

    @property
    def dropped(self) -> int:
        return self.subscription.dropped

    def slow(self, within: float) -> bool:
        return self.subscription.slow(within)

    async def drain(self) -> None:
        """Leave for good (the instance stops; `run` was cancelled first)."""
        if not self.out:
            self.out = True
            await self.subscription.drain()

    async def unsubscribe(self) -> None:
        if not self.out:
            self.out = True
            await self.subscription.unsubscribe()

    async def run(self, has_room: Callable[[], bool]) -> None:
        """Leave when full, join again when ``has_room()``; until cancelled (the instance stops)."""
        while True:
            await self.full.wait()
            self.full.clear()
            if has_room():
                continue  # it emptied meanwhile
            self.roomy.clear()
            self.out = True
            try:
                await self.subscription.drain()  # UNSUB first: everything sent before it is admitted
            except EventMicroError as exc:  # the connection is away: it is out of the group anyway
                log.debug("leaving the queue group of %s: %s", self.subject, exc.message)
            self.left += 1
            if not has_room():
                await self.roomy.wait()
            await self._join()
            self.out = False

    async def _join(self) -> None:
        while True:
            try:
                self.subscription = await self.connection.subscribe(
                    self.subject, self.on_request, queue=self.queue, direct=True
                )
                return
            except EventMicroError as exc:  # e.g. reconnecting: try again; requests go elsewhere
                log.warning(
                    "joining the queue group of %s again failed (%s); retrying", self.subject, exc.message
                )
                await asyncio.sleep(_RETRY)
