"""The reference shop on a real nats-server configured by ``eventmicro permissions``.

The command writes the account ``SHOP`` (one nkey user per service, a ``web`` client that may
call orders, inventory and notifications, an ``ops`` administrator) and each user's seed and
env file; the server includes that file. Every service then runs on a connection of its own
made from its env file, and:

- the shop works end to end: orders placed by ``web`` settle (confirmed, or cancelled when
  payment fails), notifications hears of each, and no service was refused anything;
- a compromised notifications service, using its own credentials with raw nats-py over a real
  socket, can neither call billing nor publish ``PaymentCaptured`` (the server refuses both),
  nor listen in on billing's endpoint or replies; through eventmicro the same attempts raise
  `PermissionDenied` at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import nats
import nats.errors
import pytest

from eventmicro import Client, Connection, ConnectOptions, NatsServer, PermissionDenied
from eventmicro.cli.main import main
from eventmicro.transport.jetstream import subject_counts
from schemas.shop.billing.v1 import billing_pb2 as billing
from schemas.shop.notifications.v1 import notifications_pb2 as notifications_pb
from schemas.shop.orders.v1 import orders_pb2 as orders
from subscribers import (
    audit,
    inventory,
    notifications,
    shop,
)
from subscribers import (
    billing as billing_service,
)
from subscribers import (
    orders as orders_service,
)

SERVICES = (orders_service, inventory, billing_service, notifications, audit)
FINAL = (orders.ORDER_STATUS_CONFIRMED, orders.ORDER_STATUS_CANCELLED)
CAPTURED = "events.shop.billing.v1.PaymentCaptured"


@pytest.fixture(scope="module")
def secrets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("secrets")
    modules = [f"subscribers.{module.svc.name}" for module in SERVICES]
    web = "web=orders,inventory,notifications"
    code = main(
        [
            "permissions",
            *modules,
            "--account",
            "SHOP",
            "--client",
            web,
            "--admin",
            "ops",
            "--out",
            str(folder),
        ]
    )
    assert code == 0
    return folder


@pytest.fixture(scope="module")
def server(secrets: Path) -> Iterator[NatsServer]:
    srv = NatsServer()
    # nats-server takes an include's path relative to the including file
    srv.extra_config = f'include "{os.path.relpath(secrets / "accounts.conf", srv.directory)}"'
    with srv.start():
        yield srv


def env_of(secrets: Path, user: str) -> dict[str, str]:
    """What ``<user>.env`` sets, as the environment of that user's process would hold it."""
    lines = (secrets / f"{user}.env").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line)


def options(server: NatsServer, secrets: Path, user: str) -> ConnectOptions:
    return ConnectOptions.from_env(server.url, environ=env_of(secrets, user), connect_attempts=1)


@contextlib.asynccontextmanager
async def serving(server: NatsServer, secrets: Path, *modules: object) -> AsyncIterator[list[Connection]]:
    """Each module's service on a connection of its own user."""
    async with contextlib.AsyncExitStack() as stack:
        connections = []
        for module in modules:
            svc = module.svc  # type: ignore[attr-defined]
            conn = await stack.enter_async_context(Connection(options(server, secrets, svc.name)))
            await stack.enter_async_context(svc.serving(conn))
            connections.append(conn)
        yield connections


async def settled(client: Client, order_id: str) -> orders.Order:
    """The order once settled, asked the way a front end would: ``orders.get``."""
    async with asyncio.timeout(30):
        while True:
            order = await client.call("orders.get", orders.GetOrder(order_id=order_id), returns=orders.Order)
            if order.status in FINAL:
                return order
            await asyncio.sleep(0.05)


