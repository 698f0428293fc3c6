"""Retry policies and circuit breakers: the values, the state machine, and calls on a real server."""

from __future__ import annotations

import asyncio
import dataclasses
import math
from collections.abc import Awaitable, Callable

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from eventmicro import (
    BadRequest,
    BreakerPolicy,
    CircuitOpen,
    CircuitState,
    Client,
    ConfigurationError,
    Connection,
    Context,
    DeadlineExceeded,
    InternalError,
    Message,
    NoResponders,
    Overloaded,
    RetryBudget,
    RetryPolicy,
    Service,
    ServiceError,
    ServiceUnavailable,
    Timeout,
    discover,
)
from eventmicro import metrics as em_metrics
from eventmicro.service import retry
from eventmicro.service.breaker import Circuit
from eventmicro.service.retry import Tokens

Eventually = Callable[..., Awaitable[None]]


@dataclasses.dataclass
class Ask:
    n: int = 0


@dataclasses.dataclass
class Answer:
    n: int


class Flaky:
    """An endpoint's behaviour: fail the next ``failures`` calls with ``error``, then answer."""

    def __init__(self, failures: int = 0, error: type[ServiceError] = ServiceUnavailable) -> None:
        self.failures = failures
        self.error = error
        self.calls = 0
        self.deadlines: list[float | None] = []

    async def __call__(self, req: Ask, ctx: Context) -> Answer:
        self.calls += 1
        self.deadlines.append(ctx.deadline)
        if self.failures > 0:
            self.failures -= 1
            raise self.error("not now")
        return Answer(req.n)


def flaky_service(name: str, behaviour: Flaky, **options: object) -> Service:
    svc = Service(name, version="1.0.0", **options)  # type: ignore[arg-type]

    @svc.rpc
    async def ask(req: Ask, ctx: Context) -> Answer:
        return await behaviour(req, ctx)

    return svc


# --- the values ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "values",
    [
        {"attempts": 0},
        {"attempts": True},
        {"attempts": 2.5},
        {"backoff": -1},
        {"backoff": math.inf},
        {"jitter": math.nan},
        {"backoff": 2, "max_backoff": 1},
        {"multiplier": 0.5},
        {"on": NoResponders},
        {"on": (int,)},
        {"on": (CircuitOpen,)},
        {"budget": 10},
    ],
)
def test_a_retry_policy_that_cannot_work_is_refused_at_once(values: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError, match="RetryPolicy"):
        RetryPolicy(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "values",
    [
        {"failures": 0},
        {"open_for": 0},
        {"open_for": math.nan},
        {"probes": 0},
        {"on": ()},
        {"on": ("Timeout",)},
        {"per": "instance"},
    ],
)
def test_a_breaker_policy_that_cannot_work_is_refused_at_once(values: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError, match="BreakerPolicy"):
        BreakerPolicy(**values)  # type: ignore[arg-type]


def test_policies_are_refused_where_they_are_given() -> None:
    with pytest.raises(ConfigurationError, match="RetryBudget"):
        RetryBudget(tokens=0)
    with pytest.raises(ConfigurationError, match="retry must be a RetryPolicy"):
        Service("s", version="1.0.0", retry=3)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="breaker must be a BreakerPolicy"):
        Service("s", version="1.0.0", breaker={"failures": 3})  # type: ignore[arg-type]


def test_only_what_is_safe_is_retried() -> None:
    policy = RetryPolicy()
    assert policy.retries(NoResponders("a.b"), idempotent=False)
    assert policy.retries(ServiceUnavailable(), idempotent=False)  # nothing ran
    assert not policy.retries(Overloaded(), idempotent=True)  # a retry adds to the overload
    assert not policy.retries(Timeout("a.b", 1), idempotent=False)  # it may have run
    assert policy.retries(Timeout("a.b", 1), idempotent=True)
    assert policy.retries(DeadlineExceeded(), idempotent=True)
    assert not policy.retries(InternalError(), idempotent=True)  # not listed
    assert not policy.retries(CircuitOpen("a.b", 1), idempotent=True)  # fails fast
    wider = RetryPolicy(on=(InternalError, Overloaded))
    assert wider.retries(InternalError(), idempotent=True)
    assert not wider.retries(InternalError(), idempotent=False)  # listed, but it may have run
    assert wider.retries(Overloaded(), idempotent=False)  # named: the caller asked for it
    assert not wider.retries(NoResponders("a.b"), idempotent=False)  # not listed any more


