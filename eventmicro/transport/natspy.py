"""Every use of nats-py's private parts, in one module: what eventmicro changes in nats-py.

Checked against nats-py 2.16.0 (`CHECKED_WITH`); ``tests/transport/test_natspy_privates.py`` fails
when an installed nats-py no longer has what is used here, and ``pyproject.toml`` allows only
the versions that test has passed. Nothing outside `eventmicro.transport.connection` imports this module.

What is used, and why:

- `Client` overrides ``_request_new_style`` and ``_init_request_sub`` (replies resolve their
  future in the reader, one timer, unguessable tokens), ``_process_msg`` (no message can raise
  out of the reader; header blocks count against a subscription's pending bytes; messages of
  a `Client.dispatch_directly` subscription go from the reader to their handler),
  ``_process_headers`` / ``_parse_header_lines`` (`parse_header_block`: never raises but
  `MalformedHeaders`), ``_build_message`` (arrival stamp), ``_read_loop`` (reconnect when the
  reader dies), ``_send_publish`` (faster header encoding, same bytes), ``_process_err``
  (a permissions violation becomes a `PermissionViolation` naming the subject as sent, read
  from the parser's ``_ps.buf`` since nats-py lower-cases the message; a pending request to
  that subject fails with it at once); and reads ``_subs``, ``_sid``, ``_resp_map``,
  ``_resp_sub_prefix``, ``_flush_queue``, ``_send_command``, ``_process_op_err``,
  ``_error_cb``, ``_ps``, ``_transport``.
- nats-py's ``Subscription``: ``_pending_size``, ``_pending_queue``, ``_jsi``, ``_id``,
  ``_closed``, ``_conn``, ``_wait_for_msgs_task`` (`subscription_active`), ``_stop_processing``
  (`drain_subscription`, which also calls the client's ``_send_unsubscribe`` and ``_remove_sub``).
- `round_trip` calls ``_flush_pending``; `server_info` reads ``_server_info``; `forget_unsent`
  empties ``_pending`` and ``_pending_data_size``.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import math
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Final

import nats.errors
from nats.aio.client import Client as _NatsClient
from nats.aio.msg import Msg as _NatsMsg
from nats.aio.subscription import Subscription as _NatsSubscription
from nats.protocol import command as prot_command

from eventmicro.transport.message import Message
from eventmicro.transport.quiet import Quiet
from eventmicro.wire.message import HeaderBlock

__all__ = [
    "CHECKED_WITH",
    "TOKEN",
    "Client",
    "ConnectionStats",
    "DirectHandler",
    "MalformedHeaders",
    "PermissionViolation",
    "StampedMsg",
    "drain_subscription",
    "fits",
    "forget_unsent",
    "headers_size",
    "parse_header_block",
    "round_trip",
    "server_info",
    "subscription_active",
]

DirectHandler = Callable[[Message, int], Awaitable[None]]  # a message and its size in bytes

CHECKED_WITH: Final = "2.16.0"  # the nats-py these overrides were checked against
log = logging.getLogger("eventmicro.connection")

_HEADER_LINE: Final = len(b"NATS/1.0\r\n")
_NEWLINES: Final = str.maketrans({"\r": " ", "\n": " "})

_MAX_CACHED_NAME: Final = 64  # longer header names are encoded each time, never cached

_CACHED_NAMES: Final = 1024  # so the name cache holds at most ~70 KiB


# nats-server's refusal: -ERR 'Permissions Violation for Publish to "x"' (Subscription to "x"
# [using queue "q"]); nats-py hands `_process_err` the line lower-cased, the parser still holds it
_VIOLATION: Final = re.compile(
    rb"-ERR\s+'Permissions Violation for (Publish|Subscription) to \"([^\"]*)\"", re.I
)
_VIOLATION_TEXT: Final = re.compile(r"permissions violation for (publish|subscription) to \"([^\"]*)\"", re.I)
_REFUSALS_KEPT: Final = 64


class PermissionViolation(nats.errors.Error):
    """The server refused a publish or a subscription of this connection's user."""

    def __init__(self, operation: str, subject: str) -> None:
        super().__init__(f"permissions violation for {operation} to '{subject}'")
        self.operation = operation  # "publish" or "subscribe"
        self.subject = subject
        self.told = False  # a waiting request failed with it: its caller knows


