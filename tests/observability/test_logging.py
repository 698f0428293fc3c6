"""Structured logging: JSON lines that parse and carry the service and event fields, set by the
runtime around each handler call — and no credential in any log record, raw or formatted,
through connect failures, reconnects and handler errors against a real nats-server with auth.
A record about an event no one can parse loses no reply; a password with an "@" is hidden whole."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import logging
import socket
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest

from eventmicro import (
    AuthorizationError,
    Client,
    ConnectError,
    Connection,
    ConnectOptions,
    Context,
    Event,
    InternalError,
    NatsServer,
    NoResponders,
    Service,
    ServiceError,
    event_type,
)
from eventmicro import logs as em_logs
from schemas.shop.orders.v1 import orders_pb2 as orders

Eventually = Callable[..., Awaitable[None]]

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"

OPTIONS_PASSWORD = "opt-PASSWORD-5e1b"  # bob's, given in ConnectOptions
URL_PASSWORD = "url-PASSWORD-77ac"  # alice's, given in the URL
TOKEN = "tok-SECRET-c0ffee"
WRONG = ("wrong-PASSWORD-0001", "wrong-URLPASS-0002", "wrong-TOKEN-0003", "dead-URLPASS-0004")
SECRETS = (OPTIONS_PASSWORD, URL_PASSWORD, TOKEN, *WRONG)


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


@event_type("tests.logging.v1.Note")
@dataclasses.dataclass
class Note:
    text: str


@event_type("tests.logging.v1.Ask")
@dataclasses.dataclass
class Ask:
    key: str


@event_type("tests.logging.v1.Answer")
@dataclasses.dataclass
class Answer:
    key: str


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def collected() -> Iterator[Collect]:
    """Every record of every logger (eventmicro, nats, asyncio, ...) at DEBUG, with the context
    filter; the root logger as it was afterwards."""
    root = logging.getLogger()
    level = root.level
    handler = Collect()
    handler.addFilter(em_logs.ContextFilter())
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield handler
    root.removeHandler(handler)
    root.setLevel(level)


@pytest.fixture
def restore_root() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


@pytest.fixture
def json_logs() -> Iterator[io.StringIO]:
    """The root logger through `logs.configure(json=True)` (its ContextFilter included)."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    stream = io.StringIO()
    em_logs.configure(json=True, level="INFO", stream=stream)
    yield stream
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


def everything_said(record: logging.LogRecord) -> str:
    """All the text a record carries: message, arguments, exception and stack, both formats."""
    parts = [record.getMessage(), repr(record.args), repr(record.msg)]
    if record.exc_info:
        parts.append(logging.Formatter().formatException(record.exc_info))
        parts.append(repr(record.exc_info[1]))
    if record.stack_info:
        parts.append(record.stack_info)
    parts.append(repr(getattr(record, "eventmicro_context", None)))
    parts.append(em_logs.JsonFormatter().format(record))
    parts.append(em_logs.TextFormatter().format(record))
    return "\n".join(parts)


# --- JSON lines and context fields -------------------------------------------------------------


async def test_json_lines_carry_service_instance_handler_event_and_trace(
    nats_server: NatsServer, eventually: Eventually, restore_root: None
) -> None:
    stream = io.StringIO()
    em_logs.configure(json=True, level="INFO", stream=stream)
    app = logging.getLogger("app.orders")
    svc = Service(unique("logsvc"), version="1.0.0")
    handled: list[str] = []

    @svc.subscribe
    async def placed(event: orders.OrderPlaced) -> None:
        app.info("handling order %s", event.order_id)
        handled.append(event.order_id)
        if event.order_id == "bad":
            raise RuntimeError("the handler failed")

    @svc.rpc
    async def place(req: orders.PlaceOrder, ctx: Context) -> orders.OrderAccepted:
        app.warning("placing for %s", req.customer_id)
        raise ServiceError("refused on purpose", code=409)

    async with (
        Connection(ConnectOptions.from_env(nats_server.url, environ={})) as conn,
        svc.serving(conn) as running,
    ):
        client = Client(conn, source="/test")
        good = Event.of(
            orders.OrderPlaced(order_id="good"), source="/test", extensions={"traceparent": TRACEPARENT}
        )
        bad = Event.of(orders.OrderPlaced(order_id="bad"), source="/test")
        await client.publish(good)
        await client.publish(bad)
        await eventually(lambda: len(handled) == 2)
        with pytest.raises(ServiceError):
            await client.call(
                f"{svc.name}.place", orders.PlaceOrder(customer_id="c-9"), returns=orders.OrderAccepted
            )
        app.info("outside any handler")
        instance = running.id

    lines = [json.loads(line) for line in stream.getvalue().splitlines()]  # every line is JSON
    assert all({"time", "level", "logger", "message"} <= set(line) for line in lines)
    by_message = {line["message"]: line for line in lines}

    good_line = by_message["handling order good"]
    assert good_line["level"] == "info"
    assert good_line["logger"] == "app.orders"
    assert good_line["service"] == svc.name
    assert good_line["instance"] == instance
    assert good_line["handler"] == "placed"
    assert good_line["event_id"] == good.get_id()
    assert good_line["event_type"] == "shop.orders.v1.OrderPlaced"
    assert good_line["trace_id"] == TRACE_ID
    assert good_line["subject"] == "events.shop.orders.v1.OrderPlaced"
    assert good_line["time"].endswith("Z")

    failure = next(line for line in lines if line["message"].startswith(f"service {svc.name}: event handler"))
    assert failure["level"] == "error"
    assert failure["event_id"] == bad.get_id()
    assert "trace_id" not in failure  # the bad event had no traceparent
    assert failure["exception_type"] == "RuntimeError"
    assert "the handler failed" in failure["exception"]

    rpc_line = by_message["placing for c-9"]
    assert (rpc_line["service"], rpc_line["handler"], rpc_line["level"]) == (svc.name, "place", "warning")
    assert rpc_line["event_type"] == "shop.orders.v1.PlaceOrder"
    assert rpc_line["correlation_id"]

    outside = by_message["outside any handler"]
    assert not {"service", "handler", "event_id"} & set(outside)


