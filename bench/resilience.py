"""What retry policies and circuit breakers cost a successful ``Client.call``.

``python -m bench.resilience``. One service (a trivial endpoint) and one calling client in this
process, a nats-server without JetStream. Variants, interleaved (forward, then backward) in
each of ``--repeat`` rounds, medians reported:

- ``default``: ``Client(conn)``: the default `RetryPolicy`, no breaker (the path of every
  caller that configures nothing: one ``breaker is None`` and one ``budget is None`` check);
- ``default_again``: the same once more, the A/A noise floor;
- ``breaker``: ``Client(conn, breaker=BreakerPolicy())``: each call passes its circuit;
- ``breaker_budget``: a breaker and a `RetryBudget` (a success earns a token back).

Figures per call, both sides together: Python function calls (cProfile, deterministic) and CPU
µs (``time.process_time``). Failures are not timed: a failing call's cost is its waits.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import dataclasses
import pstats
import statistics
import time
from collections.abc import Callable
from typing import Final

from eventmicro import (
    BreakerPolicy,
    Client,
    Connection,
    ConnectOptions,
    NatsServer,
    RetryBudget,
    RetryPolicy,
    Service,
)


@dataclasses.dataclass
class Ask:
    n: int = 0


@dataclasses.dataclass
class Answer:
    n: int


svc = Service("resilience-bench", version="1.0.0")


@svc.rpc
async def ask(req: Ask) -> Answer:
    return Answer(req.n)


VARIANTS: Final[dict[str, Callable[[Connection], Client]]] = {
    "default": Client,
    "default_again": Client,
    "breaker": lambda conn: Client(conn, breaker=BreakerPolicy()),
    "breaker_budget": lambda conn: Client(
        conn, breaker=BreakerPolicy(), retry=RetryPolicy(budget=RetryBudget())
    ),
}


async def per_call(client: Client, calls: int) -> tuple[float, float]:
    """(Python calls, CPU µs) per call."""
    for _ in range(100):  # warm
        await client.call("resilience-bench.ask", Ask(1), returns=Answer)
    profile = cProfile.Profile()
    profile.enable()
    for _ in range(calls // 4):
        await client.call("resilience-bench.ask", Ask(1), returns=Answer)
    profile.disable()
    counted = pstats.Stats(profile).total_calls / (calls // 4)  # type: ignore[attr-defined]
    started = time.process_time()
    for _ in range(calls):
        await client.call("resilience-bench.ask", Ask(1), returns=Answer)
    return counted, (time.process_time() - started) / calls * 1e6


async def run(calls: int, repeat: int) -> None:
    cpu: dict[str, list[float]] = {name: [] for name in VARIANTS}
    counts: dict[str, list[float]] = {name: [] for name in VARIANTS}
    with NatsServer(jetstream=False) as server:
        options = ConnectOptions.from_env(server.url, environ={})
        async with Connection(options) as calling, Connection(options) as serving, svc.serving(serving):
            for round_ in range(repeat):
                order = list(VARIANTS) if round_ % 2 == 0 else list(reversed(VARIANTS))
                for name in order:
                    python_calls, micros = await per_call(VARIANTS[name](calling), calls)
                    counts[name].append(python_calls)
                    cpu[name].append(micros)
                print(
                    f"  round {round_ + 1}/{repeat}: "
                    + ", ".join(f"{n} {cpu[n][-1]:.0f} µs" for n in VARIANTS)
                )
    base = statistics.median(cpu["default"])
    print(f"{'variant':<16}{'Python calls':>14}{'CPU µs':>10}{'vs default':>12}")
    for name in VARIANTS:
        micros = statistics.median(cpu[name])
        print(f"{name:<16}{statistics.median(counts[name]):>14.1f}{micros:>10.1f}{micros / base:>12.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.resilience", description=__doc__)
    parser.add_argument("--calls", type=int, default=2000, help="calls per variant and round")
    parser.add_argument("--repeat", type=int, default=3, help="rounds (medians are reported)")
    args = parser.parse_args()
    asyncio.run(run(args.calls, args.repeat))


if __name__ == "__main__":
    main()
