"""The JetStream seam: streams, acknowledged publishing, pull consumers and acks.

With `eventmicro.transport.connection` (core NATS) this is the only code that talks to nats-py; every
nats-py error that can reach a caller is translated here, once, with ``raise ... from exc``.

Facts it relies on (docs/protocols.md §7): a JetStream publish is a request answered with a
PubAck; ``Nats-Msg-Id`` deduplicates within the stream's duplicate window; a pull consumer is
fetched in batches; acks are publishes to the message's ``$JS.ACK...`` reply subject.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, Literal

import nats.errors
import nats.js.errors
from nats.aio.msg import Msg as _NatsMsg
from nats.js import JetStreamContext, api
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_delay, wait_exponential_jitter

from eventmicro._errors import (
    ConfigurationError,
    JetStreamError,
    NotStored,
    StreamConflict,
)
from eventmicro.transport.connection import Connection, Message, describe_api, translate
from eventmicro.wire.names import check_subject

__all__ = [
    "STREAM_NAME",
    "Delivery",
    "OrderedSubscription",
    "PullConsumer",
    "Stored",
    "StoredMessage",
    "Stream",
    "check_deliver",
    "consumer_pending",
    "delete_message",
    "ensure_stream",
    "get_message",
    "later_subjects",
    "message_id",
    "publish",
    "purge",
    "stream_messages",
    "subject_counts",
]

log = logging.getLogger("eventmicro.jetstream")

STREAM_NAME: Final = re.compile(r"[A-Za-z0-9_-]{1,255}")  # a stream or consumer name
MSG_ID_HEADER: Final = "Nats-Msg-Id"
NO_MATCHING_STREAM: Final = 10039  # JSStreamNotFoundErr for a subject lookup ("no stream matches subject")
STREAM_NOT_FOUND: Final = 10059


@dataclass(frozen=True, slots=True)
class Stream:
    """A JetStream stream declared in code; created, or checked and updated, when a service starts.

    ``max_age`` and ``duplicate_window`` are seconds (``None``: keep forever). Retention and
    storage cannot change on a live stream: a difference there is a `StreamConflict`.

    ``schedules=True`` lets the stream hold message schedules (ADR-51, ``allow_msg_schedules``)
    and adds the subjects ``client.publish_later`` stores them on, ``eventmicro.later.<name>.>``:
    a schedule and the subject it publishes to must be in the same stream.
    """

    name: str
    subjects: Sequence[str]
    retention: Literal["limits", "interest", "workqueue"] = "limits"
    storage: Literal["file", "memory"] = "file"
    replicas: int = 1
    max_age: float | None = None
    duplicate_window: float = 120.0
    max_msgs: int | None = None
    max_bytes: int | None = None
    description: str = ""
    schedules: bool = False
    max_msgs_per_subject: int | None = None

    def __post_init__(self) -> None:
        if not STREAM_NAME.fullmatch(self.name):
            raise ConfigurationError(f"stream name {self.name!r}: use letters, digits, '-' and '_'")
        if isinstance(self.subjects, str) or not self.subjects:
            raise ConfigurationError(f"stream {self.name}: subjects must be a non-empty list of subjects")
        subjects = tuple(check_subject(s, wildcards=True) for s in self.subjects)
        if self.schedules and later_subjects(self.name) not in subjects:
            subjects += (later_subjects(self.name),)
        object.__setattr__(self, "subjects", subjects)
        if self.retention not in ("limits", "interest", "workqueue"):
            raise ConfigurationError(f"stream {self.name}: retention must be limits, interest or workqueue")
        if self.storage not in ("file", "memory"):
            raise ConfigurationError(f"stream {self.name}: storage must be file or memory")
        if not 1 <= self.replicas <= 5:
            raise ConfigurationError(f"stream {self.name}: replicas must be 1 to 5")
        if self.duplicate_window < 0.1:
            raise ConfigurationError(f"stream {self.name}: duplicate_window must be at least 0.1 s")
        if self.max_msgs_per_subject is not None and self.max_msgs_per_subject < 1:
            raise ConfigurationError(f"stream {self.name}: max_msgs_per_subject must be 1 or more")
        if self.max_age is not None and self.duplicate_window > self.max_age:
            raise ConfigurationError(f"stream {self.name}: duplicate_window cannot exceed max_age")

    def _config(self) -> api.StreamConfig:
        return api.StreamConfig(
            name=self.name,
            retention=api.RetentionPolicy(self.retention),
            storage=api.StorageType(self.storage),
            **self._updatable(),
        )

    def _updatable(self) -> dict[str, Any]:
        """The declared settings an update may change (the server's others are kept)."""
        return {
            "description": self.description or None,
            "subjects": list(self.subjects),
            "num_replicas": self.replicas,
            "max_age": self.max_age or 0,
            "duplicate_window": self.duplicate_window,
            "max_msgs": self.max_msgs if self.max_msgs is not None else -1,
            "max_bytes": self.max_bytes if self.max_bytes is not None else -1,
            # declared only when given: otherwise an operator's setting stays
            **({"max_msgs_per_subject": self.max_msgs_per_subject} if self.max_msgs_per_subject else {}),
            **({"allow_msg_schedules": True} if self.schedules else {}),  # the server never turns it off
        }


@dataclass(frozen=True, slots=True)
class Stored:
    """The stream's acknowledgement of a durable publish."""

    stream: str
    seq: int
    duplicate: bool = False


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """A message read back from a stream by sequence."""

    stream: str
    seq: int
    subject: str
    data: bytes
    headers: Mapping[str, str]
    time: datetime | None = None


def later_subjects(stream: str) -> str:
    """The subjects a stream with ``schedules=True`` stores delayed events' schedules on."""
    return f"eventmicro.later.{stream}.>"


def _js(connection: Connection, timeout: float = 5.0) -> JetStreamContext:
    return connection.jetstream(timeout)


def message_id(source: str, event_id: str) -> str:
    """``Nats-Msg-Id`` of a CloudEvent: its identity is (source, id), so both go in the hash."""
    return hashlib.sha256(f"{source}\0{event_id}".encode()).hexdigest()[:40]


# --- streams ------------------------------------------------------------------------------


async def ensure_stream(connection: Connection, stream: Stream, *, adopt: bool = False) -> None:
    """Create ``stream``, or update the server's one to the declaration where that is allowed.

    ``adopt=True`` takes an existing stream as it is (for streams eventmicro declares itself,
    such as the dead letters, which an operator may have scaled). Raises `StreamConflict` when
    retention or storage differ, or when the server refuses the declaration (e.g. its subjects
    overlap another stream's).
    """
    js = _js(connection)
    try:
        info = await js.stream_info(stream.name)
        if adopt:
            return
    except nats.js.errors.NotFoundError:
        try:
            await js.add_stream(stream._config())
        except nats.js.errors.APIError as exc:
            raise StreamConflict(stream.name, describe_api(exc) + await _overlapping(js, stream)) from exc
        except nats.errors.Error as exc:
            raise translate(exc, f"stream {stream.name}", jetstream=True) from exc
        log.info("stream %s created (subjects %s)", stream.name, ", ".join(stream.subjects))
        return
    except nats.errors.Error as exc:
        raise translate(exc, f"stream {stream.name}", jetstream=True) from exc
    current = info.config
    fixed = {
        "retention": (stream.retention, _enum_value(current.retention)),
        "storage": (stream.storage, _enum_value(current.storage)),
    }
    conflicts = {k: v for k, v in fixed.items() if v[0] != v[1]}
    if conflicts:
        raise StreamConflict(stream.name, conflicts)
    changes = _differences(stream, current)
    if not changes:
        return
    try:  # the server's config with the declared settings: what is not declared stays as it is
        await js.update_stream(current.evolve(**stream._updatable()))
    except nats.js.errors.APIError as exc:
        raise StreamConflict(stream.name, changes) from exc
    except nats.errors.Error as exc:
        raise translate(exc, f"stream {stream.name}", jetstream=True) from exc
    log.warning("stream %s updated to its declaration: %s", stream.name, ", ".join(sorted(changes)))


def _differences(stream: Stream, current: api.StreamConfig) -> dict[str, tuple[object, object]]:
    """The declared settings the server's stream differs in, as (declared, on the server)."""
    compared: list[tuple[str, object, object]] = [
        ("subjects", sorted(stream.subjects), sorted(current.subjects or [])),
        ("max_age", stream.max_age or 0, current.max_age or 0),
        ("duplicate_window", stream.duplicate_window, current.duplicate_window),
        ("replicas", stream.replicas, current.num_replicas or 1),
        ("max_msgs", stream.max_msgs or -1, current.max_msgs if current.max_msgs is not None else -1),
        ("max_bytes", stream.max_bytes or -1, current.max_bytes if current.max_bytes is not None else -1),
        ("description", stream.description or None, current.description or None),
    ]
    if stream.schedules:  # not declared: left as it is (the server never turns it off anyway)
        compared.append(("schedules", True, bool(current.allow_msg_schedules)))
    if stream.max_msgs_per_subject:  # not declared: an operator's limit stays
        compared.append(("max_msgs_per_subject", stream.max_msgs_per_subject, current.max_msgs_per_subject))
    return {name: (declared, actual) for name, declared, actual in compared if not _same(declared, actual)}


async def _overlapping(js: JetStreamContext, stream: Stream) -> str:
    """The streams whose subjects overlap ``stream``'s, for the error (``""`` when none is found)."""
    try:
        infos = await js.streams_info()
    except nats.errors.Error:
        return ""
    found = []
    for info in infos:
        theirs = [s for s in info.config.subjects or [] if any(_collide(s, o) for o in stream.subjects)]
        if theirs and info.config.name != stream.name:
            found.append(f"stream {info.config.name} stores {', '.join(theirs)}")
    return f" ({'; '.join(found)}: declare that stream, or subjects outside it)" if found else ""


def _collide(a: str, b: str) -> bool:
    """True when some subject matches both patterns (NATS wildcards ``*`` and ``>``)."""
    left, right = a.split("."), b.split(".")
    for x, y in zip(left, right, strict=False):
        if x == ">" or y == ">":
            return True
        if x != y and "*" not in (x, y):
            return False
    return len(left) == len(right)


def _same(declared: object, actual: object) -> bool:
    if isinstance(declared, float | int) and isinstance(actual, float | int):
        return abs(float(declared) - float(actual)) < 1e-6
    return declared == actual


def _enum_value(value: object) -> object:
    return getattr(value, "value", value)


# --- publishing ---------------------------------------------------------------------------


async def publish(
    connection: Connection,
    subject: str,
    data: bytes,
    headers: dict[str, str],
    *,
    msg_id: str,
    timeout: float = 5.0,
    attempt_timeout: float = 2.0,
) -> Stored:
    """Publish to a stream and wait for its acknowledgement, retrying until ``timeout``.

    ``msg_id`` goes in ``Nats-Msg-Id``, so a retried publish is stored once. Raises `NotStored`
    when no stream acknowledged it (none stores the subject, or JetStream stayed unavailable),
    `JetStreamError` when the stream refused it, `PayloadTooLarge` before sending.
    """
    headers = {**headers, MSG_ID_HEADER: msg_id}
    connection.check_size(subject, headers, len(data))
    js = _js(connection)
    deadline = time.monotonic() + timeout
    try:
        try:  # the first attempt without the retry machinery: most publishes need nothing more
            ack = await js.publish(subject, data, timeout=min(attempt_timeout, timeout), headers=headers)
        except (nats.js.errors.NoStreamResponseError, nats.errors.TimeoutError):
            if time.monotonic() >= deadline - 0.05:
                raise
            log.debug("publish on %s: attempt 1 not acknowledged; retrying", subject)
            retrying = AsyncRetrying(
                stop=stop_after_delay(max(0.0, deadline - time.monotonic())),
                wait=wait_exponential_jitter(multiplier=0.05, max=1.0, jitter=0.05),
                retry=retry_if_exception_type(
                    (nats.js.errors.NoStreamResponseError, nats.errors.TimeoutError)
                ),
                before_sleep=lambda state: log.debug(
                    "publish on %s: attempt %d not acknowledged; retrying", subject, state.attempt_number + 1
                ),
                reraise=True,
            )
            async for attempt in retrying:
                with attempt:
                    remaining = max(0.05, min(attempt_timeout, deadline - time.monotonic()))
                    ack = await js.publish(subject, data, timeout=remaining, headers=headers)
    except nats.js.errors.NoStreamResponseError as exc:
        raise NotStored(subject, await _why_not_stored(js, subject)) from exc
    except nats.errors.TimeoutError as exc:
        raise NotStored(subject, f"no acknowledgement within {timeout:g}s") from exc
    except nats.js.errors.APIError as exc:
        raise JetStreamError(
            f"the stream refused the event on '{subject}': {describe_api(exc)}",
            err_code=exc.err_code or 0,
            status=exc.code or 0,
        ) from exc
    except nats.errors.Error as exc:
        raise translate(exc, subject, jetstream=True) from exc
    return Stored(ack.stream, ack.seq, bool(ack.duplicate))


async def _why_not_stored(js: JetStreamContext, subject: str) -> str:
    try:
        await js.find_stream_name_by_subject(subject)
    except nats.js.errors.NotFoundError:
        return "no stream stores this subject"
    except (nats.errors.Error, ValueError):
        return "JetStream did not answer"
    return "the stream did not acknowledge in time"


# --- consuming ----------------------------------------------------------------------------


@dataclass(slots=True, eq=False)
class Delivery:
    """One message delivered by a pull consumer, with its ack protocol.

    ``+ACK``, ``-NAK`` and ``+TERM`` are final: later calls are ignored (protocols.md §7.6).
    """

    message: Message
    num_delivered: int
    stream: str
    stream_seq: int
    consumer: str
    _msg: _NatsMsg = field(repr=False)
    _done: bool = False
    pending: int = 0  # messages the consumer still had behind this one when it was delivered
    stored: datetime | None = None  # when the stream stored it

    async def ack(self) -> None:
        await self._final(self._msg.ack())

    async def nak(self, delay: float | None = None) -> None:
        await self._final(self._msg.nak(delay=delay))

    async def term(self) -> None:
        await self._final(self._msg.term())

    async def in_progress(self) -> None:
        """Reset the ack timer (``+WPI``); the message stays in progress."""
        if self._done:
            return
        try:
            await self._msg.in_progress()
        except nats.errors.Error as exc:
            raise translate(exc, self.message.subject, jetstream=True) from exc

    async def _final(self, send: Any) -> None:
        if self._done:
            send.close()  # the coroutine is not awaited: the ack was already final
            return
        self._done = True
        try:
            await send
        except nats.errors.MsgAlreadyAckdError:
            pass
        except nats.errors.Error as exc:
            raise translate(exc, self.message.subject, jetstream=True) from exc


class PullConsumer:
    """A durable pull consumer shared by every instance that binds it with the same name."""

    def __init__(self, connection: Connection, stream: str, name: str, sub: Any) -> None:
        self.connection = connection
        self.stream = stream
        self.name = name
        self._sub = sub

    @classmethod
    async def bind(
        cls,
        connection: Connection,
        *,
        name: str,
        subject: str,
        stream: str | None = None,
        ack_wait: float = 30.0,
        max_ack_pending: int = 1000,
        deliver: Literal["all", "new", "last"] | int | datetime = "all",
        description: str = "",
    ) -> PullConsumer:
        """Create (or update) durable consumer ``name`` on ``subject`` and bind to it.

        ``deliver`` applies when the consumer is first created: every stored message (``all``),
        only new ones, the last one, from a stream sequence (an int) or from a time.
        """
        js = _js(connection)
        try:
            if stream is None:
                stream = await _stream_for(js, subject, f"durable consumer {name}")
            config = api.ConsumerConfig(
                name=name,
                durable_name=name,
                description=description or None,
                ack_policy=api.AckPolicy.EXPLICIT,
                ack_wait=ack_wait,
                max_deliver=-1,  # eventmicro counts deliveries itself, so nothing is dropped unseen
                max_ack_pending=max_ack_pending,
                filter_subject=subject,
                **_deliver_policy(deliver),
            )
            try:
                existing = await js.consumer_info(stream, name)
            except nats.js.errors.NotFoundError:
                existing = None
            if existing is None:
                await js.add_consumer(stream, config)
            else:
                if existing.config.filter_subject not in (None, subject):
                    raise StreamConflict(
                        stream,
                        f"consumer {name} filters '{existing.config.filter_subject}', declared '{subject}'",
                    )
                config.deliver_policy = existing.config.deliver_policy  # fixed at creation
                config.opt_start_seq = existing.config.opt_start_seq
                config.opt_start_time = existing.config.opt_start_time
                await js.add_consumer(stream, config)  # same name: the server updates it
            sub = await js.pull_subscribe_bind(durable=name, stream=stream)
        except nats.js.errors.APIError as exc:
            raise StreamConflict(stream or subject, f"consumer {name}: {describe_api(exc)}") from exc
        except nats.errors.Error as exc:
            raise translate(exc, subject, jetstream=True) from exc
        return cls(connection, stream, name, sub)

    async def fetch(self, batch: int, timeout: float) -> list[Delivery]:
        """Up to ``batch`` messages, waiting at most ``timeout`` seconds; ``[]`` when none came."""
        try:
            messages = await self._sub.fetch(batch=batch, timeout=timeout)
        except TimeoutError:  # nats-py also raises a bare asyncio.TimeoutError when the pull expires
            return []
        except nats.errors.Error as exc:
            raise translate(exc, self.name, jetstream=True) from exc
        out = []
        for msg in messages:
            meta = msg.metadata
            out.append(
                Delivery(
                    Message(msg.subject, msg.data, msg.headers, msg.reply),
                    meta.num_delivered,
                    meta.stream,
                    meta.sequence.stream,
                    meta.consumer,
                    msg,
                    pending=meta.num_pending or 0,
                    stored=meta.timestamp,
                )
            )
        return out

    async def exists(self) -> bool:
        """Whether the durable consumer is still on the server (raises while it cannot tell)."""
        try:
            await _js(self.connection).consumer_info(self.stream, self.name)
        except nats.js.errors.NotFoundError:
            return False
        except nats.errors.Error as exc:
            raise translate(exc, self.name, jetstream=True) from exc
        return True

    async def ack_pending(self) -> int:
        """Messages the consumer delivered and nobody acked yet (to any of its clients)."""
        try:
            info = await _js(self.connection).consumer_info(self.stream, self.name)
        except nats.errors.Error as exc:
            raise translate(exc, self.name, jetstream=True) from exc
        return int(info.num_ack_pending or 0)

    async def close(self) -> None:
        """Stop fetching (the durable consumer stays on the server)."""
        try:
            await self._sub.unsubscribe()
        except nats.errors.Error as exc:
            log.debug("consumer %s: unsubscribe failed: %s", self.name, type(exc).__name__)


class OrderedSubscription:
    """An ordered consumer of one instance: every stored message on the subject, in stream
    order, one at a time, without acks (nats-py recreates it after gaps or a lost server)."""

    def __init__(self, sub: Any, subject: str) -> None:
        self._sub = sub
        self.subject = subject

    @classmethod
    async def subscribe(
        cls,
        connection: Connection,
        subject: str,
        handler: Callable[[Message], Awaitable[None]],
        *,
        stream: str | None = None,
        deliver: Literal["all", "new", "last"] | int | datetime = "all",
    ) -> OrderedSubscription:
        js = _js(connection)

        async def on_message(msg: _NatsMsg) -> None:
            await handler(Message(msg.subject, msg.data, msg.headers, msg.reply))

        try:
            if stream is None:
                stream = await _stream_for(js, subject, "ordered consumer")
            sub = await js.subscribe(
                subject,
                stream=stream,
                cb=on_message,
                manual_ack=True,
                ordered_consumer=True,
                idle_heartbeat=2.0,
                config=api.ConsumerConfig(**_deliver_policy(deliver)),
            )
        except nats.js.errors.APIError as exc:
            raise StreamConflict(stream or subject, f"ordered consumer: {describe_api(exc)}") from exc
        except nats.errors.Error as exc:
            raise translate(exc, subject, jetstream=True) from exc
        return cls(sub, subject)

    async def drain(self, timeout: float | None = None) -> None:
        """Stop: messages already received are handled first, for at most ``timeout`` seconds;
        then the handler still running is cancelled and the rest are dropped (nothing is acked)."""
        try:
            async with asyncio.timeout(timeout):
                await self._sub.drain()
        except TimeoutError:
            log.warning("ordered consumer on %s: not drained in %ss; stopped", self.subject, timeout)
        except nats.errors.Error as exc:
            log.debug("ordered consumer on %s: drain failed: %s", self.subject, type(exc).__name__)
        finally:
            self._discard()

    def _discard(self) -> None:
        """Remove what nats-py's drain leaves behind (nats-py 2.16): its heartbeat monitor
        would otherwise find the heartbeats gone, resubscribe and recreate the consumer, and
        a later connection drain would wait its whole timeout for that zombie."""
        sub = self._sub
        sub._stop_processing()  # cancels the handler still running after a timed-out drain
        sub._conn._remove_sub(sub._id)
        jsi = sub._sub._jsi
        for task in (jsi._hbtask, jsi._fctask):
            if task is not None:
                task.cancel()


async def _stream_for(js: JetStreamContext, subject: str, who: str) -> str:
    """The stream that stores ``subject``; `ConfigurationError` naming ``who`` when none does."""
    try:
        return await js.find_stream_name_by_subject(subject)
    except nats.js.errors.NotFoundError as exc:
        raise ConfigurationError(
            f"{who}: no stream stores '{subject}'; declare one with Stream(...)"
        ) from exc


def check_deliver(deliver: object) -> None:
    """Raise `ConfigurationError` unless ``deliver`` is a start position `PullConsumer` accepts."""
    _deliver_policy(deliver)  # type: ignore[arg-type]


def _deliver_policy(deliver: Literal["all", "new", "last"] | int | datetime) -> dict[str, Any]:
    if isinstance(deliver, datetime):
        if deliver.tzinfo is None:
            raise ConfigurationError("deliver: a start time must be timezone-aware")
        return {"deliver_policy": api.DeliverPolicy.BY_START_TIME, "opt_start_time": deliver.isoformat()}
    if isinstance(deliver, int) and not isinstance(deliver, bool):
        if deliver < 1:
            raise ConfigurationError("deliver: a start sequence is 1 or more")
        return {"deliver_policy": api.DeliverPolicy.BY_START_SEQUENCE, "opt_start_seq": deliver}
    if deliver in ("all", "new", "last"):
        return {"deliver_policy": api.DeliverPolicy(deliver)}
    raise ConfigurationError("deliver must be 'all', 'new', 'last', a stream sequence or a datetime")


# --- reading streams (dead letters) ------------------------------------------------------


async def get_message(connection: Connection, stream: str, seq: int) -> StoredMessage | None:
    """The message at ``seq``, or ``None`` when it is gone."""
    try:
        raw = await _js(connection).get_msg(stream, seq)
    except nats.js.errors.NotFoundError:
        return None
    except nats.errors.Error as exc:
        raise translate(exc, stream, jetstream=True) from exc
    return _stored(stream, raw)


async def stream_messages(
    connection: Connection, stream: str, subject: str = ">", *, limit: int | None = None
) -> AsyncIterator[StoredMessage]:
    """The messages of ``stream`` on ``subject`` in order, read one by one by sequence."""
    js = _js(connection)
    seq, count = 1, 0
    while limit is None or count < limit:
        try:
            raw = await js.get_msg(stream, seq, subject=subject, next=True)
        except nats.js.errors.NotFoundError:
            return
        except nats.errors.Error as exc:
            raise translate(exc, stream, jetstream=True) from exc
        message = _stored(stream, raw)
        yield message
        count += 1
        seq = message.seq + 1


async def subject_counts(connection: Connection, stream: str, subject: str = ">") -> dict[str, int]:
    """Messages stored per subject in ``stream`` (empty when the stream does not exist)."""
    try:
        info = await _js(connection).stream_info(stream, subjects_filter=subject)
    except nats.js.errors.NotFoundError:
        return {}
    except nats.errors.Error as exc:
        raise translate(exc, stream, jetstream=True) from exc
    return dict(info.state.subjects or {})


async def consumer_pending(connection: Connection, stream: str, consumer: str) -> int:
    """Messages durable ``consumer`` has not delivered yet (0 when it does not exist)."""
    try:
        info = await _js(connection).consumer_info(stream, consumer)
    except nats.js.errors.NotFoundError:
        return 0
    except nats.errors.Error as exc:
        raise translate(exc, consumer, jetstream=True) from exc
    return info.num_pending or 0


async def delete_message(connection: Connection, stream: str, seq: int) -> bool:
    try:
        return bool(await _js(connection).delete_msg(stream, seq))
    except nats.js.errors.NotFoundError:
        return False
    except nats.errors.Error as exc:
        raise translate(exc, stream, jetstream=True) from exc


async def purge(connection: Connection, stream: str, subject: str | None = None) -> None:
    try:
        await _js(connection).purge_stream(stream, subject=subject)
    except nats.js.errors.NotFoundError:
        return
    except nats.errors.Error as exc:
        raise translate(exc, stream, jetstream=True) from exc


def _stored(stream: str, raw: api.RawStreamMsg) -> StoredMessage:
    headers = {k: v for k, v in (raw.headers or {}).items() if not k.startswith("Nats-")}
    return StoredMessage(stream, raw.seq or 0, raw.subject or "", raw.data or b"", headers, raw.time)


# --- errors -------------------------------------------------------------------------------
