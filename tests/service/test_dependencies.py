"""Dependencies for handlers: made at start, closed after the stop in reverse order, handed to
handlers through ``ctx.get``, replaced in tests in one line."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from eventmicro import Client, ConfigurationError, Connection, Context, NoResponders, Service
from eventmicro.pytest_plugin import TestContext, call_handler

Eventually = Callable[..., Awaitable[None]]  # the conftest fixture: wait for a condition


@dataclasses.dataclass
class Ask:
    n: int = 0


@dataclasses.dataclass
class Answer:
    text: str


class Pool:
    """A stand-in for a database pool: says what happens to it in ``log``."""

    def __init__(self, name: str, log: list[str]) -> None:
        self.name = name
        self.log = log
        self.closed = False

    async def fetch(self, n: int) -> str:
        assert not self.closed, f"{self.name} used after it was closed"
        return f"{self.name}:{n}"


def pooled(name: str, log: list[str]) -> contextlib.AbstractAsyncContextManager[Pool]:
    @contextlib.asynccontextmanager
    async def open_pool() -> AsyncIterator[Pool]:
        log.append(f"open {name}")
        pool = Pool(name, log)
        try:
            yield pool
        finally:
            pool.closed = True
            log.append(f"close {name}")

    return open_pool()


def shop(
    log: list[str], started: asyncio.Event | None = None, release: asyncio.Event | None = None
) -> Service:
    svc = Service("depshop", version="1.0.0")
    db = svc.dependency("db", lambda: pooled("db", log))
    cache = svc.dependency("cache", lambda: pooled("cache", log))

    @svc.rpc
    async def ask(req: Ask, ctx: Context) -> Answer:
        if started is not None and release is not None:
            started.set()
            await release.wait()
        pool = ctx.get(db)
        text = await pool.fetch(req.n) + "," + await ctx.get(cache).fetch(req.n)
        log.append(f"handled {req.n}")
        return Answer(text)

    @svc.on_shutdown
    async def bye() -> None:
        log.append("stop hook")

    return svc


async def test_dependencies_are_made_at_start_and_closed_after_the_stop_in_reverse(
    conn: Connection, service_conn: Connection
) -> None:
    log: list[str] = []
    async with shop(log).serving(service_conn):
        assert log == ["open db", "open cache"]
        assert await Client(conn).call("depshop.ask", Ask(1), returns=Answer) == Answer("db:1,cache:1")
    assert log == ["open db", "open cache", "handled 1", "stop hook", "close cache", "close db"]


async def test_a_handler_in_flight_when_the_stop_begins_still_has_its_dependencies(
    conn: Connection, service_conn: Connection, eventually: Eventually
) -> None:
    log: list[str] = []
    started, release, stop = asyncio.Event(), asyncio.Event(), asyncio.Event()
    instances: list[Any] = []

    async def serve() -> None:
        async with shop(log, started, release).serving(service_conn, drain_timeout=10) as running:
            instances.append(running)
            await stop.wait()

    server = asyncio.create_task(serve())
    await eventually(lambda: bool(instances))
    call = asyncio.create_task(Client(conn).call("depshop.ask", Ask(2), returns=Answer, timeout=10))
    await started.wait()
    stop.set()  # the stop begins with the handler in flight
    await eventually(lambda: not instances[0].accepting())
    assert "close db" not in log
    release.set()
    assert (await call) == Answer("db:2,cache:2")
    await server
    assert log == ["open db", "open cache", "handled 2", "stop hook", "close cache", "close db"]


async def test_a_factory_that_fails_stops_the_start_and_closes_what_was_made(
    service_conn: Connection,
) -> None:
    log: list[str] = []
    svc = Service("depfail", version="1.0.0")
    svc.dependency("db", lambda: pooled("db", log))

    async def unreachable() -> Pool:
        raise ConnectionRefusedError("cache is down")

    svc.dependency("cache", unreachable)

    @svc.rpc
    async def ask(req: Ask) -> Answer:
        return Answer("never")

    with pytest.raises(ConnectionRefusedError, match="cache is down"):
        async with svc.serving(service_conn):
            pytest.fail("served without its dependencies")
    assert log == ["open db", "close db"]
    with pytest.raises(NoResponders):  # nothing subscribed
        await Client(service_conn).call("depfail.ask", Ask(), returns=Answer, timeout=1)


async def test_a_dependency_replaced_in_one_line_is_used_and_its_factory_never_runs(
    conn: Connection, service_conn: Connection
) -> None:
    log: list[str] = []
    svc = shop(log)
    db = svc.dependencies[0]
    with svc.override(db, Pool("fake", log)):
        async with svc.serving(service_conn):
            reply = await Client(conn).call("depshop.ask", Ask(3), returns=Answer)
    assert reply == Answer("fake:3,cache:3")
    assert log == ["open cache", "handled 3", "stop hook", "close cache"]  # no "open db"


async def test_handlers_called_directly_get_replacements_and_a_clear_error_otherwise() -> None:
    log: list[str] = []
    svc = shop(log)
    db, cache = svc.dependencies
    with pytest.raises(ConfigurationError, match=r"'db' of service 'depshop' is not open.*svc.override"):
        await call_handler(svc, "ask", Ask(4))
    svc.override(db, Pool("fake-db", log))
    replaced = svc.override(cache, Pool("fake-cache", log))
    assert await call_handler(svc, "ask", Ask(4), TestContext(svc, "ask")) == Answer("fake-db:4,fake-cache:4")
    replaced.undo()
    with pytest.raises(ConfigurationError, match="'cache'"):
        await call_handler(svc, "ask", Ask(4))


async def test_a_dependency_that_is_a_plain_value_or_awaitable_is_not_closed(
    conn: Connection, service_conn: Connection
) -> None:
    svc = Service("depplain", version="1.0.0")
    settings = svc.dependency("settings", lambda: {"greeting": "hello"})

    async def connect() -> list[str]:
        return ["made"]

    made = svc.dependency("made", connect)

    @svc.rpc
    async def ask(req: Ask, ctx: Context) -> Answer:
        return Answer(f"{ctx.get(settings)['greeting']} {ctx.get(made)[0]}")

    async with svc.serving(service_conn):
        assert await Client(conn).call("depplain.ask", Ask(), returns=Answer) == Answer("hello made")
    with pytest.raises(ConfigurationError, match="not open"):
        settings.get()  # released once the service stopped


async def test_a_failing_close_is_logged_and_the_others_still_close(
    service_conn: Connection, caplog: pytest.LogCaptureFixture
) -> None:
    log: list[str] = []
    svc = Service("depclose", version="1.0.0")
    svc.dependency("db", lambda: pooled("db", log))

    @contextlib.asynccontextmanager
    async def broken() -> AsyncIterator[str]:
        yield "x"
        raise OSError("socket already gone")

    svc.dependency("broken", broken)
    async with svc.serving(service_conn):
        pass
    assert log == ["open db", "close db"]
    assert "closing dependency broken failed" in caplog.text


def test_dependencies_are_declared_with_care() -> None:
    svc, other = Service("decl", version="1.0.0"), Service("other", version="1.0.0")
    svc.dependency("db", lambda: 1)
    with pytest.raises(ConfigurationError, match="already has a dependency 'db'"):
        svc.dependency("db", lambda: 2)
    with pytest.raises(ConfigurationError, match="identifiers"):
        svc.dependency("my db", lambda: 2)
    with pytest.raises(ConfigurationError, match="callable"):
        svc.dependency("value", 3)  # type: ignore[call-overload]
    theirs = other.dependency("db", lambda: 1)
    with pytest.raises(ConfigurationError, match="not a dependency of service decl"):
        svc.override(theirs, 2)


async def test_a_handler_cannot_take_another_services_dependency() -> None:
    svc, other = Service("mine", version="1.0.0"), Service("theirs", version="1.0.0")
    theirs = other.dependency("db", lambda: 1)
    other.override(theirs, 5)

    @svc.rpc
    async def ask(req: Ask, ctx: Context) -> Answer:
        return Answer(str(ctx.get(theirs)))

    with pytest.raises(ConfigurationError, match="belongs to service theirs, not mine"):
        await call_handler(svc, "ask", Ask())
