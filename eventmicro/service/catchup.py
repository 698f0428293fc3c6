"""An ordered durable handler's start: newer events wait until what an earlier instance left
unacked has come back, so no key's newer event overtakes an older one.

A killed instance's unacked deliveries are redelivered only after ``ack_wait`` (a stopped
one's after its hand-back delay); a fresh fetch meanwhile returns newer events of the same keys
first. So at start, when the consumer has ``pending`` unacked deliveries, new deliveries
(first delivery) are held, redeliveries go to their lanes at once, and the held ones follow
in stream order once ``pending`` redeliveries arrived or ``ack_wait`` passed::

    fetched --> redelivered? --yes--> its lane now (one fewer awaited)
                  | no
                  v
                held (in progress, in order) --> all awaited came back, or the wait is over:
                                                 to their lanes, in stream order
"""

from __future__ import annotations

import time
from typing import Generic, TypeVar

__all__ = ["CatchUp"]

T = TypeVar("T")


class CatchUp(Generic[T]):
    """Holds new deliveries while ``awaited`` redeliveries may still come, ``wait`` s at most."""

    __slots__ = ("awaited", "held", "until")

    def __init__(self, awaited: int, wait: float) -> None:
        self.awaited = awaited
        self.until = time.monotonic() + wait
        self.held: list[T] = []

    def hold(self, item: T, redelivered: bool) -> bool:
        """``True``: ``item`` is held (a new delivery while redeliveries are awaited)."""
        if redelivered:
            self.awaited -= 1
            return False
        self.held.append(item)
        return True

    def over(self) -> bool:
        """Whether the held deliveries may go: every awaited one came back, or time is up."""
        return self.awaited <= 0 or time.monotonic() >= self.until
