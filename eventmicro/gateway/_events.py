"""``POST /events/{type}``: HTTP producers feed events into NATS.

Three ways in, one CloudEvent out on ``events.<type>`` (or ``?subject=`` under ``events.``)::

    plain body        POST /events/shop.orders.v1.OrderCancelled  {"orderId": "o-1"}
                      the gateway builds the event: JSON -> protobuf when the type is installed
    binary mode       ce-specversion, ce-id, ce-source, ce-type headers + the data as the body
    structured mode   Content-Type: application/cloudevents+json (or a -batch+json array)

A CloudEvent that arrives in binary or structured mode is forwarded unchanged: the same
attributes and body (HTTP's ``Content-Type`` becomes ``ce-datacontenttype``, as the NATS
binding wants). Binary-mode headers are written again by the NATS binding's writer, so other
clients read exactly what was meant: values percent-encoded where §3.1.3.2 asks (a raw UTF-8
``ce-subject: café`` arrives as ``caf%C3%A9``), no RFC 7230 quotes, a plain ``traceparent``
only when valid. Every event is checked by the NATS binding's reader first, so a malformed
one is a 400 and never reaches NATS. ``?durable=true`` waits for a JetStream
stream to store it (201, with stream and sequence); otherwise the answer is 202.
"""

from __future__ import annotations

import json
from typing import Any, Final

from starlette.requests import Request
from starlette.responses import JSONResponse

from eventmicro._errors import EnvelopeError, JetStreamError, PayloadTooLarge
from eventmicro.gateway._access import refuse_events
from eventmicro.gateway._config import GatewayConfig
from eventmicro.gateway._problems import (
    Problem,
    load_json,
    media_type,
    protobuf_body,
    read_body,
    require_nats,
    trace_context,
    unsupported_media,
)
from eventmicro.service.endpoints import RequestInvalid, parse_message
from eventmicro.transport import jetstream
from eventmicro.transport.connection import Connection
from eventmicro.wire import binding
from eventmicro.wire.event import Event
from eventmicro.wire.media import JSON, PROTOBUF_MEDIA
from eventmicro.wire.names import EVENT_PREFIX, MAX_SUBJECT_LENGTH, check_subject, event_subject
from eventmicro.wire.types import message_class

__all__ = ["Events"]

STRUCTURED: Final = "application/cloudevents+json"
BATCH: Final = "application/cloudevents-batch+json"
_TRUE: Final = frozenset({"1", "true", "yes"})
MAX_CE_HEADER_NAME: Final = 64  # characters of a ce-* header name (CloudEvents: names of at most 20)


class Events:
    """The ``/events`` routes: publish CloudEvents given over HTTP."""

    def __init__(self, connection: Connection, config: GatewayConfig) -> None:
        self.connection = connection
        self.config = config

    async def handle(self, request: Request) -> JSONResponse:
        path_type: str | None = request.path_params.get("type")
        body = await read_body(request, self.config.max_body)
        media = media_type(request)
        binary = "ce-specversion" in request.headers
        if binary:
            messages = [_binary(request, body)]
            if _is_json(media) and body.strip():
                load_json(body)  # JSON data must be strict JSON, as for plain data
        elif media == STRUCTURED:
            _event_object(_json(body), "a structured CloudEvent")
            messages = [binding.NATSMessage({"content-type": STRUCTURED}, body)]
        elif media == BATCH:
            messages = _batch(body)
        elif path_type is None:
            raise Problem(
                400, "BadRequest", "POST /events takes a CloudEvent; plain data goes to /events/{type}"
            )
        else:
            messages = [self._build(path_type, media, body)]
        events = [_checked(message, path_type) for message in messages]  # all checked before any is sent
        if binary:
            messages = [_forwarded(request, events[0])]
        durable = request.query_params.get("durable", "").lower() in _TRUE
        subjects = [_subject(request, event.get_type()) for event in events]
        refuse_events(
            request, [(event.get_type(), subject) for event, subject in zip(events, subjects, strict=True)]
        )
        answers: list[dict[str, Any]] = []
        for message, event, subject in zip(messages, events, subjects, strict=True):
            try:
                answers.append(await self._send(subject, message, event, durable=durable))
            except Problem as problem:
                if len(messages) > 1:  # a batch stops at its first failure; say what went before
                    problem.detail += f" ({len(answers)} of the batch's {len(messages)} events were sent)"
                raise
        status = 201 if durable else 202
        return JSONResponse(answers[0] if media != BATCH else {"events": answers}, status_code=status)

    def _build(self, event_type: str, media: str | None, body: bytes) -> binding.NATSMessage:
        """A new CloudEvent of ``event_type`` carrying the body (protobuf when the type is installed)."""
        _check_type(event_type)
        cls = message_class(event_type)
        source = self.config.source
        if cls is not None:
            if media in PROTOBUF_MEDIA:
                data = protobuf_body(cls, body)
            elif _is_json(media):
                try:
                    data = parse_message(_json(body), cls, "the data")
                except RequestInvalid as exc:
                    raise Problem(400, "BadRequest", str(exc)) from None
            else:
                raise unsupported_media(
                    media, f"{event_type} data as application/json or application/protobuf"
                )
            event = Event.of(data, source=source)
        elif _is_json(media):
            _json(body)  # checked: a JSON event must carry strict JSON
            event = Event.create(type=event_type, source=source, data=body, datacontenttype=JSON)
        else:  # any other media type travels as it is, typed by its Content-Type
            event = Event.create(type=event_type, source=source, data=body, datacontenttype=media)
        return binding.to_binary(event, None)

    async def _send(
        self, subject: str, message: binding.NATSMessage, event: Any, *, durable: bool
    ) -> dict[str, Any]:
        answer: dict[str, Any] = {
            "id": event.get_id(),
            "source": event.get_source(),
            "type": event.get_type(),
            "subject": subject,
        }
        headers = dict(message.headers)
        require_nats(self.connection)  # during an outage NATS would only buffer it, unconfirmed
        try:
            if durable:
                msg_id = jetstream.message_id(event.get_source(), event.get_id())
                stored = await jetstream.publish(
                    self.connection,
                    subject,
                    message.data,
                    headers,
                    msg_id=msg_id,
                    timeout=self.config.default_timeout,
                )
                answer.update(stream=stored.stream, seq=stored.seq, duplicate=stored.duplicate)
            else:
                await self.connection.publish(subject, message.data, headers=headers)
        except PayloadTooLarge as exc:
            raise Problem(413, "BodyTooLarge", str(exc)) from None
        except JetStreamError as exc:  # NotStored among them: no stream took it
            raise Problem(503, "NotStored", f"the event was not stored: {exc}") from None
        return answer


