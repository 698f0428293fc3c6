"""Test helpers (re-exported by eventmicro.pytest_plugin): capture events on a real server and
wait for them; call handlers directly with a context whose publishes and calls are recorded.
"""

from __future__ import annotations

import asyncio
import builtins
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, TypeVar, overload

from eventmicro import cloudevents_nats as binding
from eventmicro._errors import EventMicroError, NoResponders
from eventmicro.service.client import Client
from eventmicro.service.context import Context
from eventmicro.service.retry import RetryPolicy
from eventmicro.transport.config import ConnectOptions
from eventmicro.transport.connection import Connection, Message
from eventmicro.wire.attributes import ExtensionValue
from eventmicro.wire.codecs import python_type_name, type_name_of
from eventmicro.wire.event import Event
from eventmicro.wire.names import event_subject
from eventmicro.wire.trace import Trace

if TYPE_CHECKING:  # pragma: no cover
    from eventmicro.service.service import Service

__all__ = ["Captured", "TestContext", "call_handler", "capture"]

T = TypeVar("T")
Fake = Callable[[Any], Any]  # request -> reply (or an awaitable of it); may raise a ServiceError


class Captured:
    """The events seen on a subject since `capture` began, in arrival order."""

    __slots__ = ("_arrived", "events", "undecodable")

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.undecodable: list[Message] = []  # messages on the subject that are no CloudEvent
        self._arrived = asyncio.Event()

    async def _receive(self, msg: Message) -> None:
        try:
            self.events.append(binding.from_nats(msg, None))
        except EventMicroError:
            self.undecodable.append(msg)
        self._arrived.set()

    @overload
    async def wait_for(self, type: type[T], *, count: int = 1, timeout: float = 10) -> list[T]: ...

    @overload
    async def wait_for(
        self, type: str | None = None, *, count: int = 1, timeout: float = 10
    ) -> list[Event]: ...

    async def wait_for(
        self,
        type: type[Any] | str | None = None,  # noqa: A002 - the CloudEvents attribute is called "type"
        *,
        count: int = 1,
        timeout: float = 10,
    ) -> list[Any]:
        """Wait until ``count`` events of ``type`` arrived (any type when ``None``) and return
        the first ``count`` of them: `Event` objects for a type name, decoded values for a
        class (a protobuf message or an ``@event_type`` class).

        Raises `AssertionError` after ``timeout`` seconds, listing the types that did arrive.
        """
        wanted = _type_name(type) if isinstance(type, builtins.type) else type
        try:
            async with asyncio.timeout(timeout):
                while len(matching := self._matching(wanted)) < count:
                    self._arrived.clear()
                    await self._arrived.wait()
        except TimeoutError:
            seen = [event.get_type() for event in self.events]
            raise AssertionError(
                f"expected {count} event(s) of type {wanted or 'any'} within {timeout:g}s; got {seen}"
            ) from None
        chosen = matching[:count]
        if isinstance(type, builtins.type):
            return [event.data_as(type) for event in chosen]
        return chosen

    def _matching(self, wanted: str | None) -> list[Event]:
        return [event for event in self.events if wanted is None or event.get_type() == wanted]


def _type_name(cls: type) -> str:
    name = type_name_of(cls)
    if name is None:
        raise TypeError(f"{cls.__name__} has no CloudEvent type: decorate it with @event_type")
    return name


@asynccontextmanager
async def capture(connection: Connection, subject_or_type: str | type) -> AsyncIterator[Captured]:
    """Capture the CloudEvents published on a subject while the block runs.

    ``subject_or_type`` is a NATS subject (wildcards allowed, e.g. ``"events.shop.>"``) or a
    message class, whose default event subject (``events.<type>``) is watched. The
    subscription is in place when the block starts, so what the block publishes is seen.
    """
    if isinstance(subject_or_type, str):
        subject = subject_or_type
    else:
        subject = event_subject(_type_name(subject_or_type))
    captured = Captured()
    subscription = await connection.subscribe(subject, captured._receive)
    try:
        yield captured
    finally:
        await subscription.unsubscribe()


