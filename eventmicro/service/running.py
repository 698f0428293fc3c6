"""A running service instance: its subscriptions, bounded concurrent dispatch, replies, stats.

Requests (RPC) are admitted per endpoint, never holding back the subscription::

    arrives --> a slot free (running < concurrency)?  --yes--> a task of the task group
                  | no
                  v
                room in the backlog (FIFO, bounded)?   --yes--> waits; a finishing task starts it
                  | no
                  v
                503 Overloaded at once (counted; the handler never runs)

A request's deadline counts from its arrival (the reader's stamp), so one that waited past
it is answered 504 without running. Events are handed to a task once the handler's semaphore
admits them; while the limit is reached the subscription's delivery waits (nats-py buffers,
bounded; what overflows is dropped and counted). Every inbound message gets exactly one
outcome, decided in `_serve_rpc` / `_serve_event` / `_turn_away`: a reply, an error reply, or
a counted drop with a rate-limited log line.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import string
import time
import types
import typing
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

from eventmicro._errors import EventMicroError, NoResponders, PayloadTooLarge, StreamConflict, UnexpectedType
from eventmicro.observability import tracing as _tracing
from eventmicro.observability.logs import HANDLING
from eventmicro.observability.metrics import attach as attach_metrics
from eventmicro.observability.stats import EndpointStats, error_code
from eventmicro.service.balance import Balancer
from eventmicro.service.client import Client
from eventmicro.service.context import Context
from eventmicro.service.deadletters import dead_letter_stream
from eventmicro.service.deadlines import Deadlines
from eventmicro.service.delivery import Ordered
from eventmicro.service.discovery import DiscoveryResponder
from eventmicro.service.durable import DurableIntake
from eventmicro.service.handlers import HandlerKind, HandlerSpec, describe
from eventmicro.service.lanes import Lanes, Prepared, size_of
from eventmicro.service.middleware import Invoke, compose
from eventmicro.service.tasks import being_cancelled
from eventmicro.service.ticks import TickRunner
from eventmicro.transport.connection import Connection, Message, Subscription
from eventmicro.transport.jetstream import OrderedSubscription, ensure_stream
from eventmicro.transport.kv import Stores
from eventmicro.wire import binding
from eventmicro.wire.codecs import TypeRegistry, python_type_name, type_name_of, wire_type_name
from eventmicro.wire.event import Event
from eventmicro.wire.names import DEAD_LETTER_PREFIX, EVENT_PREFIX
from eventmicro.wire.plain import Bare, bare_payload, bare_reply, decode_bare
from eventmicro.wire.service_errors import (
    ERROR_HEADER,
    BadRequest,
    DeadlineExceeded,
    InternalError,
    Overloaded,
    ServiceError,
    ServiceUnavailable,
    error_reply,
    new_error_id,
)
from eventmicro.wire.trace import CORRELATION_EXTENSION, TIMEOUT_EXTENSION, Trace

if TYPE_CHECKING:  # pragma: no cover
    from eventmicro.service.declared import Declared

__all__ = ["Running"]

log = logging.getLogger("eventmicro.service")
_ALPHABET = string.ascii_letters + string.digits
# Reply subjects a service never publishes to, whatever the caller asks: the server's APIs
# ($JS.API, $SRV, $KV, ...), events and dead letters; wildcards are refused too.
_NEVER_REPLY_TO: Final = ("$", f"{EVENT_PREFIX}.", f"{DEAD_LETTER_PREFIX}.")
_SHOWN_TYPE: Final = 120  # characters of a sender's type name quoted back in an error
_OVERLOADED: Final = binding.NATSMessage(
    *error_reply(Overloaded("overloaded: the endpoint has more requests than it can take; retry later"))
)


@dataclass(frozen=True, slots=True)
class _Watching:
    intake: Sequence[Subscription | Balancer]
    discovery: Sequence[Subscription]
    durables: Sequence[DurableIntake]


class _Gate:
    """An RPC endpoint's admission: ``limit`` requests run, up to ``room`` wait, in order."""

    __slots__ = ("balancer", "half", "limit", "room", "running", "spec", "waiting")

    def __init__(self, spec: HandlerSpec) -> None:
        self.spec = spec
        self.limit = spec.concurrency
        self.half = spec.concurrency // 2
        self.room = spec.backlog
        self.running = 0
        self.waiting: deque[Message] = deque()
        self.balancer: Balancer | None = None  # balance="room": leaves the queue group when full

    def has_room(self) -> bool:
        """Nothing waits and at most half the slots are taken: time to join the group again."""
        return not self.waiting and self.running <= self.half


