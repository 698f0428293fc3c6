"""Circuit breakers: a caller stops calling a failing dependency for a while, then probes it.

One `Circuit` per target (an endpoint such as ``orders.place``, or a whole service with
``per="service"``) of one `Client`, made on the first call when the client has a
`BreakerPolicy`::

                 ``failures`` counted errors in a row
      CLOSED ─────────────────────────────────────────▶ OPEN ──── calls fail fast: CircuitOpen
        ▲                                                │ ▲
        │ a probe succeeds                   ``open_for``│ │ a probe fails
        │                                     seconds    ▼ │
        └──────────────────────────────────────────── HALF_OPEN ── ``probes`` calls let through

Counted errors are those in ``BreakerPolicy.on`` (default: no responders, timeouts and 5xx
replies: the dependency is missing or failing); a 4xx reply means it answered, and counts as a
success. A cancelled call counts as nothing. Each attempt of a retried call passes the circuit,
so a circuit that opens during retries ends them at once.

Off by default: a client without a policy pays one ``is None`` check per call.
"""

from __future__ import annotations

import enum
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final, Literal

from eventmicro._errors import CircuitOpen, ConfigurationError, NoResponders, Timeout
from eventmicro.observability.metrics import watch_circuit
from eventmicro.wire.service_errors import DeadlineExceeded, InternalError, ServiceUnavailable

__all__ = ["DEFAULT_BREAKER_ON", "BreakerPolicy", "Circuit", "CircuitState"]

DEFAULT_BREAKER_ON: Final[tuple[type[Exception], ...]] = (
    NoResponders,
    Timeout,
    ServiceUnavailable,
    DeadlineExceeded,
    InternalError,
)


class CircuitState(enum.Enum):
    """Where a circuit is: calls pass (closed), fail fast (open), or a few probe (half-open)."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    """When a client's circuit for a target opens, and for how long.

    ``failures`` counted errors in a row open it; after ``open_for`` seconds up to ``probes``
    calls go through at once: a success closes it, a counted error opens it again. ``per``:
    one circuit per ``"endpoint"`` (``orders.place``) or per ``"service"`` (``orders``).
    Raises `ConfigurationError` for values that cannot work.
    """

    failures: int = 5
    open_for: float = 10.0
    probes: int = 1
    on: tuple[type[Exception], ...] = field(default=DEFAULT_BREAKER_ON)
    per: Literal["endpoint", "service"] = "endpoint"

    def __post_init__(self) -> None:
        for name in ("failures", "probes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigurationError(f"BreakerPolicy.{name} must be a positive int, not {value!r}")
        seconds = self.open_for
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not math.isfinite(seconds):
            raise ConfigurationError(
                f"BreakerPolicy.open_for must be a finite number of seconds, not {seconds!r}"
            )
        if seconds <= 0:
            raise ConfigurationError(f"BreakerPolicy.open_for must be positive, not {seconds!r}")
        on: object = self.on  # checked: a caller may pass anything
        if isinstance(on, type) or not isinstance(on, tuple | list | frozenset | set) or not on:
            raise ConfigurationError("BreakerPolicy.on is a non-empty tuple of exception classes")
        for cls in on:
            if not (isinstance(cls, type) and issubclass(cls, Exception)):
                raise ConfigurationError(f"BreakerPolicy.on: {cls!r} is not an exception class")
        object.__setattr__(self, "on", tuple(on))
        if self.per not in ("endpoint", "service"):
            raise ConfigurationError(f"BreakerPolicy.per is 'endpoint' or 'service', not {self.per!r}")

    def target(self, name: str) -> str:
        """The circuit a call of ``name`` goes through."""
        return name if self.per == "endpoint" else name.partition(".")[0]


class Circuit:
    """The breaker of one client for one target; ``opened`` and ``rejected`` count for metrics."""

    __slots__ = (
        "__weakref__",
        "_failures",
        "_opened_at",
        "_probing",
        "_state",
        "clock",
        "opened",
        "owner",
        "policy",
        "rejected",
        "target",
    )

    def __init__(
        self,
        policy: BreakerPolicy,
        target: str,
        *,
        owner: str = "",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.policy = policy
        self.target = target
        self.owner = owner  # the client's source, a label in the metrics
        self.clock = clock
        self._state = CircuitState.CLOSED
        self._failures = 0  # counted errors in a row while closed
        self._opened_at = 0.0
        self._probing = 0  # probe calls in flight while half-open
        self.opened = 0  # times it opened
        self.rejected = 0  # calls failed fast
        watch_circuit(self)

    @property
    def state(self) -> CircuitState:
        """The state now (an open circuit whose time is up shows as half-open)."""
        if self._state is CircuitState.OPEN and self.clock() >= self._opened_at + self.policy.open_for:
            return CircuitState.HALF_OPEN
        return self._state

    @property
    def state_name(self) -> str:
        return self.state.value

    def admit(self) -> bool:
        """Let a call through (True: as a probe) or raise `CircuitOpen`."""
        state = self._state
        if state is CircuitState.CLOSED:
            return False
        if state is CircuitState.OPEN:
            wait = self._opened_at + self.policy.open_for - self.clock()
            if wait > 0:
                self.rejected += 1
                raise CircuitOpen(self.target, wait)
            self._state = CircuitState.HALF_OPEN
            self._probing = 0
        if self._probing >= self.policy.probes:
            self.rejected += 1
            raise CircuitOpen(self.target, 0.0)  # a probe is under way
        self._probing += 1
        return True

    def record(self, error: BaseException | None, *, probe: bool) -> None:
        """The outcome of a call `admit` let through (``error`` None: a reply came)."""
        counted = error is not None and isinstance(error, self.policy.on)
        if probe:
            self._probing = max(0, self._probing - 1)
            if self._state is not CircuitState.HALF_OPEN:
                return
            if counted:
                self._open()
            elif error is None or isinstance(error, Exception):  # cancelled: no verdict
                self._state = CircuitState.CLOSED
                self._failures = 0
            return
        if self._state is not CircuitState.CLOSED:
            return  # it opened while this call was under way
        if counted:
            self._failures += 1
            if self._failures >= self.policy.failures:
                self._open()
        elif error is None or isinstance(error, Exception):
            self._failures = 0

    def _open(self) -> None:
        self._state = CircuitState.OPEN
        self._opened_at = self.clock()
        self._failures = 0
        self.opened += 1
