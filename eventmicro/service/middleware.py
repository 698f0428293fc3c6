"""Middleware: one shape, ``Callable[[Invoke], Invoke]``, composed once when a service starts.

``Invoke`` is ``async (message, ctx) -> result``. The first middleware given is the outermost;
the error boundary (error replies, logs) sits outside them all::

    error boundary -> middleware[0] -> middleware[1] -> ... -> handler
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from eventmicro.service.context import Context

__all__ = ["Invoke", "Middleware", "compose", "logging_middleware", "timing_middleware"]

Invoke = Callable[[Any, Context], Awaitable[Any]]
Middleware = Callable[[Invoke], Invoke]


def compose(invoke: Invoke, middleware: Sequence[Middleware]) -> Invoke:
    """Wrap ``invoke`` so that ``middleware[0]`` runs first."""
    for wrap in reversed(middleware):
        invoke = wrap(invoke)
    return invoke


def logging_middleware(logger: logging.Logger | None = None, *, level: int = logging.INFO) -> Middleware:
    """Log every handled message: service, handler, event id and type, duration, outcome.

    The fields are also attached to the record (``record.eventmicro``) for JSON log handlers.
    Payloads are never logged.
    """
    log = logger or logging.getLogger("eventmicro.handled")

    def wrap(invoke: Invoke) -> Invoke:
        async def logged(message: Any, ctx: Context) -> Any:
            started = time.perf_counter()
            outcome = "ok"
            try:
                return await invoke(message, ctx)
            except BaseException as exc:
                outcome = type(exc).__name__
                raise
            finally:
                fields = {
                    "service": ctx.service.name,
                    "handler": ctx.handler,
                    "event_id": ctx.event.get_id(),
                    "event_type": ctx.event.get_type(),
                    "correlation_id": ctx.correlation_id,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 3),
                    "outcome": outcome,
                }
                log.log(
                    level,
                    "%(service)s.%(handler)s %(event_type)s %(event_id)s %(outcome)s in %(duration_ms)sms",
                    fields,
                    extra={"eventmicro": fields},
                )

        return logged

    return wrap


def timing_middleware(record: Callable[[str, float], None]) -> Middleware:
    """Report each handler's duration in seconds to ``record(handler_name, seconds)``."""

    def wrap(invoke: Invoke) -> Invoke:
        async def timed(message: Any, ctx: Context) -> Any:
            started = time.perf_counter()
            try:
                return await invoke(message, ctx)
            finally:
                record(ctx.handler, time.perf_counter() - started)

        return timed

    return wrap
