"""Several instances of one service, each in its own process: balancing, broadcast, SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

from eventmicro import Client, Connection, ConnectOptions, NatsServer, discover

sys.path.insert(0, str(Path(__file__).parent))
from echo_service import Done, Ping, Work

SERVICE = Path(__file__).parent / "echo_service.py"


@pytest.fixture
def instances(nats_server: NatsServer) -> Iterator[list[subprocess.Popen[bytes]]]:
    env = {**os.environ, "EVENTMICRO_NATS_URL": nats_server.url}
    processes = [subprocess.Popen([sys.executable, str(SERVICE)], env=env) for _ in range(3)]
    try:
        yield processes
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
            process.wait()


@pytest_asyncio.fixture
async def client(nats_server: NatsServer) -> AsyncIterator[Client]:
    connection = await Connection(ConnectOptions.from_env(nats_server.url, environ={})).open()
    yield Client(connection)
    await connection.close()


async def all_up(client: Client, count: int) -> list[dict[str, object]]:
    async with asyncio.timeout(30):
        while True:
            found = await discover(client.connection, "PING", "echo", window=0.2)
            if len(found) >= count:
                return found


@pytest.mark.slow
async def test_three_processes_share_calls_and_all_get_broadcasts(
    instances: list[subprocess.Popen[bytes]], client: Client
) -> None:
    await all_up(client, 3)
    served: Counter[int] = Counter()
    for _ in range(30):
        replies = await asyncio.gather(
            *(client.call("echo.work", Work(), returns=Done, timeout=10) for _ in range(100))
        )
        served.update(reply.pid for reply in replies)
    assert sum(served.values()) == 3000
    assert set(served) == {p.pid for p in instances}
    assert min(served.values()) > 500, served  # a share each, not one instance doing it all
    print("calls per instance:", dict(served))
    for n in range(10):
        await client.publish(Ping(n))
    await client.connection.flush()
    async with asyncio.timeout(20):
        while True:
            stats = await discover(client.connection, "STATS", "echo", window=0.2)
            received = [s["data"]["events"]["everyone"]["received"] for s in stats]
            if len(received) == 3 and all(r == 10 for r in received):
                break


@pytest.mark.slow
async def test_sigterm_drains_one_instance_under_load(
    instances: list[subprocess.Popen[bytes]], client: Client
) -> None:
    await all_up(client, 3)
    victim = instances[0]

    async def call() -> Done | Exception:
        try:
            return await client.call("echo.work", Work(delay=0.2), returns=Done, timeout=10)
        except Exception as exc:  # counted below: the test states how many failed
            return exc

    async def taken() -> dict[str, int]:
        stats = await discover(client.connection, "STATS", "echo", window=0.2)
        return {
            s["id"]: next(e["num_requests"] for e in s["endpoints"] if e["name"] == "work") for s in stats
        }

    before = await taken()
    first = [asyncio.create_task(call()) for _ in range(60)]
    async with asyncio.timeout(20):  # every instance, the victim included, has work in hand
        while not (len(now := await taken()) == 3 and all(now[i] > before.get(i, 0) for i in now)):
            pass
    victim.send_signal(signal.SIGTERM)
    second = [asyncio.create_task(call()) for _ in range(60)]
    results = await asyncio.gather(*first, *second)
    failures = [r for r in results if isinstance(r, Exception)]
    served_by_victim = sum(1 for r in results if isinstance(r, Done) and r.pid == victim.pid)
    print(f"failures {len(failures)} of {len(results)}; the stopped instance served {served_by_victim}")
    assert failures == []
    assert served_by_victim > 0  # it finished what it had taken
    assert await asyncio.to_thread(victim.wait, 30) == 0
    late = await asyncio.gather(*(call() for _ in range(30)))
    assert all(isinstance(r, Done) and r.pid != victim.pid for r in late)
