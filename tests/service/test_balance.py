"""@svc.rpc(balance="room"): a full instance leaves its queue group, so calls go to one with room."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, Literal

import pytest

from eventmicro import Client, ConfigurationError, Connection, ConnectOptions, NatsServer, Service

Eventually = Callable[..., Awaitable[None]]


@dataclasses.dataclass
class Ask:
    n: int = 0


@dataclasses.dataclass
class Answer:
    by: str


def instance(label: str, gate: asyncio.Event | None, balance: Literal["random", "room"]) -> Service:
    """An instance answering with its ``label``; with a ``gate``, each call waits until it opens
    (2 at a time, 8 waiting), without one it answers at once (64 at a time)."""
    svc = Service("balanced", version="1.0.0")

    @svc.rpc(concurrency=2 if gate else 64, backlog=8, balance=balance)
    async def ask(req: Ask) -> Answer:
        if gate is not None:
            await gate.wait()
        return Answer(label)

    return svc


@asynccontextmanager
async def two_instances(
    server: NatsServer, gate: asyncio.Event, balance: Literal["random", "room"]
) -> AsyncIterator[tuple[Any, Any]]:
    """A slow instance (its calls wait for ``gate``) and a fast one, each on its own connection."""
    slow_conn = await Connection(ConnectOptions.from_env(server.url, environ={})).open()
    fast_conn = await Connection(ConnectOptions.from_env(server.url, environ={})).open()
    try:
        async with (
            instance("slow", gate, balance).serving(slow_conn, drain_timeout=1) as slow,
            instance("fast", None, balance).serving(fast_conn, drain_timeout=1) as fast,
        ):
            yield slow, fast
    finally:
        gate.set()
        await slow_conn.close()
        await fast_conn.close()


async def fill(
    client: Client, slow: Any, fast: Any | None, eventually: Eventually
) -> list[asyncio.Task[Answer]]:
    """Calls, one at a time, until the slow instance has both slots taken and one waiting."""
    calls: list[asyncio.Task[Answer]] = []
    gate = slow._gates["ask"]

    def arrived() -> int:  # the slow one finishes nothing while its gate is closed
        return int(gate.running + len(gate.waiting) + (fast.stats["ask"].num_requests if fast else 0))

    while not (gate.running == 2 and gate.waiting):
        assert len(calls) < 200, "the slow instance never filled up"
        calls.append(asyncio.create_task(client.call("balanced.ask", Ask(), returns=Answer, timeout=10)))
        await eventually(lambda: arrived() == len(calls))
    return calls


async def test_a_full_instance_leaves_the_group_and_calls_go_to_the_one_with_room(
    nats_server: NatsServer, conn: Connection, eventually: Eventually
) -> None:
    gate = asyncio.Event()
    async with two_instances(nats_server, gate, "room") as (slow, fast):
        client = Client(conn)
        held = await fill(client, slow, fast, eventually)
        group = slow.stats["ask"].group
        await eventually(lambda: group.left == 1)  # its UNSUB done: the server routes nothing to it
        assert group.out
        answers = await asyncio.gather(
            *(client.call("balanced.ask", Ask(), returns=Answer, timeout=10) for _ in range(40))
        )
        assert {answer.by for answer in answers} == {"fast"}  # none waited behind the slow one
        stats = await conn.request(f"$SRV.STATS.balanced.{slow.id}", timeout=2)
        endpoint = json.loads(stats.data)["endpoints"][0]
        assert endpoint["data"]["queue_group"] == {"out": True, "left": 1}

        gate.set()  # the slow one has room again: it joins the group and gets its share
        finished = await asyncio.gather(*held)
        assert all(answer.by in {"slow", "fast"} for answer in finished)  # nothing lost meanwhile
        await eventually(lambda: not group.out)
        before = slow.stats["ask"].num_requests
        for _ in range(200):  # random shares: a few calls reach it (2**-200 that none would)
            await client.call("balanced.ask", Ask(), returns=Answer, timeout=10)
            if slow.stats["ask"].num_requests > before:
                break
        assert slow.stats["ask"].num_requests > before


async def test_without_balance_a_full_instance_keeps_its_share(
    nats_server: NatsServer, conn: Connection, eventually: Eventually
) -> None:
    """The default, for contrast: the queue group keeps sending to the slow instance."""
    gate = asyncio.Event()
    async with two_instances(nats_server, gate, "random") as (slow, fast):
        client = Client(conn)
        await fill(client, slow, fast, eventually)
        gate_of = slow._gates["ask"]
        stats = slow.stats["ask"]

        def at_slow() -> int:  # it is full: what reaches it waits or is turned away
            return int(len(gate_of.waiting) + stats.shed)

        before, served = at_slow(), fast.stats["ask"].num_requests
        calls = [
            asyncio.create_task(client.call("balanced.ask", Ask(), returns=Answer, timeout=10))
            for _ in range(40)
        ]
        await eventually(lambda: at_slow() - before + fast.stats["ask"].num_requests - served == 40)
        assert at_slow() > before  # 2**-40 that the queue group would have spared it
        assert stats.group is None
        gate.set()
        await asyncio.gather(*calls, return_exceptions=True)


async def test_a_stopping_instance_out_of_its_group_stops_cleanly(
    nats_server: NatsServer, conn: Connection, eventually: Eventually
) -> None:
    gate = asyncio.Event()
    slow_conn = await Connection(ConnectOptions.from_env(nats_server.url, environ={})).open()
    try:
        async with instance("slow", gate, "room").serving(slow_conn, drain_timeout=5) as slow:
            client = Client(conn)
            held = await fill(client, slow, None, eventually)
            await eventually(lambda: slow.stats["ask"].group.left == 1)
            gate.set()  # the two running finish; the one waiting runs, or is refused by the stop
        answers = await asyncio.gather(*held, return_exceptions=True)
        # refused, it is retried (503: it never ran) and finds nobody left: a defined outcome too
        outcomes = [type(answer).__name__ for answer in answers]
        assert outcomes[:2] == ["Answer", "Answer"]
        assert outcomes[2] in {"Answer", "NoResponders"}
    finally:
        await slow_conn.close()


def test_balance_takes_only_its_values() -> None:
    svc = Service("balanced", version="1.0.0")
    unknown: Any = "load"
    with pytest.raises(ConfigurationError, match="balance must be one of 'random', 'room'"):

        @svc.rpc(balance=unknown)
        async def ask(req: Ask) -> Answer:
            return Answer("x")
