"""The one seam to nats-py: connect, publish, request, subscribe, drain — with errors translated.

Every nats-py error that can reach a caller is turned into an eventmicro error here, once,
with ``raise ... from exc``. Nothing else in eventmicro imports ``nats``.

Connection lifecycle::

    NEW --open()--> CONNECTED --close()--> DRAINING --> CLOSED
                     |   ^
        disconnected |   | reconnected (forever by default; logged)
                     v   |
                   RECONNECTING
"""

from __future__ import annotations

import asyncio
import enum
import itertools
import logging
import math
import re
import secrets
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, ClassVar, Final, Self

import nats
import nats.errors
from nats.aio.client import Client as _NatsClient
from nats.aio.msg import Msg as _NatsMsg
from nats.aio.subscription import Subscription as _NatsSubscription
from nats.protocol import command as prot_command
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)

from eventmicro._config import ConnectOptions, redact_url
from eventmicro._errors import (
    AuthorizationError,
    ConfigurationError,
    ConnectError,
    ConnectionClosed,
    EventMicroError,
    NoResponders,
    PayloadTooLarge,
    Timeout,
)
from eventmicro._quiet import Quiet

__all__ = [
    "Connection",
    "ConnectionState",
    "ConnectionStats",
    "MalformedHeaders",
    "Message",
    "MessageHandler",
    "Subscription",
    "headers_size",
    "parse_header_block",
]

log = logging.getLogger("eventmicro.connection")

_HEADER_LINE: Final = len(b"NATS/1.0\r\n")
_NEWLINES: Final = str.maketrans({"\r": " ", "\n": " "})
# nats-server cuts (and nats-py then closes for good) a connection whose protocol line is over
# max_control_line (4 KiB by default): subject and reply together stay well under it
_MAX_SUBJECTS: Final = 3840
_MAX_CACHED_NAME: Final = 64  # longer header names are encoded each time, never cached
_CACHED_NAMES: Final = 1024  # so the name cache holds at most ~70 KiB
# What nats-py's defaults allow a subscription to buffer; eventmicro never sets less.
PENDING_MSGS_LIMIT: Final = 512 * 1024
PENDING_BYTES_LIMIT: Final = 128 * 1024 * 1024


class ConnectionState(enum.Enum):
    """Where a `Connection` is in its life."""

    NEW = "new"
    CONNECTED = "connected"
    RECONNECTING = "reconnecting"
    DRAINING = "draining"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class Message:
    """A received NATS message. ``headers`` is ``None`` when the message had none.

    ``received`` is the `time.monotonic` moment the connection's reader took it off the
    socket (0.0 when unknown), so a deadline can count from arrival, not from dequeue.
    """

    subject: str
    data: bytes
    headers: Mapping[str, str] | None
    reply: str
    received: float = 0.0


class MalformedHeaders(ValueError):
    """A header block that does not follow ADR-4 (what `parse_header_block` raises)."""


def parse_header_block(block: bytes) -> dict[str, str] | None:
    """The headers of a received ``HMSG`` header block, or None when there is none.

    Same results as nats-py 2.16 for well-formed blocks: ``Name: value`` lines (the last of a
    repeated name wins; lines without a colon, names with whitespace or non-ASCII bytes are
    skipped), and a status line ``NATS/1.0 503 [description]`` as ``Status`` and
    ``Description``. Anything else raises `MalformedHeaders`, never another exception: the
    bytes may come from any client, and nats-py's own parser raised inside the connection's
    reader on some of them (a non-UTF-8 status line, a bare ``NATS/1.0``), which stopped it.
    """
    if not block:
        return None
    if not block.startswith(b"NATS/1.0"):
        raise MalformedHeaders("the header block does not start with NATS/1.0")
    end = block.find(b"\r\n", 8)
    if end < 0:
        raise MalformedHeaders("the header block's version line is not terminated")
    headers: dict[str, str] = {}
    status_line = block[8:end]
    if status_line:
        if status_line[:1] != b" ":
            raise MalformedHeaders("unknown header block version")
        if not status_line.isascii():
            raise MalformedHeaders("the status line is not ASCII")
        code, _, description = status_line.decode("ascii").strip().partition(" ")
        if code.isdigit():
            headers["Status"] = code
        description = description.strip()
        if description:
            headers["Description"] = description
    rest = block[end + 2 :]
    if len(rest) > 2:
        headers.update(_parse_header_lines(rest))
    return headers


