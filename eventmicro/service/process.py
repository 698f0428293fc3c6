"""Services as a process's work until SIGINT/SIGTERM, with a stop that is bounded in every state.

::

    starting   --signal-->  start abandoned at once (connect retries, stream declarations)
    serving    --signal-->  graceful stop: intake stops, in-flight work drains (drain_timeout),
                            flush, close; what is left at drain_timeout + STOP_MARGIN is cancelled
    any state  --second signal-->                        exit at once, code 128 + signal number
    stop not over at drain_timeout + STOP_MARGIN + 2 x FORCE_GRACE  -->  exit at once, code 1

The last guard is a timer thread, not a task: a stop can hang where cancellation does not reach
(nats-py swallows ``CancelledError`` while it flushes, a task can wait on a task that ignored
its cancel) or while the event loop is blocked, and a process that ignores SIGTERM for an hour
is worse than one that exits without its final flush.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from types import FrameType
from typing import TYPE_CHECKING, Any, Final, Protocol

from eventmicro._errors import ConfigurationError
from eventmicro.observability.http import serve as serve_http
from eventmicro.transport.config import ConnectOptions
from eventmicro.transport.connection import Connection

if TYPE_CHECKING:  # pragma: no cover
    from eventmicro.observability.instance import Instance

__all__ = [
    "DEFAULT_DRAIN_TIMEOUT",
    "STOP_MARGIN",
    "Servable",
    "Serve",
    "drain_timeout_from_env",
    "loop_factory",
    "run_services",
]

log = logging.getLogger("eventmicro.run")

DEFAULT_DRAIN_TIMEOUT: Final = 30.0
STOP_MARGIN: Final = 5.0  # beyond drain_timeout: stop hooks, the last flush, closing the connection
FORCE_GRACE: Final = 2.0  # after cancelling an overdue stop, before giving up on it
CANCEL_AGAIN: Final = 0.1  # seconds between cancels of work that took one for a failure
SIGNALS: Final = (signal.SIGINT, signal.SIGTERM)
DRAIN_TIMEOUT_VARIABLE: Final = "EVENTMICRO_DRAIN_TIMEOUT"
LOOP_VARIABLE: Final = "EVENTMICRO_LOOP"
LOOPS: Final = ("auto", "asyncio", "uvloop")


def drain_timeout_from_env(value: float | None = None) -> float:
    """``value``, else ``EVENTMICRO_DRAIN_TIMEOUT``, else 30 s; raises `ConfigurationError`."""
    if value is None:
        text = os.environ.get(DRAIN_TIMEOUT_VARIABLE, "").strip()
        if not text:
            return DEFAULT_DRAIN_TIMEOUT
        try:
            value = float(text)
        except ValueError:
            raise ConfigurationError(f"{DRAIN_TIMEOUT_VARIABLE} must be seconds, not {text!r}") from None
    if not 0 < value < 86400:
        raise ConfigurationError("the drain timeout must be a positive number of seconds (under a day)")
    return value


def loop_factory(environ: Mapping[str, str] = os.environ) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop a process runs its services on: uvloop when it is installed (the
    ``uvloop`` extra), else asyncio's own; ``EVENTMICRO_LOOP=asyncio`` or ``uvloop`` chooses.

    ``None`` means asyncio's default loop. Raises `ConfigurationError` for another value, or
    for ``uvloop`` when it is not installed.
    """
    choice = environ.get(LOOP_VARIABLE, "").strip().lower() or "auto"
    if choice not in LOOPS:
        raise ConfigurationError(f"{LOOP_VARIABLE} must be one of {', '.join(LOOPS)}, not {choice[:40]!r}")
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise ConfigurationError(
                f"{LOOP_VARIABLE}=uvloop, but uvloop is not installed: pip install 'eventmicro[uvloop]'"
            ) from None
        return None
    return uvloop.new_event_loop


class Servable(Protocol):
    """A service as the process runs it (`eventmicro.Service` is one)."""

    def serving(
        self, connection: Connection, *, drain_timeout: float = ...
    ) -> contextlib.AbstractAsyncContextManager[Any]: ...


@dataclasses.dataclass(frozen=True, slots=True)
class Serve:
    """What one process serves and how: the services, the connection, the probes' ports."""

    services: Sequence[Servable]
    options: ConnectOptions
    drain_timeout: float = DEFAULT_DRAIN_TIMEOUT
    metrics_port: int | None = None
    health_port: int | None = None
    on_serving: Callable[[list[Instance]], None] | None = None  # e.g. log "serving"
    on_stopping: Callable[[], None] | None = None


def run_services(serve: Serve) -> int:
    """Serve until SIGINT/SIGTERM and stop within the bound; the process's exit code.

    0 after a stop (also one asked for while starting), 1 when the stop overran its bound,
    128 + the signal's number when a second signal cut it short (the process exits then).
    Start failures (e.g. `ConnectError`) are raised.
    """
    factory = loop_factory()
    guard = _Guard(serve.drain_timeout)
    try:
        with asyncio.Runner(loop_factory=factory) as runner:
            return runner.run(_serve(serve, guard))
    finally:
        guard.close()


