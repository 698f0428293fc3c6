"""Teams as accounts on a real nats-server configured by ``eventmicro permissions --team``.

The shop is split in two teams: ``SHOP`` (orders, inventory, notifications, audit, the ``web``
client, the ``ops`` administrator) and ``BILLING`` (billing, its administrator
``ops-billing``). The command derives what crosses: billing consumes inventory's
``StockReserved`` (a stream import into BILLING), orders and inventory consume billing's
``PaymentCaptured``/``PaymentFailed`` (stream imports into SHOP), and ``web`` calls billing
(a service import into SHOP, with billing's ``$SRV`` discovery by name). Then:

- orders placed by ``web`` settle across the two accounts, with no refusal anywhere;
- ``web`` calls ``billing.get_payment`` unchanged through the import, errors included;
- discovery by name (``$SRV.INFO.billing``) crosses; the unnamed ``$SRV.PING`` does not;
- what billing's account does not export never reaches SHOP: a request gets no responders,
  an event of a type nobody imports is not delivered.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from eventmicro import Client, Connection, ConnectOptions, NatsServer, NoResponders, NotFound
from eventmicro.cli.main import main
from eventmicro.service.discovery import discover
from eventmicro.transport.message import Message
from schemas.shop.billing.v1 import billing_pb2 as billing
from schemas.shop.orders.v1 import orders_pb2 as orders
from subscribers import audit, inventory, notifications, shop
from subscribers import billing as billing_service
from subscribers import orders as orders_service

SHOP_TEAM = (orders_service, inventory, notifications, audit)
NOT_EXPORTED = "events.shop.billing.v1.PaymentRefunded"  # a type billing does not declare
CAPTURED = "events.shop.billing.v1.PaymentCaptured"
FINAL = (orders.ORDER_STATUS_CONFIRMED, orders.ORDER_STATUS_CANCELLED)


@pytest.fixture(scope="module")
def secrets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("teams")
    shop_modules = ",".join(f"subscribers.{module.svc.name}" for module in SHOP_TEAM)
    arguments = ["--team", f"SHOP={shop_modules}", "--team", "BILLING=subscribers.billing"]
    arguments += ["--client", "web@SHOP=orders,inventory,notifications,billing"]
    arguments += ["--client", "desk@SHOP=billing.get_payment"]  # one endpoint, inside web's billing.*
    arguments += ["--admin", "ops@SHOP", "--admin", "ops-billing@BILLING", "--out", str(folder)]
    assert main(["permissions", *arguments]) == 0
    return folder


@pytest.fixture(scope="module")
def server(secrets: Path) -> Iterator[NatsServer]:
    with NatsServer(extra_config=(secrets / "accounts.conf").read_text()).start() as srv:
        yield srv


def user(server: NatsServer, secrets: Path, name: str) -> Connection:
    """A connection as ``name``, with the environment its ``<name>.env`` file gives."""
    environ = dict(line.split("=", 1) for line in (secrets / f"{name}.env").read_text().splitlines())
    return Connection(ConnectOptions.from_env(server.url, environ=environ, connect_attempts=1))


@contextlib.asynccontextmanager
async def running(server: NatsServer, secrets: Path, *modules: Any) -> AsyncIterator[list[Connection]]:
    """The services of ``modules``, each on a connection of its own user."""
    async with contextlib.AsyncExitStack() as stack:
        connections = [await stack.enter_async_context(user(server, secrets, m.svc.name)) for m in modules]
        for module, conn in zip(modules, connections, strict=True):
            await stack.enter_async_context(module.svc.serving(conn))
        yield connections


async def place_orders(client: Client, count: int) -> list[orders.Order]:
    """``count`` orders placed by the front end, once all have settled (asked by ``orders.get``)."""
    ids = []
    for n in range(count):
        item = orders.LineItem(sku="sku-002", quantity=1, unit_price_cents=shop.PRICE_CENTS)
        placed = orders.PlaceOrder(customer_id=f"customer-{n}", items=[item], currency="EUR")
        ids.append(
            (await client.call("orders.place", placed, returns=orders.OrderAccepted, timeout=5)).order_id
        )
    async with asyncio.timeout(30):
        while True:
            found = [
                await client.call("orders.get", orders.GetOrder(order_id=i), returns=orders.Order)
                for i in ids
            ]
            if all(order.status in FINAL for order in found):
                return found
            await asyncio.sleep(0.05)  # a front end polls; the shop has no "settled" event


async def test_orders_settle_across_the_two_accounts(
    server: NatsServer, secrets: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shop, "FLAKY_PERCENT", 0)
    monkeypatch.setattr(shop, "FAIL_PERCENT", 50)  # both outcomes among 8 orders
    async with (
        running(server, secrets, *SHOP_TEAM, billing_service) as connections,
        user(server, secrets, "web") as web,
    ):
        client = Client(web, source="/web")
        final = await place_orders(client, 8)
        for order in final:  # billing (BILLING) heard StockReserved, orders (SHOP) its verdict
            declined = shop.payment_declined(order.order_id)
            expected = orders.ORDER_STATUS_CANCELLED if declined else orders.ORDER_STATUS_CONFIRMED
            assert order.status == expected
        # the front end in SHOP calls billing in BILLING by the same subject as ever
        confirmed = next(o for o in final if o.status == orders.ORDER_STATUS_CONFIRMED)
        payment = await client.call(
            "billing.get_payment",
            billing.GetPaymentRequest(order_id=confirmed.order_id),
            returns=billing.Payment,
        )
        assert (payment.order_id, payment.captured) == (confirmed.order_id, True)
        with pytest.raises(NotFound):  # a service error crosses the import as itself
            await client.call(
                "billing.get_payment", billing.GetPaymentRequest(order_id="none"), returns=billing.Payment
            )
        for conn in [*connections, web]:
            assert (conn.stats.denied_publish, conn.stats.denied_subscribe) == (0, 0), (
                conn.options.inbox_prefix
            )


async def test_discovery_by_name_crosses_the_import_the_unnamed_ping_does_not(
    server: NatsServer, secrets: Path
) -> None:
    async with (
        running(server, secrets, orders_service, billing_service, billing_service),  # billing twice
        user(server, secrets, "web") as web,
    ):
        async with asyncio.timeout(10):  # both instances answer through the import
            while len(info := await discover(web, "INFO", "billing")) < 2:
                pass
        assert [answer["name"] for answer in info] == ["billing", "billing"]
        assert "billing.get_payment" in {endpoint["subject"] for endpoint in info[0]["endpoints"]}
        instance = info[1]["id"]
        stats = await discover(web, "STATS", f"billing.{instance}")  # one instance, by its id
        assert [answer["id"] for answer in stats] == [instance]
        everyone = await discover(web, "PING")  # SHOP's own services only
        assert "orders" in {answer["name"] for answer in everyone}
        assert "billing" not in {answer["name"] for answer in everyone}


async def test_a_call_runs_once_though_two_grants_reach_its_endpoint(
    server: NatsServer, secrets: Path
) -> None:
    """``desk`` may call ``billing.get_payment``, ``web`` all of billing: one import serves both
    (nats-server hands a request to every import it matches: two imports, two runs)."""
    async with running(server, secrets, billing_service), user(server, secrets, "desk") as desk:
        with pytest.raises(NotFound):
            await Client(desk).call(
                "billing.get_payment", billing.GetPaymentRequest(order_id="o-1"), returns=billing.Payment
            )
        (stats,) = await discover(desk, "STATS", "billing")
        counts = {endpoint["name"]: endpoint["num_requests"] for endpoint in stats["endpoints"]}
        assert counts["get_payment"] == 1


async def test_what_billing_does_not_export_does_not_reach_shop(server: NatsServer, secrets: Path) -> None:
    heard: list[str] = []
    arrived = asyncio.Event()

    async def hear(msg: Message) -> None:
        heard.append(msg.subject)
        if msg.subject == CAPTURED:
            arrived.set()

    async def answer(msg: Message) -> None:
        await billing_admin.publish(msg.reply, b"internal")

    async with (
        user(server, secrets, "ops-billing") as billing_admin,
        user(server, secrets, "ops") as shop_admin,
    ):
        await billing_admin.subscribe("internal.ledger", answer)  # served in BILLING, not exported
        await shop_admin.subscribe("events.shop.billing.>", hear)
        assert (await billing_admin.request("internal.ledger", b"", timeout=5)).data == b"internal"
        with pytest.raises(NoResponders):  # the same request from SHOP finds nobody
            await shop_admin.request("internal.ledger", b"", timeout=5)
        # in order on one connection: the exported type arrives, the one published before it not
        await billing_admin.publish(NOT_EXPORTED, b"refund")
        await billing_admin.publish(CAPTURED, b"captured")
        async with asyncio.timeout(5):
            await arrived.wait()
        assert heard == [CAPTURED]
