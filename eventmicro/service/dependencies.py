"""A service's dependencies (database pools, HTTP clients...): made when it starts serving,
closed after it stopped, handed to handlers explicitly, replaced in tests in one line.

::

    db = svc.dependency("db", open_pool)          # a factory: async context manager, awaitable or value

    @svc.rpc
    async def place(req: PlaceOrder, ctx: Context) -> OrderAccepted:
        pool = ctx.get(db)                        # what the factory made (typed)

    svc.override(db, FakePool())                  # in a test: used instead, the factory never runs

The life of a dependency within ``Service.serving`` (and so ``run`` and ``eventmicro run``)::

    start    dependencies made, in declaration order   (a failure closes those made, in reverse)
             start hooks, subscriptions, $SRV
    serving  handlers: ctx.get(db)
    stop     intake stops, in-flight handlers drain, flush, stop hooks
             dependencies closed, in reverse order     (a failure to close is logged, not raised)

A factory returning an async context manager (an ``@asynccontextmanager`` function,
``httpx.AsyncClient``, ...) is entered at start and exited at stop; one returning an awaitable
is awaited, one returning a plain value used as it is (neither is closed). One `Service`
object served twice in a process at once shares its dependencies: made for the first serving,
closed after the last.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from typing import Any, Generic, TypeVar, cast

from eventmicro._errors import ConfigurationError

__all__ = ["Dependency", "Factory", "Override"]

log = logging.getLogger("eventmicro.service")
T = TypeVar("T")

Factory = Callable[[], AbstractAsyncContextManager[T] | Awaitable[T] | T]
_UNSET: Any = object()


class Dependency(Generic[T]):
    """A dependency declared by ``Service.dependency``: a name, a factory, and (while its
    service serves) the value the factory made."""

    __slots__ = ("_closing", "_override", "_users", "_value", "factory", "name", "service")

    def __init__(self, service: str, name: str, factory: Callable[[], Any]) -> None:
        self.service = service
        self.name = name
        self.factory = factory
        self._value: T = _UNSET
        self._override: T = _UNSET
        self._users = 0  # servings of the service that hold it open
        self._closing: AsyncExitStack | None = None

    def __repr__(self) -> str:
        return f"<Dependency {self.service}.{self.name}>"

    def get(self) -> T:
        """The replacement given to ``override``, else what the factory made.

        Raises `ConfigurationError` while the service is not serving (and nothing replaces it).
        """
        if self._override is not _UNSET:
            return self._override
        if self._value is _UNSET:
            raise ConfigurationError(
                f"dependency {self.name!r} of service {self.service!r} is not open: it is made when "
                f"the service starts serving (in a test, replace it: svc.override({self.name}, fake))"
            )
        return self._value

    def override(self, value: T) -> Override[T]:
        """Use ``value`` instead of the factory's (until the returned `Override` is undone)."""
        previous = self._override
        self._override = value
        return Override(self, previous)

    async def open(self, stack: AsyncExitStack) -> None:
        """Make it (unless replaced or already open) and have ``stack`` release it."""
        if self._override is not _UNSET:
            return
        if self._users == 0:
            made = self.factory()
            closing = AsyncExitStack()
            if isinstance(made, AbstractAsyncContextManager) or (
                hasattr(made, "__aenter__") and hasattr(made, "__aexit__")
            ):
                value = await closing.enter_async_context(cast("AbstractAsyncContextManager[T]", made))
            elif inspect.isawaitable(made):
                value = await made
            else:
                value = made
            self._value, self._closing = value, closing
            log.debug("service %s: dependency %s made", self.service, self.name)
        self._users += 1
        stack.push_async_callback(self._release)

    async def _release(self) -> None:
        self._users -= 1
        if self._users > 0:
            return
        closing, self._closing, self._value = self._closing, None, _UNSET
        if closing is None:
            return
        try:
            await closing.aclose()
        except Exception:  # the others are closed all the same; the stop goes on
            log.exception("service %s: closing dependency %s failed", self.service, self.name)


class Override(contextlib.AbstractContextManager["Override[T]"], Generic[T]):
    """A replacement in force; ``undo()`` (or leaving a ``with`` block) puts back what was before."""

    def __init__(self, dependency: Dependency[T], previous: T) -> None:
        self.dependency = dependency
        self._previous = previous

    def undo(self) -> None:
        self.dependency._override = self._previous

    def __exit__(self, *exc_info: object) -> None:
        self.undo()


async def open_all(dependencies: list[Dependency[Any]], stack: AsyncExitStack) -> None:
    """Open ``dependencies`` in order; ``stack`` closes them in reverse (those opened so far
    when one fails)."""
    for dependency in dependencies:
        await dependency.open(stack)


def check_name(name: str, taken: list[Dependency[Any]], service: str) -> str:
    if not isinstance(name, str) or not name.isidentifier():
        raise ConfigurationError(f"dependency names are Python identifiers, not {name!r}")
    if any(d.name == name for d in taken):
        raise ConfigurationError(f"service {service} already has a dependency {name!r}")
    return name
