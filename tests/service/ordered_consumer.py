"""An ``ordered_by=`` durable consumer run as its own process by test_ordered_by.py (so a test can
SIGKILL it): ``python ordered_consumer.py``.

It consumes ``$ORDERED_SUBJECT`` from stream ``$ORDERED_STREAM`` until SIGTERM and appends
``<order_id> <total_cents>`` for each event it handles to ``$ORDERED_LOG`` with one ``write(2)``
on an ``O_APPEND`` descriptor before the handler returns, so the line survives a SIGKILL.
"""

from __future__ import annotations

import asyncio
import os
import sys

from eventmicro import Durable, Service
from schemas.shop.orders.v1 import orders_pb2 as orders

SERVICE = "ordered-consumer"
HANDLER = "record"
ACK_WAIT = 2.0  # seconds: what a killed process had taken comes back quickly


def build(subject: str, stream: str, log_path: str) -> Service:
    svc = Service(SERVICE, version="1.0.0")
    fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    @svc.subscribe(
        subject=subject,
        name=HANDLER,
        concurrency=8,
        ordered_by="order_id",
        delivery=Durable(stream=stream, ack_wait=ACK_WAIT),
    )
    async def record(event: orders.OrderPlaced) -> None:
        os.write(fd, f"{event.order_id} {event.total_cents}\n".encode())
        await asyncio.sleep(0.002)  # some work, so a kill finds events in flight and waiting

    @svc.on_shutdown
    async def close_log() -> None:
        os.close(fd)

    return svc


if __name__ == "__main__":
    env = os.environ
    sys.exit(build(env["ORDERED_SUBJECT"], env["ORDERED_STREAM"], env["ORDERED_LOG"]).run())