def _parse_header_lines(raw: bytes) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in raw.split(b"\r\n"):
        name, sep, value = line.partition(b":")
        if not sep:
            continue
        try:
            key = name.strip().decode("ascii")
        except UnicodeDecodeError:
            continue  # a malformed name: skipped, as nats-py does
        if key and key.split() != [key]:
            continue  # whitespace inside a name: skipped, as nats-py does
        out[key] = value.strip().decode("utf-8", "replace")
    return out


class ConnectionStats:
    """What the connection dropped or survived; read by health, ``$SRV.STATS`` and metrics."""

    __slots__ = ("_malformed_quiet", "malformed", "reader_restarts", "slow_consumer")

    def __init__(self) -> None:
        self.malformed = 0  # messages whose header block or subject could not be read
        self.reader_restarts = 0  # times the reader stopped while connected (then reconnected)
        self.slow_consumer = 0  # messages dropped because a subscription's buffer was full
        self._malformed_quiet = Quiet()

    def dropped_malformed(self, subject: bytes, error: BaseException) -> None:
        self.malformed += 1
        held = self._malformed_quiet.due()
        if held >= 0:
            log.warning(
                "dropped a malformed message on '%s' (%s); %d dropped so far",
                subject[:128].decode("ascii", "backslashreplace"),
                error if isinstance(error, MalformedHeaders) else type(error).__name__,
                self.malformed,
            )


MessageHandler = Callable[[Message], Awaitable[None]]


def headers_size(headers: Mapping[str, str]) -> int:
    """Exact size in bytes of the header block nats-py writes for ``headers`` (HPUB)."""
    size = _HEADER_LINE + 2
    for name, value in headers.items():
        key = name.strip()
        if not key:
            continue
        text = value.strip().translate(_NEWLINES)
        size += len(key) + 4 + (len(text) if text.isascii() else len(text.encode("utf-8")))
    return size


def _fits(headers: Mapping[str, str] | None, body: int, limit: int) -> int:
    """0 when the message fits ``limit``; else its exact size. Cheap bound first."""
    if headers is None:  # nats-py sends HPUB, header block included, for any dict, even {}
        return 0 if body <= limit else body
    rough = _HEADER_LINE + 2
    for key, value in headers.items():
        rough += len(key) + len(value) + 4
    if body + 4 * rough <= limit:  # UTF-8 needs at most 4 bytes per character
        return 0
    size = body + headers_size(headers)
    return 0 if size <= limit else size


_TOKEN: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 7230 token: a header name


@dataclass
class _Msg(_NatsMsg):
    """nats-py's message, stamped with the moment the reader took it off the socket."""

    received: float = 0.0
    counted: int = 0  # header bytes counted in its subscription's pending bytes (see _Client)