def _binary(request: Request, body: bytes) -> binding.NATSMessage:
    """An HTTP binary-mode CloudEvent as a NATS binary-mode message, to be checked: its ``ce-``
    headers (raw bytes read as UTF-8, not as HTTP's Latin-1), ``Content-Type`` as ``ce-datacontenttype``."""
    headers = {}
    for name, value in request.headers.items():
        if not name.startswith("ce-"):
            continue
        if len(name) > MAX_CE_HEADER_NAME:  # refused before the binding reads (and caches) it
            detail = f"the header name {name[:11]}... is longer than {MAX_CE_HEADER_NAME} characters"
            raise Problem(400, "BadEvent", detail)
        headers[name] = _utf8(name, value)
    content_type = request.headers.get("content-type")
    if content_type:
        headers["ce-datacontenttype"] = _utf8("content-type", content_type)
    return binding.NATSMessage(headers, body)


def _utf8(name: str, value: str) -> str:
    try:
        return value.encode("latin-1").decode("utf-8")  # Starlette gives header bytes as Latin-1
    except UnicodeDecodeError:
        raise Problem(400, "BadEvent", f"the {name} header is not UTF-8 (percent-encode it)") from None


def _forwarded(request: Request, event: Event) -> binding.NATSMessage:
    """A checked binary-mode event as the NATS binding writes it: the same attributes, each
    header value encoded as §3.1.3.2 asks, the body byte for byte; the caller's plain
    ``traceparent`` (and ``tracestate``) kept when valid and the event carries none of its own."""
    message = binding.to_binary(event, None)
    traceparent, tracestate = trace_context(request)
    if traceparent is not None and "traceparent" not in message.headers:
        message.headers["traceparent"] = traceparent
        if tracestate is not None:
            message.headers["tracestate"] = tracestate
    return message


def _batch(body: bytes) -> list[binding.NATSMessage]:
    documents = _json(body)
    if not isinstance(documents, list) or not documents:
        raise Problem(400, "BadRequest", "a CloudEvents batch is a non-empty JSON array of events")
    messages = []
    for document in documents:
        _event_object(document, "each event of a batch")
        encoded = json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        messages.append(binding.NATSMessage({"content-type": STRUCTURED}, encoded))
    return messages


def _checked(message: binding.NATSMessage, path_type: str | None) -> Event:
    try:
        event = binding.from_nats(message, None)
    except EnvelopeError as exc:
        raise Problem(400, "BadEvent", f"not a valid CloudEvent: {exc}") from None
    if path_type is not None and event.get_type() != path_type:
        detail = f"the event's type {event.get_type()!r} is not the path's {path_type!r}"
        raise Problem(400, "BadEvent", detail)
    return event


def _subject(request: Request, event_type: str) -> str:
    """``?subject=`` when given (it must be under ``events.``), else ``events.<type>``."""
    wanted = request.query_params.get("subject")
    if wanted is None:
        _check_type(event_type)
        return event_subject(event_type)
    try:
        check_subject(wanted)
    except ValueError as exc:
        raise Problem(400, "BadRequest", str(exc)) from None
    if not wanted.startswith(f"{EVENT_PREFIX}."):
        raise Problem(400, "BadRequest", f"the gateway publishes under {EVENT_PREFIX}. only")
    return wanted


def _check_type(event_type: str) -> None:
    if len(event_subject(event_type)) > MAX_SUBJECT_LENGTH:
        longest = MAX_SUBJECT_LENGTH - len(event_subject(""))
        raise Problem(400, "BadRequest", f"an event type is at most {longest} characters: give ?subject=")
    try:
        check_subject(event_subject(event_type))
    except ValueError:
        raise Problem(
            400, "BadRequest", f"{event_type!r} cannot be part of a subject: give ?subject="
        ) from None


def _json(body: bytes) -> Any:
    return load_json(body) if body.strip() else None


def _is_json(media: str | None) -> bool:
    """Whether a body of ``media`` (``None``: not given) is read as JSON."""
    return media is None or media in (JSON, "text/json") or media.endswith("+json")


def _event_object(document: Any, what: str) -> None:
    if not isinstance(document, dict):
        raise Problem(400, "BadEvent", f"{what} is a JSON object of its attributes")
