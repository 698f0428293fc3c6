"""Operator mode on a real nats-server: a memory resolver, JWTs issued by eventmicro, `.creds`.

The server trusts one operator; the account ``APP`` (JetStream enabled) is preloaded into its
memory resolver. Each user connects with a `.creds` file holding the user JWT that carries its
derived permissions: a service serves, stores and publishes durably with exactly those; a client
is refused what it was not granted, naming the subject; an expired JWT, or one from an operator
the server does not trust, is refused at connect, saying which.
"""

from __future__ import annotations

import os
import signal
import stat
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from eventmicro import (
    AuthorizationError,
    Client,
    Connection,
    ConnectionState,
    ConnectOptions,
    Context,
    NatsServer,
    NoResponders,
    PermissionDenied,
    Service,
    Store,
    Stream,
)
from eventmicro.cli.main import main
from eventmicro.service.operator import Authority, server_config, user_creds
from eventmicro.service.permissions import Permissions, admin, for_client, for_service
from eventmicro.wire.natsjwt import new_seed
from schemas.shop.inventory.v1 import inventory_pb2 as inventory
from schemas.shop.orders.v1 import orders_pb2 as orders
from subscribers.notifications import svc as notifications_svc

Eventually = Callable[..., Awaitable[None]]
AUTHORITY = Authority.new("APP")
TALLY = Stream("TALLY", ["events.shop.orders.>"])
tally = Service("tally", version="1.0.0", streams=[TALLY], publishes=[orders.OrderPlaced], stores=["counts"])


@tally.rpc
async def place(req: orders.PlaceOrder, ctx: Context) -> orders.OrderAccepted:
    counts = await ctx.store("counts", inventory.StockLevel)
    await counts.put(req.customer_id, inventory.StockLevel(sku=req.customer_id, available=len(req.items)))
    await ctx.publish(orders.OrderPlaced(order_id=req.customer_id, customer_id=req.customer_id), durable=True)
    return orders.OrderAccepted(order_id=req.customer_id)


@pytest.fixture(scope="module")
def server() -> Iterator[NatsServer]:
    with NatsServer(extra_config=server_config(AUTHORITY)).start() as srv:
        yield srv


def creds_file(folder: Path, grant: Permissions, authority: Authority = AUTHORITY, **more: int) -> Path:
    path = folder / f"{grant.user}.creds"
    path.write_text(user_creds(grant, new_seed("user"), authority, **more))
    return path


def connection(server: NatsServer, creds: Path, grant: Permissions) -> Connection:
    options = ConnectOptions.from_env(
        server.url, environ={}, creds_file=str(creds), inbox_prefix=grant.inbox, connect_attempts=1
    )
    return Connection(options)


async def test_a_service_with_its_creds_serves_stores_and_publishes_durably(
    server: NatsServer, tmp_path: Path
) -> None:
    service, web, ops = for_service(tally), for_client("web", calls=["tally"]), admin("ops")
    async with (
        connection(server, creds_file(tmp_path, service), service) as service_conn,
        connection(server, creds_file(tmp_path, web), web) as web_conn,
        connection(server, creds_file(tmp_path, ops), ops) as ops_conn,
        tally.serving(service_conn),
    ):
        request = orders.PlaceOrder(customer_id="c-1", items=[orders.LineItem(sku="s", quantity=1)])
        reply = await Client(web_conn).call("tally.place", request, returns=orders.OrderAccepted, timeout=5)
        assert reply.order_id == "c-1"
        counts = await Store.open(ops_conn, "counts", inventory.StockLevel)  # JetStream of APP
        entry = await counts.get("c-1")
        assert entry is not None
        assert entry.value == inventory.StockLevel(sku="c-1", available=1)
        info = await ops_conn.request("$JS.API.STREAM.INFO.TALLY", b"", timeout=5)
        assert b'"messages":1' in info.data  # the durable publish was stored
        assert (service_conn.stats.denied_publish, service_conn.stats.denied_subscribe) == (0, 0)


async def test_what_the_user_jwt_does_not_grant_is_refused_naming_the_subject(
    server: NatsServer, tmp_path: Path
) -> None:
    web = for_client("web", calls=["tally"])
    async with connection(server, creds_file(tmp_path, web), web) as conn:
        with pytest.raises(PermissionDenied) as caught:
            await conn.request("billing.charge", b"x", timeout=5)
        assert (caught.value.subject, caught.value.operation) == ("billing.charge", "publish")
        with pytest.raises(PermissionDenied) as subscribed:
            await conn.subscribe("tally.place", _ignore)
        assert subscribed.value.subject == "tally.place"


async def test_an_expired_user_jwt_is_refused_at_connect_saying_so(
    server: NatsServer, tmp_path: Path
) -> None:
    web = for_client("web", calls=["tally"])
    expired = creds_file(tmp_path, web, expires=int(time.time()) - 60)
    with pytest.raises(AuthorizationError) as caught:
        await connection(server, expired, web).open()
    assert "expired at" in str(caught.value)
    assert "issue new creds" in str(caught.value)


async def test_creds_of_another_operator_are_refused_at_connect(server: NatsServer, tmp_path: Path) -> None:
    ops = admin("ops")
    foreign = creds_file(tmp_path, ops, Authority.new("APP"))  # same names, other keys
    with pytest.raises(AuthorizationError) as caught:
        await connection(server, foreign, ops).open()
    assert "issued by an account of this server's operator" in str(caught.value)
    assert "SU" not in str(caught.value)  # nothing of the file's secret


