"""A service whose stop the hostile stop tests time: ``eventmicro run stop_service``.

``hold`` keeps a request in flight as long as it is asked to (longer than any drain timeout the
tests give); ``count`` is a durable handler, so a stop also winds down a JetStream pull intake.
"""

from __future__ import annotations

import asyncio
import dataclasses

from eventmicro import Durable, Service, Stream, event_type

STREAM = "STOPPER"


@dataclasses.dataclass
class Hold:
    seconds: float


@dataclasses.dataclass
class Held:
    seconds: float


@event_type("tests.hostile.v1.Tick")
@dataclasses.dataclass
class Tick:
    n: int


svc = Service("stopper", version="1.0.0", streams=[Stream(STREAM, subjects=["stopper.ticks.>"])])


@svc.rpc
async def hold(req: Hold) -> Held:
    await asyncio.sleep(req.seconds)
    return Held(req.seconds)


@svc.subscribe(subject="stopper.ticks.>", delivery=Durable(stream=STREAM))
async def count(tick: Tick) -> None:
    return None