class _Guard:
    """The process's signal handling: the first signal asks for a stop and arms the watchdog;
    from then on a signal exits at once."""

    def __init__(self, drain_timeout: float) -> None:
        self.bound = drain_timeout + STOP_MARGIN
        self.requested = asyncio.Event()
        self.previous = {sig: signal.getsignal(sig) for sig in SIGNALS}
        self._watchdog: threading.Timer | None = None

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        for sig in SIGNALS:
            loop.add_signal_handler(sig, self._first, sig)

    def _first(self, sig: int) -> None:
        if self.requested.is_set():  # two signals came before the loop read the first
            _exit_at_once(sig, None)
        # first the plain handler (it runs even while the event loop is stuck), then the log
        # line: a signal sent as soon as the line shows must find it in place
        for other in SIGNALS:
            signal.signal(other, _exit_at_once)
        self._watchdog = threading.Timer(self.bound + 2 * FORCE_GRACE, _overdue, (self.bound,))
        self._watchdog.daemon = True
        self._watchdog.start()
        self.requested.set()
        log.info(  # asked for: not a warning
            "%s received: stopping within %gs (send it again to exit at once)",
            signal.Signals(sig).name,
            self.bound,
        )

    def close(self) -> None:
        """The work is over: disarm the watchdog, give the signals back their handlers."""
        if self._watchdog is not None:
            self._watchdog.cancel()
        for sig, handler in self.previous.items():
            with contextlib.suppress(ValueError, TypeError):  # not the main thread / not settable
                signal.signal(sig, handler)


def _exit_at_once(signum: int, frame: FrameType | None) -> None:
    _last_words(f"{signal.Signals(signum).name} received again: exiting at once")
    os._exit(128 + signum)


def _overdue(bound: float) -> None:
    _last_words(f"the stop did not finish in {bound + 2 * FORCE_GRACE:g}s: exiting at once")
    os._exit(1)


def _last_words(text: str) -> None:
    """One line to stderr, straight to the file descriptor (no lock a stuck thread may hold)."""
    with contextlib.suppress(OSError):
        os.write(sys.stderr.fileno(), f"eventmicro: {text}\n".encode())


async def _serve(serve: Serve, guard: _Guard) -> int:
    started, stop = asyncio.Event(), asyncio.Event()
    loop = asyncio.get_running_loop()
    log.info("event loop: %s", "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio")
    guard.install(loop)
    work = asyncio.create_task(_work(serve, started, stop))
    asked = asyncio.create_task(guard.requested.wait())
    try:
        await asyncio.wait({work, asked}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        asked.cancel()
    if work.done():  # the work ended by itself: a failed start
        return work.result()
    stop.set()  # should the start outrun its cancel, the work leaves as soon as it serves
    if not started.is_set():  # nothing serves yet: abandon connecting and declaring
        await _cancel(work, guard.bound)
    else:
        await asyncio.wait({work}, timeout=guard.bound)
    if not work.done():
        log.error("the stop did not finish in %gs; cancelling what is left", guard.bound)
        if not await _cancel(work, FORCE_GRACE):
            return 1
    if work.cancelled():
        log.warning("stopped before serving")
        return 0
    if work.exception() is not None and not started.is_set():  # a start that failed meanwhile
        log.warning("stopped before serving (the start had failed: %s)", work.exception())
        return 0
    return work.result()


async def _cancel(task: asyncio.Task[int], within: float) -> bool:
    """Cancel ``task`` until it ends, for at most ``within`` seconds; True when it ended.

    Once is not always enough: code under it may take a `CancelledError` for a failure and go
    on (tenacity retries a connect attempt that was cancelled; nats-py's flush swallows it).
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not task.done() and loop.time() < deadline:
        task.cancel()
        await asyncio.wait({task}, timeout=min(CANCEL_AGAIN, max(0.0, deadline - loop.time())))
    return task.done()


async def _work(serve: Serve, started: asyncio.Event, stop: asyncio.Event) -> int:
    instances: list[Any] = []  # filled once serving: readiness is 503 until then
    host = os.environ.get("EVENTMICRO_HTTP_HOST") or None
    # the connection's own drain stays inside the stop's bound
    options = dataclasses.replace(
        serve.options, drain_timeout=min(serve.options.drain_timeout, serve.drain_timeout)
    )
    async with contextlib.AsyncExitStack() as stack:
        ports = {p for p in (serve.metrics_port, serve.health_port) if p is not None}
        for port in sorted(ports):  # closed last: probes answer 503 while draining
            probes = instances if port == serve.health_port else None
            endpoint = await serve_http(port, host, metrics=port == serve.metrics_port, instances=probes)
            stack.push_async_callback(endpoint.close)
        connection = await stack.enter_async_context(Connection(options))
        for service in serve.services:
            running = service.serving(connection, drain_timeout=serve.drain_timeout)
            instances.append(await stack.enter_async_context(running))
        started.set()
        if serve.on_serving is not None:
            serve.on_serving(instances)
        await stop.wait()
        if serve.on_stopping is not None:
            serve.on_stopping()
    return 0
