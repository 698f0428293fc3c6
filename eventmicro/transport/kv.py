"""A typed key-value store on a JetStream KV bucket (ADR-8): go-micro's ``store``.

::

    bucket "carts"   stream KV_carts, subjects $KV.carts.>, last `history` revisions per key
    key "u-1.items"  subject $KV.carts.u-1.items; a revision is the stream sequence of a write

    put(k, v)                          PUT            -> new revision
    put(k, v, expected_revision=0)     create-only    } Nats-Expected-Last-Subject-Sequence;
    put(k, v, expected_revision=r)     compare-and-set } a mismatch raises RevisionConflict (409)
    delete(k)                          DEL marker     history kept; get(k) -> None
    purge(k)                           PURGE marker   with Nats-Rollup: sub, older revisions dropped

Values go through eventmicro's codecs (protobuf, dataclass / pydantic / dict / list as JSON,
bytes, str); the value type chosen at `Store.open` decides how stored bytes are read back.
This module talks to nats-py (it belongs to the adapter layer) and translates every nats-py
error that can reach a caller, once, with ``raise ... from exc``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
import typing
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Generic, Literal, Self, TypeVar, cast

import nats.errors
import nats.js.errors
from google.protobuf.message import Message as _ProtoMessage
from nats.aio.msg import Msg as _NatsMsg
from nats.js import JetStreamContext, api

from eventmicro._errors import (
    BucketNotFound,
    ConfigurationError,
    ConnectionClosed,
    EventMicroError,
    JetStreamError,
    PayloadDecodeError,
    PayloadError,
    Timeout,
)
from eventmicro.transport.connection import Connection, translate
from eventmicro.wire.codecs import JSON, OCTET_STREAM, PROTOBUF, TEXT, decode_payload, encode_payload
from eventmicro.wire.service_errors import InvalidKey, RevisionConflict

try:  # pydantic is optional
    import pydantic
except ImportError:  # pragma: no cover - exercised only without pydantic installed
    pydantic = None  # type: ignore[assignment]

__all__ = ["BucketConfig", "Entry", "Operation", "Store", "Stores", "Watch"]

log = logging.getLogger("eventmicro.store")
T = TypeVar("T")

Operation = Literal["PUT", "DEL", "PURGE"]

_BUCKET: Final = re.compile(r"[A-Za-z0-9_-]+")
_TOKEN: Final = re.compile(r"[-/_=a-zA-Z0-9]+")  # a key is such tokens joined by single dots
_OPERATION: Final = "KV-Operation"
_MARKER_REASON: Final = "Nats-Marker-Reason"  # nats-server 2.11+: markers the server writes itself
_EXPECTED: Final = "Nats-Expected-Last-Subject-Sequence"
_WRONG_LAST_SEQUENCE: Final = (10071, 10164)
_LAST_SEQUENCE: Final = re.compile(r"wrong last sequence: (\d+)")
_TIMEOUT: Final = 5.0  # seconds, for each JetStream request
_INACTIVE: Final = 5.0  # seconds before the server drops the consumer of a stopped watch
_HEARTBEAT: Final = 2.0  # seconds; two missed heartbeats make nats-py recreate a lost consumer
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class BucketConfig:
    """How `Store.open` creates a missing bucket (an existing bucket is used as it is).

    ``history``: revisions kept per key (1 to 64). ``ttl``: seconds before a value expires
    (``None``: never). ``replicas``: 1 to 5 (more than 1 needs a JetStream cluster).
    """

    history: int = 1
    ttl: float | None = None
    replicas: int = 1
    storage: Literal["file", "memory"] = "file"
    description: str = ""

    def __post_init__(self) -> None:
        if not 1 <= self.history <= 64:
            raise ConfigurationError(f"bucket history must be 1 to 64 revisions, not {self.history}")
        if self.ttl is not None and self.ttl < 0.1:
            raise ConfigurationError(f"bucket ttl must be at least 0.1 s (or None), not {self.ttl}")
        if not 1 <= self.replicas <= 5:
            raise ConfigurationError(f"bucket replicas must be 1 to 5, not {self.replicas}")
        if self.storage not in ("file", "memory"):
            raise ConfigurationError(f"bucket storage must be 'file' or 'memory', not {self.storage!r}")


@dataclass(frozen=True, slots=True)
class Entry(Generic[T]):
    """One revision of a key. ``value`` is ``None`` for delete and purge markers."""

    key: str
    value: T | None
    revision: int
    created: datetime  # timezone-aware (UTC): when the server stored this revision
    operation: Operation


class Store(Generic[T]):
    """A bucket whose values are all of one type ``T``. Open it with `Store.open`.

    ::

        carts = await Store.open(connection, "carts", Cart)
        revision = await carts.put("u-1", Cart(items=[]))
        entry = await carts.get("u-1")                         # Entry[Cart] | None
        await carts.put("u-1", updated, expected_revision=entry.revision)  # or RevisionConflict

    A `Store` holds no subscription: there is nothing to close (close each `Watch`).
    """

    __slots__ = (
        "_connection",
        "_content_type",
        "_direct",
        "_js",
        "_prefix",
        "_stream",
        "bucket",
        "value_type",
    )

    def __init__(self, connection: Connection, bucket: str, value_type: type[T], *, direct: bool) -> None:
        self._connection = connection
        self._js: JetStreamContext = connection.jetstream(_TIMEOUT)
        self.bucket = bucket
        self.value_type = value_type
        self._content_type = _content_type(value_type)
        self._stream = f"KV_{bucket}"
        self._prefix = f"$KV.{bucket}."
        self._direct = direct

    @classmethod
    async def open(
        cls,
        connection: Connection,
        bucket: str,
        value_type: type[T],
        *,
        config: BucketConfig | None = None,
        create: bool = True,
    ) -> Store[T]:
        """Bind to ``bucket``, creating it with ``config`` (default `BucketConfig()`) if missing.

        Raises `ConfigurationError` for a bucket name outside ``[A-Za-z0-9_-]+`` or a value type
        no codec handles, `BucketNotFound` when the bucket is missing and ``create`` is false.
        """
        if not _BUCKET.fullmatch(bucket):
            raise ConfigurationError(f"bucket name {bucket!r}: use only letters, digits, '-' and '_'")
        _content_type(value_type)  # fails here, not at the first read
        js = connection.jetstream(_TIMEOUT)
        try:
            info = await _stream_info(js, bucket)
            if info is None:
                if not create:
                    raise BucketNotFound(bucket)
                info = await _create(js, bucket, config or BucketConfig())
        except nats.errors.Error as exc:
            raise _failed(exc, f"bucket '{bucket}'") from exc
        current = info.config
        if not current.max_msgs_per_subject or current.max_msgs_per_subject < 1:
            raise ConfigurationError(f"stream KV_{bucket} exists but is not a key-value bucket")
        if config is not None and (current.max_msgs_per_subject, current.max_age or None) != (
            config.history,
            config.ttl,
        ):
            log.warning(
                "bucket %s already exists with history %s and ttl %s; it is used as it is",
                bucket,
                current.max_msgs_per_subject,
                current.max_age or None,
            )
        return cls(connection, bucket, value_type, direct=bool(current.allow_direct))

    def __repr__(self) -> str:
        return f"Store({self.bucket!r}, {getattr(self.value_type, '__name__', self.value_type)})"

    # --- reading ----------------------------------------------------------------------------

    async def get(self, key: str) -> Entry[T] | None:
        """The latest revision of ``key``, or ``None`` when it is missing, deleted or purged.

        Raises `InvalidKey`, and `PayloadDecodeError` (naming the key and revision) when the
        stored bytes are not a ``T``.
        """
        entry = await self._latest(key)
        return entry if entry is not None and entry.operation == "PUT" else None

    async def keys(self) -> list[str]:
        """Every key that currently has a value, sorted (``[]`` for an empty bucket)."""
        messages = await self._scan(self._prefix + ">", last_per_subject=True, headers_only=True)
        found = (m.subject[len(self._prefix) :] for m in messages if _operation(m.headers) == "PUT")
        return sorted(found)

    async def history(self, key: str) -> list[Entry[T]]:
        """Every revision still kept for ``key``, oldest first, markers included (``[]``: none)."""
        messages = await self._scan(self._subject(key), last_per_subject=False, headers_only=False)
        return [self._delivered(message) for message in messages]

    def watch(self, keys: str = ">", *, include_history: bool = False) -> Watch[T]:
        """Updates of the keys matching ``keys`` (NATS wildcards ``*`` and ``>``), in order.

        It first yields the current revision of each matching key (every kept revision with
        ``include_history``), delete markers included, then each update as it is stored::

            async with carts.watch("u-1") as updates:  # a key, or a pattern such as "u.*"
                async for entry in updates:
                    ...

        Leaving the ``async with`` block stops it and removes its subscription.
        """
        return Watch(self, self._prefix + _check_pattern(keys), include_history=include_history)

    # --- writing ----------------------------------------------------------------------------

    async def put(self, key: str, value: T, *, expected_revision: int | None = None) -> int:
        """Store ``value`` under ``key``; returns the new revision.

        ``expected_revision=0`` writes only if the key has no value (it may have been deleted);
        any other number writes only if that is the key's latest revision. A mismatch raises
        `RevisionConflict` (a 409 `Conflict`). Raises `TypeError` for a value that is not a
        ``T``, `PayloadTooLarge` over the server's max_payload; nothing is sent then.
        """
        subject = self._subject(key)
        data = self._encode(key, value)
        if expected_revision is None:
            return await self._write(key, subject, data, None, None)
        _check_revision(expected_revision, minimum=0)
        if expected_revision == 0:
            return await self._create_only(key, subject, data)
        return await self._write(key, subject, data, {_EXPECTED: str(expected_revision)}, expected_revision)

    async def delete(self, key: str, *, expected_revision: int | None = None) -> None:
        """Write a delete marker: `get` gives ``None``, the history stays (up to ``history``).

        With ``expected_revision`` the delete happens only at that revision (else
        `RevisionConflict`). Deleting a missing key still writes a marker.
        """
        subject = self._subject(key)
        headers = {_OPERATION: "DEL"}
        if expected_revision is not None:
            _check_revision(expected_revision, minimum=1)
            headers[_EXPECTED] = str(expected_revision)
        await self._write(key, subject, b"", headers, expected_revision)

    async def purge(self, key: str) -> None:
        """Write a purge marker and drop every older revision of ``key``."""
        await self._write(key, self._subject(key), b"", {_OPERATION: "PURGE", api.Header.ROLLUP: "sub"}, None)

    # --- internals --------------------------------------------------------------------------

    def _subject(self, key: str) -> str:
        if not isinstance(key, str) or not key:
            raise InvalidKey(str(key), "a key is a non-empty string")
        for token in key.split("."):
            if not token:
                raise InvalidKey(key, "it has an empty token (a leading, trailing or double dot)")
            if not _TOKEN.fullmatch(token):
                raise InvalidKey(key, "use only letters, digits and - / _ = . (dots separate tokens)")
        return self._prefix + key

    def _encode(self, key: str, value: object) -> bytes:
        expected = typing.get_origin(self.value_type) or self.value_type
        if not isinstance(value, expected):
            raise TypeError(
                f"bucket '{self.bucket}' stores {_name(self.value_type)} values; "
                f"key '{key}' was given a {type(value).__name__}"
            )
        return encode_payload(value).data

    async def _create_only(self, key: str, subject: str, data: bytes) -> int:
        """Write if ``key`` has no value: no revision at all, or a delete / purge marker last."""
        try:
            return await self._write(key, subject, data, {_EXPECTED: "0"}, 0)
        except RevisionConflict as conflict:
            latest = await self._latest(key)
            if latest is None or latest.operation == "PUT":
                current = conflict.current if latest is None else latest.revision
                raise RevisionConflict(self.bucket, key, 0, current) from conflict
            marker = latest.revision
        return await self._write(key, subject, data, {_EXPECTED: str(marker)}, 0)  # over the marker

    async def _write(
        self, key: str, subject: str, data: bytes, headers: dict[str, str] | None, expected: int | None
    ) -> int:
        self._connection.check_size(subject, headers, len(data))
        try:
            ack = await self._js.publish(subject, data, headers=headers)
        except nats.js.errors.APIError as exc:
            if exc.err_code in _WRONG_LAST_SEQUENCE and expected is not None:
                found = _LAST_SEQUENCE.search(exc.description or "")
                current = int(found.group(1)) if found else None
                raise RevisionConflict(self.bucket, key, expected, current) from exc
            raise translate(
                exc, f"writing key '{key}' in bucket '{self.bucket}'", timeout=_TIMEOUT, jetstream=True
            ) from exc
        except nats.errors.Error as exc:
            raise translate(
                exc, f"writing key '{key}' in bucket '{self.bucket}'", timeout=_TIMEOUT, jetstream=True
            ) from exc
        return ack.seq

    async def _latest(self, key: str) -> Entry[T] | None:
        """The newest revision of ``key``, markers included; ``None`` when there is none."""
        subject = self._subject(key)
        try:
            raw = await self._js.get_msg(self._stream, subject=subject, direct=self._direct)
        except nats.js.errors.NotFoundError:
            return None
        except nats.errors.Error as exc:
            raise translate(
                exc, f"reading key '{key}' in bucket '{self.bucket}'", timeout=_TIMEOUT, jetstream=True
            ) from exc
        if raw.seq is None or raw.time is None:
            raise JetStreamError(f"reading key '{key}' in bucket '{self.bucket}': incomplete reply")
        return self._entry(key, raw.seq, raw.time, raw.headers, raw.data or b"")

    def _delivered(self, msg: _NatsMsg) -> Entry[T]:
        key = msg.subject[len(self._prefix) :]
        return self._entry(key, msg.metadata.sequence.stream, _stored_at(msg), msg.headers, msg.data)

    def _entry(
        self, key: str, revision: int, created: datetime, headers: Mapping[str, str] | None, data: bytes
    ) -> Entry[T]:
        operation = _operation(headers)
        if operation != "PUT":
            return Entry(key, None, revision, created, operation)
        try:
            value = decode_payload(data, self._content_type, self.value_type)
        except PayloadError as exc:
            reason = exc.reason if isinstance(exc, PayloadDecodeError) else exc.message
            raise PayloadDecodeError(
                _name(self.value_type), f"key '{key}' revision {revision} in bucket '{self.bucket}': {reason}"
            ) from exc
        return Entry(key, value, revision, created, operation)

    async def _subscribe(
        self, subject: str, *, last_per_subject: bool, headers_only: bool
    ) -> JetStreamContext.PushSubscription:
        """An ordered consumer on ``subject``: in order, gaps repaired by nats-py (see `Watch`)."""
        try:
            return await self._js.subscribe(
                subject,
                stream=self._stream,
                ordered_consumer=True,
                deliver_policy=api.DeliverPolicy.LAST_PER_SUBJECT
                if last_per_subject
                else api.DeliverPolicy.ALL,
                headers_only=headers_only or None,
                inactive_threshold=_INACTIVE,
                idle_heartbeat=_HEARTBEAT,
            )
        except nats.errors.Error as exc:
            raise _failed(exc, f"watching '{subject}'") from exc

    async def _scan(self, subject: str, *, last_per_subject: bool, headers_only: bool) -> list[_NatsMsg]:
        """What the stream holds on ``subject`` now: messages up to the one with nothing pending."""
        sub = await self._subscribe(subject, last_per_subject=last_per_subject, headers_only=headers_only)
        messages: list[_NatsMsg] = []
        try:
            info = await sub.consumer_info()
            if not info.num_pending and not (info.delivered and info.delivered.consumer_seq):
                return messages  # nothing stored, nothing on its way
            while True:
                message = await sub.next_msg(timeout=_TIMEOUT)
                messages.append(message)
                if message.metadata.num_pending == 0:
                    return messages
        except nats.errors.TimeoutError as exc:
            raise Timeout(subject, _TIMEOUT) from exc
        except nats.errors.Error as exc:
            raise _failed(exc, f"reading '{subject}'") from exc
        finally:
            await _unsubscribe(sub)


class Watch(Generic[T]):
    """Updates of a store's keys, in stream order; made by `Store.watch`, used in ``async with``.

    Built on nats-py's ordered consumer (flow control, heartbeats every 2 s): a gap in the
    consumer sequence, or two missed heartbeats (4 to 8 s, e.g. after a server restart lost the
    consumer), makes it recreate its consumer from the last revision seen. So a watch survives
    reconnects and restarts without losing updates the bucket still holds (with ``history=1``
    only each key's latest revision is left to resend). When the connection closes, iteration
    raises `ConnectionClosed`; a value that does not decode raises `PayloadDecodeError` for its
    step, and iterating again goes on with the next update. Leave the block before closing the
    connection: a connection drain waits for the updates a watch received but nobody read.
    """

    __slots__ = ("_closed", "_last_per_subject", "_messages", "_store", "_sub", "_subject")

    def __init__(self, store: Store[T], subject: str, *, include_history: bool) -> None:
        self._store = store
        self._subject = subject
        self._last_per_subject = not include_history
        self._sub: JetStreamContext.PushSubscription | None = None
        self._messages: AsyncIterator[_NatsMsg] | None = None
        self._closed = False

    async def __aenter__(self) -> Self:
        if self._sub is not None or self._closed:
            raise RuntimeError("a Watch can be entered only once; call store.watch() again")
        self._sub = await self._store._subscribe(
            self._subject, last_per_subject=self._last_per_subject, headers_only=False
        )
        self._messages = self._sub.messages
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop: iteration ends and the subscription is removed. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._sub is not None:
            await _unsubscribe(self._sub)

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Entry[T]:
        if self._messages is None:
            if self._closed:
                raise StopAsyncIteration
            raise RuntimeError("use a watch inside 'async with store.watch(...) as updates'")
        try:
            message = await anext(self._messages)
        except StopAsyncIteration:
            if self._closed:
                raise
            raise ConnectionClosed(
                f"the watch on bucket '{self._store.bucket}' ended: the connection was closed"
            ) from None
        return self._store._delivered(message)


class Stores:
    """The stores one service instance uses, each opened once (see ``Context.store``)."""

    __slots__ = ("_connection", "_lock", "_opened")

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self._opened: dict[tuple[str, object], Store[Any]] = {}
        self._lock = asyncio.Lock()

    async def open(self, bucket: str, value_type: type[T]) -> Store[T]:
        """The store of ``bucket`` for ``value_type``; the bucket is created (defaults) if missing."""
        key = (bucket, value_type)
        store = self._opened.get(key)
        if store is None:
            async with self._lock:
                store = self._opened.get(key)
                if store is None:
                    store = self._opened[key] = await Store.open(self._connection, bucket, value_type)
        return cast(Store[T], store)


# --- helpers ------------------------------------------------------------------------------


def _content_type(value_type: object) -> str:
    """The codec's content type for ``value_type``; `ConfigurationError` if none fits."""
    cls = typing.get_origin(value_type) or value_type
    if isinstance(cls, type):
        if issubclass(cls, _ProtoMessage):
            return PROTOBUF
        if cls is bytes:
            return OCTET_STREAM
        if cls is str:
            return TEXT
        if cls in (dict, list) or dataclasses.is_dataclass(cls):
            return JSON
        if pydantic is not None and issubclass(cls, pydantic.BaseModel):
            return JSON
    raise ConfigurationError(
        f"a store cannot hold {_name(value_type)} values: use a protobuf message, a dataclass, "
        "a pydantic model, dict, list, bytes or str"
    )


def _name(value_type: object) -> str:
    return str(getattr(value_type, "__name__", value_type))


def _check_pattern(keys: str) -> str:
    tokens = keys.split(".")
    for index, part in enumerate(tokens):
        if part == ">" and index == len(tokens) - 1:
            continue
        if part != "*" and not _TOKEN.fullmatch(part):
            raise InvalidKey(keys, "a watch pattern is key tokens, '*' or a final '>', joined by dots")
    return keys


def _check_revision(revision: int, *, minimum: int) -> None:
    if isinstance(revision, bool) or not isinstance(revision, int) or revision < minimum:
        raise ValueError(f"expected_revision must be an integer of at least {minimum}, not {revision!r}")


def _operation(headers: Mapping[str, str] | None) -> Operation:
    if not headers:
        return "PUT"
    operation = headers.get(_OPERATION)
    if operation in ("DEL", "PURGE"):
        return cast(Operation, operation)
    reason = headers.get(_MARKER_REASON)
    if reason is not None:
        return "DEL" if reason == "Remove" else "PURGE"
    return "PUT"


def _stored_at(msg: _NatsMsg) -> datetime:
    """When the server stored a delivered message, truncated to the microsecond as `get` has it.

    nats-py's ``msg.metadata.timestamp`` goes through a float and can be 1 µs off, so the
    nanoseconds are read from the ``$JS.ACK`` reply subject (v1: 9 tokens; v2: 11 or 12).
    """
    tokens = msg.reply.split(".")
    nanos = tokens[7] if len(tokens) == 9 else tokens[_NatsMsg.Ack.Timestamp]
    return _EPOCH + timedelta(microseconds=int(nanos) // 1000)


async def _stream_info(js: JetStreamContext, bucket: str) -> api.StreamInfo | None:
    try:
        return await js.stream_info(f"KV_{bucket}")
    except nats.js.errors.NotFoundError:
        return None


async def _create(js: JetStreamContext, bucket: str, config: BucketConfig) -> api.StreamInfo:
    kv_config = api.KeyValueConfig(
        bucket=bucket,
        description=config.description or None,
        history=config.history,
        ttl=config.ttl,
        storage=api.StorageType(config.storage),
        replicas=config.replicas,
        direct=True,
    )
    try:
        await js.create_key_value(kv_config)
    except nats.js.errors.BadRequestError as exc:
        if exc.err_code != 10058:  # not "stream name already in use": another creator was first
            raise
    info = await _stream_info(js, bucket)
    if info is None:
        raise BucketNotFound(bucket)  # created, then deleted at once by someone else
    log.info("key-value bucket %s created (history %d)", bucket, config.history)
    return info


async def _unsubscribe(sub: JetStreamContext.PushSubscription) -> None:
    """Remove a consumer's subscription; on a closed connection there is nothing left to remove."""
    try:
        await sub.unsubscribe()
    except nats.errors.Error as exc:
        log.debug("store subscription already gone: %s", type(exc).__name__)


def _failed(exc: nats.errors.Error, what: str) -> EventMicroError:
    """The eventmicro error for a failed KV call (the one translation, in eventmicro.transport.connection)."""
    return translate(exc, what, timeout=_TIMEOUT, jetstream=True)