class _Client(_NatsClient):
    """nats-py's client with faster header handling and the same bytes on the wire.

    nats-py 2.16 checks every header name for whitespace one character at a time when
    parsing, and validates and encodes every name again when publishing; with CloudEvents in
    binary mode (seven or more headers a message) that was most of its per-message cost.
    """

    _names: ClassVar[dict[str, bytes]] = {}  # short header name -> b"Name: ", validated once
    _tokens: itertools.count[int] = itertools.count(1)
    counters: ConnectionStats = ConnectionStats()  # replaced per connection by `Connection`

    async def _request_new_style(
        self, subject: str, payload: bytes, timeout: float = 1, headers: dict[str, Any] | None = None
    ) -> _NatsMsg:
        """nats-py's request over the shared response subscription, without `asyncio.wait_for`.

        The same protocol (one ``_INBOX.<nuid>.*`` subscription, a token per request); the
        reply future is awaited directly with one timer. A token is a counter (unique within
        this connection's response prefix) and 64 random bits: whoever saw one reply subject of
        this connection (any service it called) cannot guess the next one and answer it.
        """
        if self.is_draining_pubs:
            raise nats.errors.ConnectionDrainingError
        if not self._resp_sub_prefix:
            await self._init_request_sub()
        prefix = self._resp_sub_prefix
        if prefix is None:  # pragma: no cover - set by _init_request_sub
            raise nats.errors.ConnectionClosedError
        token = f"{next(self._tokens):x}{secrets.randbits(64):016x}"
        future: asyncio.Future[_NatsMsg] = asyncio.get_running_loop().create_future()
        self._resp_map[token] = future
        try:
            await self.publish(subject, payload, reply=prefix.decode() + token, headers=headers)
            timer = future.get_loop().call_later(timeout, _expire, future)
            try:
                return await future
            finally:
                timer.cancel()
        finally:
            self._resp_map.pop(token, None)

    _resp_sid: int = 0
    # Subscriptions (by sid) whose pending bytes count header blocks too: nats-py counts only
    # the payload, so messages with empty bodies and ~1 MB header blocks were buffered without
    # bound (524,288 of them). The callback of each must call `release` for every message.
    _header_bytes: int = 0  # of the message being built (read by _build_message)

    def __init__(self) -> None:
        super().__init__()
        self._counting: set[int] = set()

    def count_headers(self, sid: int) -> None:
        self._counting.add(sid)

    def release(self, msg: _NatsMsg) -> None:
        """A message of a counting subscription was taken from its buffer."""
        counted = getattr(msg, "counted", 0)
        if counted and msg._sid is not None:
            sub = self._subs.get(msg._sid)
            if sub is not None:
                sub._pending_size -= counted

    async def _init_request_sub(self) -> None:
        await super()._init_request_sub()
        self._resp_sid = self._sid  # the response subscription was the newest one

    async def _process_msg(self, sid: int, subject: bytes, reply: bytes, data: bytes, headers: bytes) -> None:
        """Every received message passes here, from the reader. A message that cannot be
        read (headers, subject) is dropped and counted; nothing it holds can raise out of
        the reader, which would stop the connection for good. Replies resolve their
        request's future here, not through a subscription task."""
        try:
            if sid != self._resp_sid or not sid:
                sub = self._subs.get(sid) if headers and sid in self._counting else None
                if sub is None or sub._jsi is not None:
                    await super()._process_msg(sid, subject, reply, data, headers)
                    return
                # the header block counts against the pending bytes limit, like the payload
                sub._pending_size += len(headers)
                queued = sub._pending_queue.qsize()
                self._header_bytes = len(headers)
                try:
                    await super()._process_msg(sid, subject, reply, data, headers)
                finally:
                    self._header_bytes = 0
                    if sub._pending_queue.qsize() == queued:  # not queued: dropped (slow consumer)
                        sub._pending_size -= len(headers)
                return
            self.stats["in_msgs"] += 1
            self.stats["in_bytes"] += len(data)
            prefix = self._resp_sub_prefix
            future = self._resp_map.get(subject[len(prefix) :].decode()) if prefix is not None else None
            if future is None or future.done():
                return  # a late reply: its caller gave up
            message = self._build_message(sid, subject, reply, data, parse_header_block(headers))
            future.set_result(message)
        except Exception as exc:  # the message is dropped, counted and logged
            self.counters.dropped_malformed(subject, exc)

    async def _process_headers(self, headers: bytes) -> dict[str, str] | None:
        return parse_header_block(headers)

    def _build_message(
        self, sid: int, subject: bytes, reply: bytes, data: bytes, headers: dict[str, str] | None
    ) -> _NatsMsg:
        return _Msg(
            _client=self,
            subject=subject.decode(),
            reply=reply.decode(),
            data=data,
            headers=headers,
            _sid=sid,
            received=time.monotonic(),
            counted=self._header_bytes,
        )

    async def _read_loop(self) -> None:
        """nats-py's reader; when it stops on an error it did not expect while still
        connected (it only logs then, and the connection stays deaf), reconnect at once."""
        await super()._read_loop()
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise asyncio.CancelledError  # cancelled (nats-py's loop swallows it): not a crash
        if self.is_closed or self.is_reconnecting or self._transport is None:
            return  # a normal end: closing, or nats-py's own reconnect already began
        self.counters.reader_restarts += 1
        log.error("the NATS connection's reader stopped unexpectedly; reconnecting")
        await self._process_op_err(nats.errors.UnexpectedEOF())

    @staticmethod
    def _parse_header_lines(raw: bytes) -> dict[str, str]:
        return _parse_header_lines(raw)

    async def _send_publish(
        self, subject: str, reply: str, payload: bytes, payload_size: int, headers: dict[str, Any] | None
    ) -> None:
        if headers is None or subject == "":
            await super()._send_publish(subject, reply, payload, payload_size, headers)
            return
        names = self._names
        block = bytearray(b"NATS/1.0\r\n")
        for name, value in headers.items():
            prefix = names.get(name)
            if prefix is None:
                key = name.strip()
                if not key:
                    continue
                if not _TOKEN.fullmatch(key):
                    raise nats.errors.BadHeaderError(key)
                prefix = key.encode() + b": "
                if len(name) <= _MAX_CACHED_NAME and len(names) < _CACHED_NAMES:
                    names[name] = prefix
            text = value.strip()
            if "\r" in text or "\n" in text:
                text = text.translate(_NEWLINES)
            block += prefix
            block += text.encode()
            block += b"\r\n"
        block += b"\r\n"
        self.stats["out_msgs"] += 1
        self.stats["out_bytes"] += payload_size
        await self._send_command(prot_command.hpub_cmd(subject, reply, block, payload))
        if self._flush_queue is not None and self._flush_queue.empty():
            await self._flush_pending()


