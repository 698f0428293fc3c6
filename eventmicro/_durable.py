"""Durable event handlers on JetStream: fetch what can be started, ack after success, redeliver
with backoff, dead-letter on the last failure — and the dead-letter API.

Delivery policy of one durable handler::

    handler returns                      +ACK
    error in terminal (or undecodable)   dead letter, then +ACK      (+TERM without dead letters)
    other error, attempts left           -NAK with the backoff delay for this attempt
    other error, last attempt            dead letter, then +ACK      (+TERM without dead letters)
    delivered more than max_deliver      dead letter at once, handler not run (a crash loop or a
                                         dead letter that could not be stored last time)
    handler still running                +WPI every ack_wait/3, so it is not redelivered meanwhile

The server-side consumer has no delivery limit: eventmicro counts deliveries, so a message is
never dropped without a dead letter. A dead letter keeps the original headers and body and adds
the failure as CloudEvents extensions (``dlqcode``, ``dlqreason``, ``dlqdeliveries``,
``dlqsubject``, ``dlqstream``, ``dlqsequence``, ``dlqservice``, ``dlqhandler``, ``dlqtime``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final, Literal

from eventmicro import cloudevents_nats as binding
from eventmicro._adapter import Connection
from eventmicro._errors import EnvelopeError, EventMicroError, PayloadError, PayloadTooLarge
from eventmicro._event import Event
from eventmicro._headervalues import decode_header_value, encode_header_value
from eventmicro._jetstream import (
    Delivery,
    PullConsumer,
    Stored,
    StoredMessage,
    Stream,
    delete_message,
    get_message,
    message_id,
    publish,
    purge,
    stream_messages,
)
from eventmicro._logs import HANDLING
from eventmicro._names import DEAD_LETTER_PREFIX, DEAD_LETTER_STREAM, consumer_name, dead_letter_subject
from eventmicro._service_errors import BadRequest, ServiceError
from eventmicro._store import BucketConfig, Store

if TYPE_CHECKING:  # pragma: no cover
    from eventmicro._handlers import HandlerSpec
    from eventmicro._middleware import Invoke
    from eventmicro._running import EndpointStats, Running

__all__ = ["DeadLetter", "DeadLetters", "Durability", "DurableIntake", "Replay", "dead_letter_stream"]

log = logging.getLogger("eventmicro.durable")

FETCH_WAIT: Final = 2.0  # seconds a fetch waits for messages before asking again
_FAILURE_FIELDS: Final = (
    "dlqcode",
    "dlqreason",
    "dlqdeliveries",
    "dlqsubject",
    "dlqstream",
    "dlqsequence",
    "dlqservice",
    "dlqhandler",
    "dlqtime",
    "dlqbodydropped",
)
_PLAIN_PREFIX: Final = "eventmicro-"  # failure headers on a dead letter that is not a binary CloudEvent


def dead_letter_stream(replicas: int = 1) -> Stream:
    """The stream that keeps dead letters (all services), until replayed or purged."""
    return Stream(
        DEAD_LETTER_STREAM,
        [f"{DEAD_LETTER_PREFIX}.>"],
        replicas=replicas,
        description="eventmicro dead letters",
    )


@dataclass(frozen=True, slots=True)
class Durability:
    """How a durable handler consumes: see the module docstring for the whole policy."""

    stream: str | None = None
    max_deliver: int = 5
    backoff: tuple[float, ...] = (1.0, 5.0, 30.0)
    terminal: tuple[type[BaseException], ...] = ()
    dead_letter: bool = True
    ack_wait: float = 30.0
    deliver: Literal["all", "new", "last"] | int | datetime = "all"
    idempotent_ttl: float | None = None  # seconds an event's (source, id) is remembered; None: no guard

    def delay(self, num_delivered: int) -> float:
        """The NAK delay after failed delivery number ``num_delivered`` (1-based)."""
        if not self.backoff:
            return 0.0
        return self.backoff[min(num_delivered, len(self.backoff)) - 1]

    def is_terminal(self, error: BaseException) -> bool:
        if isinstance(error, EnvelopeError | PayloadError | BadRequest):
            return True  # it will not decode or validate on the next attempt either
        return isinstance(error, self.terminal)


@dataclass(frozen=True, slots=True)
class Replay:
    """An ordered consumer per instance: the stream's events on the subject, in order, from
    ``deliver`` — to rebuild a projection. Nothing is acked; a failing handler is logged and
    counted, and the next event follows."""

    stream: str | None = None
    deliver: Literal["all", "new", "last"] | int | datetime = "all"


class DurableIntake:
    """The consuming side of one durable handler in one running instance."""

    def __init__(self, running: Running, spec: HandlerSpec, invoke: Invoke, durability: Durability) -> None:
        self.running = running
        self.spec = spec
        self.invoke = invoke
        self.durability = durability
        self.consumer: PullConsumer | None = None
        self.reachable = True  # the last fetch (or health probe) reached the consumer
        self.inflight: set[Delivery] = set()
        self._room = asyncio.Event()
        self._room.set()
        self._tasks: list[asyncio.Task[None]] = []
        self._seen: Store[str] | None = None  # the idempotency guard's bucket
        self.duplicates_skipped = 0
        self._handling: dict[str, _Claim] = {}  # guarded events in flight, by key

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
        for task in self._tasks[:1]:
            task.cancel()
        for task in self._tasks[:1]:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def close(self) -> None:
        """After in-flight work is done: stop the heartbeat and unbind (the consumer stays)."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.consumer is not None:
            await self.consumer.close()

    async def _fetch_loop(self, consumer: PullConsumer) -> None:
        pause = 0.0
        while True:
            await self._room.wait()
            try:
                deliveries = await consumer.fetch(self.spec.concurrency - len(self.inflight), FETCH_WAIT)
            except EventMicroError as exc:  # the server is away or restarting: ask again later
                self.reachable = False
                pause = min(5.0, pause * 2 or 0.1)
                log.warning("consumer %s: fetch failed (%s); again in %.1fs", self.name, exc.message, pause)
                await asyncio.sleep(pause)
                if pause >= 0.4:  # a few failures in a row: is the consumer still there?
                    consumer = await self._recreate_if_lost(consumer)
                continue
            except Exception:  # never let the intake die silently
                pause = min(5.0, pause * 2 or 0.1)
                log.exception("consumer %s: fetch failed; again in %.1fs", self.name, pause)
                await asyncio.sleep(pause)
                continue
            pause = 0.0
            self.reachable = True
            for delivery in deliveries:
                self.inflight.add(delivery)
                if len(self.inflight) >= self.spec.concurrency:
                    self._room.clear()
                self.running._group.create_task(self._serve(delivery))

    async def _heartbeat(self) -> None:
        interval = max(0.05, self.durability.ack_wait / 3)
        while True:
            await asyncio.sleep(interval)
            for delivery in list(self.inflight):
                with contextlib.suppress(EventMicroError):
                    await delivery.in_progress()

    async def _serve(self, delivery: Delivery) -> None:
        """The error boundary of one delivery: exactly one of ack, nak, dead letter (+ack), term."""
        stats = self.running.event_stats[self.spec.name]
        stats.num_requests += 1
        HANDLING.set((self.running, self.spec, delivery.message))  # log context (this task's own)
        started = time.perf_counter_ns()
        code: int | None = None  # the outcome for metrics: 0 ok, an error code, None none
        try:
            code = await self._settle(delivery, stats)
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
            self._room.set()

    async def _settle(self, delivery: Delivery, stats: EndpointStats) -> int | None:
        """Settle one delivery; its outcome: 0 handled, an error code, None skipped."""
        policy = self.durability
        if delivery.num_delivered > 1 and stats.metrics is not None:
            stats.metrics.redeliveries += 1
        if delivery.num_delivered > policy.max_deliver:
            _count(stats, 500, "delivered too often")
            await self._give_up(delivery, 500, f"delivered {delivery.num_delivered} times without success")
            return 500
        seen_key = _identity(delivery) if self._seen is not None else None
        if seen_key is None:
            return await self._attempt(delivery, stats, None)
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
                return await self._attempt(delivery, stats, seen_key)
        finally:
            claim.users -= 1
            if not claim.users:
                del self._handling[seen_key]

    async def _attempt(self, delivery: Delivery, stats: EndpointStats, seen_key: str | None) -> int:
        policy = self.durability
        try:
            await self.running._handle_event(self.spec, self.invoke, delivery.message, time.monotonic())
        except (Exception, asyncio.CancelledError) as exc:
            if isinstance(exc, asyncio.CancelledError) and _being_cancelled():
                raise  # stop() ran out of time: not acked, so the server redelivers it
            # a CancelledError the handler raised itself is a failure like any other
            code, reason = _failure(exc)
            _count(stats, code, reason)
            if policy.is_terminal(exc) or delivery.num_delivered >= policy.max_deliver:
                if not isinstance(exc, EventMicroError | ServiceError):
                    log.error("consumer %s: message %d failed: %s", self.name, delivery.stream_seq, reason,
                              exc_info=exc)  # fmt: skip
                await self._give_up(delivery, code, reason)
            else:
                delay = policy.delay(delivery.num_delivered)
                log.warning(
                    "consumer %s: message %d failed on attempt %d of %d (%s); again in %gs",
                    self.name, delivery.stream_seq, delivery.num_delivered, policy.max_deliver, reason, delay,
                    exc_info=exc if not isinstance(exc, EventMicroError | ServiceError) else None,
                )  # fmt: skip
                await delivery.nak(delay)
            return code
        if seen_key is not None:
            await self._remember(seen_key)
        await delivery.ack()
        return 0

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

    async def _give_up(self, delivery: Delivery, code: int, reason: str) -> None:
        if not self.durability.dead_letter:
            log.error("consumer %s: message %d terminated: %s", self.name, delivery.stream_seq, reason)
            await delivery.term()
            return
        service = self.running.service.name
        try:
            await store_dead_letter(
                self.running.connection, service, self.spec.name, delivery, code=code, reason=reason
            )
        except EventMicroError as exc:  # not stored: keep the message, try again on its next delivery
            log.error("consumer %s: dead letter for message %d not stored (%s); it will be redelivered",
                      self.name, delivery.stream_seq, exc.message)  # fmt: skip
            await delivery.nak(self.durability.delay(len(self.durability.backoff) or 1) or 1.0)
            return
        log.warning("consumer %s: message %d dead-lettered after %d deliveries: %s",
                    self.name, delivery.stream_seq, delivery.num_delivered, reason)  # fmt: skip
        metrics = self.running.event_stats[self.spec.name].metrics
        if metrics is not None:
            metrics.dead_letters += 1
        await delivery.ack()