async def test_the_shop_works_with_least_privilege_users(
    server: NatsServer, secrets: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shop, "FLAKY_PERCENT", 0)  # no backoff waits: this test is about permissions
    monkeypatch.setattr(shop, "FAIL_PERCENT", 50)  # both outcomes among 12 orders (all but surely)
    async with (
        serving(server, secrets, *SERVICES) as connections,
        Connection(options(server, secrets, "web")) as web,
    ):
        client = Client(web, source="/web")
        accepted = []
        for n in range(12):
            item = orders.LineItem(sku="sku-002", quantity=1, unit_price_cents=shop.PRICE_CENTS)
            placed = orders.PlaceOrder(customer_id=f"customer-{n}", items=[item], currency="EUR")
            accepted.append(
                await client.call("orders.place", placed, returns=orders.OrderAccepted, timeout=5)
            )
        final = [await settled(client, a.order_id) for a in accepted]
        for order in final:  # a declined payment cancels the order: the compensation ran too
            declined = shop.payment_declined(order.order_id)
            assert order.status == (
                orders.ORDER_STATUS_CANCELLED if declined else orders.ORDER_STATUS_CONFIRMED
            )

        async with asyncio.timeout(10):  # notifications hears of every order (core, broadcast)
            while True:
                recent = await client.call(
                    "notifications.recent",
                    notifications_pb.RecentNotifications(limit=100),
                    returns=notifications_pb.NotificationList,
                )
                if {a.order_id for a in accepted} <= {n.order_id for n in recent.notifications}:
                    break
                await asyncio.sleep(0.05)
        for conn in [*connections, web]:
            assert (conn.stats.denied_publish, conn.stats.denied_subscribe) == (0, 0), (
                conn.options.inbox_prefix
            )


async def test_a_compromised_notifications_service_cannot_charge_or_confirm(
    server: NatsServer, secrets: Path
) -> None:
    refusals: asyncio.Queue[str] = asyncio.Queue()

    async def on_error(error: Exception) -> None:
        await refusals.put(str(error))

    async def refused() -> str:
        async with asyncio.timeout(5):
            return await refusals.get()

    env = env_of(secrets, "notifications")
    async with serving(server, secrets, billing_service), Connection(options(server, secrets, "ops")) as ops:
        before = (await subject_counts(ops, "SHOP")).get(CAPTURED, 0)
        raw = await nats.connect(
            server.url,
            nkeys_seed=env["EVENTMICRO_NATS_NKEY_SEED"],
            inbox_prefix=env["EVENTMICRO_NATS_INBOX_PREFIX"],
            error_cb=on_error,
            allow_reconnect=False,
        )
        try:
            # calling billing: the server refuses the request, no reply ever comes
            asking = asyncio.ensure_future(raw.request("billing.get_payment", b"", timeout=2))
            assert 'publish to "billing.get_payment"' in await refused()
            with pytest.raises(nats.errors.TimeoutError):
                await asking
            # confirming a payment that never happened: core and JetStream publish alike
            await raw.publish(CAPTURED, b"forged")
            assert f'publish to "{CAPTURED.lower()}"' in await refused()  # nats-py lower-cases it
            with pytest.raises(nats.errors.TimeoutError):
                await raw.jetstream(timeout=2).publish(CAPTURED, b"forged")
            assert "permissions violation" in await refused()
            # nor listen in: billing's endpoint, billing's replies, the payments bucket
            for subject in ("billing.get_payment", "_INBOX_billing.>", "$KV.payments.>"):
                await raw.subscribe(subject)
                assert f'subscription to "{subject.lower()}"' in await refused()
            await raw.flush()
            assert raw.is_connected  # refusals do not end the connection
        finally:
            await raw.close()
        assert (await subject_counts(ops, "SHOP")).get(CAPTURED, 0) == before  # nothing forged was stored

        async with Connection(options(server, secrets, "notifications")) as conn:  # through eventmicro
            client = Client(conn, source="/notifications")
            started = time.monotonic()
            with pytest.raises(PermissionDenied) as call:
                await client.call(
                    "billing.get_payment", billing.GetPaymentRequest(order_id="o-1"), returns=billing.Payment
                )
            assert call.value.subject == "billing.get_payment"
            forged = billing.PaymentCaptured(order_id="o-1", payment_id="pay-x", amount_cents=1)
            with pytest.raises(PermissionDenied) as publish:
                await client.publish(forged, durable=True)
            assert publish.value.subject == CAPTURED  # named as sent
            assert time.monotonic() - started < 2, "refusals are immediate, not timeouts"
            assert conn.stats.denied_publish == 2
