"""A subscription's messages run by a few workers, with a buffer bounded in messages and bytes.

The connection's reader hands each message to `Intake.offer`, which never waits: below the
concurrency limit a worker starts on it; above, it waits in the buffer; past the buffer's
limits it is dropped and counted (a slow consumer). A worker that finishes takes the next
buffered message itself, so a burst costs one task per worker, not one per message.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from eventmicro.transport.message import Message, MessageHandler

__all__ = ["Intake", "Spawn"]

log = logging.getLogger("eventmicro.connection")

Spawn = Callable[[Coroutine[Any, Any, None]], Awaitable[None] | asyncio.Task[None]]


class Intake:
    """Up to ``concurrency`` calls of ``handler`` at a time, in arrival order, on tasks ``spawn`` makes."""

    __slots__ = (
        "_buffer",
        "_bytes",
        "_concurrency",
        "_handler",
        "_idle",
        "_max_bytes",
        "_max_msgs",
        "_on_drop",
        "_running",
        "_spawn",
    )

    def __init__(
        self,
        handler: MessageHandler,
        *,
        concurrency: int,
        max_msgs: int,
        max_bytes: int,
        spawn: Spawn,
        on_drop: Callable[[], None],
    ) -> None:
        self._handler = handler
        self._concurrency = concurrency
        self._max_msgs = max_msgs
        self._max_bytes = max_bytes
        self._spawn = spawn
        self._on_drop = on_drop
        self._buffer: deque[tuple[Message, int]] = deque()
        self._bytes = 0
        self._running = 0
        self._idle: asyncio.Event | None = None

    @property
    def pending(self) -> int:
        """Messages received and not yet handed to a worker."""
        return len(self._buffer)

    async def offer(self, message: Message, size: int) -> None:
        """Called by the reader for each message (``size``: header block and body, in bytes)."""
        if self._running < self._concurrency:
            self._running += 1
            self._spawn(self._work(message))
        elif len(self._buffer) < self._max_msgs and self._bytes + size <= self._max_bytes:
            self._buffer.append((message, size))
            self._bytes += size
        else:
            self._on_drop()

    async def _work(self, message: Message) -> None:
        buffer = self._buffer
        try:
            while True:
                try:
                    await self._handler(message)
                except Exception:  # the handler's own failure: the worker goes on
                    log.exception("the handler of '%s' failed", message.subject[:128])
                if not buffer:
                    return
                message, size = buffer.popleft()
                self._bytes -= size
        finally:
            self._running -= 1
            if self._idle is not None and not self._running and not buffer:
                self._idle.set()

    async def idle(self) -> None:
        """Wait until every received message was handled (or dropped by `clear`)."""
        if self._running or self._buffer:
            if self._idle is None or self._idle.is_set():
                self._idle = asyncio.Event()
            await self._idle.wait()

    def clear(self) -> None:
        """Drop the buffered messages (an unsubscribe): they are not handled."""
        self._buffer.clear()
        self._bytes = 0
        if self._idle is not None and not self._running:
            self._idle.set()