def violation_of(line: bytes, text: str) -> PermissionViolation | None:
    """The permissions violation an ``-ERR`` reports: from the raw ``line`` (the subject as sent),
    else from nats-py's lower-cased ``text``; None for any other error."""
    found = _VIOLATION.match(line)
    if found is not None:
        operation, subject = found.group(1).decode("ascii").lower(), found.group(2).decode("utf-8", "replace")
    else:
        text_found = _VIOLATION_TEXT.search(text)
        if text_found is None:
            return None
        operation, subject = text_found.group(1).lower(), text_found.group(2)
    return PermissionViolation("publish" if operation == "publish" else "subscribe", subject)


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


_keys: dict[str, str | None] = {}  # a header line's name part -> its key, None when skipped
_ASCII_SPACE: Final = " \t\n\r\x0b\x0c"  # what bytes.strip() strips (str.strip() strips more)


def _parse_header_lines(raw: bytes) -> dict[str, str]:
    if raw.isascii():  # the common case: decoded once, names looked up in a bounded cache
        out: dict[str, str] = {}
        keys = _keys
        for line in raw.decode("ascii").split("\r\n"):
            name, sep, value = line.partition(":")
            if not sep:
                continue
            if name in keys:
                key = keys[name]
            else:
                key = name.strip(_ASCII_SPACE)
                if key and key.split() != [key]:
                    key = None  # whitespace inside a name: skipped, as nats-py does
                if len(name) <= _MAX_CACHED_NAME and len(keys) < _CACHED_NAMES:
                    keys[name] = key
            if key is not None:
                out[key] = value.strip(_ASCII_SPACE)
        return out
    return _parse_any_header_lines(raw)


def _parse_any_header_lines(raw: bytes) -> dict[str, str]:
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

    __slots__ = (
        "_malformed_quiet",
        "denied_publish",
        "denied_subscribe",
        "malformed",
        "reader_restarts",
        "slow_consumer",
    )

    def __init__(self) -> None:
        self.denied_publish = 0  # publishes the server refused (permissions violation)
        self.denied_subscribe = 0  # subscriptions the server refused
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


def fits(headers: Mapping[str, str] | None, body: int, limit: int) -> int:
    """0 when the message fits ``limit``; else its exact size. Cheap bound first."""
    if headers is None:  # nats-py sends HPUB, header block included, for any dict, even {}
        return 0 if body <= limit else body
    if headers.__class__ is HeaderBlock and headers.block is not None:  # encoded: its size is known
        size = body + len(headers.block)
        return 0 if size <= limit else size
    rough = _HEADER_LINE + 2
    for key, value in headers.items():
        rough += len(key) + len(value) + 4
    if body + 4 * rough <= limit:  # UTF-8 needs at most 4 bytes per character
        return 0
    size = body + headers_size(headers)
    return 0 if size <= limit else size


TOKEN: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 7230 token: a header name


@dataclass
class StampedMsg(_NatsMsg):
    """nats-py's message, stamped with the moment the reader took it off the socket."""

    received: float = 0.0
    counted: int = 0  # header bytes counted in its subscription's pending bytes (see _Client)