async def test_logging_middleware_fields_and_the_text_format(
    nats_server: NatsServer, restore_root: None
) -> None:
    from eventmicro import logging_middleware

    stream = io.StringIO()
    em_logs.configure(json=False, level=logging.INFO, stream=stream)
    svc = Service(unique("textsvc"), version="1.0.0", middleware=[logging_middleware()])

    @svc.rpc
    async def echo(req: orders.PlaceOrder) -> orders.OrderAccepted:
        return orders.OrderAccepted(order_id=req.customer_id)

    async with Connection(ConnectOptions.from_env(nats_server.url, environ={})) as conn, svc.serving(conn):
        await Client(conn, source="/t").call(f"{svc.name}.echo", orders.PlaceOrder(customer_id="x"),
                                             returns=orders.OrderAccepted)  # fmt: skip
    text = stream.getvalue()
    handled = next(line for line in text.splitlines() if "eventmicro.handled" in line)
    assert f"service={svc.name}" in handled
    assert "handler=echo" in handled
    assert "event_type=shop.orders.v1.PlaceOrder" in handled

    json_stream = io.StringIO()
    em_logs.configure(json=True, stream=json_stream)
    record = logging.LogRecord("eventmicro.handled", logging.INFO, __file__, 1, "m", None, None)
    record.eventmicro = {"duration_ms": 1.5, "outcome": "ok"}
    logging.getLogger("eventmicro.handled").handle(record)
    line = json.loads(json_stream.getvalue())
    assert (line["duration_ms"], line["outcome"]) == (1.5, "ok")


def test_trace_ids_and_url_redaction() -> None:
    assert em_logs.trace_id(TRACEPARENT) == TRACE_ID
    assert em_logs.trace_id("00-" + "0" * 32 + "-00f067aa0ba902b7-01") is None
    assert em_logs.trace_id("garbage") is None
    assert (
        em_logs.redact("to nats://alice:pw@h:4222 and tls://tok@h2")
        == "to nats://alice:***@h:4222 and tls://***@h2"
    )
    assert em_logs.redact("mail me at a@b.c") == "mail me at a@b.c"


async def test_a_log_record_about_a_deeply_nested_event_loses_no_reply(
    conn: Connection, json_logs: io.StringIO, eventually: Eventually
) -> None:
    """The context filter parses a structured event's body for its id; a deeply nested body
    made it raise RecursionError out of the logging call in the error boundary, which failed
    the handler task, aborted the instance's task group and cancelled an RPC in flight (its
    reply lost)."""
    svc = Service(unique("obsrev"), version="1.0.0")
    entered = asyncio.Event()
    release = asyncio.Event()
    subject = f"{svc.name}.notes"

    @svc.rpc
    async def slow(req: Ask) -> Answer:
        entered.set()
        await release.wait()
        return Answer(req.key)

    @svc.subscribe(subject=subject)
    async def note(event: Note) -> None:
        pass

    async with svc.serving(conn) as running:
        call = asyncio.create_task(
            Client(conn, source="/t").call(f"{svc.name}.slow", Ask("o-1"), returns=Answer, timeout=5)
        )
        await asyncio.wait_for(entered.wait(), 5)
        nested = b'{"data":' + b"[" * 5000 + b"]" * 5000 + b"}"
        await conn.publish(subject, nested, headers={"content-type": "application/cloudevents+json"})
        stats = running.event_stats["note"]
        await eventually(lambda: stats.num_errors == 1)
        release.set()
        accepted = await call  # with the defect: cancelled by the aborted task group, a Timeout
        assert accepted.key == "o-1"
        await eventually(lambda: "not handled by note" in json_logs.getvalue())


# --- no secrets ---------------------------------------------------------------------------------


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def opts(url: str, **overrides: Any) -> ConnectOptions:
    overrides.setdefault("connect_attempts", 2)
    overrides.setdefault("connect_timeout", 1.0)
    return ConnectOptions.from_env(url, environ={}, **overrides)