async def test_a_changed_grant_is_a_new_creds_without_a_server_reload(
    server: NatsServer, tmp_path: Path
) -> None:
    narrow, wide = for_client("web", calls=["tally"]), for_client("web", calls=["tally", "billing"])
    async with connection(server, creds_file(tmp_path, narrow), narrow) as conn:
        with pytest.raises(PermissionDenied):
            await conn.request("billing.charge", b"x", timeout=5)
    async with connection(server, creds_file(tmp_path, wide), wide) as conn:
        with pytest.raises(NoResponders):  # granted now: sent, and nobody answers
            await conn.request("billing.charge", b"x", timeout=5)
        assert conn.stats.denied_publish == 0


async def test_a_reissued_creds_file_is_read_again_when_the_connection_reconnects(
    tmp_path: Path, eventually: Eventually
) -> None:
    narrow, wide = for_client("web", calls=["tally"]), for_client("web", calls=["tally", "billing"])
    creds = creds_file(tmp_path, narrow)
    options = ConnectOptions.from_env(
        environ={}, creds_file=str(creds), inbox_prefix=narrow.inbox, connect_attempts=1, reconnect_wait=0.1
    )
    with NatsServer(jetstream=False, extra_config=server_config(AUTHORITY)) as server:
        async with Connection(replace(options, servers=(server.url,))) as conn:
            with pytest.raises(PermissionDenied):
                await conn.request("billing.charge", b"x", timeout=5)
            await server.astop()
            await eventually(lambda: conn.state is ConnectionState.RECONNECTING)
            creds_file(tmp_path, wide)  # the same path, a JWT with the wider grant
            await server.astart()  # same port: the connection comes back, reading the file again
            await eventually(lambda: conn.state is ConnectionState.CONNECTED)
            with pytest.raises(NoResponders):
                await conn.request("billing.charge", b"x", timeout=5)


async def test_the_command_writes_a_configuration_nats_server_runs_in_operator_mode(
    capsys: pytest.CaptureFixture[str],
) -> None:
    server = NatsServer(jetstream=False)
    folder = server.directory / "secrets"
    modules = ["subscribers.notifications", "subscribers.billing"]
    args = ["permissions", *modules, "--operator", "--client", "web=billing", "--admin", "ops"]
    assert main([*args, "--out", str(folder), "--expires-in", "30"]) == 0
    printed, config = capsys.readouterr().out, (folder / "operator.conf").read_text()
    for secret in ["billing.creds", "billing.nk", "authority/operator.nk", "authority/APP.nk"]:
        assert stat.S_IMODE((folder / secret).stat().st_mode) == 0o600, secret
    for seed in [*folder.glob("*.nk"), *folder.glob("authority/*.nk")]:
        assert seed.read_text().strip() not in printed + config  # no seed shown, none in the config
    server.extra_config = 'include "secrets/operator.conf"'
    with server.start():
        env = dict(line.split("=", 1) for line in (folder / "notifications.env").read_text().splitlines())
        assert env["EVENTMICRO_NATS_CREDS"] == str((folder / "notifications.creds").resolve())
        options = ConnectOptions.from_env(server.url, environ=env, connect_attempts=1)
        assert options.inbox_prefix == "_INBOX_notifications"
        async with Connection(options) as notifications:
            with pytest.raises(PermissionDenied):  # notifications publishes nothing: deny ">"
                await notifications.request("billing.get_payment", b"x", timeout=5)
        kept, rotated = ((folder / f"{user}.nk").read_text() for user in ("notifications", "billing"))
        assert main([*args, "--out", str(folder), "--rotate", "billing"]) == 0
        assert (folder / "notifications.nk").read_text() == kept  # a second run keeps the keys
        assert (folder / "billing.nk").read_text() != rotated  # but the rotated one's


async def _ignore(msg: object) -> None:
    pass


async def test_a_new_signing_key_and_a_reload_refuse_older_creds_while_services_follow(
    tmp_path: Path, eventually: Eventually, caplog: pytest.LogCaptureFixture
) -> None:
    server = NatsServer(jetstream=False, extra_config='include "secrets/operator.conf"')
    folder = server.directory / "secrets"
    args = ["permissions", "subscribers.notifications", "--admin", "ops", "--operator", "--out", str(folder)]
    assert main(args) == 0
    old = tmp_path / "old.creds"
    old.write_text((folder / "notifications.creds").read_text())
    env = dict(line.split("=", 1) for line in (folder / "notifications.env").read_text().splitlines())
    options = ConnectOptions.from_env(
        environ=env, name="notifications", connect_attempts=1, reconnect_wait=0.1
    )
    with server.start():
        async with Connection(replace(options, servers=(server.url,))) as running:
            assert main([*args, "--new-signing-key"]) == 0  # new .creds in place, a new account JWT
            assert server.pid is not None
            os.kill(server.pid, signal.SIGHUP)
            await eventually(lambda: "reconnected to NATS" in caplog.text)  # dropped, back with the new file
            await running.flush()
            with pytest.raises(AuthorizationError):
                await connection(server, old, for_service(notifications_svc)).open()


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--operator"], "--operator needs --out"),
        (["--out", "{tmp}", "--expires-in", "30"], "--expires-in and --new-signing-key need --operator"),
        (["--out", "{tmp}", "--operator", "--expires-in", "0"], "--expires-in takes a number of days"),
        (["--out", "{tmp}", "--operator", "--expires-in", "inf"], "--expires-in takes a number of days"),
        (["--out", "{tmp}", "--operator", "--account", "SYS"], "the system account's name"),
        (
            ["--out", "{tmp}", "--operator", "--team", "BILLING=subscribers.billing"],
            "--operator writes one account",
        ),
    ],
)
def test_bad_operator_options_are_one_line_and_exit_2(
    arguments: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    given = [argument.replace("{tmp}", str(tmp_path)) for argument in arguments]
    assert main(["permissions", "subscribers.notifications", *given]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err
    assert not (tmp_path / "authority").exists()  # nothing written