class Client(_NatsClient):
    """nats-py's client with faster header handling and the same bytes on the wire.

    nats-py 2.16 checks every header name for whitespace one character at a time when
    parsing, and validates and encodes every name again when publishing; with CloudEvents in
    binary mode (seven or more headers a message) that was most of its per-message cost.
    """

    _names: ClassVar[dict[str, str]] = {}  # short header name -> "Name: ", validated once
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
        self._asked[token] = subject  # a refusal to publish there fails it at once
        try:
            await self.publish(subject, payload, reply=prefix.decode() + token, headers=headers)
            timer = future.get_loop().call_later(timeout, _expire, future)
            try:
                return await future
            finally:
                timer.cancel()
        finally:
            self._resp_map.pop(token, None)
            del self._asked[token]

    _resp_sid: int = 0
    # Subscriptions (by sid) whose pending bytes count header blocks too: nats-py counts only
    # the payload, so messages with empty bodies and ~1 MB header blocks were buffered without
    # bound (524,288 of them). The callback of each must call `release` for every message.
    _header_bytes: int = 0  # of the message being built (read by _build_message)

    def __init__(self) -> None:
        super().__init__()
        self._counting: set[int] = set()
        self._direct: dict[int, DirectHandler] = {}
        self._asked: dict[str, str] = {}  # token of a pending request -> its subject
        self.refusals = 0  # permissions violations so far; the latest ones are in `refused`
        self.refused: collections.deque[PermissionViolation] = collections.deque(maxlen=_REFUSALS_KEPT)

    def refused_since(self, mark: int, operation: str, subject: str) -> PermissionViolation | None:
        """The refusal of ``operation`` on ``subject`` among those after ``refusals`` was ``mark``."""
        recent = min(self.refusals - mark, len(self.refused))
        for violation in itertools.islice(reversed(self.refused), max(recent, 0)):
            if violation.operation == operation and violation.subject == subject:
                return violation
        return None

    async def _process_err(self, err_msg: str) -> None:
        """A permissions violation: counted, kept, failing the pending requests it concerns,
        and reported to the error callback as a `PermissionViolation`; the connection stays
        open (the server keeps it). Any other error: nats-py's handling."""
        line = bytes(self._ps.buf[:512]) if isinstance(self._ps.buf, bytes | bytearray) else b""
        violation = violation_of(line, err_msg)
        if violation is None:
            await super()._process_err(err_msg)
            return
        self.refusals += 1
        self.refused.append(violation)
        if violation.operation == "publish":
            self.counters.denied_publish += 1
            pending = [token for token, subject in self._asked.items() if subject == violation.subject]
        else:
            self.counters.denied_subscribe += 1
            prefix = self._resp_sub_prefix
            inbox = prefix is not None and violation.subject == prefix.decode() + "*"
            pending = list(self._asked) if inbox else []
            if inbox:  # no reply can arrive: the next request subscribes (and is refused) again
                self._resp_sub_prefix = None
        for token in pending:
            future = self._resp_map.get(token)
            if future is not None and not future.done():
                future.set_exception(violation)
                violation.told = True
        await self._error_cb(violation)

    def count_headers(self, sid: int) -> None:
        self._counting.add(sid)

    def dispatch_directly(self, sid: int, handler: DirectHandler) -> None:
        """Hand subscription ``sid``'s messages to ``handler`` from the reader itself.

        No `Msg`, no pending queue, no hop through the subscription's task: ``handler`` is
        awaited by the reader, so it must not wait (it admits or refuses, and hands the work
        to a task). nats-py's pending limits do not apply; the handler bounds its own backlog.
        """
        self._direct[sid] = handler

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
        direct = self._direct.get(sid)
        if direct is not None:
            try:
                if sid not in self._subs:  # unsubscribed: nats-py drops these too
                    del self._direct[sid]
                    return
                stats = self.stats
                stats["in_msgs"] += 1
                stats["in_bytes"] += len(data)
                message = Message(
                    subject.decode(), data, parse_header_block(headers), reply.decode(), time.monotonic()
                )
            except Exception as exc:  # the message is dropped, counted and logged
                self.counters.dropped_malformed(subject, exc)
                return
            try:
                await direct(message, len(data) + len(headers) if headers else len(data))
            except Exception:  # a handler's own failure must not stop the reader
                log.exception("the handler of '%s' failed", message.subject[:128])
            return
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
            future.set_result(self._build_message(sid, subject, reply, data, parse_header_block(headers)))
        except Exception as exc:  # the message is dropped, counted and logged
            self.counters.dropped_malformed(subject, exc)

    async def _process_headers(self, headers: bytes) -> dict[str, str] | None:
        return parse_header_block(headers)

    def _build_message(
        self, sid: int, subject: bytes, reply: bytes, data: bytes, headers: dict[str, str] | None
    ) -> _NatsMsg:
        return StampedMsg(
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
        # a HeaderBlock was encoded once, by the binding (same bytes as _header_block's)
        block = headers.block if headers.__class__ is HeaderBlock else None
        if block is None:
            block = self._header_block(headers)
        self.stats["out_msgs"] += 1
        self.stats["out_bytes"] += payload_size
        await self._send_command(prot_command.hpub_cmd(subject, reply, block, payload))
        if self._flush_queue is not None and self._flush_queue.empty():
            await self._flush_pending()

    def _header_block(self, headers: dict[str, Any]) -> bytes:
        """The header block nats-py would write for ``headers``, joined as text and encoded once."""
        names = self._names
        parts = ["NATS/1.0\r\n"]  # joined and encoded once
        for name, value in headers.items():
            prefix = names.get(name)
            if prefix is None:
                key = name.strip()
                if not key:
                    continue
                if not TOKEN.fullmatch(key):
                    raise nats.errors.BadHeaderError(key)
                prefix = key + ": "
                if len(name) <= _MAX_CACHED_NAME and len(names) < _CACHED_NAMES:
                    names[name] = prefix
            text = value.strip()
            if "\r" in text or "\n" in text:
                text = text.translate(_NEWLINES)
            parts.append(prefix)
            parts.append(text)
            parts.append("\r\n")
        parts.append("\r\n")
        return "".join(parts).encode()


def forget_unsent(nc: _NatsClient) -> int:
    """Empty the buffer of a client that is not connected, before closing it; the bytes forgotten.

    What a disconnected client buffered waits for a reconnect that a close ends. nats-py 2.16's
    ``close()`` writes it to the socket that was lost all the same: asyncio's transport drops
    it quietly, uvloop's raises ``RuntimeError`` and leaves the close half done.
    """
    forgotten = nc._pending_data_size
    nc._pending = []
    nc._pending_data_size = 0
    return forgotten


async def round_trip(nc: _NatsClient, timeout: float) -> None:
    """Send everything buffered, then PING and wait for the PONG.

    nats-py 2.16's ``flush()`` writes its PING straight to the socket while earlier commands
    (a SUB, a PUB) may still wait in its buffer for the flusher task, so the PONG can come back
    before the server has seen them. Pushing the buffer out first restores the guarantee.
    """
    await nc._flush_pending(force_flush=True)
    await nc.flush(timeout=math.ceil(timeout))


async def drain_subscription(sub: _NatsSubscription, timeout: float) -> None:
    """nats-py's ``Subscription.drain``, with its UNSUB on the wire before the PING.

    nats-py 2.16 queues the UNSUB for its flusher and writes the PING at once, so the PONG can
    come back before the server has seen the UNSUB; it then forgets the subscription, and the
    messages the server still routes to it are dropped. Here the UNSUB is pushed out first, so
    after the PONG nothing more comes for it, and every message received until then is handled.
    """
    nc = sub._conn
    if nc.is_closed:
        raise nats.errors.ConnectionClosedError
    if nc.is_draining:
        raise nats.errors.ConnectionDrainingError
    if sub._closed:
        raise nats.errors.BadSubscriptionError
    try:
        await nc._send_unsubscribe(sub._id)
        await round_trip(nc, timeout)
        if sub._pending_queue:
            await sub._pending_queue.join()
        sub._stop_processing()
        nc._remove_sub(sub._id)
    finally:
        sub._closed = True


def _expire(future: asyncio.Future[_NatsMsg]) -> None:
    if not future.done():
        future.set_exception(nats.errors.TimeoutError)


def subscription_active(sub: _NatsSubscription) -> bool:
    """True while ``sub`` holds its interest and its handler task runs."""
    task: asyncio.Task[None] | None = sub._wait_for_msgs_task
    return not sub._closed and sub._id in sub._conn._subs and (task is None or not task.done())


def server_info(nc: _NatsClient) -> dict[str, Any]:
    """The INFO the connected server announced."""
    return dict(nc._server_info)
