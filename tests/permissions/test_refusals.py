"""Refusals are loud: what a connection whose NATS user lacks a permission sees, on a real server.

The server here has one user, ``limited``, allowed to publish on ``allowed.>`` and to subscribe
to ``mine.>`` and its own inbox ``_INBOX_limited.>``, with responses allowed; ``admin`` may do
anything. A refused request fails at once with `PermissionDenied` (not a `Timeout`), a refused
subscription fails when made, and a refused plain publish is counted and logged with its subject.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from eventmicro import (
    Client,
    ConfigurationError,
    Connection,
    ConnectOptions,
    Context,
    InternalError,
    Message,
    NatsServer,
    NoResponders,
    PermissionDenied,
    Service,
)
from eventmicro import metrics as em_metrics
from schemas.shop.billing.v1 import billing_pb2 as billing
from schemas.shop.orders.v1 import orders_pb2 as orders

CONFIG = """
authorization {
  users: [
    {user: limited, password: limited-pw, permissions: {
        publish: {allow: ["allowed.>"]},
        subscribe: {allow: ["mine.>", "_INBOX_limited.>"]},
        allow_responses: true}},
    {user: svc, password: svc-pw, permissions: {
        publish: {allow: ["svc.>"]},
        subscribe: {allow: ["svc.>", "$SRV.>", "_INBOX_svc.>"]},
        allow_responses: true}},
    {user: admin, password: admin-pw}
  ]
}
"""


@pytest.fixture(scope="module")
def server() -> Iterator[NatsServer]:
    with NatsServer(jetstream=False, extra_config=CONFIG).start() as srv:
        yield srv


def options(url: str, user: str, password: str, **more: object) -> ConnectOptions:
    return ConnectOptions.from_env(url, environ={}, user=user, password=password, connect_attempts=1, **more)


@pytest_asyncio.fixture
async def limited(server: NatsServer) -> AsyncIterator[Connection]:
    async with Connection(
        options(server.url, "limited", "limited-pw", inbox_prefix="_INBOX_limited")
    ) as conn:
        yield conn


@pytest_asyncio.fixture
async def admin(server: NatsServer) -> AsyncIterator[Connection]:
    async with Connection(options(server.url, "admin", "admin-pw")) as conn:
        yield conn


async def answer(msg: Message) -> None:
    pass


async def test_refused_request_fails_at_once_naming_the_subject(
    limited: Connection, admin: Connection
) -> None:
    async def echo(msg: Message) -> None:
        await admin.publish(msg.reply, msg.data)

    await admin.subscribe("Billing.Charge", echo)  # someone answers: only the permission is missing
    started = time.monotonic()
    with pytest.raises(PermissionDenied) as caught:
        await limited.request("Billing.Charge", b"x", timeout=5.0)
    assert time.monotonic() - started < 2.0, "a refused request must not wait for its timeout"
    assert caught.value.subject == "Billing.Charge"  # as sent, not lower-cased
    assert caught.value.operation == "publish"
    assert caught.value.code == 403
    assert "Billing.Charge" in str(caught.value)
    assert limited.stats.denied_publish == 1


async def test_permitted_request_gets_its_reply_on_the_own_inbox(
    limited: Connection, admin: Connection
) -> None:
    seen: list[str] = []

    async def echo(msg: Message) -> None:
        seen.append(msg.reply)
        await admin.publish(msg.reply, b"pong:" + msg.data)

    await admin.subscribe("allowed.echo", echo)
    reply = await limited.request("allowed.echo", b"1", timeout=5.0)
    assert reply.data == b"pong:1"
    assert seen[0].startswith("_INBOX_limited.")
    assert limited.stats.denied_publish == 0


async def test_refused_subscription_fails_when_made(limited: Connection) -> None:
    with pytest.raises(PermissionDenied) as caught:
        await limited.subscribe("Others.Secrets", answer)
    assert caught.value.operation == "subscribe"
    assert caught.value.subject == "Others.Secrets"
    assert limited.stats.denied_subscribe == 1
    # the connection stays usable
    sub = await limited.subscribe("mine.ok", answer)
    await sub.unsubscribe()
    assert limited.is_connected


async def test_refused_queue_subscription_fails_too(limited: Connection) -> None:
    with pytest.raises(PermissionDenied):
        await limited.subscribe("billing.charge", answer, queue="billing")


async def test_refused_publish_is_logged_and_counted(
    limited: Connection, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="eventmicro.connection"):
        await limited.publish("events.shop.billing.v1.PaymentCaptured", b"forged")
        await limited.flush()  # the -ERR comes before the PONG
    assert limited.stats.denied_publish == 1
    lines = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert lines
    assert "'events.shop.billing.v1.PaymentCaptured'" in lines[0]
    assert "limited-pw" not in caplog.text


async def test_a_wrong_inbox_prefix_fails_requests_at_once(server: NatsServer, admin: Connection) -> None:
    """A user whose inbox prefix is not permitted cannot receive replies: said at once, not a timeout."""

    async def echo(msg: Message) -> None:
        await admin.publish(msg.reply, msg.data)

    await admin.subscribe("allowed.inbox", echo)
    async with Connection(options(server.url, "limited", "limited-pw")) as conn:  # default _INBOX
        for _ in range(2):  # and again: the next request is refused the same way
            started = time.monotonic()
            with pytest.raises(PermissionDenied) as caught:
                await conn.request("allowed.inbox", b"x", timeout=5.0)
            assert caught.value.operation == "subscribe"
            assert caught.value.subject.startswith("_INBOX.")
            assert time.monotonic() - started < 2.0


async def test_no_responders_still_differs_from_a_refusal(limited: Connection) -> None:
    with pytest.raises(NoResponders):
        await limited.request("allowed.nobody", b"", timeout=2.0)
    with pytest.raises(PermissionDenied):
        await limited.request("denied.nobody", b"", timeout=2.0)


def test_inbox_prefix_from_the_environment() -> None:
    opts = ConnectOptions.from_env("nats://h:1", environ={"EVENTMICRO_NATS_INBOX_PREFIX": "_INBOX_orders"})
    assert opts.inbox_prefix == "_INBOX_orders"
    assert ConnectOptions.from_env("nats://h:1", environ={}).inbox_prefix == "_INBOX"


@pytest.mark.parametrize("prefix", ["", "a.>", "a.*", "a..b", "a b", ".a"])
def test_inbox_prefix_must_be_a_plain_subject(prefix: str) -> None:
    with pytest.raises(ConfigurationError, match="inbox_prefix"):
        ConnectOptions(inbox_prefix=prefix)


async def test_a_service_without_its_subscriptions_does_not_start(limited: Connection) -> None:
    svc = Service("lonely", version="1.0.0")

    @svc.rpc
    async def hello(req: orders.GetOrder) -> orders.Order:
        return orders.Order(order_id=req.order_id)

    with pytest.raises(PermissionDenied) as caught:
        async with svc.serving(limited):
            pass
    assert caught.value.operation == "subscribe"
    assert caught.value.subject == "lonely.hello"


async def test_refusals_inside_a_handler_are_logged_by_the_service_and_counted(
    server: NatsServer, admin: Connection, caplog: pytest.LogCaptureFixture
) -> None:
    """The service's user may not call billing: its handler fails, which the service logs
    naming the subject; its remote caller gets an ordinary 500 with an error id (it is not
    told about the service's permissions)."""
    registry = CollectorRegistry()
    em_metrics.enable(registry)
    svc = Service("svc", version="1.0.0")

    @svc.rpc
    async def forge(req: orders.GetOrder, ctx: Context) -> orders.Order:
        await ctx.publish(billing.PaymentCaptured(order_id=req.order_id))  # core: fire and forget
        await ctx.call(
            "billing.get_payment", billing.GetPaymentRequest(order_id=req.order_id), returns=billing.Payment
        )
        return orders.Order(order_id=req.order_id)

    try:
        async with (
            Connection(options(server.url, "svc", "svc-pw", inbox_prefix="_INBOX_svc")) as conn,
            svc.serving(conn),
        ):
            with pytest.raises(InternalError) as caught:
                await Client(admin).call("svc.forge", orders.GetOrder(order_id="o-1"), returns=orders.Order)
            assert "billing" not in caught.value.message
            metrics = em_metrics.active()
            assert metrics is not None
            text = metrics.exposition()[0].decode()
    finally:
        em_metrics.disable()
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    publish = ("eventmicro_permission_denied_total", (("operation", "publish"), ("service", "svc")))
    assert samples[publish] == 2  # the event and the call
    causes = [r.exc_info[1] for r in caplog.records if r.exc_info is not None]  # the service's log
    assert any(isinstance(c, PermissionDenied) and c.subject == "billing.get_payment" for c in causes)
    assert any("'events.shop.billing.v1.PaymentCaptured'" in r.getMessage() for r in caplog.records)
