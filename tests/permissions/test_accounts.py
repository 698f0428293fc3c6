"""Which subjects cross between teams' accounts, derived from declarations (no server), and the
configuration ``eventmicro permissions --team`` writes (checked by ``nats-server -t``)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from eventmicro import ConfigurationError, Context, Service, find_server_binary
from eventmicro.cli.main import main
from eventmicro.service.accounts import Link, LinkKind, Team, plan
from eventmicro.service.permissions import admin, for_client
from schemas.shop.billing.v1 import billing_pb2 as billing
from schemas.shop.inventory.v1 import inventory_pb2 as inventory
from schemas.shop.orders.v1 import orders_pb2 as orders
from subscribers import inventory as inventory_service
from subscribers import orders as orders_service

CAPTURED = "events.shop.billing.v1.PaymentCaptured"


def payments() -> Service:
    svc = Service("payments", version="1.0.0", publishes=[billing.PaymentCaptured])

    @svc.rpc
    async def charge(req: billing.GetPaymentRequest, ctx: Context) -> billing.Payment:
        return billing.Payment()

    @svc.rpc
    async def refund(req: billing.GetPaymentRequest, ctx: Context) -> billing.Payment:
        return billing.Payment()

    @svc.subscribe
    async def on_reserved(event: inventory.StockReserved) -> None:
        pass

    return svc


def checkout(calls: list[str]) -> Service:
    svc = Service("checkout", version="1.0.0", calls=calls, publishes=[inventory.StockReserved])

    @svc.subscribe
    async def on_captured(event: billing.PaymentCaptured) -> None:
        pass

    @svc.subscribe(subject="events.shop.>")  # everything: takes in payments' events too
    async def audit(event: orders.OrderPlaced) -> None:
        pass

    return svc


def test_calls_and_event_handlers_across_teams_become_exports_and_imports() -> None:
    shop, money = plan(
        [
            Team(
                "SHOP", [checkout(["payments.charge"])], [for_client("web", calls=["payments"]), admin("ops")]
            ),
            Team("MONEY", [payments()]),
        ]
    )
    assert {(link.kind, link.subject) for link in shop.imports if not link.many} == {
        (LinkKind.SERVICE, "payments.*"),  # web calls the whole service
        (LinkKind.SERVICE, "payments.*.*"),  # its versioned subjects: checkout's one endpoint
        # (payments.charge, payments.*.charge) is inside these: imported twice, it would run twice
        (LinkKind.STREAM, CAPTURED),  # on_captured and audit both take it in: imported once
    }
    assert {link.subject for link in shop.imports if link.many} == {
        f"$SRV.{verb}.payments{suffix}" for verb in ("PING", "INFO", "STATS") for suffix in ("", ".*")
    }
    assert money.imports == (
        Link(LinkKind.STREAM, "events.shop.inventory.v1.StockReserved", "SHOP", "MONEY"),
    )
    assert {link.subject for link in money.exports} == {link.subject for link in shop.imports}
    assert all(link.importer == "SHOP" for link in money.exports)  # open to SHOP only
    assert [user.user for user in shop.users] == ["checkout", "web", "ops"]  # ops imports nothing


def test_a_handler_of_another_teams_dead_letters_imports_them() -> None:
    shop, stock = plan([Team("SHOP", [orders_service.svc]), Team("STOCK", [inventory_service.svc])])
    dead = Link(LinkKind.STREAM, "deadletter.inventory.on_order_placed", "STOCK", "SHOP")
    assert dead in shop.imports  # orders watches inventory's dead letters (to cancel the order)
    assert dead in stock.exports


def test_one_endpoint_alone_is_imported_alone() -> None:
    shop, _ = plan([Team("SHOP", [checkout(["payments.charge"])]), Team("MONEY", [payments()])])
    calls = {link.subject for link in shop.imports if link.kind is LinkKind.SERVICE and not link.many}
    assert calls == {"payments.charge", "payments.*.charge"}  # refund stays private


def test_one_team_shares_nothing() -> None:
    (only,) = plan([Team("SHOP", [checkout(["payments"]), payments()])])
    assert (only.exports, only.imports) == ((), ())


@pytest.mark.parametrize(
    ("teams", "message"),
    [
        ([Team("A", [payments()]), Team("B", [payments()])], "more than one service named payments"),
        ([Team("A", [payments()]), Team("A", [checkout([])])], "more than one account named A"),
        ([Team("A", [], [admin("ops")]), Team("B", [], [admin("ops")])], "more than one user named ops"),
        ([Team("bad account", [payments()])], "bad account"),
    ],
)
def test_clashes_are_configuration_errors(teams: list[Team], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        plan(teams)


def test_a_grant_reaching_two_other_accounts_is_refused() -> None:
    other = Service("payouts", version="1.0.0")

    @other.rpc
    async def charge(req: billing.GetPaymentRequest, ctx: Context) -> billing.Payment:
        return billing.Payment()

    client = for_client("web", calls=["*.charge"])
    with pytest.raises(ConfigurationError, match=r"'\*.charge' reaches services of the accounts A, B"):
        plan([Team("A", [payments()]), Team("B", [other]), Team("C", [], [client])])


def test_the_command_writes_accounts_that_nats_server_takes(tmp_path: Path) -> None:
    arguments = [
        "--team",
        "SHOP=subscribers.orders,subscribers.inventory",
        "--team",
        "BILLING=subscribers.billing",
    ]
    arguments += ["--client", "web@SHOP=orders,billing", "--admin", "ops", "--out", str(tmp_path)]
    assert main(["permissions", *arguments]) == 0
    text = (tmp_path / "accounts.conf").read_text()
    assert '{service: "billing.*", accounts: ["SHOP"]}' in text
    assert '{service: "$SRV.INFO.billing", response_type: stream, accounts: ["SHOP"]}' in text
    assert '{stream: {account: "BILLING", subject: "events.shop.billing.v1.PaymentCaptured"}}' in text
    assert "APP {" in text  # ops, without @ACCOUNT, is in --account (default APP)
    server = tmp_path / "server.conf"
    server.write_text('include "accounts.conf"\n')
    checked = subprocess.run(
        [find_server_binary(), "-t", "-c", str(server)], check=False, capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stderr


def test_the_command_describes_what_crosses(capsys: pytest.CaptureFixture[str]) -> None:
    arguments = ["--team", "SHOP=subscribers.orders", "--team", "BILLING=subscribers.billing"]
    assert main(["permissions", *arguments]) == 0
    out = capsys.readouterr().out
    assert "account BILLING" in out
    assert f"exports stream   {CAPTURED}  to SHOP" in out
    assert f"imports stream   {CAPTURED}  from BILLING" in out
