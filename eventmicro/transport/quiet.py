"""Rate-limited logging: a flood of one kind of event writes a line now and then, with a count."""

from __future__ import annotations

import time
from typing import Final

__all__ = ["Quiet"]

INTERVAL: Final = 10.0  # seconds between two log lines of one kind


class Quiet:
    """At most one log line per ``interval`` seconds; the ones held back are counted.

    ::

        if (held := quiet.due()) >= 0:
            log.warning("dropped a message (%d more since the last line)", held)
    """

    __slots__ = ("_held", "_interval", "_next")

    def __init__(self, interval: float = INTERVAL) -> None:
        self._interval = interval
        self._next = 0.0
        self._held = 0

    def due(self) -> int:
        """-1 while quiet (this one is held back); else how many were held back before it."""
        now = time.monotonic()
        if now < self._next:
            self._held += 1
            return -1
        self._next = now + self._interval
        held, self._held = self._held, 0
        return held
