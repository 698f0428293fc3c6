"""Callers' deadlines: a handler still running when its caller gives up is cancelled.

One timer per `SLOT` of time, shared by every request due in it, instead of a timer per
request (arming and cancelling a timer per request was about 4 µs of each call's cost).
A deadline fires at the end of its slot: at most `SLOT` late, never early.
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import Final

__all__ = ["SLOT", "Deadlines", "Expiry"]

SLOT: Final = 0.005  # seconds: how late a deadline may fire


class Expiry:
    """One request's deadline: cancels its task when due, unless `disarm` came first."""

    __slots__ = ("_due", "_fired", "_task")

    def __init__(self, task: asyncio.Task[object], due: set[Expiry]) -> None:
        self._task = task
        self._due = due
        self._fired = False

    def fire(self) -> None:
        self._fired = True
        self._task.cancel()

    def expired(self) -> bool:
        """True when this deadline cancelled the task and nothing else did (undoes our cancel)."""
        return self._fired and self._task.uncancel() == 0

    def disarm(self) -> None:
        self._due.discard(self)


class Deadlines:
    """The deadlines of one service instance's requests, grouped by the slot they fall in."""

    __slots__ = ("_slots",)

    def __init__(self) -> None:
        self._slots: dict[int, set[Expiry]] = {}

    def arm(self, deadline: float) -> Expiry:
        """Cancel the current task at ``deadline`` (a `time.monotonic` value), slot-rounded up."""
        task = asyncio.current_task()
        if task is None:  # pragma: no cover - always called from a task
            raise RuntimeError("no current task")
        key = math.ceil(deadline / SLOT)
        due = self._slots.get(key)
        if due is None:
            due = self._slots[key] = set()
            task.get_loop().call_later(key * SLOT - time.monotonic(), self._fire, key)
        expiry = Expiry(task, due)
        due.add(expiry)
        return expiry

    def _fire(self, key: int) -> None:
        for expiry in self._slots.pop(key, ()):
            expiry.fire()

    def __len__(self) -> int:
        """Requests with a deadline still armed."""
        return sum(len(due) for due in self._slots.values())
