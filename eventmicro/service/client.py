"""The client: call services by name (typed RPC with deadlines and safe retries), publish events.

Retries follow a `RetryPolicy` (``eventmicro.service.retry``: by default 4 attempts, no
responders and 503 retried for every call, timeouts for idempotent calls only, 503 Overloaded
never), on tenacity; the whole sequence stays within the deadline. A `BreakerPolicy`
(``eventmicro.service.breaker``) gives the client a circuit per target that fails fast with
`CircuitOpen` while its dependency is failing. Per call, ``retry=`` overrides the client's.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Coroutine, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Self, TypeVar

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)

from eventmicro._errors import ConfigurationError, EventMicroError, NotStored, PayloadError, Timeout
from eventmicro.observability import tracing as _tracing
from eventmicro.service.breaker import BreakerPolicy, Circuit, CircuitState
from eventmicro.service.later import Scheduled, cancel_scheduled, delivery_time, store_later
from eventmicro.service.retry import Retried, RetryBudget, RetryPolicy, Tokens, remember
from eventmicro.transport import jetstream
from eventmicro.transport.config import ConnectOptions
from eventmicro.transport.connection import Connection
from eventmicro.wire import binding
from eventmicro.wire.attributes import ExtensionValue
from eventmicro.wire.codecs import decode_payload, python_type_name
from eventmicro.wire.event import Event
from eventmicro.wire.names import event_subject, versioned_subject
from eventmicro.wire.service_errors import ERROR_CODE_HEADER, ERROR_HEADER, DeadlineExceeded, error_from_reply
from eventmicro.wire.trace import MAX_BUDGET_MS, TIMEOUT_EXTENSION, Trace

__all__ = ["Client", "Trace"]

log = logging.getLogger("eventmicro.client")
T = TypeVar("T")

DEFAULT_TIMEOUT: Final = 5.0
DEFAULT_RETRY: Final = RetryPolicy()
MAX_ATTEMPTS: Final = DEFAULT_RETRY.attempts


class Client:
    """Typed calls and events over one `Connection`.

    ``retry`` is the calls' default `RetryPolicy`; ``breaker`` a `BreakerPolicy` gives the
    client a circuit breaker per target (default: none).

    >>> async def main(conn: Connection) -> None:   # doctest: +SKIP
    ...     client = Client(conn, retry=RetryPolicy(attempts=2), breaker=BreakerPolicy(failures=3))
    ...     reply = await client.call("orders.place", PlaceOrder(...), returns=OrderAccepted)
    """

    def __init__(
        self,
        connection: Connection,
        *,
        source: str = "/eventmicro/client",
        retry: RetryPolicy | None = None,
        breaker: BreakerPolicy | None = None,
    ) -> None:
        self.connection = connection
        self.source = source
        self._owns_connection = False
        self.retry = DEFAULT_RETRY
        self.breaker: BreakerPolicy | None = None
        self._circuits: dict[str, Circuit] = {}
        self._tokens: dict[tuple[str, RetryBudget], Tokens] = {}
        self._retried: Retried | None = None  # made at the first retry
        self.configure(retry=retry, breaker=breaker)

    def configure(self, *, retry: RetryPolicy | None = None, breaker: BreakerPolicy | None = None) -> None:
        """Set the default `RetryPolicy` and the `BreakerPolicy` (those given; circuits made
        under another breaker policy start afresh). Raises `ConfigurationError` for other values."""
        if retry is not None:
            if not isinstance(retry, RetryPolicy):
                raise ConfigurationError(f"retry must be a RetryPolicy, not {retry!r}")
            self.retry = retry
        if breaker is not None:
            if not isinstance(breaker, BreakerPolicy):
                raise ConfigurationError(f"breaker must be a BreakerPolicy, not {breaker!r}")
            if breaker != self.breaker:
                self._circuits.clear()
            self.breaker = breaker

    def circuit(self, name: str) -> CircuitState:
        """The state of the circuit a call of ``name`` goes through (closed when there is none)."""
        policy = self.breaker
        found = None if policy is None else self._circuits.get(policy.target(name))
        return CircuitState.CLOSED if found is None else found.state

    def retries(self) -> dict[str, int]:
        """Attempts after the first this client has made, by target endpoint."""
        return {} if self._retried is None else dict(sorted(self._retried.retried.items()))

    def _before_retry(self, name: str, state: RetryCallState) -> None:
        _log_attempt(name, state)
        self._count_retry(name)

    def _count_retry(self, name: str) -> None:
        if self._retried is None:
            self._retried = Retried(self.source)
        self._retried.count(name)

    def circuits(self) -> dict[str, str]:
        """Every circuit of this client: target -> state (``closed``, ``open``, ``half_open``)."""
        return {target: circuit.state_name for target, circuit in sorted(self._circuits.items())}

    @classmethod
    def connect(
        cls,
        servers: str | list[str] | None = None,
        *,
        source: str = "/eventmicro/client",
        retry: RetryPolicy | None = None,
        breaker: BreakerPolicy | None = None,
        **options: Any,
    ) -> Client:
        """A client with its own connection (arguments, then the environment, as `eventmicro.connect`).

        ``async with Client.connect() as client:`` opens the connection and closes (drains) it
        on the way out.
        """
        client = cls(
            Connection(ConnectOptions.from_env(servers, **options)),
            source=source,
            retry=retry,
            breaker=breaker,
        )
        client._owns_connection = True
        return client

    async def __aenter__(self) -> Self:
        if self._owns_connection:
            await self.connection.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._owns_connection:
            await self.connection.close()

    async def call(
        self,
        name: str,
        request: object,
        *,
        returns: type[T],
        timeout: float | None = None,
        idempotent: bool = False,
        attempt_timeout: float | None = None,
        trace: Trace | None = None,
        retry: RetryPolicy | None = None,
        version: int | None = None,
    ) -> T:
        """Call endpoint ``name`` (its subject, e.g. ``"orders.place"``) and decode the reply.

        ``version``: only instances of that major version answer (``version=2``: a service
        ``2.x.y``, on subject ``orders.v2.place``); without it any instance does.

        The deadline is ``timeout`` seconds from now, or what is left of the calling handler's
        deadline (``trace``), whichever comes first. Each attempt waits at most
        ``attempt_timeout`` (default: until the deadline), so an idempotent call can be retried
        after a lost attempt. ``retry`` overrides the client's `RetryPolicy` for this call.
        Raises the service's `ServiceError` (rebuilt by code and id), `NoResponders` when
        nobody serves ``name``, `CircuitOpen` when the client's breaker for it is open, or
        `Timeout`.
        """
        if version is not None:
            name = _versioned(name, version)
        now = time.monotonic()
        if timeout is not None and not timeout > 0:
            raise ValueError("timeout must be a positive number of seconds")
        deadline = now + min(timeout if timeout is not None else DEFAULT_TIMEOUT, MAX_BUDGET_MS / 1000)
        if trace is not None and trace.deadline is not None:
            deadline = min(deadline, trace.deadline)
        if deadline <= now:
            raise DeadlineExceeded(f"no time left to call {name}")
        policy = self.retry if retry is None else retry
        attempt = self._call_once if self.breaker is None else self._call_guarded  # off: one check
        try:  # the first attempt without the retry machinery: most calls need nothing more
            result = await attempt(
                name, request, returns, deadline=deadline, attempt_timeout=attempt_timeout, trace=trace
            )
        except Exception as first:
            if not self._again(first, name, policy, idempotent, deadline) or policy.attempts == 1:
                raise
            log.debug("call %s attempt 1 failed (%s); retrying", name, first)
            self._count_retry(name)
        else:
            if policy.budget is not None:
                self._budget(name, policy.budget).succeeded()
            return result
        return await self._retry(
            name,
            request,
            returns,
            policy=policy,
            idempotent=idempotent,
            deadline=deadline,
            attempt_timeout=attempt_timeout,
            trace=trace,
        )

    async def _retry(
        self,
        name: str,
        request: object,
        returns: type[T],
        *,
        policy: RetryPolicy,
        idempotent: bool,
        deadline: float,
        attempt_timeout: float | None,
        trace: Trace | None,
    ) -> T:
        """Attempts 2 to ``policy.attempts``, on tenacity, never waiting past the deadline."""
        backoff = wait_exponential_jitter(
            multiplier=policy.backoff,
            max=policy.max_backoff,
            exp_base=policy.multiplier,
            jitter=policy.jitter,
        )
        attempt = self._call_once if self.breaker is None else self._call_guarded
        budget = None if policy.budget is None else self._budget(name, policy.budget)
        retrying = AsyncRetrying(
            stop=stop_after_attempt(policy.attempts - 1),
            wait=lambda state: max(0.0, min(backoff(state), deadline - time.monotonic() - 0.005)),
            retry=retry_if_exception(lambda e: self._again(e, name, policy, idempotent, deadline)),
            before_sleep=lambda state: self._before_retry(name, state),
            reraise=True,
        )
        async for tried in retrying:
            with tried:
                result = await attempt(
                    name, request, returns, deadline=deadline, attempt_timeout=attempt_timeout, trace=trace
                )
                if budget is not None:
                    budget.succeeded()
                return result
        raise AssertionError("unreachable: tenacity re-raises the last error")  # pragma: no cover

    def _again(
        self, error: BaseException, name: str, policy: RetryPolicy, idempotent: bool, deadline: float
    ) -> bool:
        """Whether a failed attempt is retried: the policy allows it, time and the budget are left."""
        if policy.budget is not None and isinstance(error, policy.on):
            budget = self._budget(name, policy.budget)
            budget.failed()
            if not budget.allows():
                return False
        return policy.retries(error, idempotent) and time.monotonic() < deadline - 0.01

    def _budget(self, name: str, budget: RetryBudget) -> Tokens:
        key = (name.partition(".")[0], budget)  # one budget per target service
        found = self._tokens.get(key)
        if found is None:
            found = remember(self._tokens, key, Tokens(budget))
        return found

    async def _call_guarded(
        self,
        name: str,
        request: object,
        returns: type[T],
        *,
        deadline: float,
        attempt_timeout: float | None,
        trace: Trace | None,
    ) -> T:
        """One attempt through the circuit of its target (raises `CircuitOpen` while open)."""
        policy = self.breaker
        assert policy is not None  # only called when the client has a breaker
        target = policy.target(name)
        circuit = self._circuits.get(target)
        if circuit is None:
            circuit = remember(
                self._circuits,
                target,
                Circuit(policy, target, owner=self.source),
                forget_first=lambda kept: kept.state is CircuitState.CLOSED,
            )
        probe = circuit.admit()
        try:
            result = await self._call_once(
                name, request, returns, deadline=deadline, attempt_timeout=attempt_timeout, trace=trace
            )
        except BaseException as exc:
            circuit.record(exc, probe=probe)
            raise
        circuit.record(None, probe=probe)
        return result

    def _call_once(
        self,
        name: str,
        request: object,
        returns: type[T],
        *,
        deadline: float,
        attempt_timeout: float | None,
        trace: Trace | None,
    ) -> Coroutine[Any, Any, T]:
        tracing = _tracing.active
        if tracing is None:  # the only cost of tracing while it is off
            return self._request(
                name, request, returns, deadline=deadline, attempt_timeout=attempt_timeout, trace=trace
            )
        span = tracing.client(name, trace)  # a CLIENT span per attempt, its context in the request
        return tracing.around(
            span,
            self._request(
                name,
                request,
                returns,
                deadline=deadline,
                attempt_timeout=attempt_timeout,
                trace=span.trace,
                span=span,
            ),
        )

    async def _request(
        self,
        name: str,
        request: object,
        returns: type[T],
        *,
        deadline: float,
        attempt_timeout: float | None,
        trace: Trace | None,
        span: _tracing.Outgoing | None = None,
    ) -> T:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise Timeout(name, 0.0)  # only reached when no earlier attempt had an error to show
        if attempt_timeout is not None:
            remaining = min(remaining, attempt_timeout)
        extensions: dict[str, ExtensionValue] = trace.extensions() if trace is not None else {}
        # rounded up: the callee's deadline (its receipt plus this budget) never falls before
        # ours, so a caller whose time runs out sees its own Timeout, not the callee giving up
        # first; milliseconds cut off would make the callee stop up to 1 ms while we still wait
        extensions[TIMEOUT_EXTENSION] = max(1, min(MAX_BUDGET_MS, math.ceil(remaining * 1000)))
        event = Event.of(request, source=self.source, type=python_type_name(request), extensions=extensions)
        if span is not None:
            span.sending(event, name)
        wire = binding.to_binary(event, None)
        try:
            reply = await self.connection.request(name, wire.data, headers=wire.headers, timeout=remaining)
        except Timeout as exc:  # the budget as the caller would write it: 1s, not 0.999998s
            raise Timeout(name, math.ceil(remaining * 1000) / 1000) from exc
        headers = reply.headers
        if (  # the common case: a CloudEvent, and no error headers
            headers is not None
            and "ce-specversion" in headers
            and ERROR_CODE_HEADER not in headers
            and ERROR_HEADER not in headers
            and returns is not type(None)
        ):
            try:
                return binding.from_binary(reply, None).data_as(returns)
            except PayloadError as exc:
                _name_reply(exc, name, headers, returns)
                raise
        error = error_from_reply(headers, reply.data)
        if error is not None:
            raise error
        try:
            return _decode_reply(headers, reply.data, returns)
        except PayloadError as exc:
            _name_reply(exc, name, headers, returns)
            raise

    async def publish(
        self,
        message: object,
        *,
        subject: str | None = None,
        type: str | None = None,  # noqa: A002 - the CloudEvents attribute is called "type"
        source: str | None = None,
        trace: Trace | None = None,
        extensions: Mapping[str, ExtensionValue] | None = None,
        durable: bool = False,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> Event:
        """Publish ``message`` as a CloudEvent (binary mode) on ``subject`` (default ``events.<type>``).

        An `Event` is sent unchanged, so publishing it again is a retry of the same event, not
        a new one: `NotStored.event` holds the event a failed durable publish tried to store.

        ``durable=True`` waits until a JetStream stream has stored it, retrying (deduplicated
        by ``Nats-Msg-Id``, derived from the event's source and id) for up to ``timeout``
        seconds; raises `NotStored` when no stream acknowledged it — never silently lost.
        """
        tracing = _tracing.active
        span = None if tracing is None else tracing.producer(trace)  # a PRODUCER span, in the event
        try:  # the span ends however this ends, making the event included
            event = self._event(
                message,
                type=type,
                source=source,
                trace=trace if span is None else span.trace,
                extensions=extensions,
            )
            wire = binding.to_binary(event, None)
            topic = subject or event_subject(event.get_type())
            if span is not None:
                span.sending(event, topic)
            if durable:
                await self._store(event, topic, wire, timeout)
            else:
                await self.connection.publish(topic, wire.data, headers=wire.headers)
        except BaseException as exc:
            if span is not None:
                span.end(exc)
            raise
        if span is not None:
            span.end()
        return event

    async def publish_later(
        self,
        message: object,
        *,
        at: datetime | None = None,
        delay: timedelta | float | None = None,
        subject: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> Scheduled:
        """Store ``message`` now as a CloudEvent delivered on ``subject`` (default
        ``events.<type>``) at ``at`` (timezone-aware) or after ``delay`` (seconds or a timedelta).

        The stream storing ``subject`` must be declared ``Stream(..., schedules=True)``; the
        event reaches that stream's consumers (durable handlers), not core subscribers. Raises
        `ConfigurationError` for a bad time or a stream without schedules, `NotStored` when it
        could not be stored. Cancel it with `cancel_scheduled`.
        """
        due = delivery_time(at, delay, datetime.now(UTC))
        event = self._event(message, type=None, source=None, trace=None, extensions=None)
        target = subject or event_subject(event.get_type())
        return await store_later(self.connection, event, target, due, timeout)

    async def cancel_scheduled(self, scheduled: Scheduled) -> bool:
        """Cancel a delayed event; ``False`` when it was already delivered or cancelled."""
        return await cancel_scheduled(self.connection, scheduled)

    async def publish_batch(
        self,
        messages: Sequence[object],
        *,
        subject: str | None = None,
        trace: Trace | None = None,
        window: int = 256,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> list[Event]:
        """Publish ``messages`` durably with up to ``window`` acknowledgements outstanding.

        Each message is stored once (deduplicated like `publish`); returns the events in
        order once every one is stored, or raises the first failure (`NotStored`, whose
        ``event`` is the one not stored) after the others have finished. To retry a batch
        without storing anything twice, pass `Event` objects (built with `Event.of`): they keep
        their identity, while plain messages become new events on every call.
        """
        tracing = _tracing.active
        # with tracing on: a PRODUCER span per event, from its making until its acknowledgement
        spans = None if tracing is None else [tracing.producer(trace) for _ in messages]
        try:
            return await self._publish_batch(messages, spans, subject=subject, trace=trace, window=window,
                                             timeout=timeout)  # fmt: skip
        except BaseException as exc:
            for span in spans or ():  # those not ended yet: not sent, or cut short
                span.end(exc)
            raise

    async def _publish_batch(
        self,
        messages: Sequence[object],
        spans: list[_tracing.Outgoing] | None,
        *,
        subject: str | None,
        trace: Trace | None,
        window: int,
        timeout: float,
    ) -> list[Event]:
        events = [
            self._event(m, type=None, source=None, trace=trace if spans is None else spans[i].trace,
                        extensions=None)
            for i, m in enumerate(messages)
        ]  # fmt: skip
        pending = iter(enumerate(events))
        failures: list[BaseException] = []

        async def worker() -> None:  # `window` of these: as many acknowledgements outstanding
            for i, event in pending:
                wire = binding.to_binary(event, None)
                topic = subject or event_subject(event.get_type())
                span = None if spans is None else spans[i]
                try:
                    if span is not None:
                        span.sending(event, topic)
                    await self._store(event, topic, wire, timeout)
                except EventMicroError as exc:
                    failures.append(exc)
                    if span is not None:
                        span.end(exc)
                else:
                    if span is not None:
                        span.end()

        async with asyncio.TaskGroup() as group:
            for _ in range(max(1, min(window, len(events)))):
                group.create_task(worker())
        if failures:
            raise failures[0]
        return events

    async def _store(self, event: Event, topic: str, wire: binding.NATSMessage, timeout: float) -> None:
        """Publish ``event`` durably, deduplicated by its identity; `NotStored` carries the event."""
        try:
            await jetstream.publish(
                self.connection,
                topic,
                wire.data,
                wire.headers,
                msg_id=jetstream.message_id(event.get_source(), event.get_id()),
                timeout=timeout,
            )
        except NotStored as exc:
            exc.event = event
            raise

    def _event(
        self,
        message: object,
        *,
        type: str | None,  # noqa: A002
        source: str | None,
        trace: Trace | None,
        extensions: Mapping[str, ExtensionValue] | None,
    ) -> Event:
        if isinstance(message, Event):  # sent as it is: publishing it again keeps its identity
            return message
        merged: dict[str, ExtensionValue] = trace.extensions() if trace is not None else {}
        if extensions:
            merged.update(extensions)
        return Event.of(message, source=source or self.source, type=type, extensions=merged or None)


def _name_reply(error: PayloadError, name: str, headers: Mapping[str, str] | None, returns: type) -> None:
    """Say which reply type came and which ``returns=`` expected, when they differ."""
    got = next((v for k, v in (headers or {}).items() if k.lower() == "ce-type"), None)
    wanted = python_type_name(returns)
    if got is not None and got != wanted:
        media = next((v for k, v in (headers or {}).items() if k.lower() == "ce-datacontenttype"), None)
        error.args = (
            f"the reply of {name} is a {got[:200]}{f' ({media[:100]})' if media else ''}, "
            f"not the {wanted} that returns= expects",
        )


def _decode_reply(headers: Mapping[str, str] | None, data: bytes, returns: type[T]) -> T:
    if returns is type(None):
        return None  # T is NoneType here
    if headers is not None and any(k.lower() == "ce-specversion" for k in headers):
        return binding.from_nats(binding.NATSMessage(dict(headers), data), None).data_as(returns)
    content_type: Any = None
    if headers:
        content_type = next((v for k, v in headers.items() if k.lower() == "content-type"), None)
    return decode_payload(data, content_type, returns)  # a foreign service's plain reply


def _log_attempt(name: str, state: RetryCallState) -> None:
    error = state.outcome.exception() if state.outcome is not None else None
    log.debug(
        "call %s attempt %d failed (%s); retrying in %.3fs",
        name,
        state.attempt_number,
        error,
        state.upcoming_sleep,
    )


def _versioned(name: str, version: int) -> str:
    """``orders.place`` served by major ``version`` only: ``orders.v2.place``."""
    service, dot, endpoint = name.partition(".")
    if not dot or "." in endpoint or isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise ConfigurationError(
            f"call({name[:60]!r}, version={version!r}): a version is a major number (0 or more) and "
            "the name an endpoint's default subject, <service>.<endpoint>"
        )
    return versioned_subject(service, version, endpoint)
