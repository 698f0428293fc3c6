"""What a service's declarations grant its NATS user, and how ``eventmicro permissions`` writes it.

Pure derivation (no server), plus the command's files: the configuration is checked by
nats-server itself (``nats-server -t``), seeds are private files kept across runs unless rotated.
"""

from __future__ import annotations

import stat
import subprocess
from pathlib import Path

import pytest

from eventmicro import ConfigurationError, Context, Durable, Ordered, Service, Stream, find_server_binary
from eventmicro.cli.main import main
from eventmicro.service.permissions import admin, for_client, for_service, inbox_prefix
from eventmicro.service.serverconf import render
from schemas.shop.billing.v1 import billing_pb2 as billing
from schemas.shop.inventory.v1 import inventory_pb2 as inventory
from schemas.shop.orders.v1 import orders_pb2 as orders

STREAM = Stream("SHOP", ["events.shop.>"])


def declared() -> Service:
    svc = Service(
        "payments",
        version="1.0.0",
        streams=[STREAM],
        publishes=[billing.PaymentCaptured],
        calls=["inventory", "orders.get"],
        stores=["ledger"],
    )

    @svc.rpc
    async def charge(req: billing.GetPaymentRequest, ctx: Context) -> billing.Payment:
        return billing.Payment()

    @svc.subscribe(delivery=Durable())
    async def on_reserved(event: inventory.StockReserved) -> None:
        pass

    @svc.subscribe
    async def on_placed(event: orders.OrderPlaced) -> None:
        pass

    @svc.subscribe(delivery=Ordered())
    async def replay(event: orders.OrderCancelled) -> None:
        pass

    return svc


def test_a_service_may_serve_consume_publish_call_and_store_what_it_declares() -> None:
    grant = for_service(declared())
    assert grant.user == "payments"
    assert grant.inbox == inbox_prefix("payments") == "_INBOX_payments"
    assert grant.responses  # it answers requests on the caller's reply subject
    subscribe, publish = set(grant.subscribe), set(grant.publish)
    assert {"payments.charge", "events.shop.orders.v1.OrderPlaced", "_INBOX_payments.>"} <= subscribe
    assert "payments.v1.charge" in subscribe  # its major version's subject (call(..., version=1))
    assert {"$SRV.PING", "$SRV.INFO.payments", "$SRV.STATS.payments.*"} <= subscribe
    assert "events.shop.inventory.v1.StockReserved" not in subscribe  # durable: pulled, not subscribed
    assert {"events.shop.billing.v1.PaymentCaptured", "inventory.*", "orders.get"} <= publish
    assert {"inventory.*.*", "orders.*.get"} <= publish  # the same, asking for a major version
    assert {"$JS.API.STREAM.CREATE.SHOP", "$JS.API.STREAM.INFO.SHOP"} <= publish  # its declared stream
    assert {
        "$JS.API.CONSUMER.CREATE.SHOP.payments-on_reserved.>",
        "$JS.API.CONSUMER.MSG.NEXT.SHOP.payments-on_reserved",
        "$JS.ACK.SHOP.payments-on_reserved.>",
        "deadletter.payments.on_reserved",
    } <= publish
    assert {"$JS.API.CONSUMER.CREATE.SHOP", "$JS.API.CONSUMER.DELETE.SHOP.*"} <= publish  # ordered
    assert {"$KV.ledger.>", "$JS.API.DIRECT.GET.KV_ledger.>", "$JS.API.STREAM.INFO.KV_ledger"} <= publish


def test_nothing_beyond_the_declarations_is_granted() -> None:
    grant = for_service(declared())
    everything = set(grant.publish) | set(grant.subscribe)
    for wildcard in (">", "$JS.API.>", "$KV.>", "_INBOX.>", "events.>", "$SRV.>"):
        assert wildcard not in everything
    assert not any(s.startswith("_INBOX.") or s.startswith("_INBOX_orders") for s in everything)
    assert not any("billing" in s for s in grant.subscribe)
    assert not [s for s in grant.publish if s.startswith("$KV.") and s != "$KV.ledger.>"]
    assert len(grant.publish) == len(set(grant.publish))  # each once


