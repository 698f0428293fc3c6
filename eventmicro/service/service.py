"""A service: a name, a version, and the handlers its decorators registered.

::

    svc = Service("orders", version="1.0.0")

    @svc.rpc                                   # orders.place, queue group "orders"
    async def place(req: PlaceOrder, ctx: Context) -> OrderAccepted: ...

    @svc.subscribe                             # events.shop.orders.v1.OrderPlaced,
    async def audit(event: OrderPlaced) -> None: ...   # queue group "orders.audit"

    async with svc.serving(connection): ...    # or: svc.run()

Event delivery (nameko's words)::

    service pool (default)   one copy per service, balanced across its instances
    broadcast=True           a copy for every instance
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, Final, Literal, TypeVar, overload

from eventmicro._errors import ConfigurationError
from eventmicro.service.durable import Durability, Replay
from eventmicro.service.handlers import Handler, HandlerKind, HandlerSpec, inspect_handler
from eventmicro.service.middleware import Middleware
from eventmicro.transport.config import ConnectOptions
from eventmicro.transport.connection import Connection
from eventmicro.transport.jetstream import Stream, check_deliver
from eventmicro.wire.codecs import type_name_of
from eventmicro.wire.names import (
    check_handler_name,
    check_service_name,
    check_subject,
    check_version,
    endpoint_subject,
    event_subject,
)

__all__ = ["DEFAULT_CONCURRENCY", "Service"]

log = logging.getLogger("eventmicro.service")
F = TypeVar("F", bound=Handler)
Hook = Callable[[], Awaitable[None]]

DEFAULT_CONCURRENCY: Final = 64
BACKLOG_FACTOR: Final = 4  # an endpoint's default backlog: this many times its concurrency
DEFAULT_IDEMPOTENT_TTL: Final = 24 * 3600.0


class Service:
    """A named, versioned service (ADR-32 rules) and its handlers.

    ``reply_prefixes`` limits the subjects the service sends replies to (a request's reply
    subject is its caller's choice). By default a reply never goes to a subject starting with
    ``$`` (``$JS.API``, ``$SRV``, ``$KV``...), to an event or dead-letter subject, or to a
    wildcard; ``reply_prefixes=("_INBOX.",)`` also refuses every other subject that does not
    start with ``_INBOX.``. A refused request is not handled, is counted and logged.
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
        streams: Sequence[Stream] = (),
        reply_prefixes: Sequence[str] | None = None,
    ) -> None:
        self.name = check_service_name(name)
        self.version = check_version(version)
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
        self.source = f"/{name}"
        self.streams: list[Stream] = list(streams)  # created or checked when the service starts
        if reply_prefixes is not None and not all(isinstance(p, str) and p for p in reply_prefixes):
            raise ConfigurationError("reply_prefixes: subject prefixes are non-empty strings")
        self.reply_prefixes = tuple(reply_prefixes) if reply_prefixes is not None else None

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
    ) -> F | Callable[[F], F]:
        """Register an RPC endpoint (subject ``<service>.<name>``, queue group: the service name).

        The request type comes from the first parameter's annotation, the reply type from the
        return annotation. ``idempotent=True`` lets clients retry it after a timeout.

        At most ``concurrency`` requests run at once; up to ``backlog`` more (default: four
        times ``concurrency``) wait for a slot, in arrival order. Beyond that a request is
        answered ``503 Overloaded`` at once without running the handler, and a request whose
        caller's deadline passed while it waited is answered 504 without running it.
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
                    queue=self.name,
                    concurrency=_positive(concurrency, fn),
                    idempotent=idempotent,
                    backlog=_backlog(backlog, concurrency, fn),
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
        broadcast: bool = ...,
        concurrency: int = ...,
        name: str | None = None,
        durable: bool = ...,
        stream: str | None = ...,
        max_deliver: int = ...,
        backoff: Sequence[float] = ...,
        terminal: Sequence[type[BaseException]] = ...,
        dead_letter: bool = ...,
        ack_wait: float = ...,
        deliver: Literal["all", "new", "last"] | int | datetime = ...,
        idempotent: bool | float = ...,
        ordered: bool = ...,
    ) -> Callable[[F], F]: ...
    def subscribe(
        self,
        function: F | None = None,
        *,
        subject: str | None = None,
        broadcast: bool = False,
        concurrency: int = DEFAULT_CONCURRENCY,
        name: str | None = None,
        durable: bool = False,
        stream: str | None = None,
        max_deliver: int = 5,
        backoff: Sequence[float] = (1.0, 5.0, 30.0),
        terminal: Sequence[type[BaseException]] = (),
        dead_letter: bool = True,
        ack_wait: float = 30.0,
        deliver: Literal["all", "new", "last"] | int | datetime = "all",
        idempotent: bool | float = False,
        ordered: bool = False,
    ) -> F | Callable[[F], F]:
        """Register an event handler.

        The subject defaults to ``events.<type>`` of the annotated type; a handler taking a
        union of types, or a wildcard subject, is dispatched by the event's CloudEvent type.

        ``durable=True`` consumes from the JetStream stream that stores the subject (or
        ``stream``) through the durable consumer ``<service>-<handler>``, shared by the
        instances: acked after the handler returns, redelivered after ``backoff[n-1]`` seconds
        on failure n, dead-lettered after ``max_deliver`` attempts or at once for an error in
        ``terminal`` (see `eventmicro.service.durable`). ``deliver`` says where a new consumer starts.
        ``idempotent=True`` (or a number of seconds, default a day) remembers the (source, id)
        of each event handled, in a KV bucket with that TTL, and skips a redelivered one.

        ``ordered=True`` gives every instance an ordered consumer of the stream: each stored
        event on the subject, in order, one at a time, from ``deliver`` (``"all"``, ``"new"``,
        ``"last"``, a stream sequence or a datetime) — for rebuilding projections.
        """
        if not (durable or ordered) and (stream is not None or deliver != "all"):
            # a core subscription would ignore them: at most once, while JetStream was meant
            raise ConfigurationError("stream=... and deliver=... need durable=True (or ordered=True)")
        if not durable and (
            max_deliver != 5 or list(backoff) != [1, 5, 30] or terminal or not dead_letter or ack_wait != 30
        ):
            raise ConfigurationError(
                "max_deliver, backoff, terminal, dead_letter and ack_wait need durable=True"
            )
        replay = None
        if ordered:
            if durable or broadcast:
                raise ConfigurationError("ordered=True is its own mode: no durable=True or broadcast=True")
            check_deliver(deliver)
            replay = Replay(stream=stream, deliver=deliver)
        durability = None
        if durable:
            durability = _durability(
                stream, max_deliver, backoff, terminal, dead_letter, ack_wait, deliver, broadcast=broadcast
            )
            if idempotent:
                ttl = DEFAULT_IDEMPOTENT_TTL if idempotent is True else float(idempotent)
                if not ttl >= 0.1:
                    raise ConfigurationError("idempotent: the guard's TTL must be at least 0.1 s")
                durability = dataclasses.replace(durability, idempotent_ttl=ttl)
        elif idempotent:
            raise ConfigurationError("idempotent=... guards durable handlers: add durable=True")

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
            self._add(
                HandlerSpec(
                    kind=HandlerKind.EVENT,
                    name=handler,
                    function=fn,
                    message_types=types_,
                    reply_type=None,
                    takes_context=takes_ctx,
                    subject=topic,
                    queue=None if broadcast else f"{self.name}.{handler}",
                    concurrency=_positive(concurrency, fn),
                    durable=durability,
                    ordered=replay,
                )
            )
            return fn

        return register(function) if function is not None else register

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

    def _add(self, spec: HandlerSpec) -> None:
        for other in self.handlers:
            if other.kind is spec.kind and other.name == spec.name:
                raise ConfigurationError(
                    f"service {self.name} already has a {spec.kind.value} handler {spec.name!r}"
                )
        self.handlers.append(spec)

    # --- running ----------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def serving(self, connection: Connection, *, drain_timeout: float = 30.0) -> AsyncIterator[Any]:
        """Serve on ``connection`` inside the block; leaving it drains and stops gracefully."""
        from eventmicro.service.running import Running

        running = Running(self, connection, drain_timeout=drain_timeout)
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
        from eventmicro.observability.logs import SCOPE, Scope
        from eventmicro.service.process import Serve, drain_timeout_from_env, run_services

        if os.environ.get("EVENTMICRO_LOG_FORMAT") or not logging.getLogger().handlers:
            from eventmicro.observability.logs import configure

            configure()
        metrics_port = _port(metrics_port, "EVENTMICRO_METRICS_PORT")
        health_port = _port(health_port, "EVENTMICRO_HEALTH_PORT")
        drain_timeout = drain_timeout_from_env(drain_timeout)
        if metrics_port is not None:
            from eventmicro.observability.metrics import enable

            enable()  # before the service starts: its handlers get their metrics
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


def _durability(  # noqa: PLR0917 - the decorator's options, checked in one place
    stream: str | None,
    max_deliver: int,
    backoff: Sequence[float],
    terminal: Sequence[type[BaseException]],
    dead_letter: bool,
    ack_wait: float,
    deliver: Literal["all", "new", "last"] | int | datetime,
    *,
    broadcast: bool,
) -> Durability:
    if broadcast:
        raise ConfigurationError("a durable handler is shared by the service's instances: no broadcast=True")
    if max_deliver < 1:
        raise ConfigurationError("max_deliver must be at least 1")
    if isinstance(backoff, str | bytes) or any(not (isinstance(b, int | float) and b >= 0) for b in backoff):
        raise ConfigurationError("backoff is a list of delays in seconds (0 or more)")
    check_deliver(deliver)
    if not ack_wait > 0:
        raise ConfigurationError("ack_wait must be a positive number of seconds")
    if not all(isinstance(t, type) and issubclass(t, BaseException) for t in terminal):
        raise ConfigurationError("terminal is a list of exception types")
    return Durability(
        stream=stream,
        max_deliver=max_deliver,
        backoff=tuple(float(b) for b in backoff),
        terminal=tuple(terminal),
        dead_letter=dead_letter,
        ack_wait=float(ack_wait),
        deliver=deliver,
    )


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


def _positive(concurrency: int, fn: Handler) -> int:
    if concurrency < 1:
        raise ConfigurationError(f"handler {fn.__qualname__}: concurrency must be at least 1")
    return concurrency
