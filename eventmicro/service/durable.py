"""Durable event handlers on JetStream: fetch what can be started, ack after success, redeliver
with backoff, dead-letter on the last failure.

Delivery policy of one durable handler::

    handler returns                      +ACK
    error in terminal (or undecodable)   dead letter, then +ACK      (+TERM without dead letters)
    other error, attempts left           -NAK with the backoff delay for this attempt
    other error, last attempt            dead letter, then +ACK      (+TERM without dead letters)
    delivered more than max_deliver      dead letter at once, handler not run (a crash loop or a
                                         dead letter that could not be stored last time)
    handler still running                +WPI every ack_wait/3, so it is not redelivered meanwhile

With ``ordered_by=`` the events of one key wait in a lane (`eventmicro.service.lanes`), kept
in progress (+WPI) like running ones, and a failure with attempts left is retried in place
after its backoff (+WPI meanwhile, no -NAK), so nothing of its key overtakes it; other keys go
on. Stopping, what waits (and a failed event waiting for its retry) is NAKed, in order.

The server-side consumer has no delivery limit: eventmicro counts deliveries, so a message is
never dropped without a dead letter. A dead letter that cannot be stored (the dead-letter stream
unreachable or refusing) leaves the message unacked: it is NAKed with a delay that doubles per
extra delivery (at least 1 s, at most 60 s or the last backoff), logged at most once per
``LOG_EVERY`` seconds per handler, and dead-lettered on a later delivery.

Dead letters (their shapes, the stream and the API to list and replay them) are in
`eventmicro.service.deadletters`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final, Protocol

from eventmicro._errors import EventMicroError
from eventmicro.observability.instance import Instance
from eventmicro.observability.logs import HANDLING
from eventmicro.service.catchup import CatchUp
from eventmicro.service.deadletters import store_dead_letter
from eventmicro.service.delivery import Durable
from eventmicro.service.lanes import LANE_MSGS, Lanes, Prepared, size_of
from eventmicro.service.tasks import back_off, being_cancelled
from eventmicro.transport.jetstream import Delivery, PullConsumer, message_id
from eventmicro.transport.kv import BucketConfig, Store
from eventmicro.wire import binding
from eventmicro.wire.names import consumer_name
from eventmicro.wire.service_errors import ServiceError

if TYPE_CHECKING:  # pragma: no cover
    from eventmicro.observability.stats import EndpointStats
    from eventmicro.service.handlers import HandlerSpec
    from eventmicro.service.middleware import Invoke
    from eventmicro.transport.connection import Message
    from eventmicro.wire.event import Event

__all__ = ["DurableIntake", "Host", "handled_bucket"]

log = logging.getLogger("eventmicro.durable")

FETCH_WAIT: Final = 2.0  # seconds a fetch waits for messages before asking again
LOG_EVERY: Final = 30.0  # seconds between two "dead letter not stored" lines of one handler
UNSTORED_KEPT: Final = 1024  # failures of messages whose dead letter failed, kept for the next try
# seconds before what a stopping ordered handler gives back is redelivered: its last pull
# request may stay open on the server for FETCH_WAIT, and would take them to nobody
HANDBACK_DELAY: Final = FETCH_WAIT + 1.0


class Host(Instance, Protocol):
    """The running instance a durable intake works for: it runs the intake's deliveries in its
    task group and decodes and handles each event (tracing, middleware, context included)."""

    def spawn(self, work: Coroutine[Any, Any, None]) -> object: ...
    def handle_event(
        self,
        spec: HandlerSpec,
        invoke: Invoke,
        msg: Message,
        received: float,
        *,
        event: Event | None = None,
        prepared: Prepared | None = None,
    ) -> Coroutine[Any, Any, None]: ...
    def ordering_key(
        self, spec: HandlerSpec, msg: Message, event: Event | None = None
    ) -> tuple[str | None, Prepared | None]: ...


class DurableIntake:
    """The consuming side of one durable handler in one running instance."""

    def __init__(self, running: Host, spec: HandlerSpec, invoke: Invoke, durability: Durable) -> None:
        self.running = running
        self.spec = spec
        self.invoke = invoke
        self.durability = durability
        self.consumer: PullConsumer | None = None
        self.reachable = True  # the last fetch (or health probe) reached the consumer
        self.inflight: set[Delivery] = set()
        self._room = asyncio.Event()  # set: fetch more; cleared at `concurrency` in flight and
        self._room.set()  # set again at half of it, so a fetch asks for a batch, not for one
        self._refill_at = spec.concurrency // 2
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self._seen: Store[str] | None = None  # the idempotency guard's bucket
        self.duplicates_skipped = 0
        self._handling: dict[str, _Claim] = {}  # guarded events in flight, by key
        self._not_stored_log = _LogEvery(LOG_EVERY)
        self._unstored: dict[
            int, tuple[int, str]
        ] = {}  # stream seq -> the failure of a dead letter not stored
        self._halt = asyncio.Event()  # set when the instance stops: retries in place give up
        self._catching_up: CatchUp[Delivery] | None = None  # new deliveries held at the start
        self.lanes: Lanes[tuple[Delivery, Prepared | None]] | None = None
        if spec.ordered_by is not None:
            self.lanes = Lanes(self._serve_queued, running.spawn, spec.concurrency, self._refill)
            running.event_stats[spec.name].lanes = self.lanes

    @property
    def name(self) -> str:
        return consumer_name(self.running.service.name, self.spec.name)

    async def start(self) -> None:
        if self.durability.idempotent_ttl is not None:
            self._seen = await Store.open(
                self.running.connection,
                handled_bucket(self.running.service.name, self.spec.name),
                str,
                config=BucketConfig(
                    ttl=self.durability.idempotent_ttl, description="eventmicro: events handled"
                ),
            )
        self.consumer = await self._bind()
        self._tasks = [
            asyncio.create_task(self._fetch_loop(self.consumer), name=f"fetch {self.name}"),
            asyncio.create_task(self._heartbeat(), name=f"in-progress {self.name}"),
        ]

    async def _bind(self) -> PullConsumer:
        return await PullConsumer.bind(
            self.running.connection,
            name=self.name,
            subject=self.spec.subject,
            stream=self.durability.stream,
            ack_wait=self.durability.ack_wait,
            deliver=self.durability.deliver,
            description=f"eventmicro {self.running.service.name}.{self.spec.name}",
        )

    async def _recreate_if_lost(self, consumer: PullConsumer) -> PullConsumer:
        """After failed fetches: a consumer that is gone from the server (deleted, or lost with a
        server's store) is created again from the declared start, so nothing stalls for good."""
        try:
            if await consumer.exists():
                return consumer
            replacement = await self._bind()
        except EventMicroError:
            return consumer  # the server is still away: keep trying
        log.error(
            "consumer %s was gone from the server; created again (deliver=%r): events it had "
            "delivered may be delivered again",
            self.name,
            self.durability.deliver,
        )
        await consumer.close()
        self.consumer = replacement
        return replacement

    async def stop_intake(self) -> None:
        """Stop fetching; what is in flight keeps running (the task group waits for it)."""
        self._stopping = True  # the loop ends even if a library swallowed the cancellation
        self._halt.set()
        await _cancel_bounded(self._tasks[:1], self.name)

    async def close(self) -> None:
        """After in-flight work is done: stop the heartbeat and unbind (the consumer stays)."""
        self._stopping = True
        await _cancel_bounded(self._tasks, self.name)
        if self.consumer is not None:
            await self.consumer.close()

    async def _fetch_loop(self, consumer: PullConsumer) -> None:
        if self.lanes is not None:
            self._catching_up = await self._catch_up(consumer)
        pause = 0.0
        while not self._stopping:
            await self._room.wait()
            wanted = self._free()
            if wanted <= 0:
                self._room.clear()
                continue
            try:
                deliveries = await consumer.fetch(wanted, FETCH_WAIT)
            except EventMicroError as exc:  # the server is away or restarting: ask again later
                self.reachable = False
                pause = await back_off(pause, exc, log, f"consumer {self.name}")
                if pause >= 0.4:  # a few failures in a row: is the consumer still there?
                    consumer = await self._recreate_if_lost(consumer)
                continue
            except Exception as exc:  # never let the intake die silently
                pause = await back_off(pause, exc, log, f"consumer {self.name}")
                continue
            pause = 0.0
            self.reachable = True
            self.inflight.update(deliveries)
            if self.lanes is not None:
                await self._take(self.lanes, deliveries)
            else:
                for delivery in deliveries:
                    self.running.spawn(self._serve(delivery))
            if self._free() <= 0:
                self._room.clear()

    async def _catch_up(self, consumer: PullConsumer) -> CatchUp[Delivery] | None:
        """At an ordered handler's start: what an earlier instance left unacked, to await
        before newer events (`eventmicro.service.catchup`); ``None`` when nothing is."""
        try:
            pending = await consumer.ack_pending()
        except EventMicroError:
            return None  # the server is away: nothing to learn now
        if not pending:
            return None
        wait = self.durability.ack_wait + 0.5  # the server's redelivery timer may fire a little late
        log.info("consumer %s: %d event(s) delivered before and not acked; newer ones wait for them "
                 "(%gs at most), so each key keeps its order", self.name, pending, wait)  # fmt: skip
        return CatchUp(pending, wait)

    async def _take(self, lanes: Lanes[tuple[Delivery, Prepared | None]], deliveries: list[Delivery]) -> None:
        """Fetched deliveries of an ordered handler into their lanes, in order (new ones held
        while an earlier instance's unacked ones may still come back)."""
        catching_up = self._catching_up
        for delivery in deliveries:
            if catching_up is None or not catching_up.hold(delivery, delivery.num_delivered > 1):
                await self._enter_lane(lanes, delivery)
        if catching_up is not None and (catching_up.over() or len(catching_up.held) >= LANE_MSGS):
            self._catching_up = None
            for delivery in catching_up.held:
                await self._enter_lane(lanes, delivery)

    def _free(self) -> int:
        """How many deliveries to fetch: free slots (events waiting behind their key take none),
        at most the room left in the lanes."""
        lanes = self.lanes
        if lanes is None:
            return self.spec.concurrency - len(self.inflight)
        held = 0 if self._catching_up is None else len(self._catching_up.held)
        if lanes.full():
            return 0
        return min(self.spec.concurrency - lanes.active, LANE_MSGS - lanes.waiting - held)

    def _refill(self) -> None:
        """Fetch again once half the slots are free (a batch, not one at a time); with lanes,
        a slot is a lane: what waits behind its key takes none."""
        lanes = self.lanes
        if lanes is None:
            running = len(self.inflight)
        elif lanes.full():
            return
        else:
            running = lanes.active
        if running <= self._refill_at:
            self._room.set()

    async def _enter_lane(self, lanes: Lanes[tuple[Delivery, Prepared | None]], delivery: Delivery) -> None:
        """An ``ordered_by=`` delivery, in the fetch loop (so in stream order): into the lane of
        its key, served after the earlier ones."""
        key, prepared = self.running.ordering_key(self.spec, delivery.message)
        await lanes.put(key, (delivery, prepared), size_of(delivery.message))

    async def _serve_queued(self, item: tuple[Delivery, Prepared | None]) -> None:
        delivery, prepared = item
        if self._halt.is_set():  # stopping: back to the stream, in order, for the next instance
            with contextlib.suppress(EventMicroError):
                await delivery.nak(HANDBACK_DELAY)
            self.inflight.discard(delivery)
            return
        await self._serve(delivery, prepared)

    async def _heartbeat(self) -> None:
        interval = max(0.05, self.durability.ack_wait / 3)
        while True:
            await asyncio.sleep(interval)
            for delivery in list(self.inflight):
                with contextlib.suppress(EventMicroError):
                    await delivery.in_progress()

    async def _serve(self, delivery: Delivery, prepared: Prepared | None = None) -> None:
        """The error boundary of one delivery: exactly one of ack, nak, dead letter (+ack), term."""
        stats = self.running.event_stats[self.spec.name]
        stats.num_requests += 1
        HANDLING.set((self.running, self.spec, delivery.message))  # log context (this task's own)
        started = time.perf_counter_ns()
        code: int | None = None  # the outcome for metrics: 0 ok, an error code, None none
        try:
            code = await self._settle(delivery, stats, prepared)
        except asyncio.CancelledError:
            raise  # stop() ran out of time: not acked, so the server redelivers it
        except Exception:  # the ack itself failed (connection gone): the server redelivers
            log.exception("consumer %s: could not settle message %d", self.name, delivery.stream_seq)
        finally:
            elapsed = time.perf_counter_ns() - started
            stats.processing_time += elapsed
            if stats.metrics is not None:
                stats.metrics.handled(elapsed, code)
            self.inflight.discard(delivery)
            if self.lanes is None:  # with lanes, the lane's end or next item tells
                self._refill()

    async def _settle(
        self, delivery: Delivery, stats: EndpointStats, prepared: Prepared | None
    ) -> int | None:
        """Settle one delivery; its outcome: 0 handled, an error code, None skipped."""
        policy = self.durability
        if delivery.num_delivered > 1 and stats.metrics is not None:
            stats.metrics.redeliveries += 1
        if delivery.num_delivered > policy.max_deliver:  # the failure is known when this instance saw it
            code, reason = self._unstored.get(
                delivery.stream_seq, (500, f"delivered {delivery.num_delivered} times without success")
            )
            _count(stats, code, reason)
            await self._give_up(delivery, code, reason)
            return code
        event = None if prepared is None else prepared[1]
        seen_key, event = _identity(delivery, event) if self._seen is not None else (None, event)
        if seen_key is None:
            return await self._attempt(delivery, stats, None, event, prepared)
        # copies of one event delivered together run one after the other, so the second sees
        # that the first was handled (instances still race: the guard is check-then-record)
        claim = self._handling.setdefault(seen_key, _Claim())
        claim.users += 1
        try:
            async with claim.lock:
                if await self._already_handled(seen_key):
                    self.duplicates_skipped += 1
                    log.info("consumer %s: message %d is an event already handled; skipped",
                             self.name, delivery.stream_seq)  # fmt: skip
                    await delivery.ack()
                    return None
                return await self._attempt(delivery, stats, seen_key, event, prepared)
        finally:
            claim.users -= 1
            if not claim.users:
                del self._handling[seen_key]

    async def _attempt(
        self,
        delivery: Delivery,
        stats: EndpointStats,
        seen_key: str | None,
        event: Event | None,
        prepared: Prepared | None,
    ) -> int:
        attempt = delivery.num_delivered  # an ordered handler's retries in place add to it
        while True:
            try:
                await self.running.handle_event(
                    self.spec, self.invoke, delivery.message, time.monotonic(), event=event, prepared=prepared
                )
                break
            except (Exception, asyncio.CancelledError) as exc:
                if isinstance(exc, asyncio.CancelledError) and being_cancelled():
                    raise  # stop() ran out of time: not acked, so the server redelivers it
                # a CancelledError the handler raised itself is a failure like any other
                code, reason = _failure(exc)
                _count(stats, code, reason)
                if not await self._after_failure(delivery, exc, attempt, code, reason):
                    return code
                attempt += 1
                if stats.metrics is not None:
                    stats.metrics.redeliveries += 1
        if seen_key is not None:
            await self._remember(seen_key)
        await delivery.ack()
        return 0

    async def _after_failure(
        self, delivery: Delivery, exc: BaseException, attempt: int, code: int, reason: str
    ) -> bool:
        """Settle a failed attempt: dead letter, or NAK with the backoff; ``True``: an ordered
        handler retries it in place now (its backoff waited, the message kept in progress)."""
        policy = self.durability
        if policy.is_terminal(exc) or attempt >= policy.max_deliver:
            if not isinstance(exc, EventMicroError | ServiceError):
                log.error("consumer %s: message %d failed: %s", self.name, delivery.stream_seq, reason,
                          exc_info=exc)  # fmt: skip
            await self._give_up(delivery, code, reason, attempt)
            return False
        delay = policy.delay(attempt)
        log.warning(
            "consumer %s: message %d failed on attempt %d of %d (%s); again in %gs",
            self.name, delivery.stream_seq, attempt, policy.max_deliver, reason, delay,
            exc_info=exc if not isinstance(exc, EventMicroError | ServiceError) else None,
        )  # fmt: skip
        if self.lanes is None:
            await delivery.nak(delay)
            return False
        with contextlib.suppress(TimeoutError):  # its key waits; the heartbeat keeps it in progress
            async with asyncio.timeout(delay):
                await self._halt.wait()
        if self._halt.is_set():  # stopping: back to the stream, before what waits behind it
            await delivery.nak(HANDBACK_DELAY)
            return False
        return True

    async def _already_handled(self, key: str) -> bool:
        if self._seen is None:  # pragma: no cover - checked by the caller
            return False
        try:
            return await self._seen.get(key) is not None
        except EventMicroError as exc:  # the guard is unavailable: handle (at least once) rather than stall
            log.warning("consumer %s: idempotency guard unavailable (%s)", self.name, exc.message)
            return False

    async def _remember(self, key: str) -> None:
        if self._seen is None:  # pragma: no cover - checked by the caller
            return
        try:
            await self._seen.put(key, datetime.now(UTC).isoformat())
        except EventMicroError as exc:
            log.warning("consumer %s: could not record a handled event (%s); a redelivery would run again",
                        self.name, exc.message)  # fmt: skip

    async def _give_up(self, delivery: Delivery, code: int, reason: str, attempts: int | None = None) -> None:
        if not self.durability.dead_letter:
            log.error("consumer %s: message %d terminated: %s", self.name, delivery.stream_seq, reason)
            await delivery.term()
            return
        service = self.running.service.name
        try:
            await store_dead_letter(
                self.running.connection,
                service,
                self.spec.name,
                delivery,
                code=code,
                reason=reason,
                attempts=attempts,
            )
        except EventMicroError as exc:  # not stored: keep the message, try again on a later delivery
            if len(self._unstored) >= UNSTORED_KEPT:
                del self._unstored[next(iter(self._unstored))]
            self._unstored[delivery.stream_seq] = (code, reason[:2000])  # a dead letter keeps 1,000
            delay = self.durability.dead_letter_retry(delivery.num_delivered)
            held_back = self._not_stored_log.due()
            if held_back is not None:
                since = f" ({held_back} more such failures since the last report)" if held_back else ""
                log.error("consumer %s: dead letter for message %d not stored (%s); redelivered in %gs%s",
                          self.name, delivery.stream_seq, exc.message, delay, since)  # fmt: skip
            await delivery.nak(delay)
            return
        self._unstored.pop(delivery.stream_seq, None)
        log.warning("consumer %s: message %d dead-lettered after %d attempts: %s",
                    self.name, delivery.stream_seq, attempts or delivery.num_delivered, reason)  # fmt: skip
        metrics = self.running.event_stats[self.spec.name].metrics
        if metrics is not None:
            metrics.dead_letters += 1
        await delivery.ack()


class _LogEvery:
    """At most one log line per ``interval`` seconds; counts the lines held back meanwhile."""

    __slots__ = ("_held", "_next", "interval")

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._next = 0.0
        self._held = 0

    def due(self) -> int | None:
        """``None``: hold this line back; else how many were held back since the last one."""
        now = time.monotonic()
        if now < self._next:
            self._held += 1
            return None
        self._next = now + self.interval
        held, self._held = self._held, 0
        return held


@dataclass(slots=True)
class _Claim:
    """Serializes the deliveries of one guarded event within an instance."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0


def handled_bucket(service: str, handler: str) -> str:
    """The KV bucket of a handler's idempotency guard (keys: hashes of (source, id))."""
    return f"handled-{service}-{handler}"


def _identity(delivery: Delivery, event: Event | None) -> tuple[str | None, Event | None]:
    """The guard's key of a delivered CloudEvent (a hash of its source and id, either mode),
    and the event, decoded once for the guard and the handler (unless ``event`` already is)."""
    if event is None:
        try:
            event = binding.from_nats(delivery.message, None)
        except EventMicroError:
            return None, None  # not a CloudEvent: the handler path reports it
    return message_id(event.get_source(), event.get_id()), event


def _failure(exc: BaseException) -> tuple[int, str]:
    """Code and text of a failure, for stats and dead letters: messages of eventmicro's own
    errors, only the type name of anything else (its text may carry data)."""
    if isinstance(exc, ServiceError):
        return exc.instance_code, exc.detail
    if isinstance(exc, EventMicroError):
        return exc.code, exc.message
    return 500, type(exc).__name__


def _count(stats: EndpointStats, code: int, reason: str) -> None:
    stats.num_errors += 1
    stats.last_error = f"{code}:{reason}"


async def _cancel_bounded(tasks: list[asyncio.Task[None]], name: str) -> None:
    """Cancel ``tasks`` and wait for them, at most `FETCH_WAIT` + 1 s: nats-py can swallow a
    cancellation (its flush does), and a stop must end whatever the connection's state."""
    for task in tasks:
        task.cancel()
    if not tasks:
        return
    done, pending = await asyncio.wait(tasks, timeout=FETCH_WAIT + 1.0)
    for task in done:
        if not task.cancelled() and task.exception() is not None:
            log.error("consumer %s: %s ended with %r", name, task.get_name(), type(task.exception()).__name__)
    if pending:
        log.warning("consumer %s: %d task(s) did not stop in time; left behind", name, len(pending))
