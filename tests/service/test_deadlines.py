"""The deadline wheel that cancels a handler when its caller's deadline passes."""

from __future__ import annotations

import asyncio
import time

from eventmicro.service.deadlines import Deadlines


async def test_a_deadline_cancels_its_task_never_before_it_is_due() -> None:
    deadlines = Deadlines()
    due = time.monotonic() + 0.02
    cancelled_at: list[float] = []

    async def handler() -> None:
        expiry = deadlines.arm(due)
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled_at.append(time.monotonic())
            assert expiry.expired()  # ours, and withdrawn: the task may go on to answer
            return
        finally:
            expiry.disarm()

    await asyncio.wait_for(asyncio.create_task(handler()), 10)
    assert cancelled_at
    assert cancelled_at[0] >= due
    assert len(deadlines) == 0


async def test_a_disarmed_deadline_cancels_nothing_and_is_forgotten() -> None:
    deadlines = Deadlines()
    fired = asyncio.Event()

    async def quick() -> str:
        expiry = deadlines.arm(time.monotonic() + 0.01)
        expiry.disarm()
        assert len(deadlines) == 0  # no request is held past its reply
        await asyncio.sleep(0.05)  # well past the deadline's slot
        fired.set()
        return "answered"

    assert await asyncio.create_task(quick()) == "answered"
    assert fired.is_set()


async def test_a_cancel_from_elsewhere_is_not_taken_for_the_deadline() -> None:
    deadlines = Deadlines()
    started = asyncio.Event()
    outcome: list[bool] = []

    async def handler() -> None:
        expiry = deadlines.arm(time.monotonic() + 60)
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            outcome.append(expiry.expired())
            raise
        finally:
            expiry.disarm()

    task = asyncio.create_task(handler())
    await started.wait()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert outcome == [False]
    assert len(deadlines) == 0


async def test_many_requests_due_together_share_the_wheel() -> None:
    deadlines = Deadlines()
    due = time.monotonic() + 0.03
    results: list[str] = []

    async def handler(i: int) -> None:
        expiry = deadlines.arm(due)
        try:
            if i % 2:
                results.append("answered")  # in time
                return
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            if expiry.expired():
                results.append("expired")
                return
            raise
        finally:
            expiry.disarm()

    await asyncio.wait_for(asyncio.gather(*(handler(i) for i in range(100))), 10)
    assert sorted(results) == ["answered"] * 50 + ["expired"] * 50
    assert len(deadlines) == 0
