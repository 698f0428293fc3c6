"""A scheduled handler for tests/service/test_schedules.py: ``python schedule_app.py <service>``
serves it through `Service.run` (NATS_URL from the environment) and prints each tick it runs."""

from __future__ import annotations

import sys

from eventmicro import Service, Tick

svc = Service(sys.argv[1] if len(sys.argv) > 1 else "schedule-app", version="1.0.0")


@svc.schedule("@every 1s")
async def beat(tick: Tick) -> None:
    print(f"tick {tick.id}", flush=True)


if __name__ == "__main__":
    raise SystemExit(svc.run())
