"""Dead letters: the stream that keeps them, storing one so that it always lands, and the API
to list, show, replay and purge them.

The shapes of a dead letter, the first one that the stream accepts (they are tried in order)::

    1. as received, plus the failure      original headers + failure headers, original body
    2. ... without the body               original headers + failure headers, no body
    3. wrapped                            failure headers only; body = the original header block
                                          in NATS wire form (b"NATS/1.0\r\nName: value\r\n...\r\n")
                                          followed by the original body
    4. wrapped, without the body          body = the original header block only
    5. wrapped, headers cut to fit        body = as many whole header lines as fit under max_payload

Shapes 1 and 2 are used only when every original header name is one eventmicro can publish (an
RFC 7230 token) and the header block stays within JetStream's 64 KiB header limit; otherwise a
message that nats-server accepted (a name such as ``x/y``, 64 KiB of headers) is wrapped, so
it always lands. The failure is in ``ce-dlq*`` headers (shape 1 and 2 of a binary CloudEvent:
CloudEvents extensions) or ``eventmicro-dlq*`` headers (everything else): ``dlqcode``,
``dlqreason`` (at most 1,000 characters, control characters replaced), ``dlqdeliveries``,
``dlqsubject``, ``dlqstream``, ``dlqsequence``, ``dlqservice``, ``dlqhandler``, ``dlqtime``;
and the shape's markers: ``dlqbodydropped: true`` (no body: `DeadLetters.replay` takes it from
the original stream), ``dlqheaders: N`` (the first N bytes of the body are the original header
block), ``dlqheaderstruncated: true`` (header lines were left out). ``Nats-*`` headers of the
original are never kept.

The dead-letter stream (``DEADLETTERS``, shared by all services) has limits and discards the
oldest dead letters beyond them: see `dead_letter_stream`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from eventmicro._errors import EventMicroError, JetStreamError, NotStored, PayloadTooLarge
from eventmicro.transport.connection import TOKEN as _TOKEN
from eventmicro.transport.connection import Connection, headers_size
from eventmicro.transport.jetstream import (
    MSG_ID_HEADER,
    Delivery,
    Stored,
    StoredMessage,
    Stream,
    delete_message,
    get_message,
    publish,
    purge,
    stream_messages,
)
from eventmicro.wire import binding
from eventmicro.wire.attributes import _FORBIDDEN_RE
from eventmicro.wire.event import Event
from eventmicro.wire.headervalues import decode_header_value, encode_header_value
from eventmicro.wire.names import DEAD_LETTER_PREFIX, DEAD_LETTER_STREAM, dead_letter_subject

__all__ = [
    "DEAD_LETTER_MAX_AGE",
    "DEAD_LETTER_MAX_BYTES",
    "DeadLetter",
    "DeadLetters",
    "Replayed",
    "dead_letter_stream",
    "store_dead_letter",
]

log = logging.getLogger("eventmicro.durable")

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
    "dlqheaders",
    "dlqheaderstruncated",
)
_PLAIN_PREFIX: Final = "eventmicro-"  # failure headers on a dead letter that is not a binary CloudEvent
_HEADER_LIMIT: Final = 65_535  # bytes: JetStream refuses to store a larger header block (err 10097)
_REASON_LIMIT: Final = 1000  # characters of a failure's text kept in a dead letter
_BLOCK_START: Final = b"NATS/1.0\r\n"
DEAD_LETTER_MAX_BYTES: Final = 1 << 30  # 1 GiB
DEAD_LETTER_MAX_AGE: Final = 30 * 86400.0  # 30 days


def dead_letter_stream(
    replicas: int = 1,
    *,
    max_bytes: int | None = DEAD_LETTER_MAX_BYTES,
    max_age: float | None = DEAD_LETTER_MAX_AGE,
    max_msgs: int | None = None,
) -> Stream:
    """The stream that keeps dead letters (all services) until replayed, purged or past its
    limits: at most ``max_bytes`` (1 GiB), ``max_age`` seconds (30 days) and ``max_msgs``
    (no limit) — ``None`` lifts a limit; beyond a limit the oldest dead letters are discarded.

    A service creates it with these defaults when it has durable handlers and the stream does
    not exist yet; an existing one is adopted as it is (its limits and replicas are the
    operator's). To set other limits, declare it among the service's streams, which are
    created or updated before it is adopted::

        Service("billing", streams=[dead_letter_stream(max_bytes=8 << 30, max_age=90 * 86400)])
    """
    return Stream(
        DEAD_LETTER_STREAM,
        [f"{DEAD_LETTER_PREFIX}.>"],
        replicas=replicas,
        max_bytes=max_bytes,
        max_age=max_age,
        max_msgs=max_msgs,
        description="eventmicro dead letters",
    )


async def store_dead_letter(
    connection: Connection,
    service: str,
    handler: str,
    delivery: Delivery,
    *,
    code: int,
    reason: str,
    attempts: int | None = None,
) -> Stored:
    """Publish ``delivery`` with its failure to the dead-letter stream (deduplicated per
    message), in the first shape of the module docstring that fits and that the stream accepts.

    Raises at once what says the stream is away (`NotStored`, `Timeout`, `ConnectionClosed`,
    JetStream unavailable), and what the stream answered to the last shape when it refused all.
    ``attempts``: how often it was tried (an ordered handler retries in place), by default
    the delivery count.
    """
    message = delivery.message
    original = {k: v for k, v in (message.headers or {}).items() if not k.lower().startswith("nats-")}
    failure = {
        "dlqcode": str(code),
        "dlqreason": _header_text(reason or "unknown", _REASON_LIMIT),
        "dlqdeliveries": str(attempts or delivery.num_delivered),
        "dlqsubject": _header_text(message.subject, _REASON_LIMIT),
        "dlqstream": delivery.stream,
        "dlqsequence": str(delivery.stream_seq),
        "dlqservice": service,
        "dlqhandler": handler,
        "dlqtime": encode_header_value("dlqtime", datetime.now(UTC)),
    }
    subject = dead_letter_subject(service, handler)
    msg_id = f"dlq-{delivery.stream}-{delivery.stream_seq}-{delivery.consumer}"
    refused: EventMicroError | None = None
    for shape, (headers, data) in enumerate(
        _shapes(original, message.data, failure, connection.max_payload, msg_id)
    ):
        try:
            stored = await publish(connection, subject, data, headers, msg_id=msg_id)
        except PayloadTooLarge as exc:
            refused = exc
            continue
        except JetStreamError as exc:
            if isinstance(exc, NotStored) or exc.status == 503:
                raise  # the stream is away: the next delivery tries again
            refused = exc  # this shape was refused (e.g. a header name, the header size): the next
            continue
        if shape:  # not as received: say what the dead letter lacks or how it differs
            marks = {name.removeprefix("ce-").removeprefix(_PLAIN_PREFIX) for name in headers}
            log.warning("dead letter of %s message %d stored%s%s%s", delivery.stream, delivery.stream_seq,
                        " with its headers in the body" if "dlqheaders" in marks else "",
                        ", some header lines left out" if "dlqheaderstruncated" in marks else "",
                        " without its body" if "dlqbodydropped" in marks else "")  # fmt: skip
        return stored
    assert refused is not None  # pragma: no cover - the last shape always fits or is refused
    raise refused


def _shapes(
    original: dict[str, str], body: bytes, failure: dict[str, str], max_payload: int, msg_id: str
) -> Iterator[tuple[dict[str, str], bytes]]:
    """The shapes of the module docstring, in order, as (headers, body)."""
    binary = any(k.lower() == "ce-specversion" for k in original)
    plain = {_PLAIN_PREFIX + name: value for name, value in failure.items()}
    if _publishable(original):
        prefix = "ce-" if binary else _PLAIN_PREFIX
        headers = {**original, **{prefix + name: value for name, value in failure.items()}}
        if headers_size({**headers, MSG_ID_HEADER: msg_id}) <= _HEADER_LIMIT:
            yield headers, body
            yield {**headers, prefix + "dlqbodydropped": "true"}, b""
    block = _header_block(original)
    yield {**plain, _PLAIN_PREFIX + "dlqheaders": str(len(block))}, block + body
    dropped = {**plain, _PLAIN_PREFIX + "dlqbodydropped": "true"}
    yield {**dropped, _PLAIN_PREFIX + "dlqheaders": str(len(block))}, block
    cut_headers = {**dropped, _PLAIN_PREFIX + "dlqheaderstruncated": "true",
                   _PLAIN_PREFIX + "dlqheaders": str(len(block))}  # fmt: skip
    room = max_payload - headers_size({**cut_headers, MSG_ID_HEADER: msg_id})
    cut = _cut_block(block, room)
    yield {**cut_headers, _PLAIN_PREFIX + "dlqheaders": str(len(cut))}, cut


def _publishable(headers: Mapping[str, str]) -> bool:
    """Whether ``headers`` can go out as headers of a dead letter: names eventmicro's publisher
    sends (RFC 7230 tokens), none that a dead letter's own headers would shadow."""
    for name in headers:
        key = name.strip()
        if not _TOKEN.fullmatch(key):
            return False
        if key.lower().removeprefix("ce-").removeprefix(_PLAIN_PREFIX) in _FAILURE_FIELDS:
            return False
    return True


def _header_text(text: str, limit: int) -> str:
    """``text`` as a header value of a dead letter: forbidden characters replaced, at most
    ``limit`` characters (a cut one ends in "…"), percent-encoded as binary mode does."""
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return encode_header_value("dlqreason", _FORBIDDEN_RE.sub("\ufffd", text) or "-")


def _header_block(headers: Mapping[str, str]) -> bytes:
    """``headers`` in NATS wire form: ``NATS/1.0``, one ``Name: value`` line each, a blank line."""
    lines = [_BLOCK_START]
    for name, value in headers.items():
        line = f"{name.strip()}: {value.strip()}".replace("\r", " ").replace("\n", " ")
        lines.append(line.encode("utf-8", "replace") + b"\r\n")
    lines.append(b"\r\n")
    return b"".join(lines)


def _cut_block(block: bytes, room: int) -> bytes:
    """The longest header block of whole lines from ``block`` within ``room`` bytes (or none)."""
    if room < len(_BLOCK_START) + 2:
        return b""
    kept, size = [], len(_BLOCK_START) + 2
    for line in block[len(_BLOCK_START) : -2].split(b"\r\n"):
        if line and size + len(line) + 2 <= room:
            kept.append(line + b"\r\n")
            size += len(line) + 2
    return _BLOCK_START + b"".join(kept) + b"\r\n"


def _parse_block(block: bytes) -> dict[str, str]:
    """The headers of a block made by `_header_block` (lines that are not ``Name: value`` skipped)."""
    out: dict[str, str] = {}
    for line in block[len(_BLOCK_START) :].split(b"\r\n"):
        name, sep, value = line.partition(b":")
        if sep and name.strip():
            out[name.strip().decode("utf-8", "replace")] = value.strip().decode("utf-8", "replace")
    return out


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
    headers_truncated: bool = False  # header lines left out to fit: the original stream has them

    @property
    def event_id(self) -> str | None:
        return _header(self.headers, "ce-id")

    @property
    def event_type(self) -> str | None:
        return _header(self.headers, "ce-type")

    def event(self) -> Event:
        """The original CloudEvent (either mode)."""
        return binding.from_nats(binding.NATSMessage(dict(self.headers), self.data), None)


@dataclass(frozen=True, slots=True)
class Replayed(Stored):
    """A replayed dead letter's acknowledgement, and what the replay could not restore."""

    lost: tuple[str, ...] = ()  # e.g. a header whose name eventmicro cannot publish


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

    async def replay(self, seq: int) -> Replayed:
        """Publish dead letter ``seq`` again to its original subject, then remove it.

        The replay gets its own ``Nats-Msg-Id`` (the original one would be dropped as a
        duplicate inside the stream's window); replaying the same dead letter twice stores it
        once. What the dead letter left out (its body, header lines) comes from the original
        stream while the original message is still there. Headers eventmicro cannot publish
        (a name such as ``x/y``; the largest ones when the block would pass JetStream's 64 KiB)
        are left out; `Replayed.lost` names what was not restored.

        Raises `KeyError` when there is no dead letter ``seq``, or when its body was not kept
        and the original is gone (an event without its data would be another event).
        """
        letter = await self.get(seq)
        if letter is None:
            raise KeyError(f"no dead letter {seq}")
        headers, data, lost = dict(letter.headers), letter.data, []
        if letter.body_dropped or letter.headers_truncated:
            original = await get_message(self.connection, letter.stream, letter.stream_seq)
            if original is not None and original.subject != letter.subject:
                original = None  # the stream was made again: that sequence is another message
            if original is not None:
                headers = {k: v for k, v in original.headers.items() if not k.lower().startswith("nats-")}
                data = original.data if letter.body_dropped else data
            elif letter.body_dropped:
                raise KeyError(
                    f"dead letter {seq} has no body and the original is gone from stream "
                    f"{letter.stream} (seq {letter.stream_seq})"
                )
            else:
                lost.append(f"header lines left out of the dead letter (the original is gone from "
                            f"stream {letter.stream})")  # fmt: skip
        lost += _sendable(headers)
        stored = await publish(
            self.connection, letter.subject, data, headers, msg_id=f"replay-{DEAD_LETTER_STREAM}-{letter.seq}"
        )
        await delete_message(self.connection, DEAD_LETTER_STREAM, seq)
        return Replayed(stored.stream, stored.seq, stored.duplicate, lost=tuple(lost))

    async def replay_all(self, service: str | None = None, handler: str | None = None) -> int:
        """Replay every dead letter (of ``service`` [``handler``]); how many were replayed. One
        that cannot be (its body gone with the original) is logged and kept, as is what a
        replay could not restore."""
        replayed = 0
        for letter in await self.list(service, handler):
            try:
                stored = await self.replay(letter.seq)
            except KeyError as exc:
                log.warning("dead letter %d not replayed: %s", letter.seq, exc.args[0])
                continue
            for note in stored.lost:
                log.warning("dead letter %d replayed without %s", letter.seq, note)
            replayed += 1
        return replayed

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


def _sendable(headers: dict[str, str]) -> list[str]:
    """Remove from ``headers`` what eventmicro cannot publish; say what was removed."""
    lost = []
    refused = [name for name in headers if not _TOKEN.fullmatch(name.strip())]
    for name in refused:
        del headers[name]
    if refused:
        lost.append("headers whose names eventmicro cannot publish: " + ", ".join(map(repr, refused)))
    dropped = []
    while headers and headers_size({**headers, MSG_ID_HEADER: "x" * 64}) > _HEADER_LIMIT:
        largest = max(headers, key=lambda name: (not name.lower().startswith("ce-"), len(headers[name])))
        del headers[largest]
        dropped.append(largest)
    if dropped:
        lost.append("headers over JetStream's 64 KiB header limit: " + ", ".join(map(repr, dropped)))
    return lost


def _letter(stored: StoredMessage) -> DeadLetter | None:
    """The dead letter stored at ``stored`` in any shape; ``None`` for what is not one (anyone
    who may publish on ``deadletter.>`` can put anything there: nothing here raises)."""
    failure: dict[str, str] = {}
    original: dict[str, str] = {}
    for name, value in stored.headers.items():
        lowered = name.lower()
        for prefix in ("ce-", _PLAIN_PREFIX):
            if lowered.startswith(prefix) and lowered[len(prefix) :] in _FAILURE_FIELDS:
                try:
                    failure[lowered[len(prefix) :]] = decode_header_value(name, value)
                except EventMicroError:
                    failure[lowered[len(prefix) :]] = value  # not percent-encoded as ours are: as is
                break
        else:
            original[name] = value
    if "dlqservice" not in failure:
        log.warning("dead letter %d has no failure headers; skipped", stored.seq)
        return None
    data = stored.data
    if "dlqheaders" in failure:  # wrapped: the original header block leads the body
        size = _int(failure["dlqheaders"])
        if 0 < size <= len(data) and data.startswith(_BLOCK_START):
            original, data = _parse_block(data[:size]), data[size:]
        elif size:
            log.warning(
                "dead letter %d: its header block is malformed; shown as part of the body", stored.seq
            )
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
        data=data,
        body_dropped=failure.get("dlqbodydropped") == "true",
        headers_truncated=failure.get("dlqheaderstruncated") == "true",
    )


def _int(text: str | None) -> int:
    try:
        return int(text or 0)
    except ValueError:
        return 0


def _header(headers: Mapping[str, str], name: str) -> str | None:
    return next((v for k, v in headers.items() if k.lower() == name), None)