async def test_no_credential_appears_in_any_log_record(collected: Collect, eventually: Eventually) -> None:
    users = (
        f'authorization {{ users: [ {{ user: alice, password: "{URL_PASSWORD}" }}, '
        f'{{ user: bob, password: "{OPTIONS_PASSWORD}" }} ] }}'
    )
    with NatsServer(jetstream=True, extra_config=users) as server:
        port = server.url.rsplit(":", 1)[1]
        # connect failures: refused credentials (options and URL), and nothing listening
        with pytest.raises(AuthorizationError):
            await Connection(opts(server.url, user="bob", password=WRONG[0])).open()
        with pytest.raises(AuthorizationError):
            await Connection(opts(f"nats://alice:{WRONG[1]}@127.0.0.1:{port}")).open()
        with pytest.raises(ConnectError):
            await Connection(opts(f"nats://alice:{WRONG[3]}@127.0.0.1:{closed_port()}")).open()

        # serving with a password in the URL, calling with a password in the options
        url = f"nats://alice:{URL_PASSWORD}@127.0.0.1:{port}"
        svc = Service(unique("secretsvc"), version="1.0.0")
        failures: list[str] = []

        @svc.rpc
        async def place(req: orders.PlaceOrder, ctx: Context) -> orders.OrderAccepted:
            if req.customer_id == "crash":
                raise RuntimeError(f"crashed while connected to {ctx.service.name}")
            await ctx.call("nobody.home", req, returns=orders.OrderAccepted, timeout=1)  # NoResponders: 502
            return orders.OrderAccepted()

        @svc.subscribe
        async def placed(event: orders.OrderPlaced) -> None:
            failures.append(event.order_id)
            raise ValueError("an event handler failed")

        async with (
            Connection(opts(url, reconnect_wait=0.1)) as serving_conn,
            svc.serving(serving_conn),
            Connection(opts(server.url, user="bob", password=OPTIONS_PASSWORD, reconnect_wait=0.1)) as conn,
        ):
            client = Client(conn, source="/t")
            with pytest.raises(InternalError):
                await client.call(f"{svc.name}.place", orders.PlaceOrder(customer_id="crash"),
                                  returns=orders.OrderAccepted, timeout=5)  # fmt: skip
            with pytest.raises(ServiceError) as upstream:
                await client.call(f"{svc.name}.place", orders.PlaceOrder(customer_id="ok"),
                                  returns=orders.OrderAccepted, timeout=5)  # fmt: skip
            assert upstream.value.instance_code == 502
            await client.publish(orders.OrderPlaced(order_id="x"))
            await eventually(lambda: failures == ["x"])

            # reconnects: the server goes away and comes back on the same port
            server.restart()

            def reconnected() -> bool:
                said = [r.getMessage() for r in collected.records]
                return sum("reconnected to NATS" in m for m in said) >= 2

            await eventually(reconnected, timeout=20)
            with pytest.raises(NoResponders):
                await client.call("nobody.home", orders.PlaceOrder(), returns=orders.OrderAccepted, timeout=2)

    with NatsServer(jetstream=False, extra_config=f'authorization {{ token: "{TOKEN}" }}') as server:
        port = server.url.rsplit(":", 1)[1]
        with pytest.raises(AuthorizationError):
            await Connection(opts(server.url, token=WRONG[2])).open()
        async with Connection(opts(f"nats://{TOKEN}@127.0.0.1:{port}")) as conn:
            await conn.publish("x", b"1")
        async with Connection(opts(server.url, token=TOKEN, reconnect_wait=0.1)) as conn:
            server.restart()
            await eventually(lambda: conn.is_connected and conn.state.value == "connected", timeout=20)

    said = [everything_said(record) for record in collected.records]
    assert len(said) > 20  # retries, refusals, failures, reconnects, handler errors were all logged
    joined = "\n".join(said)
    for expected in ("connect attempt", "reconnected to NATS", "handler place failed", "event handler"):
        assert expected in joined, expected
    assert "alice:***@" in joined  # the URL is named, without its password
    leaks = [(secret, text) for text in said for secret in SECRETS if secret in text]
    assert not leaks, leaks[0]


async def test_a_password_with_an_at_sign_is_hidden_whole(nats_server: NatsServer) -> None:
    """`redact` stopped the user-info at the first "@": ``nats://bob:p@ss@host`` showed the
    rest of the password (nats-py, like `redact_url`, splits at the last "@")."""
    secret_tail = "tail-SECRET-9f3"
    url = nats_server.url.replace("nats://", f"nats://bob:pa@{secret_tail}@", 1)
    record = logging.LogRecord(
        "nats.aio.client", logging.ERROR, __file__, 1, "could not connect to %s", (url,), None
    )
    for formatter in (em_logs.JsonFormatter(), em_logs.TextFormatter()):
        text = formatter.format(record)
        assert secret_tail not in text
        assert "bob:***@" in text