def test_a_client_calls_and_discovers_but_serves_nothing() -> None:
    grant = for_client("web", calls=["orders"], publishes=[orders.OrderCancelled, "shop.x.v1.Y"])
    assert grant.subscribe == ("_INBOX_web.>",)
    assert not grant.responses
    assert set(grant.publish) == {
        "orders.*",
        "orders.*.*",  # orders.v2.place: a call asking for a major version
        "events.shop.orders.v1.OrderCancelled",
        "events.shop.x.v1.Y",
        "$SRV.*",
        "$SRV.*.*",
        "$SRV.*.*.*",
    }


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"calls": "billing"}, "calls= takes a list"),
        ({"calls": ["bad name"]}, "service name"),
        ({"calls": ["billing.>"]}, "not a valid NATS subject"),
        ({"stores": ["a.b"]}, "not a bucket name"),
        ({"stores": "ledger"}, "stores= takes a list"),
    ],
)
def test_wrong_declarations_fail_when_the_service_is_made(arguments: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        Service("x", version="1.0.0", **arguments)  # type: ignore[arg-type]


KEY = "U" + "A" * 55


def test_a_user_that_publishes_nothing_is_denied_every_publish() -> None:
    """nats-server reads an empty allow list as no restriction at all: it must be a deny."""
    quiet = Service("quiet", version="1.0.0")
    text = render("APP", [(for_service(quiet), KEY)])
    assert 'publish: {deny: [">"]}' in text
    assert "allow: []" not in text


def test_render_refuses_what_nats_server_would_misread() -> None:
    grant = for_service(Service("x", version="1.0.0"))
    with pytest.raises(ConfigurationError, match="public nkey"):
        render("APP", [(grant, "SUAAA")])  # a seed where a public key belongs
    with pytest.raises(ConfigurationError, match="two users"):
        render("APP", [(grant, KEY), (grant, KEY)])
    with pytest.raises(ConfigurationError):
        render("my account", [(grant, KEY)])
    assert "{nkey: " in render("APP", [(admin("ops"), KEY)])  # no permissions: everything


def run(tmp_path: Path, *extra: str) -> int:
    return main(
        ["permissions", "subscribers.billing", "subscribers.notifications", *extra, "--out", str(tmp_path)]
    )


def test_the_command_writes_a_configuration_nats_server_accepts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(tmp_path, "--account", "SHOP", "--client", "web=orders", "--admin", "ops") == 0
    config = tmp_path / "accounts.conf"
    checked = subprocess.run(
        [str(find_server_binary()), "-t", "-c", str(config)],
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    for user in ("billing", "notifications", "web", "ops"):
        seed = tmp_path / f"{user}.nk"
        assert stat.S_IMODE(seed.stat().st_mode) == 0o600  # the secret is its owner's only
        assert seed.read_text().startswith("SU")
        env = (tmp_path / f"{user}.env").read_text()
        assert f"EVENTMICRO_NATS_INBOX_PREFIX=_INBOX_{user}\n" in env
        assert f"EVENTMICRO_NATS_NKEY_SEED={seed.resolve()}\n" in env
    text, out = config.read_text(), capsys.readouterr().out
    for user in ("billing", "notifications", "web", "ops"):  # public keys only: no seed shown
        secret = (tmp_path / f"{user}.nk").read_text().strip()
        assert secret not in text
        assert secret not in out
        assert secret[2:12] not in text


def test_seeds_are_kept_unless_rotated(tmp_path: Path) -> None:
    assert run(tmp_path) == 0
    first = (tmp_path / "billing.nk").read_text(), (tmp_path / "notifications.nk").read_text()
    assert run(tmp_path) == 0
    assert ((tmp_path / "billing.nk").read_text(), (tmp_path / "notifications.nk").read_text()) == first
    assert run(tmp_path, "--rotate", "billing") == 0
    assert (tmp_path / "billing.nk").read_text() != first[0]
    assert (tmp_path / "notifications.nk").read_text() == first[1]


def test_listing_without_out_shows_each_users_subjects(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["permissions", "subscribers.notifications"]) == 0
    out = capsys.readouterr().out
    assert "notifications  (service notifications 1.0.0; inbox _INBOX_notifications.>)" in out
    assert "  subscribe  events.shop.orders.v1.OrderConfirmed" in out
    assert "  publish" not in out  # it publishes nothing


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["subscribers.nothing_here"], "cannot import"),
        (["subscribers.billing", "--client", "web"], "NAME=SERVICE"),
        (["subscribers.billing", "--admin", "billing"], "more than one user named billing"),
        (["subscribers.billing", "--rotate", "billing"], "--rotate needs --out"),
        (["--team", "SHOP"], "give ACCOUNT=MODULE"),  # teams as accounts (test_accounts.py)
        (["--team", "SHOP=subscribers.nothing_here"], "cannot import"),
        (["--team", "A=subscribers.billing", "--team", "B=subscribers.billing"], "more than one service"),
        ([], "give the modules of services"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    arguments: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["permissions", *arguments]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err


def test_a_broken_seed_file_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "billing.nk").write_text("not a seed")
    assert main(["permissions", "subscribers.billing", "--out", str(tmp_path)]) == 2
    assert "billing.nk does not hold a user nkey seed" in capsys.readouterr().err
