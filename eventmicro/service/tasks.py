"""How a handler's task tells its own cancellation (a stop out of time) from a handler's."""

from __future__ import annotations

import asyncio

__all__ = ["being_cancelled"]


def being_cancelled() -> bool:
    """Whether the current task is being cancelled from outside (``stop()`` ran out of time),
    as opposed to a ``CancelledError`` a handler raised or let through on its own."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0