@dataclass(slots=True)
class _Claim:
    """Serializes the deliveries of one guarded event within an instance."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0


def _being_cancelled() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def handled_bucket(service: str, handler: str) -> str:
    """The KV bucket of a handler's idempotency guard (keys: hashes of (source, id))."""
    return f"handled-{service}-{handler}"


def _identity(delivery: Delivery) -> str | None:
    """The guard's key of a delivered CloudEvent: a hash of its source and id (either mode)."""
    try:
        event = binding.from_nats(delivery.message, None)
    except EventMicroError:
        return None  # not a CloudEvent: the handler path reports it
    return message_id(event.get_source(), event.get_id())


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


async def store_dead_letter(
    connection: Connection, service: str, handler: str, delivery: Delivery, *, code: int, reason: str
) -> Stored:
    """Publish ``delivery`` with its failure to the dead-letter stream (deduplicated per message)."""
    message = delivery.message
    headers = {k: v for k, v in (message.headers or {}).items() if not k.lower().startswith("nats-")}
    binary = any(k.lower() == "ce-specversion" for k in headers)
    prefix = "ce-" if binary else _PLAIN_PREFIX
    failure: dict[str, object] = {
        "dlqcode": code,
        "dlqreason": reason or "unknown",
        "dlqdeliveries": delivery.num_delivered,
        "dlqsubject": message.subject,
        "dlqstream": delivery.stream,
        "dlqsequence": delivery.stream_seq,
        "dlqservice": service,
        "dlqhandler": handler,
        "dlqtime": datetime.now(UTC),
    }
    for name, value in failure.items():
        headers[prefix + name] = encode_header_value(name, value)
    subject = dead_letter_subject(service, handler)
    msg_id = f"dlq-{delivery.stream}-{delivery.stream_seq}-{delivery.consumer}"
    try:
        return await publish(connection, subject, message.data, headers, msg_id=msg_id)
    except PayloadTooLarge:  # the failure headers pushed it over max_payload: keep the record,
        # without the body; `DeadLetters.replay` takes the body from the original stream
        log.error("dead letter of %s message %d stored without its body (too large with the failure)",
                  delivery.stream, delivery.stream_seq)  # fmt: skip
        headers[prefix + "dlqbodydropped"] = "true"
        return await publish(connection, subject, b"", headers, msg_id=msg_id)


