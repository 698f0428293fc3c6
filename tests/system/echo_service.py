"""A service run as its own process by the system tests: ``python echo_service.py``.

It connects to ``$EVENTMICRO_NATS_URL`` and serves until SIGTERM.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import sys

from eventmicro import Broadcast, Service, event_type


@dataclasses.dataclass
class Work:
    delay: float = 0.0


@dataclasses.dataclass
class Done:
    pid: int


@event_type("tests.system.v1.Ping")
@dataclasses.dataclass
class Ping:
    n: int


svc = Service("echo", version="1.0.0")


@svc.rpc
async def work(req: Work) -> Done:
    if req.delay:
        await asyncio.sleep(req.delay)
    return Done(pid=os.getpid())


@svc.subscribe(delivery=Broadcast())
async def everyone(ping: Ping) -> None:
    return None


if __name__ == "__main__":
    sys.exit(svc.run())
