"""Overload sheds load instead of collapsing.

Before the fix a request waited in an unbounded queue (nats-py's buffer) behind a busy
endpoint, ran long after its caller had gone, and a 10x burst left the endpoint answering
nothing for 110 s. Now each endpoint runs ``concurrency`` requests, keeps up to ``backlog``
waiting, answers the rest ``503 Overloaded`` at once, and never runs a request whose
caller's deadline passed while it waited. Callers are plain clients on a real nats-server.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import pytest

from eventmicro import (
    Client,
    Connection,
    NoResponders,
    Overloaded,
    Service,
    ServiceUnavailable,
    Timeout,
)
from eventmicro.service.running import Running
from schemas.shop.orders.v1 import orders_pb2 as orders

Eventually = Callable[..., Awaitable[None]]
ACCEPTED = orders.OrderAccepted


def _gated(concurrency: int, backlog: int) -> tuple[Service, asyncio.Event, list[str]]:
    """A service whose handler waits until ``gate`` is set; ``ran`` lists the requests it ran."""
    svc = Service("busy", version="1.0.0")
    gate = asyncio.Event()
    ran: list[str] = []

    @svc.rpc(concurrency=concurrency, backlog=backlog)
    async def place(req: orders.PlaceOrder) -> orders.OrderAccepted:
        ran.append(req.customer_id)
        await gate.wait()
        return orders.OrderAccepted(order_id=req.customer_id)

    return svc, gate, ran


def _place(client: Client, name: str, timeout: float = 10) -> asyncio.Task[orders.OrderAccepted]:
    return asyncio.ensure_future(
        client.call("busy.place", orders.PlaceOrder(customer_id=name), returns=ACCEPTED, timeout=timeout)
    )


async def test_beyond_the_backlog_requests_are_answered_503_at_once(
    service_conn: Connection, nats_connection: Connection, eventually: Eventually
) -> None:
    svc, gate, ran = _gated(concurrency=2, backlog=3)
    client = Client(nats_connection)
    async with svc.serving(service_conn) as running:
        admitted = [_place(client, f"r{i}") for i in range(5)]  # 2 run, 3 wait
        await eventually(lambda: len(ran) == 2 and running._gates["place"].waiting.__len__() == 3)
        for i in range(4):  # the backlog is full: each is answered at once, while the others still wait
            with pytest.raises(Overloaded) as refused:
                await client.call(
                    "busy.place", orders.PlaceOrder(customer_id=f"x{i}"), returns=ACCEPTED, timeout=10
                )
            assert refused.value.code == 503
        assert not any(task.done() for task in admitted)
        gate.set()
        replies = await asyncio.gather(*admitted)
        assert [r.order_id for r in replies] == [f"r{i}" for i in range(5)]
        assert sorted(ran) == [f"r{i}" for i in range(5)]  # the refused ones never ran
        stats = running.stats["place"]
        assert stats.shed == 4
        assert stats.turned_away()["overloaded"] == 4


async def test_waiting_requests_run_in_arrival_order(
    service_conn: Connection, nats_connection: Connection, eventually: Eventually
) -> None:
    svc, gate, ran = _gated(concurrency=1, backlog=10)
    client = Client(nats_connection)
    async with svc.serving(service_conn):
        first = _place(client, "first")
        await eventually(lambda: ran == ["first"])
        rest = []
        for i in range(6):
            rest.append(_place(client, f"w{i}"))
            await nats_connection.flush()  # sent in this order
        gate.set()
        await asyncio.gather(first, *rest)
        assert ran == ["first", *(f"w{i}" for i in range(6))]


async def test_a_request_whose_deadline_passed_while_waiting_never_runs(
    service_conn: Connection, nats_connection: Connection, eventually: Eventually
) -> None:
    svc, gate, ran = _gated(concurrency=1, backlog=5)
    client = Client(nats_connection)
    async with svc.serving(service_conn) as running:
        blocker = _place(client, "blocker")
        await eventually(lambda: ran == ["blocker"])
        with pytest.raises(Timeout):  # the caller gives up while its request waits
            await client.call(
                "busy.place", orders.PlaceOrder(customer_id="late"), returns=ACCEPTED, timeout=0.3
            )
        gate.set()
        await blocker
        await eventually(lambda: running.stats["place"].expired == 1)
        assert ran == ["blocker"]  # "late" was answered 504 without running
        follow_up = await client.call("busy.place", orders.PlaceOrder(customer_id="next"), returns=ACCEPTED)
        assert follow_up.order_id == "next"


async def test_stopping_answers_the_waiting_requests_503(
    service_conn: Connection, nats_connection: Connection, eventually: Eventually
) -> None:
    svc, gate, ran = _gated(concurrency=1, backlog=5)
    client = Client(nats_connection)
    running = Running(svc, service_conn, drain_timeout=5)
    await running.start()
    running_one = _place(client, "running")
    await eventually(lambda: ran == ["running"])
    waiting = [_place(client, f"w{i}") for i in range(3)]
    await eventually(lambda: len(running._gates["place"].waiting) == 3)
    stopping = asyncio.ensure_future(running.stop())
    for task in waiting:  # answered 503, not started: the client retried, and nobody is left
        with pytest.raises((ServiceUnavailable, NoResponders)):
            await task
    gate.set()
    await stopping
    assert (await running_one).order_id == "running"
    assert ran == ["running"]


async def test_ten_times_the_capacity_is_answered_and_the_endpoint_recovers(
    service_conn: Connection, nats_connection: Connection
) -> None:
    """The issue's scenario, scaled to a test: a handler taking 50 ms with concurrency 4
    (capacity 80/s) offered 800 requests/s for 2 s by callers with 1 s timeouts."""
    svc = Service("busy", version="1.0.0")

    @svc.rpc(concurrency=4)
    async def place(req: orders.PlaceOrder) -> orders.OrderAccepted:
        await asyncio.sleep(0.05)
        return orders.OrderAccepted(order_id=req.customer_id)

    client = Client(nats_connection)
    outcomes: dict[str, int] = {"ok": 0, "overloaded": 0, "timeout": 0, "other": 0}

    async def one(i: int) -> None:
        try:
            await client.call(
                "busy.place", orders.PlaceOrder(customer_id=str(i)), returns=ACCEPTED, timeout=1.0
            )
            outcomes["ok"] += 1
        except Overloaded:
            outcomes["overloaded"] += 1
        except Timeout:
            outcomes["timeout"] += 1
        except Exception:
            outcomes["other"] += 1

    async with svc.serving(service_conn):
        calls: list[asyncio.Task[None]] = []
        start = time.monotonic()
        for i in range(1600):  # paced: 8 requests every 10 ms
            calls.append(asyncio.ensure_future(one(i)))
            if i % 8 == 7:
                await asyncio.sleep(max(0.0, start + (i + 1) / 800 - time.monotonic()))
        await asyncio.gather(*calls)
        answered = outcomes["ok"] + outcomes["overloaded"]
        assert outcomes["other"] == 0
        assert answered >= 0.95 * len(calls), outcomes
        assert outcomes["ok"] > 0, outcomes
        assert outcomes["overloaded"] > 0, outcomes
        # right after the burst the endpoint answers normally
        reply = await client.call(
            "busy.place", orders.PlaceOrder(customer_id="after"), returns=ACCEPTED, timeout=2
        )
        assert reply.order_id == "after"