def test_a_retry_budget_stops_retries_while_a_dependency_keeps_failing() -> None:
    tokens = Tokens(RetryBudget(tokens=4, ratio=1))
    tokens.failed()
    assert tokens.allows()  # 3 of 4 left
    tokens.failed()
    assert not tokens.allows()  # half left: no more retries
    tokens.succeeded()
    assert tokens.allows()


# --- the state machine (its own clock) -----------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_circuit_opens_after_its_threshold_then_probes_and_closes() -> None:
    clock = Clock()
    circuit = Circuit(BreakerPolicy(failures=3, open_for=10), "a.b", clock=clock)
    for _ in range(2):
        circuit.record(Timeout("a.b", 1), probe=circuit.admit())
    circuit.record(BadRequest("x"), probe=circuit.admit())  # it answered: the count starts again
    for _ in range(2):
        circuit.record(NoResponders("a.b"), probe=circuit.admit())
    assert circuit.state_name == "closed"
    circuit.record(InternalError(), probe=circuit.admit())
    assert circuit.state_name == "open"
    with pytest.raises(CircuitOpen) as raised:
        circuit.admit()
    assert raised.value.target == "a.b"
    assert raised.value.retry_after == 10
    assert raised.value.code == 503
    clock.now += 10
    assert circuit.state_name == "half_open"
    assert circuit.admit() is True  # the probe
    with pytest.raises(CircuitOpen):
        circuit.admit()  # one probe at a time
    circuit.record(Timeout("a.b", 1), probe=True)  # the probe failed: open again
    assert circuit.state_name == "open"
    clock.now += 10
    probe = circuit.admit()
    circuit.record(asyncio.CancelledError(), probe=probe)  # cancelled: no verdict, slot released
    assert circuit.state_name == "half_open"
    circuit.record(None, probe=circuit.admit())
    assert circuit.state_name == "closed"
    assert (circuit.opened, circuit.rejected) == (2, 2)


def test_calls_under_way_when_a_circuit_opens_do_not_close_it() -> None:
    clock = Clock()
    circuit = Circuit(BreakerPolicy(failures=1, open_for=10), "a", clock=clock)
    late = circuit.admit()
    circuit.record(Timeout("a", 1), probe=circuit.admit())
    circuit.record(None, probe=late)  # admitted while closed, answered after it opened
    assert circuit.state_name == "open"


# --- retries on a real server --------------------------------------------------------------------


async def test_a_dependency_that_fails_twice_then_recovers_is_reached_by_the_third_attempt(
    conn: Connection, service_conn: Connection
) -> None:
    behaviour = Flaky(failures=2)
    async with flaky_service("recovers", behaviour).serving(service_conn):
        client = Client(conn, retry=RetryPolicy(attempts=3))
        reply = await client.call("recovers.ask", Ask(7), returns=Answer)
        assert (reply, behaviour.calls) == (Answer(7), 3)
        assert client.retries() == {"recovers.ask": 2}
        behaviour.failures = 2
        with pytest.raises(ServiceUnavailable):  # per call: two attempts are not enough
            await Client(conn).call("recovers.ask", Ask(7), returns=Answer, retry=RetryPolicy(attempts=2))
        assert behaviour.calls == 5
        behaviour.failures = 1
        with pytest.raises(ServiceUnavailable):
            await Client(conn, retry=RetryPolicy.NEVER).call("recovers.ask", Ask(), returns=Answer)
        assert behaviour.calls == 6


async def test_errors_that_may_have_done_the_work_are_retried_only_for_idempotent_calls(
    conn: Connection, service_conn: Connection
) -> None:
    behaviour = Flaky(failures=100, error=InternalError)
    client = Client(conn, retry=RetryPolicy(attempts=3, on=(InternalError,)))
    async with flaky_service("maybe", behaviour).serving(service_conn):
        with pytest.raises(InternalError):
            await client.call("maybe.ask", Ask(), returns=Answer)
        assert behaviour.calls == 1  # not idempotent: never twice
        with pytest.raises(InternalError):
            await client.call("maybe.ask", Ask(), returns=Answer, idempotent=True)
        assert behaviour.calls == 1 + 3


