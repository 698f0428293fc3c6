"""A service: a name, a version, and the handlers its decorators registered.

::

    svc = Service("orders", version="1.0.0")

    @svc.rpc                                   # orders.place, queue group "orders"
    async def place(req: PlaceOrder, ctx: Context) -> OrderAccepted: ...

    @svc.subscribe                             # events.shop.orders.v1.OrderPlaced,
    async def audit(event: OrderPlaced) -> None: ...   # queue group "orders.audit"

    async with svc.serving(connection): ...    # or: svc.run()

Event delivery is a value (`eventmicro.service.delivery`)::

    delivery=Shared()        one copy per service, balanced across its instances (default)
    delivery=Broadcast()     a copy for every instance
    delivery=Durable(...)    JetStream, at least once, shared by the instances
    delivery=Ordered(...)    JetStream, every stored event in order, per instance
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import timedelta
from typing import Any, Final, Literal, TypeVar, overload

from eventmicro._errors import ConfigurationError
from eventmicro.observability.logs import SCOPE, Scope, configure
from eventmicro.observability.metrics import enable as enable_metrics
from eventmicro.service.balance import BALANCES
from eventmicro.service.breaker import BreakerPolicy
from eventmicro.service.declared import Hook
from eventmicro.service.delivery import Broadcast, DeliveryOption, Durable, Ordered, Shared
from eventmicro.service.dependencies import Dependency, Override
from eventmicro.service.dependencies import check_name as check_dependency_name
from eventmicro.service.dependencies import open_all as open_dependencies
from eventmicro.service.handlers import Handler, HandlerKind, HandlerSpec, inspect_handler
from eventmicro.service.lanes import OrderedBy, key_of
from eventmicro.service.middleware import Middleware
from eventmicro.service.process import DEFAULT_DRAIN_TIMEOUT, Serve, drain_timeout_from_env, run_services
from eventmicro.service.retry import RetryPolicy
from eventmicro.service.running import Running
from eventmicro.service.ticks import ScheduleSpec, schedule_spec
from eventmicro.transport.config import ConnectOptions
from eventmicro.transport.connection import Connection
from eventmicro.transport.jetstream import Stream
from eventmicro.wire.codecs import type_name_of
from eventmicro.wire.names import (
    check_handler_name,
    check_service_name,
    check_subject,
    check_version,
    endpoint_subject,
    event_subject,
    major_of,
    versioned_subject,
)
from eventmicro.wire.schedules import check_pattern

__all__ = ["DEFAULT_CONCURRENCY", "Service"]

log = logging.getLogger("eventmicro.service")
F = TypeVar("F", bound=Handler)
T = TypeVar("T")

DEFAULT_CONCURRENCY: Final = 64
BACKLOG_FACTOR: Final = 4  # an endpoint's default backlog: this many times its concurrency
_SHARED: Final = Shared()


class Service:
    """A named, versioned service (ADR-32 rules) and its handlers.

    What it reaches beyond its own handlers is declared too, so that its NATS user can be
    given exactly that (``eventmicro permissions``, ``docs/permissions.md``): ``publishes``
    the event types it emits, ``calls`` the services (``"billing"``: every endpoint on
    ``billing.*``) or endpoint subjects (``"billing.get_payment"``) it calls, ``stores`` the
    key-value buckets it opens with ``ctx.store``.

    ``reply_prefixes`` limits the subjects the service sends replies to (a request's reply
    subject is its caller's choice). By default a reply never goes to a subject starting with
    ``$`` (``$JS.API``, ``$SRV``, ``$KV``...), to an event or dead-letter subject, or to a
    wildcard; ``reply_prefixes=("_INBOX.",)`` also refuses every other subject that does not
    start with ``_INBOX.``. A refused request is not handled, is counted and logged.

    ``retry`` (a `RetryPolicy`) and ``breaker`` (a `BreakerPolicy`) govern the calls its
    handlers make with ``ctx.call``: each instance has its own circuits, shown in ``$SRV.STATS``.
    """

    def __init__(
        self,
        name: str,
        *,
        version: str,
        description: str = "",
        metadata: Mapping[str, str] | None = None,
        middleware: Sequence[Middleware] = (),
        publishes: Sequence[type] = (),
        calls: Sequence[str] = (),
        stores: Sequence[str] = (),
        streams: Sequence[Stream] = (),
        reply_prefixes: Sequence[str] | None = None,
        retry: RetryPolicy | None = None,
        breaker: BreakerPolicy | None = None,
    ) -> None:
        self.name = check_service_name(name)
        self.version = check_version(version)
        self._major = major_of(self.version)  # endpoints also serve <name>.v<major>.<endpoint>
        self.description = description
        self.metadata = dict(metadata or {})
        if any(key.startswith("_nats") for key in self.metadata):
            raise ConfigurationError("metadata keys starting with '_nats' are reserved (ADR-33)")
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in self.metadata.items()):
            raise ConfigurationError("service metadata maps strings to strings (ADR-32)")
        if sum(len(k) + len(v) for k, v in self.metadata.items()) > 128 * 1024:
            raise ConfigurationError("service metadata is limited to 128 KB (ADR-33)")
        self.handlers: list[HandlerSpec] = []
        self.on_start: list[Hook] = []
        self.on_stop: list[Hook] = []
        self.middleware: list[Middleware] = list(middleware)
        self.publishes: list[type] = list(publishes)  # event types, listed in $SRV.INFO metadata
        for cls in self.publishes:
            if not type_name_of(cls):
                raise ConfigurationError(f"publishes: {cls.__name__} has no CloudEvent type")
        self.calls: tuple[str, ...] = tuple(_called(target) for target in _strings(calls, "calls"))
        self.stores: tuple[str, ...] = tuple(_bucket(bucket) for bucket in _strings(stores, "stores"))
        self.source = f"/{name}"
        self.streams: list[Stream] = list(streams)  # created or checked when the service starts
        if reply_prefixes is not None and not all(isinstance(p, str) and p for p in reply_prefixes):
            raise ConfigurationError("reply_prefixes: subject prefixes are non-empty strings")
        self.reply_prefixes = tuple(reply_prefixes) if reply_prefixes is not None else None
        if retry is not None and not isinstance(retry, RetryPolicy):
            raise ConfigurationError(f"retry must be a RetryPolicy, not {retry!r}")
        if breaker is not None and not isinstance(breaker, BreakerPolicy):
            raise ConfigurationError(f"breaker must be a BreakerPolicy, not {breaker!r}")
        self.retry = retry
        self.breaker = breaker
        self.dependencies: list[Dependency[Any]] = []
        self.schedules: list[ScheduleSpec] = []  # @svc.schedule handlers

    # --- decorators -------------------------------------------------------------------------

    @overload
    def rpc(self, function: F) -> F: ...
    @overload
    def rpc(
        self,
        *,
        name: str | None = None,
        subject: str | None = None,
        concurrency: int = ...,
        idempotent: bool = ...,
        backlog: int | None = ...,
        balance: Literal["random", "room"] = ...,
    ) -> Callable[[F], F]: ...
    def rpc(
        self,
        function: F | None = None,
        *,
        name: str | None = None,
        subject: str | None = None,
        concurrency: int = DEFAULT_CONCURRENCY,
        idempotent: bool = False,
        backlog: int | None = None,
        balance: Literal["random", "room"] = "random",
    ) -> F | Callable[[F], F]:
        """Register an RPC endpoint (subject ``<service>.<name>``, queue group: the service name).

        The request type comes from the first parameter's annotation, the reply type from the
        return annotation. ``idempotent=True`` lets clients retry it after a timeout.

        At most ``concurrency`` requests run at once; up to ``backlog`` more (default: four
        times ``concurrency``) wait for a slot, in arrival order. Beyond that a request is
        answered ``503 Overloaded`` at once without running the handler, and a request whose
        caller's deadline passed while it waited is answered 504 without running it.

        ``balance``: how the instances of the service share the endpoint's requests.
        ``"random"`` (default) is the NATS queue group's own: each request to a member picked
        at random, busy or not. ``"room"``: an instance whose requests start to wait leaves
        the queue group until it has room again (half its slots free, none waiting), so the
        requests go to the instances that have room (`eventmicro.service.balance`).
        """

        def register(fn: F) -> F:
            types_, reply, takes_ctx = inspect_handler(fn, HandlerKind.RPC)
            endpoint = check_handler_name(name or fn.__name__)
            self._add(
                HandlerSpec(
                    kind=HandlerKind.RPC,
                    name=endpoint,
                    function=fn,
                    message_types=types_,
                    reply_type=reply,
                    takes_context=takes_ctx,
                    subject=check_subject(subject or endpoint_subject(self.name, endpoint)),
                    versioned=None if subject else versioned_subject(self.name, self._major, endpoint),
                    queue=self.name,
                    concurrency=_positive(concurrency, fn),
                    idempotent=idempotent,
                    backlog=_backlog(backlog, concurrency, fn),
                    balance=_balance(balance, fn),
                )
            )
            return fn

        return register(function) if function is not None else register

    @overload
    def subscribe(self, function: F) -> F: ...
    @overload
    def subscribe(
        self,
        *,
        subject: str | None = None,
        name: str | None = None,
        concurrency: int = ...,
        delivery: DeliveryOption = ...,
        ordered_by: OrderedBy | None = None,
    ) -> Callable[[F], F]: ...
    def subscribe(
        self,
        function: F | None = None,
        *,
        subject: str | None = None,
        name: str | None = None,
        concurrency: int = DEFAULT_CONCURRENCY,
        delivery: DeliveryOption = _SHARED,
        ordered_by: OrderedBy | None = None,
    ) -> F | Callable[[F], F]:
        """Register an event handler.

        The subject defaults to ``events.<type>`` of the annotated type; a handler taking a
        union of types, or a wildcard subject, is dispatched by the event's CloudEvent type.
        ``concurrency`` events are handled at once, at most.

        ``delivery`` says how events reach it (`eventmicro.service.delivery`): `Shared()`
        (the default: one instance of the service gets each event), `Broadcast()` (every
        instance), `Durable(...)` (JetStream, at least once: acked after the handler returns,
        redelivered with backoff, dead-lettered after the last attempt) or `Ordered(...)`
        (every stored event in order, per instance: projections).

        ``ordered_by`` (`eventmicro.service.lanes`): events with the same key are handled one
        at a time in the order they arrived, different keys concurrently; the key is a field
        of the message (``"order_id"``), a function of it, or `PartitionKey()` (the CloudEvent's
        ``partitionkey``). Not with `Ordered` (already one at a time).
        """
        if not isinstance(delivery, Shared | Broadcast | Durable | Ordered):
            raise ConfigurationError(
                "delivery= takes Shared(), Broadcast(), Durable(...) or Ordered(...), "
                f"not {type(delivery).__name__}"
            )

        def register(fn: F) -> F:
            types_, _, takes_ctx = inspect_handler(fn, HandlerKind.EVENT)
            handler = check_handler_name(name or fn.__name__)
            if subject is None:
                if len(types_) != 1:
                    raise ConfigurationError(
                        f"handler {fn.__qualname__} takes several types: give subject=... (a wildcard "
                        "such as 'events.shop.>' receives them all)"
                    )
                if not type_name_of(types_[0]):
                    raise ConfigurationError(
                        f"handler {fn.__qualname__}: {getattr(types_[0], '__name__', types_[0])} has no "
                        'CloudEvent type; decorate the class with @event_type("...") or give subject=...'
                    )
                topic = event_subject(type_name_of(types_[0]) or "")
            else:
                topic = check_subject(subject, wildcards=True)
            keyed = None
            if ordered_by is not None:
                if isinstance(delivery, Ordered):
                    raise ConfigurationError(
                        f"handler {fn.__qualname__}: ordered_by= with Ordered(): an ordered consumer "
                        "already handles every event in order, one at a time"
                    )
                keyed = key_of(ordered_by, types_, fn.__qualname__)
            self._add(
                HandlerSpec(
                    kind=HandlerKind.EVENT,
                    name=handler,
                    function=fn,
                    message_types=types_,
                    reply_type=None,
                    takes_context=takes_ctx,
                    subject=topic,
                    queue=f"{self.name}.{handler}" if isinstance(delivery, Shared | Durable) else None,
                    concurrency=_positive(concurrency, fn),
                    durable=delivery if isinstance(delivery, Durable) else None,
                    ordered=delivery if isinstance(delivery, Ordered) else None,
                    ordered_by=keyed,
                )
            )
            return fn

        return register(function) if function is not None else register

    def schedule(
        self, pattern: str | None = None, *, every: timedelta | float | None = None, name: str | None = None
    ) -> Callable[[F], F]:
        """Run ``async def f(tick: Tick)`` on a schedule, once per tick across the instances.

        ``pattern`` is ``"@every 1m"``, ``"@hourly"`` (and the other predefined ones) or a
        6-field cron, seconds first, in UTC; ``every=`` (a timedelta or whole seconds) is the
        same as ``"@every <n>s"``. The schedule is stored in JetStream (stream
        ``eventmicro-schedules``), so it keeps time across restarts of the service and of the
        server (`eventmicro.service.ticks`). Bad patterns and signatures raise
        `ConfigurationError` here.
        """
        checked = check_pattern(pattern, every)

        def register(fn: F) -> F:
            spec = schedule_spec(fn, checked, name)
            if any(s.name == spec.name for s in self.schedules):
                raise ConfigurationError(f"service {self.name}: two schedules named {spec.name!r}")
            self.schedules.append(spec)
            return fn

        return register

    def use(self, middleware: Middleware) -> None:
        """Add a middleware (after those already given); takes effect when the service starts."""
        self.middleware.append(middleware)

    def on_startup(self, hook: Hook) -> Hook:
        """Register an ``async def hook()`` run before the service takes requests."""
        self.on_start.append(hook)
        return hook

    def on_shutdown(self, hook: Hook) -> Hook:
        """Register an ``async def hook()`` run after the service has drained."""
        self.on_stop.append(hook)
        return hook

    # --- dependencies -----------------------------------------------------------------------

    @overload
    def dependency(
        self, name: str, factory: Callable[[], AbstractAsyncContextManager[T]]
    ) -> Dependency[T]: ...
    @overload
    def dependency(self, name: str, factory: Callable[[], Awaitable[T]]) -> Dependency[T]: ...
    @overload
    def dependency(self, name: str, factory: Callable[[], T]) -> Dependency[T]: ...
    def dependency(self, name: str, factory: Callable[[], Any]) -> Dependency[Any]:
        """Declare a dependency: ``factory()`` is made when the service starts serving (an async
        context manager is entered, an awaitable awaited) and closed after it stopped, in
        reverse order of declaration. Handlers get it with ``ctx.get(dependency)``.

        >>> db = svc.dependency("db", lambda: Pool.open(url))     # doctest: +SKIP

        Raises `ConfigurationError` for a name that is not an identifier or already declared.
        """
        if not callable(factory):
            raise ConfigurationError(f"dependency {name!r}: the factory must be callable, not {factory!r}")
        checked = check_dependency_name(name, self.dependencies, self.name)
        made: Dependency[Any] = Dependency(self.name, checked, factory)
        self.dependencies.append(made)
        return made

    def override(self, dependency: Dependency[T], value: T) -> Override[T]:
        """Use ``value`` instead of what ``dependency``'s factory makes (tests): when serving and
        for handlers called directly. ``with svc.override(db, fake):`` (or ``.undo()``) restores."""
        if not any(dependency is d for d in self.dependencies):
            raise ConfigurationError(f"{dependency!r} is not a dependency of service {self.name}")
        return dependency.override(value)

    def _add(self, spec: HandlerSpec) -> None:
        for other in self.handlers:
            if other.kind is spec.kind and other.name == spec.name:
                raise ConfigurationError(
                    f"service {self.name} already has a {spec.kind.value} handler {spec.name!r}"
                )
        self.handlers.append(spec)

    # --- running ----------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def serving(
        self, connection: Connection, *, drain_timeout: float = DEFAULT_DRAIN_TIMEOUT
    ) -> AsyncIterator[Any]:
        """Serve on ``connection`` inside the block; leaving it drains and stops gracefully."""
        async with contextlib.AsyncExitStack() as dependencies:  # closed after the stop, in reverse
            await open_dependencies(self.dependencies, dependencies)
            running = Running(self, connection, drain_timeout=drain_timeout)
            running.client.configure(retry=self.retry, breaker=self.breaker)  # its handlers' calls
            await running.start()
            try:
                yield running
            finally:
                await running.stop()

    def run(
        self,
        url: str | None = None,
        *,
        options: ConnectOptions | None = None,
        metrics_port: int | None = None,
        health_port: int | None = None,
        drain_timeout: float | None = None,
    ) -> int:
        """Connect, serve until SIGINT/SIGTERM, then drain, stop and return 0.

        The stop is bounded whatever the connection's state: in-flight work gets
        ``drain_timeout`` seconds (or ``EVENTMICRO_DRAIN_TIMEOUT``, default 30), closing a few
        more; a signal while still connecting abandons the start; a second signal exits at once
        (code 128 + its number). See `eventmicro.service.process`.

        ``metrics_port`` (or ``EVENTMICRO_METRICS_PORT``) enables metrics and serves
        ``/metrics`` there (needs the ``metrics`` extra); ``health_port`` (or
        ``EVENTMICRO_HEALTH_PORT``) serves ``/healthz`` and ``/readyz``; the same number for
        both serves all three. They listen on every interface, or ``EVENTMICRO_HTTP_HOST``.
        ``EVENTMICRO_LOG_FORMAT`` (``json`` or ``text``) configures logging first
        (`eventmicro.logs.configure`); so does a program that set up no logging, so that what
        the service serves is shown (text at INFO, or ``EVENTMICRO_LOG_LEVEL``).
        """
        if os.environ.get("EVENTMICRO_LOG_FORMAT") or not logging.getLogger().handlers:
            configure()
        metrics_port = _port(metrics_port, "EVENTMICRO_METRICS_PORT")
        health_port = _port(health_port, "EVENTMICRO_HEALTH_PORT")
        drain_timeout = drain_timeout_from_env(drain_timeout)
        if metrics_port is not None:
            enable_metrics()  # before the service starts: its handlers get their metrics
        scope = Scope(service=self.name)
        SCOPE.set(scope)  # log records outside handlers (reconnects, start, stop) name the service

        def serving(instances: list[Any]) -> None:
            scope.instance = instances[0].id
            log.info("service %s %s serving (pid %d)", self.name, self.version, os.getpid())

        serve = Serve(
            [self],
            options or ConnectOptions.from_env(url),
            drain_timeout=drain_timeout,
            metrics_port=metrics_port,
            health_port=health_port,
            on_serving=serving,
            on_stopping=lambda: log.info("service %s stopping", self.name),
        )
        return run_services(serve)


_BUCKET: Final = re.compile(r"[A-Za-z0-9_-]+")


def _strings(values: Sequence[str], what: str) -> Sequence[str]:
    if isinstance(values, str) or not all(isinstance(v, str) for v in values):
        raise ConfigurationError(f"{what}= takes a list of names, e.g. {what}=['billing']")
    return values


def _called(target: str) -> str:
    """A service name, or the subject of one endpoint (``service.endpoint``, no wildcards)."""
    if "." in target:
        return check_subject(target)
    return check_service_name(target)


def _bucket(bucket: str) -> str:
    if not _BUCKET.fullmatch(bucket):
        raise ConfigurationError(f"stores: {bucket!r} is not a bucket name (letters, digits, '-' and '_')")
    return bucket


def _port(port: int | None, variable: str) -> int | None:
    if port is None:
        text = os.environ.get(variable, "").strip()
        if not text:
            return None
        try:
            port = int(text)
        except ValueError:
            raise ConfigurationError(f"{variable} must be a port number, not {text!r}") from None
    if not 0 <= port <= 65535:
        raise ConfigurationError(f"port {port} is out of range")
    return port


def _backlog(backlog: int | None, concurrency: int, fn: Handler) -> int:
    if backlog is None:
        return BACKLOG_FACTOR * max(concurrency, 1)
    if backlog < 0:
        raise ConfigurationError(f"handler {fn.__qualname__}: backlog must be 0 or more")
    return backlog


def _balance(balance: str, fn: Handler) -> str:
    if balance not in BALANCES:
        raise ConfigurationError(
            f"handler {fn.__qualname__}: balance must be one of "
            f"{', '.join(map(repr, BALANCES))}, not {balance!r}"
        )
    return balance


def _positive(concurrency: int, fn: Handler) -> int:
    if concurrency < 1:
        raise ConfigurationError(f"handler {fn.__qualname__}: concurrency must be at least 1")
    return concurrency