class Running:
    """One serving instance of a `Service` on a `Connection` (made by ``Service.serving``)."""

    def __init__(self, service: Declared, connection: Connection, *, drain_timeout: float) -> None:
        self.service = service
        self.connection = connection
        self.drain_timeout = drain_timeout
        self.id = "".join(secrets.choice(_ALPHABET) for _ in range(22))
        self.started = datetime.now(UTC)
        self.client = Client(connection, source=f"/{service.name}/{self.id}")
        self.stores = Stores(connection)  # ctx.store: each bucket opened once per instance
        self.stats = {spec.name: EndpointStats() for spec in service.handlers if spec.kind is HandlerKind.RPC}
        self.event_stats = {
            spec.name: EndpointStats() for spec in service.handlers if spec.kind is HandlerKind.EVENT
        }
        self.schedules = [TickRunner(self, service.name, spec) for spec in service.schedules]
        self.schedule_stats = {runner.spec.name: runner.counts for runner in self.schedules}
        attach_metrics(self)
        self._intake: list[Subscription | Balancer] = []
        self._balancing: list[asyncio.Task[None]] = []  # balance="room" endpoints' group switches
        self._discovery: list[Subscription] = []
        self._group = asyncio.TaskGroup()
        self._registries = {
            (spec.kind, spec.name): TypeRegistry(spec.type_names.values()) for spec in service.handlers
        }
        self._durables: list[DurableIntake] = []
        self._ordered: list[OrderedSubscription] = []
        self._gates: dict[str, _Gate] = {}
        self._rpc_entry: dict[str, Callable[[Message], Awaitable[None]]] = {}  # admission, per endpoint
        self._deadlines = Deadlines()  # callers' deadlines, one timer per 5 ms slot
        # the CloudEvent type a single-type handler takes (None: any, e.g. a dict)
        # by handler name, one table per kind: no enum hashing per message
        self._expected_request, self._expected_event = (
            {s.name: type_name_of(s.message_types[0]) for s in service.handlers if s.kind is kind}
            for kind in (HandlerKind.RPC, HandlerKind.EVENT)
        )
        # the classes a reply may be (None: not checkable), checked before it is encoded
        self._reply_types = {
            spec.name: _runtime_types(spec.reply_type)
            for spec in service.handlers
            if spec.kind is HandlerKind.RPC
        }
        self._stopped = False

    async def start(self) -> None:
        """Run start hooks, then subscribe every handler and the ``$SRV`` verbs."""
        for hook in self.service.on_start:
            await hook()
        await self._group.__aenter__()
        try:
            await self._declare_streams()
            for spec in self.service.handlers:
                if spec.ordered is not None:
                    self._ordered.append(await self._subscribe_ordered(spec, spec.ordered))
                    continue
                if spec.durable is not None:
                    intake = DurableIntake(
                        self, spec, compose(_plain(spec), self.service.middleware), spec.durable
                    )
                    self._durables.append(intake)
                    await intake.start()
                    continue
                subscribed = await self._subscribe(spec)
                if spec.versioned is not None:  # the same admission, for callers asking for this major
                    self._intake.append(
                        await self.connection.subscribe(
                            spec.versioned,
                            self._rpc_entry[spec.name],
                            queue=spec.versioned.rsplit(".", 1)[0],
                            direct=True,
                        )
                    )
                stats = self.stats if spec.kind is HandlerKind.RPC else self.event_stats
                subscription = subscribed if spec.balance != "room" else self._balance(spec, subscribed)
                if isinstance(subscription, Balancer):
                    stats[spec.name].group = subscription
                self._intake.append(subscription)
                stats[spec.name].intake = subscription
            for runner in self.schedules:
                await runner.start()
            self._discovery = await DiscoveryResponder(self).subscribe()
        except BaseException:
            await self.stop()  # undo what was started: no half-serving instance
            raise
        handlers = self.service.handlers
        rpcs = sum(spec.kind is HandlerKind.RPC for spec in handlers)
        log.info("service %s %s instance %s started: %d endpoint(s), %d event handler(s)", self.service.name,
                 self.service.version, self.id, rpcs, len(handlers) - rpcs)  # fmt: skip
        for spec in handlers:  # what it listens on and how messages reach it
            log.info("service %s serves %s", self.service.name, describe(spec, self.service.name))

    async def stop(self) -> None:
        """Stop intake, let in-flight handlers finish, stop discovery, flush, run stop hooks.

        Draining and in-flight work together are bounded by ``drain_timeout``; what is still
        running then is cancelled. Idempotent.
        """
        if self._stopped:
            return
        self._stopped = True
        deadline = asyncio.get_running_loop().time() + self.drain_timeout
        for task in self._balancing:  # no endpoint joins its queue group again
            task.cancel()
        await asyncio.gather(*self._balancing, return_exceptions=True)
        for gate in self._gates.values():  # waiting, not started: safe to retry elsewhere
            while gate.waiting:
                await self._refuse(gate.spec, gate.waiting.popleft())
        for intake in self._durables:
            await intake.stop_intake()  # no more fetches; unacked messages go back to the stream
        for runner in self.schedules:
            await runner.stop_intake()  # no more ticks taken; a running one finishes
        for ordered in self._ordered:  # bounded like the rest: a replay may have much queued
            await ordered.drain(max(0.0, deadline - asyncio.get_running_loop().time()))
        try:
            async with asyncio.timeout_at(deadline):
                for subscription in self._intake:
                    with contextlib.suppress(EventMicroError):
                        await subscription.drain()
        except TimeoutError:
            for subscription in self._intake:
                with contextlib.suppress(EventMicroError):
                    await subscription.unsubscribe()
        try:
            # past the deadline the task group cancels what still runs, and waits for it
            async with asyncio.timeout_at(max(deadline, asyncio.get_running_loop().time())):
                await self._group.__aexit__(None, None, None)
        except TimeoutError:
            log.warning(
                "service %s: in-flight work did not finish in %ss", self.service.name, self.drain_timeout
            )
        for intake in self._durables:
            await intake.close()
        for runner in self.schedules:
            await runner.close()
        for subscription in self._discovery:
            with contextlib.suppress(EventMicroError):
                await subscription.unsubscribe()
        with contextlib.suppress(EventMicroError):
            await self.connection.flush()
        for hook in self.service.on_stop:
            await hook()
        log.info("service %s instance %s stopped", self.service.name, self.id)

    async def _subscribe_ordered(self, spec: HandlerSpec, replay: Ordered) -> OrderedSubscription:
        invoke = compose(_plain(spec), self.service.middleware)

        async def in_order(msg: Message) -> None:  # nats-py calls it once at a time, in order
            await self._serve_event(spec, invoke, msg, time.monotonic())

        return await OrderedSubscription.subscribe(
            self.connection, spec.subject, in_order, stream=replay.stream, deliver=replay.deliver
        )

    async def _declare_streams(self) -> None:
        for stream in self.service.streams:
            await ensure_stream(self.connection, stream)
        if any(spec.durable is not None and spec.durable.dead_letter for spec in self.service.handlers):
            await self._declare_dead_letters()

    async def _declare_dead_letters(self) -> None:
        """The shared dead-letter stream: three replicas on a cluster (one on a single server),
        an existing one taken as it is; not reachable now is a warning, not a failed start
        (a dead letter that cannot be stored is kept in its stream and retried)."""
        clustered = bool(self.connection.server_info.get("cluster"))
        # its byte limit is reserved in the JetStream store: a smaller store (or an account
        # limit) refuses it, so such a server gets the stream with its age limit only
        attempts = [(3, True), (3, False)] if clustered else []
        for replicas, sized in [*attempts, (1, True), (1, False)]:
            stream = dead_letter_stream(replicas) if sized else dead_letter_stream(replicas, max_bytes=None)
            try:
                await ensure_stream(self.connection, stream, adopt=True)
            except StreamConflict:
                continue  # e.g. fewer than three JetStream nodes, or a small store
            except EventMicroError as exc:
                log.warning("service %s: the dead-letter stream is not reachable now (%s)",
                            self.service.name, exc.message)  # fmt: skip
                return
            if not sized:
                log.warning("service %s: the dead-letter stream has no size limit (the JetStream "
                            "store could not reserve one); declare dead_letter_stream(max_bytes=...)",
                            self.service.name)  # fmt: skip
            return
        log.warning("service %s: the dead-letter stream could not be created", self.service.name)

    # --- dispatch ---------------------------------------------------------------------------

    async def _subscribe(self, spec: HandlerSpec) -> Subscription:
        """The subscription of a plain endpoint or event handler, with its chain composed once.

        Requests are admitted in the connection's reader (`_rpc_dispatcher`); events run on up
        to ``concurrency`` workers of this instance's task group, the rest waiting in the
        subscription's bounded buffer (a worker takes the next event itself when it is done).
        """
        invoke = compose(_plain(spec), self.service.middleware)
        if spec.kind is HandlerKind.RPC:
            on_request = self._rpc_entry[spec.name] = self._rpc_dispatcher(spec, invoke)
            return await self.connection.subscribe(spec.subject, on_request, queue=spec.queue, direct=True)

        async def on_event(msg: Message) -> None:
            if self.accepting():
                await self._serve_event(spec, invoke, msg, msg.received or time.monotonic())
            else:
                await self._refuse(spec, msg)  # stopping: only logged

        entry = on_event if spec.ordered_by is None else self._in_lanes(spec, invoke)
        return await self.connection.subscribe(
            spec.subject,
            entry,
            queue=spec.queue,
            concurrency=spec.concurrency if spec.ordered_by is None else 1,  # ordered: one reader
            spawn=self._group.create_task,
        )

    def _in_lanes(self, spec: HandlerSpec, invoke: Invoke) -> Callable[[Message], Awaitable[None]]:
        """The entry of an ``ordered_by=`` core handler, run by the subscription's one worker:
        each event joins the lane of its key (`eventmicro.service.lanes`), in arrival order."""

        async def serve(item: tuple[Message, float, Prepared | None]) -> None:
            await self._serve_event(spec, invoke, *item)

        lanes: Lanes[tuple[Message, float, Prepared | None]] = Lanes(serve, self.spawn, spec.concurrency)
        self.event_stats[spec.name].lanes = lanes

        async def on_event(msg: Message) -> None:
            if not self.accepting():
                await self._refuse(spec, msg)  # stopping: only logged
                return
            key, prepared = self.ordering_key(spec, msg)
            await lanes.put(key, (msg, msg.received or time.monotonic(), prepared), size_of(msg))

        return on_event

    def ordering_key(
        self, spec: HandlerSpec, msg: Message, event: Event | None = None
    ) -> tuple[str | None, Prepared | None]:
        """The key of an ``ordered_by=`` handler's event and the event decoded (so it is not
        decoded twice); ``(None, None)`` when it does not decode (its handling reports that),
        ``(None, decoded)`` when it has no key (counted; handled at once, out of order)."""
        if spec.ordered_by is None:  # pragma: no cover - only called for ordered handlers
            return None, None
        try:
            prepared = self._decode(spec, msg, event)
        except Exception:  # a bad event: the handler path decodes it again and reports it
            return None, None
        stats = self.event_stats[spec.name]
        try:
            key = spec.ordered_by(*prepared)
        except Exception as exc:  # the user's key function: counted, the event handled
            key = None
            if stats.quiet.due() >= 0:
                log.warning("service %s: the ordered_by function of %s raised %s; the event is handled "
                            "out of order", self.service.name, spec.name, type(exc).__name__)  # fmt: skip
        if key is None:
            stats.unkeyed += 1
        return key, prepared

    def _balance(self, spec: HandlerSpec, subscription: Subscription) -> Balancer:
        """Take the endpoint out of its queue group while it is full (`eventmicro.service.balance`)."""
        gate = self._gates[spec.name]
        balancer = gate.balancer = Balancer(self.connection, subscription, self._rpc_entry[spec.name])
        task = asyncio.create_task(balancer.run(gate.has_room), name=f"balance {spec.subject}")
        self._balancing.append(task)
        return balancer

    def _rpc_dispatcher(self, spec: HandlerSpec, invoke: Invoke) -> Callable[[Message], Awaitable[None]]:
        """Admission of one endpoint's requests; never waits, so nats-py's buffer stays empty
        and an overload is answered at once instead of timing out in a queue."""
        gate = self._gates[spec.name] = _Gate(spec)
        stats = self.stats[spec.name]
        waiting = gate.waiting

        async def on_request(msg: Message) -> None:
            reply = msg.reply
            if reply and not self._may_reply_to(reply):
                self._turn_away(spec, stats, "refused")
            elif self._stopped:
                await self._refuse(spec, msg)  # stopping: not run, so safe to retry elsewhere
            elif gate.running < gate.limit:
                gate.running += 1
                self._group.create_task(self._admitted(spec, invoke, gate, msg))
            elif len(waiting) < gate.room:
                waiting.append(msg)
                if gate.balancer is not None:
                    gate.balancer.full.set()
            else:
                self._turn_away(spec, stats, "shed")
                if reply:
                    with contextlib.suppress(EventMicroError):
                        await self.connection.publish(reply, _OVERLOADED.data, headers=_OVERLOADED.headers)

        return on_request

    async def _admitted(self, spec: HandlerSpec, invoke: Invoke, gate: _Gate, msg: Message) -> None:
        """Serve one request, then hand the slot to the oldest waiting one (a task of its own)."""
        try:
            await self._serve_rpc(spec, invoke, msg, msg.received or time.monotonic())
        finally:
            if gate.waiting and not self._stopped:
                self._group.create_task(self._admitted(spec, invoke, gate, gate.waiting.popleft()))
            else:
                gate.running -= 1
                balancer = gate.balancer
                if balancer is not None and balancer.out and gate.running <= gate.half:
                    balancer.roomy.set()

    def _may_reply_to(self, subject: str) -> bool:
        if subject.startswith(_NEVER_REPLY_TO) or "*" in subject or ">" in subject:
            return False
        prefixes = self.service.reply_prefixes
        return prefixes is None or subject.startswith(prefixes)

    def _turn_away(self, spec: HandlerSpec, stats: EndpointStats, reason: str) -> None:
        """Count a request not run (``shed``: overloaded; ``refused``: its reply subject) and
        log it, at most one line per 10 s per endpoint."""
        if reason == "shed":
            stats.shed += 1
            stats.last_error = "503:overloaded"
        else:
            stats.refused += 1
            stats.last_error = "403:reply subject refused"
        stats.num_errors += 1
        held = stats.quiet.due()
        if held >= 0:
            log.warning(
                "service %s: %s on %s (%d overloaded, %d refused reply subjects so far)",
                self.service.name,
                "overloaded: requests answered 503"
                if reason == "shed"
                else "a reply subject it does not send to",
                spec.name,
                stats.shed,
                stats.refused,
            )

    def spawn(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run ``work`` in the instance's task group (stop waits for it, within its bound)."""
        return self._group.create_task(work)

    def watching(self) -> _Watching:
        """What health reads: the subscriptions and durable intakes (`observability.instance`)."""
        return _Watching(self._intake, self._discovery, self._durables)

    def accepting(self) -> bool:
        """True until `stop` begins."""
        return not self._stopped

    async def _refuse(self, spec: HandlerSpec, msg: Message) -> None:
        """Answer a request that arrived while stopping with 503; an event is only logged."""
        if spec.kind is HandlerKind.EVENT or not msg.reply:
            log.warning("service %s stopping: message on %s not handled", self.service.name, msg.subject)
            return
        refusal = self._error_bytes(ServiceUnavailable("the instance is stopping"))
        with contextlib.suppress(EventMicroError):
            await self.connection.publish(msg.reply, refusal.data, headers=refusal.headers)

    async def _serve_rpc(self, spec: HandlerSpec, invoke: Invoke, msg: Message, received: float) -> None:
        """The error boundary of an RPC: exactly one reply (when there is a reply subject)."""
        stats = self.stats[spec.name]
        stats.num_requests += 1
        HANDLING.set((self, spec, msg))  # log context (this task's own)
        started = time.perf_counter_ns()
        try:
            reply = await self._answer(spec, invoke, msg, received)
        except ServiceError as error:
            reply = self._error(stats, error)
        except asyncio.CancelledError:
            if being_cancelled():
                if stats.metrics is not None:
                    stats.metrics.handled(time.perf_counter_ns() - started, None)
                raise  # stop() ran out of time: no reply, the caller times out
            log.error("service %s: handler %s raised CancelledError", self.service.name, spec.name)
            reply = self._error(stats, InternalError())
        except Exception:  # anything the boundary did not expect: logged, answered 500
            log.exception("service %s: request for %s failed", self.service.name, spec.name)
            reply = self._error(stats, InternalError())
        elapsed = time.perf_counter_ns() - started
        stats.processing_time += elapsed
        if stats.metrics is not None:
            stats.metrics.replied(elapsed, reply)
        if not msg.reply:
            return
        try:
            await self.connection.publish(msg.reply, reply.data, headers=reply.headers or None)
        except PayloadTooLarge:
            log.error(
                "service %s: the reply of %s is over the server's max_payload", self.service.name, spec.name
            )
            if not reply.headers or ERROR_HEADER not in reply.headers:
                stats.num_errors += 1  # an error reply was counted when it was made
            stats.last_error = "500:reply too large"
            fallback = self._error_bytes(InternalError("the reply is too large"))
            with contextlib.suppress(EventMicroError):
                await self.connection.publish(msg.reply, fallback.data, headers=fallback.headers)
        except EventMicroError as exc:
            log.error(
                "service %s: reply of %s could not be sent: %s", self.service.name, spec.name, exc.message
            )

    def _error(self, stats: EndpointStats, error: ServiceError) -> binding.NATSMessage:
        stats.num_errors += 1
        stats.last_error = f"{error.instance_code}:{error.detail}"
        if isinstance(error, InternalError) and error.incident is None:  # the caller and the log
            error.incident = new_error_id()  # share an id to grep (eventmicro.wire.service_errors)
            handling = HANDLING.get()
            log.error("service %s: %s answered %d %s, error id %s", self.service.name,
                      handling[1].name if handling else "a request", error.instance_code, error.status,
                      error.incident)  # fmt: skip
        return self._error_bytes(error)

    @staticmethod
    def _error_bytes(error: ServiceError) -> binding.NATSMessage:
        headers, body = error_reply(error)
        return binding.NATSMessage(headers, body)

    def _answer(
        self, spec: HandlerSpec, invoke: Invoke, msg: Message, received: float
    ) -> Coroutine[Any, Any, binding.NATSMessage]:
        """The reply to one request, or a `ServiceError` raised for the error reply; in a
        SERVER span while tracing is on."""
        tracing = _tracing.active
        if tracing is None:  # the only cost of tracing while it is off
            return self._reply(spec, invoke, msg, received)
        span = tracing.server(self.service.name, spec.name, msg)
        return tracing.around(span, self._reply(spec, invoke, msg, received))

    def _request(self, spec: HandlerSpec, msg: Message) -> tuple[Any, Event, Bare | None, str | None]:
        """The request, its CloudEvent, and for a bare payload (eventmicro.wire.plain) the payload
        and the media type the reply is written in. Raises `BadRequest`."""
        headers = msg.headers
        bare = None
        try:
            if headers is not None and "ce-specversion" in headers:  # eventmicro's own: the hot path
                event = binding.from_binary(msg, None)
            elif (bare := bare_payload(msg)) is not None:
                request, media = decode_bare(bare, spec.message_types[0])
                self.stats[spec.name].plain += 1
                return request, _bare_event(spec, msg, bare), bare, media
            else:
                event = binding.from_nats(msg, None)
            wanted = self._expected_request[spec.name]
            if wanted is not None and event.get_type() != wanted:
                raise BadRequest(f"the request's type '{event.get_type()[:_SHOWN_TYPE]}' is not {wanted}")
            return event.data_as(spec.message_types[0]), event, None, None
        except EventMicroError as exc:  # our decoders' messages name only what is wrong
            expected = wire_type_name(spec.message_types[0])
            raise BadRequest(f"the request is not a valid {expected}: {exc.message}") from exc
        except Exception as exc:  # e.g. the request class's own validation: no text crosses
            raise BadRequest(f"the request is not a valid {wire_type_name(spec.message_types[0])}") from exc

    async def _reply(
        self, spec: HandlerSpec, invoke: Invoke, msg: Message, received: float
    ) -> binding.NATSMessage:
        request, event, bare, media = self._request(spec, msg)
        trace = _trace(event, received)
        if trace.deadline is not None and trace.deadline <= time.monotonic():
            self.stats[spec.name].expired += 1
            raise DeadlineExceeded("the caller's deadline passed before the request was handled")
        ctx: Any = None  # nothing would read a context when the handler takes none and no middleware runs
        if spec.takes_context or self.service.middleware:
            ctx = Context(self.service, spec.name, event, self.client, trace, stores=self.stores)
        expiry = None if trace.deadline is None else self._deadlines.arm(trace.deadline)
        try:
            result = await invoke(request, ctx)
        except TimeoutError as exc:  # a call of the handler's that timed out
            raise DeadlineExceeded("the handler did not finish before the caller's deadline") from exc
        except asyncio.CancelledError:
            if expiry is not None and expiry.expired():
                raise DeadlineExceeded("the handler did not finish before the caller's deadline") from None
            raise
        except ServiceError:
            raise
        except NoResponders as exc:  # a service this one calls is not there; this one may have
            # done part of its work, so this is not the retryable 503
            raise ServiceError("a service this one depends on is unavailable", code=502) from exc
        except Exception as exc:
            log.exception("service %s: handler %s failed", self.service.name, spec.name)
            raise InternalError() from exc
        finally:
            if expiry is not None:
                expiry.disarm()
        if result is None:
            if not spec.allows_none:
                log.error("service %s: handler %s returned None", self.service.name, spec.name)
                raise InternalError()
            return binding.NATSMessage({}, b"")
        allowed = self._reply_types[spec.name]
        if allowed is not None and not isinstance(result, allowed):
            log.error("service %s: handler %s returned %s, not its declared reply type %s", self.service.name,
                      spec.name, type(result).__qualname__, _declared(spec.reply_type))  # fmt: skip
            raise InternalError()
        try:
            if bare is not None:
                return bare_reply(result, media)
            extensions = {CORRELATION_EXTENSION: trace.correlation_id} if trace.correlation_id else None
            reply = Event.of(
                result, source=self.client.source, type=python_type_name(result), extensions=extensions
            )
            return binding.to_binary(reply, None)
        except (EventMicroError, ValueError, TypeError, RecursionError) as exc:
            log.error("service %s: the reply of %s could not be encoded (%s)", self.service.name, spec.name,
                      type(exc).__name__)  # fmt: skip
            raise InternalError() from exc

    async def _serve_event(
        self,
        spec: HandlerSpec,
        invoke: Invoke,
        msg: Message,
        received: float,
        prepared: Prepared | None = None,
    ) -> None:
        """The error boundary of an event: handled, or logged and counted; never raised."""
        stats = self.event_stats[spec.name]
        stats.num_requests += 1
        context = HANDLING.set((self, spec, msg))
        started = time.perf_counter_ns()
        code: int | None = None  # the outcome for metrics: 0 ok, an error code, None cancelled
        try:
            await self.handle_event(spec, invoke, msg, received, prepared=prepared)
            code = 0
        except asyncio.CancelledError:
            if being_cancelled():
                raise
            code = 500
            stats.num_errors += 1
            stats.last_error = "500:CancelledError"
            log.error("service %s: event handler %s raised CancelledError", self.service.name, spec.name)
        except EventMicroError as exc:
            code = error_code(exc)
            stats.num_errors += 1
            stats.last_error = f"{exc.code}:{exc.message}"
            held = stats.quiet.due()  # any client can send these: one line per 10 s per handler
            if held >= 0:
                log.warning(
                    "service %s: event on %s not handled by %s: %s (%d more since the last line)",
                    self.service.name,
                    msg.subject,
                    spec.name,
                    exc.message,
                    held,
                )
        except Exception as exc:  # the handler's (or a bad event's) failure: logged, service keeps serving
            code = error_code(exc)
            stats.num_errors += 1
            stats.last_error = f"{getattr(exc, 'code', 500)}:{type(exc).__name__}"
            log.exception(
                "service %s: event handler %s failed on %s", self.service.name, spec.name, msg.subject
            )
        finally:
            elapsed = time.perf_counter_ns() - started
            stats.processing_time += elapsed
            if stats.metrics is not None:
                stats.metrics.handled(elapsed, code)
            HANDLING.reset(context)

    def handle_event(
        self,
        spec: HandlerSpec,
        invoke: Invoke,
        msg: Message,
        received: float,
        *,
        event: Event | None = None,
        prepared: Prepared | None = None,
    ) -> Coroutine[Any, Any, None]:
        """Decode and handle one event (core, ordered or durable); in a CONSUMER span while
        tracing is on. ``event``: ``msg`` already decoded (a durable intake's idempotency guard
        reads its identity first), so it is not decoded twice; ``prepared``: the message and
        its event, decoded to read an ``ordered_by=`` key. Raises what the decoding or the
        handler raised."""
        tracing = _tracing.active
        consume = self._consume(spec, invoke, msg, received, decoded=event, prepared=prepared)
        if tracing is None:  # the only cost of tracing while it is off
            return consume
        span = tracing.consumer(self.service.name, spec.name, msg)
        return tracing.around(span, consume)

    async def _consume(
        self,
        spec: HandlerSpec,
        invoke: Invoke,
        msg: Message,
        received: float,
        *,
        decoded: Event | None,
        prepared: Prepared | None,
    ) -> None:
        value, event = prepared if prepared is not None else self._decode(spec, msg, decoded)
        if not spec.takes_context and not self.service.middleware:
            await spec.function(value)  # nothing would read a context: none is made
            return
        ctx = Context(
            self.service, spec.name, event, self.client, _trace(event, received), stores=self.stores
        )
        await invoke(value, ctx)

    def _decode(self, spec: HandlerSpec, msg: Message, decoded: Event | None) -> Prepared:
        """The handler's message and its CloudEvent. Raises what the decoding raised."""
        headers = msg.headers
        bare = None  # a payload from a plain NATS client (eventmicro.wire.plain)
        if decoded is not None:
            event = decoded  # by the caller (a durable intake's idempotency guard)
        elif headers is not None and "ce-specversion" in headers:  # eventmicro's own: the hot path
            event = binding.from_binary(msg, None)
        elif len(spec.message_types) > 1 or spec.durable is not None or (bare := bare_payload(msg)) is None:
            # a union dispatches by type and a durable handler dedupes and dead-letters by
            # CloudEvent identity: both take CloudEvents only
            event = binding.from_nats(msg, None)
        value: Any
        if bare is not None:
            value, _ = decode_bare(bare, spec.message_types[0])
            self.event_stats[spec.name].plain += 1
            event = _bare_event(spec, msg, bare)
        elif len(spec.message_types) == 1:
            wanted = self._expected_event[spec.name]
            if wanted is not None and event.get_type() != wanted:
                raise UnexpectedType((wanted,), event.get_type()[:_SHOWN_TYPE])
            value = event.data_as(spec.message_types[0])
        else:
            value = self._registries[spec.kind, spec.name].decode(
                event.get_type(), event.get_data(), event.get_datacontenttype(), event.get_dataschema()
            )
        return value, event


def _runtime_types(annotation: Any) -> tuple[type, ...] | None:
    """The classes a value of ``annotation`` may be (``()``: only None), or ``None`` when a
    class check cannot tell."""
    origin = typing.get_origin(annotation)
    members = typing.get_args(annotation) if origin in (typing.Union, types.UnionType) else (annotation,)
    classes: list[type] = []
    for member in members:
        if member is None or member is type(None):
            continue
        cls = typing.get_origin(member) or member  # dict[str, Any] -> dict
        if not isinstance(cls, type):
            return None
        classes.append(cls)
    return tuple(classes)


def _declared(annotation: Any) -> str:
    """A declared type for the service's log (never sent to a caller)."""
    return annotation.__qualname__ if isinstance(annotation, type) else repr(annotation)


def _bare_event(spec: HandlerSpec, msg: Message, bare: Bare) -> Event:
    """The CloudEvent ``ctx.event`` shows for a bare payload: the handler's type, a fresh id,
    ``nats:<subject>`` as source, the body as data."""
    cls = spec.message_types[0]
    return Event.create(
        type=type_name_of(cls) or python_type_name(cls),
        source=f"nats:{msg.subject}",
        data=bare.data,
        datacontenttype=(bare.content_type or "").strip() or None,
    )


def _plain(spec: HandlerSpec) -> Invoke:
    function = spec.function
    if spec.takes_context:
        return function

    async def without_context(message: Any, ctx: Context) -> Any:
        return await function(message)

    return without_context


_MAX_BUDGET: Final = 2**31 - 1  # ms: the largest budget a caller can send (a 32-bit integer)


def _trace(event: Event, received: float) -> Trace:
    budget = event.get_extension(TIMEOUT_EXTENSION)
    deadline = None
    if budget is not None:
        try:
            milliseconds = int(str(budget))
        except ValueError:
            milliseconds = -1  # unreadable: treated as no deadline
        if 0 <= milliseconds <= _MAX_BUDGET:
            deadline = received + milliseconds / 1000
    correlation = event.get_extension(CORRELATION_EXTENSION)
    return Trace(
        correlation_id=str(correlation) if correlation else event.get_id(),
        traceparent=_text(event.get_extension("traceparent")),
        tracestate=_text(event.get_extension("tracestate")),
        deadline=deadline,
    )


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None