class Subscription:
    """An active subscription; `drain` lets queued messages finish, `unsubscribe` drops them.

    ``dropped`` counts the messages nats-py threw away because this subscription's buffer was
    full (a slow consumer); ``last_drop`` is when the latest was (`time.monotonic`, 0.0 never).
    """

    __slots__ = ("_quiet", "_sub", "dropped", "last_drop", "queue", "subject")

    def __init__(self, sub: _NatsSubscription, subject: str, queue: str | None) -> None:
        self._sub = sub
        self.subject = subject
        self.queue = queue
        self.dropped = 0
        self.last_drop = 0.0
        self._quiet = Quiet()

    def _dropped_one(self) -> None:
        self.dropped += 1
        self.last_drop = time.monotonic()
        held = self._quiet.due()
        if held >= 0:
            log.warning(
                "slow consumer on '%s': its handler falls behind, messages are dropped (%d so far)",
                self.subject,
                self.dropped,
            )

    def slow(self, within: float) -> bool:
        """True when a message was dropped in the last ``within`` seconds."""
        return self.last_drop > 0.0 and time.monotonic() - self.last_drop < within

    @property
    def pending(self) -> int:
        """Messages received from the server and not yet handled."""
        return int(self._sub.pending_msgs)

    @property
    def active(self) -> bool:
        """True while the subscription holds its interest and its handler task runs."""
        sub = self._sub
        task: asyncio.Task[None] | None = sub._wait_for_msgs_task
        return not sub._closed and sub._id in sub._conn._subs and (task is None or not task.done())

    async def drain(self) -> None:
        """Stop interest on the server, then wait for already-received messages to be handled."""
        try:
            await self._sub.drain()  # type: ignore[no-untyped-call]
        except nats.errors.Error as exc:
            raise _translate(exc, self.subject) from exc

    async def unsubscribe(self) -> None:
        """Stop at once; messages not yet handled are dropped."""
        try:
            await self._sub.unsubscribe()
        except nats.errors.Error as exc:
            raise _translate(exc, self.subject) from exc