# --- the dead-letter API --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One dead letter: the original message and why it was given up on."""

    seq: int  # in the dead-letter stream
    service: str
    handler: str
    code: int
    reason: str
    deliveries: int
    subject: str  # where the message was originally published
    stream: str
    stream_seq: int
    time: datetime | None
    headers: Mapping[str, str]  # the original headers (without the failure)
    data: bytes
    body_dropped: bool = False  # too large to store with the failure: the original stream has it

    @property
    def event_id(self) -> str | None:
        return _header(self.headers, "ce-id")

    @property
    def event_type(self) -> str | None:
        return _header(self.headers, "ce-type")

    def event(self) -> Event:
        """The original CloudEvent (either mode)."""
        return binding.from_nats(binding.NATSMessage(dict(self.headers), self.data), None)


class DeadLetters:
    """List, inspect, replay and purge dead letters (stream ``DEADLETTERS``)."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection

    async def list(
        self, service: str | None = None, handler: str | None = None, *, limit: int | None = None
    ) -> list[DeadLetter]:
        out = []
        async for stored in stream_messages(
            self.connection, DEAD_LETTER_STREAM, _filter(service, handler), limit=limit
        ):
            letter = _letter(stored)
            if letter is not None:
                out.append(letter)
        return out

    async def get(self, seq: int) -> DeadLetter | None:
        stored = await get_message(self.connection, DEAD_LETTER_STREAM, seq)
        return _letter(stored) if stored is not None else None

    async def replay(self, seq: int) -> Stored:
        """Publish dead letter ``seq`` again to its original subject, then remove it.

        The replay gets its own ``Nats-Msg-Id`` (the original one would be dropped as a
        duplicate inside the stream's window); replaying the same dead letter twice stores it
        once.
        """
        letter = await self.get(seq)
        if letter is None:
            raise KeyError(f"no dead letter {seq}")
        data = letter.data
        if letter.body_dropped:
            original = await get_message(self.connection, letter.stream, letter.stream_seq)
            if original is None:
                raise KeyError(
                    f"dead letter {seq} has no body and the original is gone from stream "
                    f"{letter.stream} (seq {letter.stream_seq})"
                )
            data = original.data
        stored = await publish(
            self.connection,
            letter.subject,
            data,
            dict(letter.headers),
            msg_id=f"replay-{DEAD_LETTER_STREAM}-{letter.seq}",
        )
        await delete_message(self.connection, DEAD_LETTER_STREAM, seq)
        return stored

    async def replay_all(self, service: str | None = None, handler: str | None = None) -> int:
        letters = await self.list(service, handler)
        for letter in letters:
            await self.replay(letter.seq)
        return len(letters)

    async def purge(self, service: str | None = None, handler: str | None = None) -> None:
        await purge(self.connection, DEAD_LETTER_STREAM, _filter(service, handler))


def _filter(service: str | None, handler: str | None) -> str:
    if service is None:
        if handler is not None:
            raise ValueError("a handler filter needs its service")
        return f"{DEAD_LETTER_PREFIX}.>"
    if handler is None:
        return f"{DEAD_LETTER_PREFIX}.{service}.*"
    return dead_letter_subject(service, handler)


def _letter(stored: StoredMessage) -> DeadLetter | None:
    headers = dict(stored.headers)
    failure: dict[str, str] = {}
    original: dict[str, str] = {}
    for name, value in headers.items():
        lowered = name.lower()
        for prefix in ("ce-", _PLAIN_PREFIX):
            if lowered.startswith(prefix) and lowered[len(prefix) :] in _FAILURE_FIELDS:
                failure[lowered[len(prefix) :]] = decode_header_value(name, value)
                break
        else:
            original[name] = value
    if "dlqservice" not in failure:
        log.warning("dead letter %d has no failure headers; skipped", stored.seq)
        return None
    return DeadLetter(
        seq=stored.seq,
        service=failure["dlqservice"],
        handler=failure.get("dlqhandler", ""),
        code=_int(failure.get("dlqcode")),
        reason=failure.get("dlqreason", ""),
        deliveries=_int(failure.get("dlqdeliveries")),
        subject=failure.get("dlqsubject", ""),
        stream=failure.get("dlqstream", ""),
        stream_seq=_int(failure.get("dlqsequence")),
        time=stored.time,
        headers=original,
        data=stored.data,
        body_dropped=failure.get("dlqbodydropped") == "true",
    )


def _int(text: str | None) -> int:
    try:
        return int(text or 0)
    except ValueError:
        return 0


def _header(headers: Mapping[str, str], name: str) -> str | None:
    return next((v for k, v in headers.items() if k.lower() == name), None)
