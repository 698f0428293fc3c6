"""The connection: size limits, no-responders, timeouts, reconnect, bounded initial connect, drain."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Awaitable, Callable

import pytest

from eventmicro import (
    ConfigurationError,
    ConnectError,
    Connection,
    ConnectionClosed,
    ConnectionState,
    ConnectOptions,
    Message,
    NatsServer,
    NoResponders,
    PayloadTooLarge,
    Timeout,
)
from eventmicro.transport.connection import headers_size
from eventmicro.transport.server import free_port

Eventually = Callable[..., Awaitable[None]]


def options(url: str, **extra: object) -> ConnectOptions:
    return ConnectOptions.from_env(url, environ={}, **{"connect_attempts": 3, **extra})


def state_of(conn: Connection) -> ConnectionState:
    """The state, read through a call so that type narrowing does not freeze it."""
    return conn.state


class Inbox:
    """Collects messages of a subscription; tests wait on it, never sleep."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self._changed = asyncio.Condition()

    async def __call__(self, msg: Message) -> None:
        async with self._changed:
            self.messages.append(msg)
            self._changed.notify_all()

    async def wait_for(self, count: int, timeout: float = 10) -> list[Message]:
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: len(self.messages) >= count)
        return self.messages


async def test_headers_that_push_a_message_over_max_payload_are_refused_and_the_connection_stays_up(
    nats_connection: Connection,
) -> None:
    limit = nats_connection.max_payload
    assert limit == 1024 * 1024
    headers = {"ce-specversion": "1.0", "ce-id": "x" * 64, "ce-source": "/s", "ce-type": "t"}
    body = b"\0" * (limit - headers_size(headers) + 1)
    with pytest.raises(PayloadTooLarge) as caught:
        await nats_connection.publish("too.big", body, headers=headers)
    assert caught.value.size == limit + 1
    assert caught.value.limit == limit
    with pytest.raises(PayloadTooLarge):
        await nats_connection.request("too.big", body, headers=headers, timeout=1)

    inbox = Inbox()
    await nats_connection.subscribe("just.fits", inbox)
    await nats_connection.publish("just.fits", body[:-1], headers=headers)  # exactly the limit
    received = await inbox.wait_for(1)
    assert len(received[0].data) == len(body) - 1
    assert nats_connection.is_connected


def test_header_size_matches_what_nats_py_sends() -> None:
    headers = {"a": "b", " spaced ": " value ", "multi": "line\nbreak", "euro": "€"}
    wire = b"NATS/1.0\r\na: b\r\nspaced: value\r\nmulti: line break\r\neuro: \xe2\x82\xac\r\n\r\n"
    assert headers_size(headers) == len(wire)


async def test_a_request_nobody_listens_to_fails_at_once_with_no_responders(
    nats_connection: Connection,
) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(NoResponders) as caught:
        await nats_connection.request("nobody.home", b"?", timeout=30)
    assert caught.value.subject == "nobody.home"
    assert caught.value.code == 503
    assert loop.time() - started < 15  # far from the 30 s timeout: an answer, not a wait


async def test_a_request_without_a_reply_times_out(nats_connection: Connection) -> None:
    inbox = Inbox()
    await nats_connection.subscribe("silent.service", inbox)
    with pytest.raises(Timeout) as caught:
        await nats_connection.request("silent.service", b"?", timeout=0.2)
    assert isinstance(caught.value, TimeoutError)
    assert caught.value.timeout == 0.2
    assert len(await inbox.wait_for(1)) == 1  # it did arrive; nobody answered


async def test_request_reply_round_trip_with_headers(nats_connection: Connection) -> None:
    async def echo(msg: Message) -> None:
        await nats_connection.publish(msg.reply, msg.data.upper(), headers=dict(msg.headers or {}))

    await nats_connection.subscribe("echo.svc", echo, queue="echo")
    reply = await nats_connection.request("echo.svc", b"hi", headers={"x-trace": "1"}, timeout=5)
    assert reply.data == b"HI"
    assert reply.headers == {"x-trace": "1"}


