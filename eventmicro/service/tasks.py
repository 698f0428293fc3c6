"""How a handler's task tells its own cancellation (a stop out of time) from a handler's, and
how a fetch loop waits after a failure."""

from __future__ import annotations

import asyncio
import logging

from eventmicro._errors import EventMicroError

__all__ = ["back_off", "being_cancelled"]


def being_cancelled() -> bool:
    """Whether the current task is being cancelled from outside (``stop()`` ran out of time),
    as opposed to a ``CancelledError`` a handler raised or let through on its own."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


async def back_off(pause: float, exc: Exception, log: logging.Logger, what: str) -> float:
    """After a failed fetch: log why (an unexpected error with its traceback, so a loop never
    dies or spins silently), wait, and return the wait, doubling from 0.1 s up to 5 s."""
    pause = min(5.0, pause * 2 or 0.1)
    if isinstance(exc, EventMicroError):  # the server is away or restarting
        log.warning("%s: fetch failed (%s); again in %.1fs", what, exc.message, pause)
    else:
        log.exception("%s: fetch failed; again in %.1fs", what, pause)
    await asyncio.sleep(pause)
    return pause
