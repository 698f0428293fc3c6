"""What schedules cost when not used: CPU µs and Python calls per message on the paths they
touched, for the eventmicro on ``PYTHONPATH``.

``PYTHONPATH=<checkout> python -m bench.schedules_cost [N] [REPEAT]``, once from a checkout
without schedules (``git archive 72dc5f3``) and once with: core ``Client.publish`` (unchanged
by them) and ``PullConsumer.fetch`` (whose `Delivery` now carries ``pending`` and ``stored``).
CPU is ``time.process_time`` over N messages (median of REPEAT runs); calls are cProfile's
total per message, deterministic up to fetch batching.
"""

from __future__ import annotations

import asyncio
import cProfile
import pstats
import statistics
import sys
import time

from eventmicro import Client, Connection, ConnectOptions, NatsServer, Stream
from eventmicro.transport.jetstream import PullConsumer, ensure_stream
from schemas.shop.orders.v1 import orders_pb2 as orders


async def publish_cpu(client: Client, n: int) -> float:
    msg = orders.OrderPlaced(order_id="o-1")
    started = time.process_time()
    for _ in range(n):
        await client.publish(msg, subject="cost.core")
    await client.connection.flush()
    return (time.process_time() - started) / n * 1e6


async def fetch_cpu(conn: Connection, name: str, n: int) -> float:
    consumer = await PullConsumer.bind(
        conn, name=name, subject="cost.js.x", stream="COST", max_ack_pending=n + 1
    )
    got, started = 0, time.process_time()
    while got < n:
        got += len(await consumer.fetch(256, 2.0))
    cpu = (time.process_time() - started) / n * 1e6
    await consumer.close()
    return cpu


def calls_per_message(profile: cProfile.Profile, n: int) -> float:
    return float(pstats.Stats(profile).total_calls) / n  # type: ignore[attr-defined]


async def main(n: int, repeat: int) -> None:
    with NatsServer() as server:
        conn = await Connection(ConnectOptions.from_env(server.url, environ={})).open()
        client = Client(conn, source="/cost")
        await ensure_stream(conn, Stream("COST", ["cost.js.>"], storage="memory"))
        await client.publish_batch(
            [orders.OrderPlaced(order_id=str(i)) for i in range(n)], subject="cost.js.x"
        )
        publishes = [await publish_cpu(client, n) for _ in range(repeat)]
        fetches = [await fetch_cpu(conn, f"c{r}", n) for r in range(repeat)]
        profile = cProfile.Profile()
        profile.enable()
        await fetch_cpu(conn, "counted", n)
        profile.disable()
        fetch_calls = calls_per_message(profile, n)
        profile = cProfile.Profile()
        profile.enable()
        await publish_cpu(client, n)
        profile.disable()
        publish_calls = calls_per_message(profile, n)
        print(
            f"publish {statistics.median(publishes):.1f} µs CPU/msg ({publish_calls:.1f} calls), "
            f"durable fetch {statistics.median(fetches):.1f} µs CPU/msg ({fetch_calls:.1f} calls)"
        )
        await conn.close()


if __name__ == "__main__":
    asyncio.run(
        main(int(sys.argv[1]) if len(sys.argv) > 1 else 10_000, int(sys.argv[2]) if len(sys.argv) > 2 else 5)
    )
