"""A small service for tests/service/test_startup_output.py: an endpoint that fails, an event
handler; ``python startup_app.py`` serves it through `Service.run` (NATS_URL from the environment)."""

from __future__ import annotations

from dataclasses import dataclass

from eventmicro import Service, event_type

svc = Service("startup-greeter", version="1.2.3")


@dataclass
class Hello:
    name: str


@event_type("test.startup.greeted.v1")
@dataclass
class Greeted:
    name: str


@svc.rpc
async def greet(request: Hello) -> Hello:
    return Hello(f"hello {request.name}")


@svc.subscribe
async def on_greeted(event: Greeted) -> None:
    return None


if __name__ == "__main__":
    raise SystemExit(svc.run())
