"""The seam to nats-py: connect, publish, request, subscribe, drain — with errors translated.

Every nats-py error that can reach a caller is turned into an eventmicro error by `translate`,
here, with ``raise ... from exc``; the JetStream and KV modules (`eventmicro.transport.jetstream`,
`eventmicro.transport.kv`) make their calls on `Connection.jetstream` and translate with it too.
What eventmicro changes in nats-py's private parts is in `eventmicro.transport.natspy`, imported only
here. Only these four modules import ``nats`` (checked by ``make imports``).

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
import logging
import ssl
import time
from collections.abc import Awaitable, Mapping
from types import TracebackType
from typing import Any, Final, Self

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client as _NatsClient
from nats.aio.msg import Msg as _NatsMsg
from nats.aio.subscription import Subscription as _NatsSubscription
from nats.js import JetStreamContext
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)

from eventmicro._errors import (
    AuthorizationError,
    ConfigurationError,
    ConnectError,
    ConnectionClosed,
    EventMicroError,
    JetStreamError,
    NoResponders,
    PayloadTooLarge,
    PermissionDenied,
    Timeout,
)
from eventmicro.transport.config import ConnectOptions, redact_url
from eventmicro.transport.creds import refusal_hint
from eventmicro.transport.intake import Intake, Spawn
from eventmicro.transport.message import Message, MessageHandler
from eventmicro.transport.natspy import (
    TOKEN,
    Client,
    ConnectionStats,
    DirectHandler,
    MalformedHeaders,
    PermissionViolation,
    drain_subscription,
    fits,
    forget_unsent,
    headers_size,
    parse_header_block,
    round_trip,
    server_info,
    subscription_active,
)
from eventmicro.transport.quiet import Quiet

__all__ = [
    "TOKEN",
    "Connection",
    "ConnectionState",
    "ConnectionStats",
    "MalformedHeaders",
    "Message",
    "MessageHandler",
    "Subscription",
    "describe_api",
    "headers_size",
    "parse_header_block",
    "translate",
]

log = logging.getLogger("eventmicro.connection")

# nats-server cuts (and nats-py then closes for good) a connection whose protocol line is over
# max_control_line (4 KiB by default): subject and reply together stay well under it
_MAX_SUBJECTS: Final = 3840
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


class Subscription:
    """An active subscription; `drain` lets queued messages finish, `unsubscribe` drops them.

    ``dropped`` counts the messages nats-py threw away because this subscription's buffer was
    full (a slow consumer); ``last_drop`` is when the latest was (`time.monotonic`, 0.0 never).
    """

    __slots__ = ("_intake", "_quiet", "_sub", "dropped", "last_drop", "queue", "subject")

    def __init__(
        self, sub: _NatsSubscription, subject: str, queue: str | None, intake: Intake | None = None
    ) -> None:
        self._sub = sub
        self._intake = intake
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
        if self._intake is not None:
            return self._intake.pending
        return int(self._sub.pending_msgs)

    @property
    def active(self) -> bool:
        """True while the subscription holds its interest and its handler task runs."""
        return subscription_active(self._sub)

    async def drain(self) -> None:
        """Stop interest on the server, then wait for already-received messages to be handled."""
        try:
            await drain_subscription(self._sub, 5.0)
        except nats.errors.TimeoutError as exc:
            raise Timeout(self.subject, 5.0) from exc
        except nats.errors.Error as exc:
            raise translate(exc, self.subject) from exc
        if self._intake is not None:
            await self._intake.idle()

    async def unsubscribe(self) -> None:
        """Stop at once; messages not yet handled are dropped."""
        if self._intake is not None:
            self._intake.clear()
        try:
            await self._sub.unsubscribe()
        except nats.errors.Error as exc:
            raise translate(exc, self.subject) from exc


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
        self._jetstreams: dict[_NatsClient, dict[float, JetStreamContext]] = {}
        self._subscriptions: dict[int, Subscription] = {}  # nats-py sid -> ours, for drop counts
        self._refusals_quiet = Quiet()  # one warning per 10 s about refused publishes

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
        return server_info(self._client)

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
        try:
            async for attempt in retrying:
                with attempt:
                    self._nc = await self._connect_once()
        except ConnectError as exc:  # the last attempt's reason, and what to do about it
            if isinstance(exc, AuthorizationError):  # a refusal: the server is there
                raise
            raise ConnectError(
                f"{exc} (after {opts.connect_attempts} attempt(s)). {_NO_SERVER_HINT}", servers=exc.servers
            ) from exc.__cause__
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
            "inbox_prefix": opts.inbox_prefix,
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
        nc = Client()
        nc.counters = self.stats
        try:
            await self._bounded_connect(nc, kwargs)
        except (nats.errors.Error, OSError, TimeoutError) as exc:
            await _abandon(nc)
            errors = [*self._connect_errors, exc]
            if any(_is_refusal(error) for error in errors):
                raise AuthorizationError(
                    "the NATS server refused the credentials (authorization violation)"
                    + refusal_hint(opts.creds_file),
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
        reported = self._connect_failed.is_set()  # the attempt's TLS or credential error was logged
        log.log(  # one line per attempt; nats-py's other reports are at debug level
            logging.DEBUG if reported else logging.WARNING,
            "connect attempt %d of %d failed: %s; retrying in %.2fs",
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
                    if unsent := forget_unsent(nc):  # no server to send them to: say so
                        log.warning(
                            "closing while disconnected: %d bytes of buffered messages not sent", unsent
                        )
                    await nc.close()
        except (
            nats.errors.Error,
            OSError,
            TimeoutError,
            RuntimeError,
        ) as exc:  # RuntimeError: uvloop's lost socket
            log.warning("error while draining the connection: %s", _describe(exc))
            if nc is not None and not nc.is_closed:
                forget_unsent(nc)
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
        _check_sendable(nc, subject, reply, headers, len(data))
        try:
            await nc.publish(subject, data, reply=reply, headers=headers)  # type: ignore[arg-type]
        except nats.errors.Error as exc:
            raise translate(exc, subject) from exc

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
        _check_sendable(nc, subject, "", headers, len(data))
        try:
            msg = await nc.request(subject, data, timeout=timeout, headers=headers)  # type: ignore[arg-type]
        except nats.errors.TimeoutError as exc:
            raise Timeout(subject, timeout) from exc
        except nats.errors.Error as exc:
            raise translate(exc, subject) from exc
        return Message(msg.subject, msg.data, msg.headers, msg.reply, getattr(msg, "received", 0.0))

    async def subscribe(
        self,
        subject: str,
        handler: MessageHandler,
        *,
        queue: str | None = None,
        pending_msgs_limit: int = PENDING_MSGS_LIMIT,
        pending_bytes_limit: int = PENDING_BYTES_LIMIT,
        direct: bool = False,
        concurrency: int | None = None,
        spawn: Spawn | None = None,
    ) -> Subscription:
        """Subscribe ``handler`` to ``subject`` (in a queue group when ``queue`` is given).

        Returns once the server holds the subscription: anything published afterwards, by
        any connection, reaches it. By default nats-py runs one subscription's handler calls
        one at a time, in order. Messages beyond the pending limits (nats-py's defaults:
        524,288 messages, 128 MiB, header blocks included) are dropped, counted in
        `Subscription.dropped` and logged (at most one warning per 10 s).

        With ``concurrency``, up to that many handler calls run at a time, started in arrival
        order on tasks made by ``spawn`` (default `asyncio.ensure_future`); the reader hands
        each message over without a hop through a task, and the pending limits bound what
        waits (`eventmicro.transport.intake`).

        With ``direct``, the connection's reader awaits ``handler`` itself, message by message,
        with no buffer between them: the handler must not wait (admit, refuse or hand the work
        to a task) and bounds its own backlog; the pending limits do not apply.
        """
        intake: Intake | None = None
        target: DirectHandler | None = None
        if concurrency is not None:
            intake = Intake(
                handler,
                concurrency=concurrency,
                max_msgs=pending_msgs_limit,
                max_bytes=pending_bytes_limit,
                spawn=spawn or asyncio.ensure_future,
                on_drop=lambda: self._dropped(ours, subject),
            )
            target = intake.offer
        elif direct:
            target = _without_size(handler)

        async def deliver(msg: _NatsMsg) -> None:
            if counting is not None:
                counting.release(msg)
            message = Message(msg.subject, msg.data, msg.headers, msg.reply, getattr(msg, "received", 0.0))
            if target is not None:  # arrived before the subscription was handed to the reader
                await target(message, len(msg.data))
            else:
                await handler(message)

        nc = self._client
        counting = nc if isinstance(nc, Client) else None
        ours: Subscription | None = None
        refusals = counting.refusals if counting is not None else 0
        try:
            sub = await nc.subscribe(
                subject,
                queue=queue or "",
                cb=deliver,
                pending_msgs_limit=pending_msgs_limit,
                pending_bytes_limit=pending_bytes_limit,
            )
            if counting is not None:
                if target is not None:
                    counting.dispatch_directly(sub._id, target)
                else:
                    counting.count_headers(sub._id)
            await round_trip(self._client, 5.0)
            refused = counting.refused_since(refusals, "subscribe", subject) if counting is not None else None
            if refused is not None:  # the server answered the SUB with -ERR before the PONG
                await sub.unsubscribe()
                raise refused
        except nats.errors.TimeoutError as exc:
            raise Timeout(subject, 5.0) from exc
        except nats.errors.Error as exc:
            raise translate(exc, subject) from exc
        ours = Subscription(sub, subject, queue, intake)
        self._subscriptions[sub._id] = ours
        return ours

    def _dropped(self, subscription: Subscription | None, subject: str) -> None:
        """A message dropped because a subscription's buffer (nats-py's or an intake's) was full."""
        self.stats.slow_consumer += 1
        if subscription is not None:
            subscription._dropped_one()
        elif self.stats.slow_consumer == 1 or self.stats.slow_consumer % 10000 == 0:
            log.warning("slow consumer on '%s': messages dropped", subject)

    async def flush(self, timeout: float = 5.0) -> None:
        """Wait until the server has processed everything sent so far."""
        try:
            await round_trip(self._client, timeout)
        except nats.errors.TimeoutError as exc:
            raise Timeout("<flush>", timeout) from exc
        except nats.errors.Error as exc:
            raise translate(exc, "<flush>") from exc

    def new_inbox(self) -> str:
        """A unique reply subject."""
        return self._client.new_inbox()

    def jetstream(self, timeout: float = 5.0) -> JetStreamContext:
        """nats-py's JetStream context on this connection (one per timeout, made once), for
        the transport modules that make JetStream and KV calls (`eventmicro.transport.jetstream`,
        `eventmicro.transport.kv`)."""
        nc = self._client
        contexts = self._jetstreams.get(nc)
        if contexts is None:
            contexts = self._jetstreams[nc] = {}
        js = contexts.get(timeout)
        if js is None:
            js = contexts[timeout] = nc.jetstream(timeout=timeout)
        return js

    def check_size(self, subject: str, headers: Mapping[str, str] | None, body: int) -> None:
        """Raise before sending what the server would refuse by closing the connection: headers
        plus ``body`` bytes over ``max_payload`` (`PayloadTooLarge`), or a subject too long."""
        _check_sendable(self._client, subject, "", headers, body)

    # --- callbacks -----------------------------------------------------------------------

    @property
    def _label(self) -> str:
        """How log lines name this connection: its client name, if it has one."""
        return repr(self.options.name) if self.options.name else "(unnamed)"

    async def _on_error(self, exc: Exception) -> None:
        if self._state is ConnectionState.NEW:  # one line per attempt: this, or open()'s retry line
            self._connect_errors.append(exc)
            if isinstance(exc, ssl.SSLError) or _is_refusal(exc):  # ends the attempt: say why now
                self._connect_failed.set()
                log.warning("NATS connection error (connection %s): %s", self._label, _describe(exc))
            else:  # e.g. nothing listens: the attempt's failure is logged once, by open()
                log.debug("connect error (connection %s): %s", self._label, _describe(exc))
            return
        if isinstance(exc, nats.errors.SlowConsumerError):
            self._dropped(self._subscriptions.get(exc.sid), exc.subject)
        elif isinstance(exc, PermissionViolation):
            self._refused(exc)
        else:
            log.warning("NATS connection error (connection %s): %s", self._label, _describe(exc))

    def _refused(self, violation: PermissionViolation) -> None:
        """The server refused this connection's user a publish or a subscription (counted in
        `stats` by the client): a request or a subscription raises `PermissionDenied` to its
        caller; a plain publish has no caller waiting, so it is said here (rate-limited)."""
        if violation.told:  # a request failed with it: its caller has the error
            log.debug(
                "NATS refused %s to '%s' (a request's caller was told)",
                violation.operation,
                violation.subject,
            )
            return
        held = self._refusals_quiet.due()
        if held >= 0:
            log.error(
                "NATS refused %s to '%s': the connection's user (connection %s) has no permission "
                "for it (%d refusals so far; see docs/permissions.md)",
                violation.operation,
                violation.subject,
                self._label,
                self.stats.denied_publish + self.stats.denied_subscribe,
            )

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