async def test_concurrent_requests_get_their_own_replies_and_late_replies_are_dropped(
    nats_connection: Connection,
) -> None:
    held: list[Message] = []

    async def answer(msg: Message) -> None:
        if msg.data == b"late":
            held.append(msg)  # answered after its caller gave up
            return
        await asyncio.sleep(0.001 * (int(msg.data) % 7))  # replies come back out of order
        await nats_connection.publish(msg.reply, msg.data + b"!")

    await nats_connection.subscribe("mux.svc", answer)
    with pytest.raises(Timeout):
        await nats_connection.request("mux.svc", b"late", timeout=0.1)
    replies = await asyncio.gather(*(nats_connection.request("mux.svc", str(i).encode(), timeout=10)
                                     for i in range(200)))  # fmt: skip
    assert [r.data for r in replies] == [f"{i}!".encode() for i in range(200)]
    await nats_connection.publish(held[0].reply, b"too late")  # nobody waits for it any more
    assert (await nats_connection.request("mux.svc", b"7", timeout=10)).data == b"7!"


async def test_subscriptions_survive_a_server_restart(
    fresh_nats_server: NatsServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="eventmicro.connection")
    inbox = Inbox()
    async with Connection(options(fresh_nats_server.url, reconnect_wait=0.1)) as conn:
        await conn.subscribe("after.restart", inbox)
        await conn.flush()
        await fresh_nats_server.arestart()
        # reconnecting takes a moment; publishes are buffered meanwhile, then flushed
        async with asyncio.timeout(20):
            while conn.state is not ConnectionState.CONNECTED or not conn.is_connected:
                await conn.publish("probe", b"")  # buffered until reconnected
                await asyncio.sleep(0.05)
        await conn.publish("after.restart", b"still here")
        received = await inbox.wait_for(1)
    assert received[-1].data == b"still here"
    messages = [r.getMessage() for r in caplog.records]
    assert any("disconnected from NATS" in m for m in messages)
    assert any("reconnected to NATS" in m for m in messages)


async def test_initial_connect_gives_up_after_the_bounded_attempts(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="eventmicro.connection")
    port = free_port()
    conn = Connection(options(f"nats://127.0.0.1:{port}", connect_attempts=3, connect_timeout=0.5))
    with pytest.raises(ConnectError) as caught:
        await conn.open()
    assert f"127.0.0.1:{port}" in str(caught.value)
    attempts = [r for r in caplog.records if "connect attempt" in r.getMessage()]
    assert len(attempts) == 2  # three attempts, two retries logged


async def test_initial_connect_retries_until_the_server_is_up() -> None:
    port = free_port()
    conn = Connection(options(f"nats://127.0.0.1:{port}", connect_attempts=30, connect_timeout=0.5))
    opening = asyncio.create_task(conn.open())
    # the first attempt fails: nothing listens yet
    server = NatsServer(port=port, jetstream=False)
    try:
        await server.astart()
        async with asyncio.timeout(30):
            await opening
        assert conn.is_connected
        await conn.close()
    finally:
        await asyncio.to_thread(server.close)