class Connection:
    """A NATS connection built from `ConnectOptions`.

    ::

        async with Connection(ConnectOptions.from_env()) as conn:
            await conn.publish("greet", b"hi", headers={"ce-specversion": "1.0", ...})

    The initial connect is retried (bounded, logged); later disconnects reconnect forever by
    default. `close` drains: subscriptions finish what they received, publishes are flushed.
    Publishing checks headers + body against the server's ``max_payload`` first and raises
    `PayloadTooLarge` instead of letting the server close the connection.
    """

    def __init__(self, options: ConnectOptions | None = None) -> None:
        self.options = options or ConnectOptions.from_env()
        self._nc: _NatsClient | None = None
        self._state = ConnectionState.NEW
        self._connect_errors: list[BaseException] = []  # what nats-py reported during open()
        self._connect_failed = asyncio.Event()
        self._closed = asyncio.Event()
        self.stats = ConnectionStats()
        self._subscriptions: dict[int, Subscription] = {}  # nats-py sid -> ours, for drop counts

    # --- lifecycle ---------------------------------------------------------------------

    @property
    def state(self) -> ConnectionState:
        """The connection's lifecycle state."""
        return self._state

    @property
    def is_connected(self) -> bool:
        """True while connected to a server (not while reconnecting or closed)."""
        return self._nc is not None and self._nc.is_connected

    @property
    def connected_url(self) -> str | None:
        """The server currently connected to, with credentials hidden."""
        if self._nc is None or self._nc.connected_url is None:
            return None
        return redact_url(self._nc.connected_url.geturl())

    @property
    def max_payload(self) -> int:
        """The largest message (headers + body) the server accepts, in bytes."""
        return self._client.max_payload

    @property
    def server_info(self) -> Mapping[str, Any]:
        """The INFO the connected server announced (name, version, jetstream, ...)."""
        return dict(self._client._server_info)

    async def open(self) -> Self:
        """Connect, retrying with exponential backoff up to ``options.connect_attempts`` times.

        Raises `AuthorizationError` at once when the server refuses the credentials, and
        `ConnectError` when no server could be reached.
        """
        if self._state is not ConnectionState.NEW:
            raise ConnectionClosed(f"connection cannot be opened from state {self._state.value}")
        opts = self.options
        retrying = AsyncRetrying(
            stop=stop_after_attempt(opts.connect_attempts),
            wait=wait_exponential_jitter(multiplier=0.1, max=2.0, jitter=0.1),
            # a refusal is final; so is a cancellation (a stop while connecting), never retried
            retry=retry_if_exception(
                lambda e: not isinstance(e, AuthorizationError | asyncio.CancelledError)
            ),
            before_sleep=self._log_retry,
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                self._nc = await self._connect_once()
        self._state = ConnectionState.CONNECTED
        log.info("connected to %s", self.connected_url)
        return self

    async def _connect_once(self) -> _NatsClient:
        opts = self.options
        self._connect_errors = []
        kwargs: dict[str, Any] = {
            "servers": list(opts.servers),
            "name": opts.name,
            "connect_timeout": opts.connect_timeout,
            # One pass over the servers per attempt, no pause inside it: tenacity paces the
            # attempts. nats-py would otherwise retry forever here. Restored once connected.
            "reconnect_time_wait": 0,
            "max_reconnect_attempts": 1,
            "drain_timeout": opts.drain_timeout,
            "pending_size": opts.pending_size,
            "dont_randomize": opts.no_randomize,
            "ping_interval": opts.ping_interval,
            "max_outstanding_pings": opts.max_outstanding_pings,
            "error_cb": self._on_error,
            "disconnected_cb": self._on_disconnected,
            "reconnected_cb": self._on_reconnected,
            "closed_cb": self._on_closed,
        }
        if opts.user is not None:
            kwargs["user"], kwargs["password"] = opts.user, opts.password
        if opts.token is not None:
            kwargs["token"] = opts.token
        if opts.nkey_seed_file is not None:
            kwargs["nkeys_seed"] = opts.nkey_seed_file
        if opts.creds_file is not None:
            kwargs["user_credentials"] = opts.creds_file
        if opts.tls is not None:
            kwargs["tls"] = _ssl_context(opts)
            if opts.tls.hostname:
                kwargs["tls_hostname"] = opts.tls.hostname
        nc = _Client()
        nc.counters = self.stats
        try:
            await self._bounded_connect(nc, kwargs)
        except (nats.errors.Error, OSError, TimeoutError) as exc:
            await _abandon(nc)
            errors = [*self._connect_errors, exc]
            if any(_is_refusal(error) for error in errors):
                raise AuthorizationError(
                    "the NATS server refused the credentials (authorization violation)",
                    servers=opts.redacted_servers,
                ) from exc
            cause = self._connect_errors[0] if self._connect_errors else exc
            raise ConnectError(
                f"cannot connect to NATS at {', '.join(opts.redacted_servers)}: {_describe(cause)}",
                servers=opts.redacted_servers,
            ) from exc
        nc.options["max_reconnect_attempts"] = opts.max_reconnect_attempts
        nc.options["reconnect_time_wait"] = opts.reconnect_wait
        return nc

    async def _bounded_connect(self, nc: _NatsClient, kwargs: dict[str, Any]) -> None:
        """``nc.connect`` that ends when nats-py reports a TLS or credential failure.

        After a failed TLS upgrade nats-py 2.16 waits forever on the old socket
        (nats-io/nats.py#718); its error callback has already told us, so stop there. A
        deadline covers every other way an attempt could stall.
        """
        self._connect_failed = asyncio.Event()
        connecting = asyncio.ensure_future(nc.connect(**kwargs))
        failed = asyncio.ensure_future(self._connect_failed.wait())
        budget = 3 * self.options.connect_timeout * 2 * len(self.options.servers) + 1.0
        try:
            await asyncio.wait({connecting, failed}, timeout=budget, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:  # our caller gave up (a stop): so does the attempt
            connecting.cancel()
            raise
        finally:
            failed.cancel()
        if connecting.done():
            connecting.result()  # success, or the error nats-py raised
            return
        connecting.cancel()
        await asyncio.wait({connecting})  # raises only if our own task is cancelled meanwhile
        error = None if connecting.cancelled() else connecting.exception()
        if error is not None:
            log.debug("the abandoned connect attempt failed: %s", _describe(error))
        if self._connect_failed.is_set():
            raise ConnectionError("nats-py reported a TLS or credential failure")  # details: error_cb
        raise TimeoutError(f"connect did not finish in {budget:g}s")

    def _log_retry(self, state: RetryCallState) -> None:
        outcome = state.outcome
        error = outcome.exception() if outcome is not None else None
        log.warning(
            "connect attempt %d of %d failed (%s); retrying in %.2fs",
            state.attempt_number,
            self.options.connect_attempts,
            error,
            state.upcoming_sleep,
        )

    async def close(self) -> None:
        """Drain and close. Idempotent; a closed connection cannot be reopened."""
        if self._state in (ConnectionState.CLOSED, ConnectionState.DRAINING):
            await self._closed.wait()
            return
        nc = self._nc
        self._state = ConnectionState.DRAINING
        try:
            if nc is not None and not nc.is_closed:
                if nc.is_connected:
                    await nc.drain()
                else:
                    await nc.close()
        except (nats.errors.Error, OSError, TimeoutError) as exc:
            log.warning("error while draining the connection: %s", _describe(exc))
            if nc is not None and not nc.is_closed:
                await nc.close()
        finally:
            self._state = ConnectionState.CLOSED
            self._closed.set()
            log.info("connection closed")

    async def __aenter__(self) -> Self:
        if self._state is ConnectionState.NEW:
            await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # --- messaging ---------------------------------------------------------------------

    @property
    def _client(self) -> _NatsClient:
        if self._nc is None:
            raise ConnectionClosed("the connection is not open")
        return self._nc

    async def publish(
        self,
        subject: str,
        data: bytes = b"",
        *,
        headers: Mapping[str, str] | None = None,
        reply: str = "",
    ) -> None:
        """Publish a message. Raises `PayloadTooLarge` (nothing sent) or `ConnectionClosed`."""
        nc = self._client
        if len(subject) + len(reply) > _MAX_SUBJECTS:
            raise _too_long(subject, reply)
        too_big = _fits(headers, len(data), nc.max_payload)
        if too_big:
            raise PayloadTooLarge(subject, too_big, nc.max_payload)
        try:
            await nc.publish(subject, data, reply=reply, headers=headers)  # type: ignore[arg-type]
        except nats.errors.Error as exc:
            raise _translate(exc, subject) from exc

    async def request(
        self,
        subject: str,
        data: bytes = b"",
        *,
        headers: Mapping[str, str] | None = None,
        timeout: float = 1.0,
    ) -> Message:
        """Send a request and wait for one reply.

        Raises `NoResponders` at once when nobody listens, `Timeout` when no reply comes in
        ``timeout`` seconds, `PayloadTooLarge` before sending an oversize message.
        """
        nc = self._client
        if len(subject) > _MAX_SUBJECTS:
            raise _too_long(subject, "")
        too_big = _fits(headers, len(data), nc.max_payload)
        if too_big:
            raise PayloadTooLarge(subject, too_big, nc.max_payload)
        try:
            msg = await nc.request(subject, data, timeout=timeout, headers=headers)  # type: ignore[arg-type]
        except nats.errors.TimeoutError as exc:
            raise Timeout(subject, timeout) from exc
        except nats.errors.Error as exc:
            raise _translate(exc, subject) from exc
        return Message(msg.subject, msg.data, msg.headers, msg.reply, getattr(msg, "received", 0.0))

    async def subscribe(
        self,
        subject: str,
        handler: MessageHandler,
        *,
        queue: str | None = None,
        pending_msgs_limit: int = PENDING_MSGS_LIMIT,
        pending_bytes_limit: int = PENDING_BYTES_LIMIT,
    ) -> Subscription:
        """Subscribe ``handler`` to ``subject`` (in a queue group when ``queue`` is given).

        Returns once the server holds the subscription: anything published afterwards, by
        any connection, reaches it. nats-py runs one subscription's handler calls one at a
        time, in order. Messages beyond the pending limits (nats-py's defaults: 524,288
        messages, 128 MiB) are dropped, counted in `Subscription.dropped` and logged (at most
        one warning per 10 s).
        """

        async def deliver(msg: _NatsMsg) -> None:
            if counting is not None:
                counting.release(msg)
            await handler(
                Message(msg.subject, msg.data, msg.headers, msg.reply, getattr(msg, "received", 0.0))
            )

        nc = self._client
        counting = nc if isinstance(nc, _Client) else None
        try:
            sub = await nc.subscribe(
                subject,
                queue=queue or "",
                cb=deliver,
                pending_msgs_limit=pending_msgs_limit,
                pending_bytes_limit=pending_bytes_limit,
            )
            if counting is not None:
                counting.count_headers(sub._id)
            await _round_trip(self._client, 5.0)
        except nats.errors.TimeoutError as exc:
            raise Timeout(subject, 5.0) from exc
        except nats.errors.Error as exc:
            raise _translate(exc, subject) from exc
        ours = Subscription(sub, subject, queue)
        self._subscriptions[sub._id] = ours
        return ours

    async def flush(self, timeout: float = 5.0) -> None:
        """Wait until the server has processed everything sent so far."""
        try:
            await _round_trip(self._client, timeout)
        except nats.errors.TimeoutError as exc:
            raise Timeout("<flush>", timeout) from exc
        except nats.errors.Error as exc:
            raise _translate(exc, "<flush>") from exc

    def new_inbox(self) -> str:
        """A unique reply subject."""
        return self._client.new_inbox()

    # --- callbacks -----------------------------------------------------------------------

    @property
    def _label(self) -> str:
        """How log lines name this connection: its client name, if it has one."""
        return repr(self.options.name) if self.options.name else "(unnamed)"

    async def _on_error(self, exc: Exception) -> None:
        if self._state is ConnectionState.NEW:
            self._connect_errors.append(exc)
            if isinstance(exc, ssl.SSLError) or _is_refusal(exc):
                self._connect_failed.set()
        if isinstance(exc, nats.errors.SlowConsumerError):
            self.stats.slow_consumer += 1
            ours = self._subscriptions.get(exc.sid)
            if ours is not None:
                ours._dropped_one()
            elif self.stats.slow_consumer == 1 or self.stats.slow_consumer % 10000 == 0:
                log.warning("slow consumer on '%s': messages dropped", exc.subject)
        else:
            log.warning("NATS connection error (connection %s): %s", self._label, _describe(exc))

    async def _on_disconnected(self) -> None:
        if self._state is ConnectionState.CONNECTED:
            self._state = ConnectionState.RECONNECTING
            log.warning("disconnected from NATS (connection %s); reconnecting", self._label)

    async def _on_reconnected(self) -> None:
        if self._state is ConnectionState.RECONNECTING:
            self._state = ConnectionState.CONNECTED
        log.warning("reconnected to NATS at %s (connection %s)", self.connected_url, self._label)

    async def _on_closed(self) -> None:
        if self._state not in (ConnectionState.DRAINING, ConnectionState.NEW):
            self._state = ConnectionState.CLOSED
            self._closed.set()
            log.warning("NATS connection closed by the client library (connection %s)", self._label)


async def _round_trip(nc: _NatsClient, timeout: float) -> None:
    """Send everything buffered, then PING and wait for the PONG.

    nats-py 2.16's ``flush()`` writes its PING straight to the socket while earlier commands
    (a SUB, a PUB) may still wait in its buffer for the flusher task, so the PONG can come back
    before the server has seen them. Pushing the buffer out first restores the guarantee.
    """
    await nc._flush_pending(force_flush=True)
    await nc.flush(timeout=math.ceil(timeout))


def _too_long(subject: str, reply: str) -> ConfigurationError:
    return ConfigurationError(
        f"subject '{subject[:60]}...' and reply subject are {len(subject) + len(reply)} characters, "
        f"over {_MAX_SUBJECTS}: nats-server would close the connection; nothing was sent"
    )


def _expire(future: asyncio.Future[_NatsMsg]) -> None:
    if not future.done():
        future.set_exception(nats.errors.TimeoutError)


def _is_refusal(error: BaseException) -> bool:
    return (
        isinstance(error, nats.errors.AuthorizationError) or "authorization violation" in str(error).lower()
    )


async def _abandon(nc: _NatsClient) -> None:
    """Close a client whose connect failed; bounded, since the failure may be a hang."""
    try:
        await asyncio.wait_for(nc.close(), 2.0)
    except (nats.errors.Error, OSError, TimeoutError) as exc:
        log.debug("closing the failed connection attempt: %s", _describe(exc))


def _ssl_context(opts: ConnectOptions) -> ssl.SSLContext:
    assert opts.tls is not None
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=opts.tls.ca_file)
    if opts.tls.cert_file and opts.tls.key_file:
        context.load_cert_chain(opts.tls.cert_file, opts.tls.key_file)
    return context


def _describe(exc: BaseException) -> str:
    """A one-line description of a dependency error, without internals."""
    text = str(exc).strip()
    name = type(exc).__name__
    return f"{name}: {text}" if text else name


def _translate(exc: nats.errors.Error, subject: str) -> EventMicroError:
    if isinstance(exc, nats.errors.NoRespondersError):
        return NoResponders(subject)
    if isinstance(exc, nats.errors.TimeoutError):
        return Timeout(subject, 0.0)
    if isinstance(exc, nats.errors.ConnectionClosedError | nats.errors.ConnectionDrainingError):
        return ConnectionClosed(f"cannot use '{subject}': the connection is closed or draining")
    if isinstance(exc, nats.errors.OutboundBufferLimitError):
        return ConnectionClosed(
            f"cannot publish to '{subject}': disconnected and the reconnect buffer is full"
        )
    if isinstance(exc, nats.errors.MaxPayloadError):
        return PayloadTooLarge(subject, -1, -1)
    return EventMicroError(f"NATS error on '{subject}': {_describe(exc)}")