class _Recorder(Client):
    """The client behind a `TestContext`: records what a handler publishes and calls."""

    def __init__(self, connection: Connection | None, fakes: Mapping[str, Fake]) -> None:
        unopened = connection is None
        super().__init__(connection or Connection(ConnectOptions.from_env(None, environ={})), source="/test")
        self._send = not unopened
        self._fakes = dict(fakes)
        self.published: list[tuple[str, Event]] = []
        self.calls: list[tuple[str, object]] = []

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
        timeout: float = 5.0,
    ) -> Event:
        if self._send:
            event = await super().publish(
                message,
                subject=subject,
                type=type,
                source=source,
                trace=trace,
                extensions=extensions,
                durable=durable,
                timeout=timeout,
            )
        else:  # encoded as for real, so an event that could not be sent fails the test
            event = self._event(message, type=type, source=source, trace=trace, extensions=extensions)
            binding.to_binary(event, None)
        self.published.append((subject or event_subject(event.get_type()), event))
        return event

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
        self.calls.append((name, request))
        fake = self._fakes.get(name)
        if fake is None:
            if self._send:
                return await super().call(
                    name,
                    request,
                    returns=returns,
                    timeout=timeout,
                    idempotent=idempotent,
                    attempt_timeout=attempt_timeout,
                    trace=trace,
                    retry=retry,
                    version=version,
                )
            raise NoResponders(name)  # what a call to a service that is not there raises
        reply = fake(request)
        if inspect.isawaitable(reply):
            reply = await reply
        if returns is not type(None) and not isinstance(reply, returns):
            raise TypeError(
                f"the fake for {name} returned {python_type_name(reply)}, not {returns.__qualname__}"
            )
        return reply  # type: ignore[no-any-return]  # checked just above


class TestContext(Context):
    """A `Context` for calling a handler directly in a test: what it publishes is recorded
    (and sent, when a ``connection`` is given), its ``ctx.call``\\s are answered by ``calls``
    (name -> a function of the request; a name without one raises `NoResponders`, or is
    called for real when a ``connection`` is given).

    ``published`` holds the messages' events in order; ``published_to`` the NATS subjects;
    ``calls`` the ``(name, request)`` pairs. ``ctx.store(...)`` needs a ``connection``.
    """

    __slots__ = ("_recorder",)
    __test__ = False  # not a pytest test class, whatever its name

    def __init__(
        self,
        service: Service,
        handler: str = "test",
        *,
        calls: Mapping[str, Fake] | None = None,
        connection: Connection | None = None,
        deadline: float | None = None,
    ) -> None:
        recorder = _Recorder(connection, calls or {})
        event = Event.create(type="eventmicro.test", source="/test")
        super().__init__(service, handler, event, recorder, Trace(event.get_id(), deadline=deadline))
        self._recorder = recorder

    @property
    def published(self) -> list[Event]:
        """The events the handler published, in order."""
        return [event for _, event in self._recorder.published]

    @property
    def published_to(self) -> list[str]:
        """The NATS subject of each published event, in order."""
        return [subject for subject, _ in self._recorder.published]

    @property
    def calls(self) -> list[tuple[str, object]]:
        """The ``(endpoint name, request)`` of each ``ctx.call``, in order."""
        return list(self._recorder.calls)

    def messages(self, cls: type[T]) -> list[T]:
        """The published messages of type ``cls``, decoded."""
        name = _type_name(cls)
        return [event.data_as(cls) for event in self.published if event.get_type() == name]


async def call_handler(service: Service, name: str, message: object, ctx: Context | None = None) -> Any:
    """Run handler ``name`` of ``service`` on ``message`` (no NATS in between; the service's
    middleware does not run) and return what it returns. The context is passed when the
    handler takes one: ``ctx``, else a fresh `TestContext`.

    Raises `LookupError` when the service has no handler of that name.
    """
    for spec in service.handlers:
        if spec.name == name:
            if not spec.takes_context:
                result: Awaitable[Any] = spec.function(message)
            else:
                result = spec.function(message, ctx or TestContext(service, name))
            return await result
    names = sorted(spec.name for spec in service.handlers)
    raise LookupError(f"service {service.name} has no handler {name!r} (it has {', '.join(names)})")
