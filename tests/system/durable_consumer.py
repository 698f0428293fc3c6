"""A durable consumer run as its own process by the system tests: ``python durable_consumer.py``.

It connects to ``$EVENTMICRO_NATS_URL`` and consumes ``$DURABLE_SUBJECT`` from stream
``$DURABLE_STREAM`` through the durable consumer ``durable-consumer-record``, until SIGTERM.

Each handled event's CloudEvent id is appended as one line to ``$DURABLE_LOG`` with a single
``write(2)`` on an ``O_APPEND`` descriptor, before the handler returns (and so before the ack):
the line is in the kernel's page cache when the handler returns, so it survives a SIGKILL of
this process. An event handled but not acked before a SIGKILL is redelivered, and shows up
twice in the log — a duplicate, which at-least-once delivery allows and the tests count.
"""

from __future__ import annotations

import dataclasses
import os
import sys

from eventmicro import Context, Durable, Service, event_type

SERVICE = "durable-consumer"
HANDLER = "record"
ACK_WAIT = 2.0  # seconds: what a killed process had taken comes back quickly


@event_type("tests.system.v1.Numbered")
@dataclasses.dataclass
class Numbered:
    n: int


def build(subject: str, stream: str, log_path: str) -> Service:
    svc = Service(SERVICE, version="1.0.0")
    fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    @svc.subscribe(subject=subject, name=HANDLER, delivery=Durable(stream=stream, ack_wait=ACK_WAIT))
    async def record(event: Numbered, ctx: Context) -> None:
        os.write(fd, f"{ctx.event.get_id()}\n".encode())

    @svc.on_shutdown
    async def close_log() -> None:
        os.close(fd)

    return svc


if __name__ == "__main__":
    env = os.environ
    sys.exit(build(env["DURABLE_SUBJECT"], env["DURABLE_STREAM"], env["DURABLE_LOG"]).run())
