"""Recurring handlers (``@svc.schedule``): one schedule in JetStream per handler, its ticks run
by exactly one instance of the service.

::

    stream eventmicro-schedules (allow_msg_schedules)
      eventmicro.cron.<service>.<handler>   the schedule: Nats-Schedule: @every 1m, cron...
            │ the server, on time (it keeps the schedule across restarts)
            ▼
      eventmicro.tick.<service>.<handler>   one message per tick
            │ durable consumer <service>-schedule-<handler>, max_ack_pending=1,
            ▼ shared by the instances
      one instance runs the handler, then +ACK (success or failure: the next tick is the retry)

A tick with newer ticks queued behind it (every instance was down, or the handler overran) is
counted as missed and skipped: only the latest runs, so a backlog never runs in a burst. An
instance killed mid-tick leaves it unacked; it is redelivered after `ACK_WAIT` to another
instance (or skipped as missed when a newer one is already queued).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import inspect
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final, Protocol

from eventmicro._errors import ConfigurationError, EventMicroError
from eventmicro.observability.stats import EndpointStats, error_code
from eventmicro.service.tasks import back_off, being_cancelled
from eventmicro.transport import schedules
from eventmicro.transport.jetstream import Delivery, PullConsumer, Stream, ensure_stream
from eventmicro.wire.names import check_handler_name
from eventmicro.wire.schedules import Tick, tick_of

if TYPE_CHECKING:  # pragma: no cover
    from eventmicro.transport.connection import Connection

__all__ = ["SCHEDULES_STREAM", "ScheduleSpec", "TickRunner", "schedule_spec"]

log = logging.getLogger("eventmicro.schedules")

ACK_WAIT: Final = 10.0  # seconds an unacked tick (its instance killed) waits before redelivery
FETCH_WAIT: Final = 2.0
TICKS_KEPT: Final = 8  # per handler: older ticks nobody took are dropped (they count as missed)
SCHEDULES_STREAM: Final = Stream(
    "eventmicro-schedules",
    subjects=("eventmicro.cron.>", "eventmicro.tick.>"),
    schedules=True,
    max_msgs_per_subject=TICKS_KEPT,
    description="eventmicro: recurring handlers' schedules and their ticks",
)


@dataclass(frozen=True, slots=True)
class ScheduleSpec:
    """What ``@svc.schedule`` recorded: the handler, its name and its ``Nats-Schedule``."""

    name: str
    pattern: str
    function: Callable[[Tick], Coroutine[Any, Any, None]]


def schedule_spec(function: Callable[..., Any], pattern: str, name: str | None) -> ScheduleSpec:
    """Check a scheduled handler when it is decorated: ``async def f(tick: Tick)``, one
    parameter, so a wrong signature fails at import, not at the first tick."""
    label = getattr(function, "__qualname__", repr(function))
    if not inspect.iscoroutinefunction(function):
        raise ConfigurationError(f"scheduled handler {label} must be 'async def f(tick: Tick)'")
    params = list(inspect.signature(function).parameters.values())
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    required = [p for p in params if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    if len(required) != 1 or required[0].kind not in positional:
        raise ConfigurationError(f"scheduled handler {label} takes one argument, the Tick")
    return ScheduleSpec(check_handler_name(name or function.__name__), pattern, function)


class Host(Protocol):
    """The running instance whose task group runs the ticks."""

    @property
    def connection(self) -> Connection: ...
    def spawn(self, work: Coroutine[Any, Any, None]) -> object: ...


class TickRunner:
    """The consuming side of one scheduled handler in one running instance."""

    def __init__(self, host: Host, service: str, spec: ScheduleSpec) -> None:
        self.host = host
        self.spec = spec
        self.name = f"{service}-schedule-{spec.name}"
        self.subject = f"eventmicro.cron.{service}.{spec.name}"
        self.target = f"eventmicro.tick.{service}.{spec.name}"
        self.counts = EndpointStats()  # started, failed, time, missed; metrics kind "schedule"
        self.ran = 0
        self.last_tick = ""
        self.consumer: PullConsumer | None = None
        self._loop: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()  # set: no tick running in this instance
        self._idle.set()

    async def start(self) -> None:
        """Declare the stream, install the schedule (unless it holds already), bind the consumer."""
        self.consumer = await self._declare()
        self._loop = asyncio.create_task(self._fetch_loop(), name=f"ticks {self.name}")

    async def _declare(self) -> PullConsumer:
        connection = self.host.connection
        await ensure_stream(connection, SCHEDULES_STREAM, adopt=True)
        consumer = await PullConsumer.bind(  # before the schedule: its first tick is not missed
            connection,
            name=self.name,
            subject=self.target,
            stream=SCHEDULES_STREAM.name,
            ack_wait=ACK_WAIT,
            max_ack_pending=1,  # one tick at a time across the instances: runs never overlap
            deliver="new",
            description=f"eventmicro schedule {self.spec.pattern}",
        )
        await self._install(connection)
        return consumer

    async def _install(self, connection: Connection) -> None:
        """Store the schedule unless the same one is there (storing it again would restart an
        ``@every`` interval at every deploy). Instances starting together store it once: the
        ``Nats-Msg-Id`` is derived from what they all read."""
        now = await schedules.current(connection, SCHEDULES_STREAM.name, self.subject)
        if now is not None and (now.pattern, now.target) == (self.spec.pattern, self.target):
            return
        seen = now.seq if now is not None else 0
        key = hashlib.sha256(f"{self.subject}\0{self.spec.pattern}\0{seen}".encode()).hexdigest()[:40]
        await schedules.store(connection, self.subject, pattern=self.spec.pattern, target=self.target,
                              message=(b"", {}), msg_id=key)  # fmt: skip
        log.info("schedule %s installed: %s", self.subject, self.spec.pattern)

    async def stop_intake(self) -> None:
        """Take no more ticks; a running one finishes (the host's task group waits for it)."""
        if self._loop is not None:
            self._loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop

    async def close(self) -> None:
        if self.consumer is not None:
            await self.consumer.close()

    async def _fetch_loop(self) -> None:
        pause = 0.0
        while True:
            await self._idle.wait()
            try:
                assert self.consumer is not None
                deliveries = await self.consumer.fetch(1, FETCH_WAIT)
            except Exception as exc:  # away or restarting (or unexpected): ask again later
                pause = await back_off(pause, exc, log, f"schedule {self.name}")
                if pause >= 0.4:  # a few failures in a row: is the consumer still there?
                    await self._recreate_if_lost()
                continue
            pause = 0.0
            for delivery in deliveries:
                await self._take(delivery)

    async def _recreate_if_lost(self) -> None:
        """A stream or consumer lost with a server's store is declared again, schedule included."""
        try:
            if self.consumer is not None and await self.consumer.exists():
                return
            replacement = await self._declare()
        except EventMicroError:
            return  # still away
        log.error("schedule %s: its consumer was gone from the server; declared again", self.name)
        if self.consumer is not None:
            await self.consumer.close()
        self.consumer = replacement

    async def _take(self, delivery: Delivery) -> None:
        if delivery.pending > 0:  # a newer tick is queued: this one is late, skip it
            self.counts.missed += 1
            with contextlib.suppress(EventMicroError):
                await delivery.ack()
            return
        self._idle.clear()
        self.host.spawn(self._run(delivery))

    async def _run(self, delivery: Delivery) -> None:
        """The outcome of one tick: the handler's, counted; +ACK either way, -NAK if cancelled
        (the instance is stopping: another one takes it)."""
        at = delivery.stored or datetime.now(UTC)
        tick = tick_of(delivery.stream_seq, at, self.spec.pattern, delivery.message.headers)
        self.last_tick = at.isoformat()
        self.counts.num_requests += 1
        started = time.perf_counter_ns()
        code: int | None = None  # for metrics: 0 ran, an error code, None cancelled
        try:
            await self._with_heartbeat(delivery, self.spec.function(tick))
            code = 0
        except asyncio.CancelledError:
            with contextlib.suppress(EventMicroError):
                await delivery.nak()
            if being_cancelled():
                raise
        except Exception as exc:
            code = error_code(exc)
            self.counts.num_errors += 1
            self.counts.last_error = type(exc).__name__  # the text may hold secrets: it stays in the log
            log.exception("schedule %s: the handler failed on tick %s", self.name, tick.id)
        finally:
            self._finish(started, code)
        with contextlib.suppress(EventMicroError):
            await delivery.ack()

    def _finish(self, started: int, code: int | None) -> None:
        elapsed = time.perf_counter_ns() - started
        self.counts.processing_time += elapsed
        self.ran += code == 0
        if self.counts.metrics is not None:
            self.counts.metrics.handled(elapsed, code)
        self._idle.set()

    def stats(self) -> dict[str, Any]:
        """This instance's counts (``$SRV.STATS`` data ``schedules``)."""
        c = self.counts
        return {"schedule": self.spec.pattern, "ran": self.ran, "failed": c.num_errors, "missed": c.missed,
                "last_tick": self.last_tick, "last_error": c.last_error}  # fmt: skip

    @staticmethod
    async def _with_heartbeat(delivery: Delivery, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work``, telling the server every `ACK_WAIT`/3 that the tick is in progress, so a
        long run is not redelivered to another instance."""
        task = asyncio.ensure_future(work)
        try:
            while not task.done():
                await asyncio.wait({task}, timeout=ACK_WAIT / 3)
                if not task.done():
                    with contextlib.suppress(EventMicroError):
                        await delivery.in_progress()
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        task.result()