_NO_SERVER_HINT: Final = (
    "Is a NATS server running there? Start one with `eventmicro server`, "
    "or point NATS_URL (or --url) at yours."
)


def _check_sendable(
    nc: _NatsClient, subject: str, reply: str, headers: Mapping[str, str] | None, body: int
) -> None:
    """The one check before anything is sent: what nats-server answers by cutting the
    connection (a protocol line over its limit, a message over ``max_payload``) raises here."""
    if len(subject) + len(reply) > _MAX_SUBJECTS:
        raise ConfigurationError(
            f"subject '{subject[:60]}...' and reply subject are {len(subject) + len(reply)} characters, "
            f"over {_MAX_SUBJECTS}: nats-server would close the connection; nothing was sent"
        )
    too_big = fits(headers, body, nc.max_payload)
    if too_big:
        raise PayloadTooLarge(subject, too_big, nc.max_payload)


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


def translate(
    exc: nats.errors.Error, what: str, *, timeout: float = 0.0, jetstream: bool = False
) -> EventMicroError:
    """The one translation of a nats-py error into eventmicro's (``raise ... from exc``).

    ``what`` names the subject or the object concerned; ``timeout`` is the limit that ran out;
    ``jetstream`` marks a JetStream API call, where "no responders" means JetStream is not
    there (`JetStreamError` 503) rather than no service (`NoResponders`).
    """
    if isinstance(exc, PermissionViolation):
        return PermissionDenied(exc.subject, exc.operation)
    if isinstance(exc, nats.js.errors.ServiceUnavailableError | nats.js.errors.NoStreamResponseError):
        return JetStreamError(
            f"{what}: JetStream did not answer (disabled, or the stream is gone)", status=503
        )
    if isinstance(exc, nats.js.errors.APIError):
        return JetStreamError(
            f"{what}: {describe_api(exc)}", err_code=exc.err_code or 0, status=exc.code or 0
        )
    if isinstance(exc, nats.errors.NoRespondersError):
        if jetstream:
            return JetStreamError(
                f"{what}: no JetStream responder (disabled, or the stream is gone)", status=503
            )
        return NoResponders(what)
    if isinstance(exc, nats.errors.TimeoutError):
        return Timeout(what, timeout)
    if isinstance(exc, nats.errors.ConnectionClosedError | nats.errors.ConnectionDrainingError):
        return ConnectionClosed(f"cannot use '{what}': the connection is closed or draining")
    if isinstance(exc, nats.errors.OutboundBufferLimitError):
        return ConnectionClosed(f"cannot publish to '{what}': disconnected and the reconnect buffer is full")
    if isinstance(exc, nats.errors.MaxPayloadError):
        return PayloadTooLarge(what, -1, -1)
    if jetstream:
        return JetStreamError(f"{what}: {_describe(exc)}")
    return EventMicroError(f"NATS error on '{what}': {_describe(exc)}")


def describe_api(exc: nats.js.errors.APIError) -> str:
    """A JetStream API error's description and code, for a message."""
    text = (exc.description or "refused").strip()
    return f"{text} (err_code {exc.err_code})" if exc.err_code else text


def _without_size(handler: MessageHandler) -> DirectHandler:
    def direct(message: Message, size: int) -> Awaitable[None]:
        return handler(message)

    return direct