async def test_close_drains_messages_already_received(nats_server: NatsServer) -> None:
    gate = asyncio.Event()
    handled: list[bytes] = []
    started = asyncio.Event()

    async def slow(msg: Message) -> None:
        started.set()
        await gate.wait()
        handled.append(msg.data)

    conn = Connection(options(nats_server.url))
    await conn.open()
    async with Connection(options(nats_server.url)) as sender:
        await conn.subscribe("drain.me", slow)
        await conn.flush()
        for n in range(3):
            await sender.publish("drain.me", str(n).encode())
        await sender.flush()
        await asyncio.wait_for(started.wait(), 10)
        closing = asyncio.create_task(conn.close())
        async with asyncio.timeout(10):
            while state_of(conn) is not ConnectionState.DRAINING:  # noqa: ASYNC110 - another task's state
                await asyncio.sleep(0)  # let close() begin
        assert not closing.done()  # draining waits for the handler that holds the gate
        gate.set()
        await asyncio.wait_for(closing, timeout=30)
    assert handled == [b"0", b"1", b"2"]
    assert state_of(conn) is ConnectionState.CLOSED
    with pytest.raises(ConnectionClosed):
        await conn.publish("drain.me", b"late")
    with pytest.raises(ConnectionClosed):
        await conn.open()
    await conn.close()  # idempotent


def test_connect_options_from_the_environment() -> None:
    env = {
        "NATS_URL": "nats://a:4222",
        "EVENTMICRO_NATS_URL": "nats://b:4222, c:4223",
        "EVENTMICRO_NATS_NAME": "n",
    }
    opts = ConnectOptions.from_env(environ=env)
    assert opts.servers == ("nats://b:4222", "nats://c:4223")
    assert opts.name == "n"
    assert ConnectOptions.from_env(environ={"NATS_URL": "nats://a:4222"}).servers == ("nats://a:4222",)
    assert ConnectOptions.from_env(environ={}).servers == ("nats://127.0.0.1:4222",)
    assert ConnectOptions.from_env("nats://x:1", environ=env).servers == ("nats://x:1",)


async def test_an_empty_header_dict_still_counts_its_header_block(fresh_nats_server: NatsServer) -> None:
    # nats-py sends HPUB for any dict, even {}: 12 more bytes than the body alone
    async with Connection(options(fresh_nats_server.url)) as conn:
        limit = conn.max_payload
        with pytest.raises(PayloadTooLarge) as caught:
            await conn.publish("edge", b"a" * limit, headers={})
        assert caught.value.size == limit + len(b"NATS/1.0\r\n\r\n")
        await conn.publish("edge", b"a" * limit)  # no headers at all: exactly the limit fits
        await conn.flush()
        assert conn.is_connected


async def test_a_subscription_receives_what_is_published_right_after_subscribe_returns(
    nats_server: NatsServer,
) -> None:
    # nats-py 2.16 alone loses a few in a few hundred: its flush() can overtake a buffered SUB.
    async with (
        Connection(options(nats_server.url)) as subscriber,
        Connection(options(nats_server.url)) as publisher,
    ):
        for n in range(500):
            inbox = Inbox()
            subscription = await subscriber.subscribe(f"ready.{n}", inbox)
            await publisher.publish(f"ready.{n}", b"x")
            await inbox.wait_for(1, timeout=5)
            await subscription.unsubscribe()


async def test_a_frozen_server_is_noticed_by_pings_and_the_connection_fails_over(
    eventually: Eventually,
) -> None:
    with NatsServer(jetstream=False) as first, NatsServer(jetstream=False) as second:
        options = ConnectOptions.from_env(
            [first.url, second.url], environ={}, no_randomize=True, ping_interval=0.3, max_outstanding_pings=2
        )
        async with Connection(options) as conn:
            assert conn.connected_url == first.url
            assert first.pid is not None
            os.kill(first.pid, signal.SIGSTOP)  # the socket stays open; only pings tell
            try:
                await eventually(lambda: conn.connected_url == second.url and conn.is_connected, timeout=15)
            finally:
                os.kill(first.pid, signal.SIGCONT)
            inbox = Inbox()
            await conn.subscribe("after.failover", inbox)
            await conn.publish("after.failover", b"still here")
            assert (await inbox.wait_for(1))[0].data == b"still here"


def test_ping_settings_are_checked() -> None:
    with pytest.raises(ConfigurationError, match="ping_interval"):
        ConnectOptions.from_env("nats://127.0.0.1:4222", environ={}, ping_interval=0)