async def test_retries_never_outlast_the_deadline(conn: Connection, service_conn: Connection) -> None:
    """A responder that never answers: every attempt times out after its 0.2 s, so attempt k
    is sent at least (k - 1) x 0.2 s after the call began and may carry at most what is left
    of the call's 1 s (its ce-timeoutms, rounded up to the millisecond). Read from the requests
    themselves, so the bound does not depend on how long a request takes to arrive."""
    budgets: list[int] = []

    async def never_answers(msg: Message) -> None:
        budgets.append(int((msg.headers or {})["ce-timeoutms"]))

    await service_conn.subscribe("stalls.ask", never_answers)
    await service_conn.flush()
    many = RetryPolicy(attempts=100, backoff=0.01, max_backoff=0.01, jitter=0)
    with pytest.raises(Timeout):
        await Client(conn, retry=many).call(
            "stalls.ask", Ask(), returns=Answer, timeout=1.0, attempt_timeout=0.2, idempotent=True
        )
    await service_conn.flush()
    assert 1 < len(budgets) <= 5  # retried, and stopped by the deadline, not by the attempts
    for attempt, budget in enumerate(budgets):
        assert budget <= min(200, 1000 - attempt * 200 + 1)


async def test_a_retry_budget_spends_one_attempt_per_call_on_a_failing_dependency(
    conn: Connection, service_conn: Connection
) -> None:
    behaviour = Flaky(failures=100)
    client = Client(conn, retry=RetryPolicy(attempts=4, budget=RetryBudget(tokens=4, ratio=1)))
    async with flaky_service("budget", behaviour).serving(service_conn):
        with pytest.raises(ServiceUnavailable):
            await client.call("budget.ask", Ask(), returns=Answer)
        assert behaviour.calls == 2  # 4 tokens -> 3 (retried) -> 2: half left, no more
        with pytest.raises(ServiceUnavailable):
            await client.call("budget.ask", Ask(), returns=Answer)
        assert behaviour.calls == 3  # no retry at all now
        behaviour.failures = 0
        for _ in range(3):
            await client.call("budget.ask", Ask(), returns=Answer)  # successes earn tokens back
        behaviour.failures = 1
        await client.call("budget.ask", Ask(), returns=Answer)  # 4 tokens again: retried
        assert behaviour.calls == 3 + 3 + 2


# --- circuit breakers on a real server -----------------------------------------------------------


async def test_a_circuit_opens_after_its_threshold_fails_fast_then_probes_and_closes(
    conn: Connection, service_conn: Connection, eventually: Eventually
) -> None:
    behaviour = Flaky(failures=100, error=InternalError)
    client = Client(conn, retry=RetryPolicy.NEVER, breaker=BreakerPolicy(failures=3, open_for=0.2))
    async with flaky_service("breaks", behaviour).serving(service_conn):
        for _ in range(3):
            with pytest.raises(InternalError):
                await client.call("breaks.ask", Ask(), returns=Answer)
        assert client.circuit("breaks.ask") is CircuitState.OPEN
        with pytest.raises(CircuitOpen) as raised:
            await client.call("breaks.ask", Ask(), returns=Answer, idempotent=True)
        assert behaviour.calls == 3  # failed fast: nothing sent
        assert isinstance(raised.value, NoResponders)
        assert raised.value.target == "breaks.ask"
        assert client.circuit("breaks.other") is CircuitState.CLOSED  # one circuit per endpoint
        await eventually(lambda: client.circuit("breaks.ask") is CircuitState.HALF_OPEN)
        with pytest.raises(InternalError):  # the probe fails: open again
            await client.call("breaks.ask", Ask(), returns=Answer)
        assert (client.circuit("breaks.ask"), behaviour.calls) == (CircuitState.OPEN, 4)
        behaviour.failures = 0  # the dependency recovers
        await eventually(lambda: client.circuit("breaks.ask") is CircuitState.HALF_OPEN)
        assert await client.call("breaks.ask", Ask(5), returns=Answer) == Answer(5)
        assert client.circuits() == {"breaks.ask": "closed"}


