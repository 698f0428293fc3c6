"""Retry policies as values: how often `Client.call` tries again, after which errors, how long
it waits, and how many retries a failing dependency may cost (a budget).

Which errors a call retries (``RetryPolicy.on``, and always within the call's deadline)::

    error                                   retried when                    why
    NoResponders, 503 ServiceUnavailable    listed in ``on`` (default)      nothing ran
    503 Overloaded                          only when listed by name        a retry adds to the load
    CircuitOpen                             never                           it fails fast
    anything else listed in ``on``          idempotent calls only           it may have run
    (default: Timeout, 504 DeadlineExceeded)

Attempt ``n + 1`` waits ``backoff * multiplier ** (n - 1) + uniform(0, jitter)`` seconds, at most
``max_backoff``, and never past the deadline (tenacity's ``wait_exponential_jitter``). A
`RetryBudget` throttles retries per target service the way gRPC does: each failed attempt spends
a token, each success earns ``ratio`` back, and while half or fewer of the tokens are left a
failed call is not retried — so a dependency that is down costs one attempt per call, not four.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar, Final, TypeVar

from eventmicro._errors import CircuitOpen, ConfigurationError, NoResponders, Timeout
from eventmicro.observability.metrics import watch_retries
from eventmicro.wire.service_errors import DeadlineExceeded, Overloaded, ServiceUnavailable

__all__ = ["DEFAULT_RETRY_ON", "MAX_TARGETS", "Retried", "RetryBudget", "RetryPolicy", "Tokens", "remember"]

K = TypeVar("K")
V = TypeVar("V")

# circuits, retry budgets and retry counts one client keeps: a client whose callers name
# endpoints without end (names from requests) forgets the oldest rather than grow
MAX_TARGETS: Final = 1024


def remember(kept: dict[K, V], key: K, value: V, *, forget_first: Callable[[V], bool] | None = None) -> V:
    """``kept[key] = value``, forgetting one entry first when `MAX_TARGETS` are kept: the oldest
    for which ``forget_first`` holds, else the oldest."""
    if len(kept) >= MAX_TARGETS:
        victim = next((k for k, v in kept.items() if forget_first is not None and forget_first(v)), None)
        del kept[victim if victim is not None else next(iter(kept))]
    kept[key] = value
    return value


DEFAULT_RETRY_ON: Final[tuple[type[Exception], ...]] = (
    NoResponders,
    ServiceUnavailable,
    Timeout,
    DeadlineExceeded,
)
_NOTHING_RAN: Final = (NoResponders, ServiceUnavailable)  # safe to retry any call


def _seconds(name: str, value: object, *, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigurationError(f"{name} must be a finite number of seconds, not {value!r}")
    if value < 0 or (positive and value == 0):
        raise ConfigurationError(
            f"{name} must be {'positive' if positive else 'zero or more'}, not {value!r}"
        )
    return float(value)


@dataclass(frozen=True, slots=True)
class RetryBudget:
    """At most about ``ratio`` retries per successful call once a dependency starts failing.

    ``tokens`` is the bucket's size (it starts full); a failed attempt spends one, a success
    earns ``ratio``; a call is retried only while more than ``tokens / 2`` are left.
    """

    tokens: float = 10.0
    ratio: float = 0.1

    def __post_init__(self) -> None:
        _seconds("RetryBudget.tokens", self.tokens, positive=True)
        _seconds("RetryBudget.ratio", self.ratio, positive=True)
        if self.ratio > self.tokens:
            raise ConfigurationError("RetryBudget.ratio cannot exceed its tokens")


class Tokens:
    """The state of one `RetryBudget` for one target (kept by the client)."""

    __slots__ = ("budget", "left")

    def __init__(self, budget: RetryBudget) -> None:
        self.budget = budget
        self.left = budget.tokens

    def failed(self) -> None:
        self.left = max(0.0, self.left - 1)

    def succeeded(self) -> None:
        self.left = min(self.budget.tokens, self.left + self.budget.ratio)

    def allows(self) -> bool:
        return self.left > self.budget.tokens / 2


class Retried:
    """A client's retries per target endpoint (made at its first retry, read by the metrics)."""

    __slots__ = ("__weakref__", "owner", "retried")

    def __init__(self, owner: str) -> None:
        self.owner = owner
        self.retried: dict[str, int] = {}
        watch_retries(self)

    def count(self, target: str) -> None:
        remember(self.retried, target, self.retried.get(target, 0) + 1)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How `Client.call` retries: set per call (``retry=``), per client (``Client(retry=)``)
    or per service (``Service(retry=)``, for its handlers' ``ctx.call``).

    ``attempts`` counts the first one (1: never retry). Raises `ConfigurationError` for values
    that cannot work (no attempt, negative or infinite waits, errors that are not exceptions).

    >>> RetryPolicy(attempts=3, backoff=0.1, on=(NoResponders,))   # doctest: +SKIP
    """

    attempts: int = 4
    backoff: float = 0.05
    max_backoff: float = 1.0
    multiplier: float = 2.0
    jitter: float = 0.05
    on: tuple[type[Exception], ...] = field(default=DEFAULT_RETRY_ON)
    budget: RetryBudget | None = None

    NEVER: ClassVar[RetryPolicy]  # one attempt

    def __post_init__(self) -> None:
        if (
            isinstance(self.attempts, bool)
            or not isinstance(self.attempts, int)
            or not 1 <= self.attempts <= 100
        ):
            raise ConfigurationError(
                f"RetryPolicy.attempts must be an int from 1 to 100, not {self.attempts!r}"
            )
        _seconds("RetryPolicy.backoff", self.backoff)
        _seconds("RetryPolicy.max_backoff", self.max_backoff)
        _seconds("RetryPolicy.jitter", self.jitter)
        if isinstance(self.multiplier, bool) or not isinstance(self.multiplier, int | float):
            raise ConfigurationError(f"RetryPolicy.multiplier must be a number, not {self.multiplier!r}")
        if not (math.isfinite(self.multiplier) and self.multiplier >= 1):
            raise ConfigurationError(f"RetryPolicy.multiplier must be 1 or more, not {self.multiplier!r}")
        if self.max_backoff < self.backoff:
            raise ConfigurationError("RetryPolicy.max_backoff cannot be less than backoff")
        on: object = self.on  # checked: a caller may pass anything
        if isinstance(on, type) or not isinstance(on, tuple | list | frozenset | set):
            raise ConfigurationError("RetryPolicy.on is a tuple of exception classes, e.g. (NoResponders,)")
        for cls in on:
            if not (isinstance(cls, type) and issubclass(cls, Exception)):
                raise ConfigurationError(f"RetryPolicy.on: {cls!r} is not an exception class")
            if issubclass(cls, CircuitOpen):
                raise ConfigurationError("RetryPolicy.on: CircuitOpen is never retried (it fails fast)")
        object.__setattr__(self, "on", tuple(on))
        if self.budget is not None and not isinstance(self.budget, RetryBudget):
            raise ConfigurationError(f"RetryPolicy.budget must be a RetryBudget or None, not {self.budget!r}")

    def retries(self, error: BaseException, idempotent: bool) -> bool:
        """Whether ``error`` may be retried, by this policy and the safety rules above."""
        if isinstance(error, CircuitOpen) or not isinstance(error, self.on):
            return False
        if isinstance(error, Overloaded) and Overloaded not in self.on:
            return False
        return idempotent or isinstance(error, _NOTHING_RAN)


RetryPolicy.NEVER = RetryPolicy(attempts=1)
