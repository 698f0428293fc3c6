"""What a service declares, as the parts that run it read it: a protocol `Service` satisfies.

The running instance, the context, discovery and the process runner take a `Declared`, so
they need not import `eventmicro.service.service` (which builds on them).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:  # pragma: no cover
    from eventmicro.service.handlers import HandlerSpec
    from eventmicro.service.middleware import Middleware
    from eventmicro.service.ticks import ScheduleSpec
    from eventmicro.transport.jetstream import Stream

__all__ = ["Declared", "Hook"]

Hook = Callable[[], Awaitable[None]]


class Declared(Protocol):
    """A named, versioned service and everything its decorators and arguments declared."""

    @property
    def name(self) -> str: ...
    @property
    def version(self) -> str: ...
    @property
    def description(self) -> str: ...
    @property
    def metadata(self) -> Mapping[str, str]: ...
    @property
    def handlers(self) -> Sequence[HandlerSpec]: ...
    @property
    def publishes(self) -> Sequence[type]: ...
    @property
    def calls(self) -> Sequence[str]: ...
    @property
    def stores(self) -> Sequence[str]: ...
    @property
    def middleware(self) -> Sequence[Middleware]: ...
    @property
    def streams(self) -> Sequence[Stream]: ...
    @property
    def schedules(self) -> Sequence[ScheduleSpec]: ...
    @property
    def on_start(self) -> Sequence[Hook]: ...
    @property
    def on_stop(self) -> Sequence[Hook]: ...
    @property
    def reply_prefixes(self) -> tuple[str, ...] | None: ...