async def test_a_client_calling_endless_names_keeps_a_bounded_number_of_circuits(
    conn: Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Names can come from requests (a gateway, a router): the oldest closed circuits are
    forgotten, an open one is kept, so the client's memory stays bounded and fails fast still."""
    assert retry.MAX_TARGETS == 1024
    monkeypatch.setattr(retry, "MAX_TARGETS", 16)
    client = Client(conn, retry=RetryPolicy.NEVER, breaker=BreakerPolicy(failures=2, open_for=60))
    for _ in range(2):
        with pytest.raises(NoResponders):
            await client.call("held.ask", Ask(), returns=Answer)
    for n in range(40):  # one failure each: closed circuits
        with pytest.raises(NoResponders):
            await client.call(f"gone{n}.ask", Ask(), returns=Answer)
    circuits = client.circuits()
    assert len(circuits) == 16
    assert circuits["held.ask"] == "open"
    assert set(circuits) - {"held.ask"} == {f"gone{n}.ask" for n in range(25, 40)}  # the newest
    with pytest.raises(CircuitOpen):
        await client.call("held.ask", Ask(), returns=Answer)


async def test_a_circuit_opening_during_retries_ends_them(conn: Connection) -> None:
    client = Client(
        conn,
        retry=RetryPolicy(attempts=10, backoff=0.001, max_backoff=0.001),
        breaker=BreakerPolicy(failures=2, open_for=60, per="service"),
    )
    with pytest.raises(CircuitOpen):
        await client.call("absent.one", Ask(), returns=Answer, timeout=10)
    assert client.circuit("absent.two") is CircuitState.OPEN  # per service: the whole of it
    assert client.circuits() == {"absent": "open"}


async def test_a_services_policies_govern_its_handlers_calls_and_show_in_stats_and_metrics(
    conn: Connection, service_conn: Connection
) -> None:
    registry = CollectorRegistry()
    em_metrics.enable(registry)
    try:
        front = Service(
            "front", version="1.0.0", retry=RetryPolicy.NEVER, breaker=BreakerPolicy(failures=2, open_for=60)
        )

        @front.rpc
        async def relay(req: Ask, ctx: Context) -> Answer:
            return await ctx.call("gone.ask", req, returns=Answer)

        async with front.serving(service_conn) as running:
            for _ in range(2):  # no retry: each call one attempt, each a 502 for the caller
                with pytest.raises(ServiceError) as raised:
                    await Client(conn).call("front.relay", Ask(), returns=Answer)
                assert raised.value.instance_code == 502
            with pytest.raises(ServiceError) as raised:  # CircuitOpen in the handler: also 502
                await Client(conn).call("front.relay", Ask(), returns=Answer)
            assert raised.value.instance_code == 502
            stats = await discover(conn, "STATS", "front")
            assert stats[0]["data"]["circuits"] == {"gone.ask": "open"}
            samples = {
                (s.name, frozenset(s.labels.items())): s.value
                for family in text_string_to_metric_families(generate_latest(registry).decode())
                for s in family.samples
            }
            labels = {("client", running.client.source), ("target", "gone.ask")}
            assert samples[("eventmicro_circuit_state", frozenset({*labels, ("state", "open")}))] == 1
            assert samples[("eventmicro_circuit_state", frozenset({*labels, ("state", "closed")}))] == 0
            assert samples[("eventmicro_circuit_opened_total", frozenset(labels))] == 1
            assert samples[("eventmicro_circuit_rejected_total", frozenset(labels))] == 1
    finally:
        em_metrics.disable()


async def test_a_services_retries_show_in_stats_and_metrics(
    conn: Connection, service_conn: Connection
) -> None:
    registry = CollectorRegistry()
    em_metrics.enable(registry)
    try:
        behaviour = Flaky(failures=2)
        front = Service("retrier", version="1.0.0", retry=RetryPolicy(attempts=3))

        @front.rpc
        async def relay(req: Ask, ctx: Context) -> Answer:
            return await ctx.call("shaky.ask", req, returns=Answer)

        async with (
            flaky_service("shaky", behaviour).serving(service_conn),
            front.serving(service_conn) as running,
        ):
            assert await Client(conn).call("retrier.relay", Ask(1), returns=Answer) == Answer(1)
            (stats,) = await discover(conn, "STATS", "retrier")
            assert stats["data"]["retries"] == {"shaky.ask": 2}
            assert "circuits" not in stats["data"]  # no breaker declared
            text = generate_latest(registry).decode()
            labels = {"client": running.client.source, "target": "shaky.ask"}
            found = [
                s.value
                for family in text_string_to_metric_families(text)
                for s in family.samples
                if s.name == "eventmicro_client_retries_total" and s.labels == labels
            ]
            assert found == [2]
    finally:
        em_metrics.disable()


async def test_without_a_breaker_there_are_no_circuits(conn: Connection) -> None:
    client = Client(conn, retry=RetryPolicy.NEVER)
    with pytest.raises(NoResponders) as raised:
        await client.call("nobody.ask", Ask(), returns=Answer)
    assert not isinstance(raised.value, CircuitOpen)
    assert client.circuits() == {}
    assert client.circuit("nobody.ask") is CircuitState.CLOSED
