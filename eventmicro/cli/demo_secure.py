"""``eventmicro demo --secure``: the shop's least-privilege NATS users, and what one may not do.

The embedded server gets the account ``SHOP`` that ``eventmicro permissions`` derives from the
shop's services (its files in the server's temporary directory, removed with it): one nkey
user per service, the client ``web`` that places orders (it may call orders only) and the
administrator ``ops`` the demo watches with. Then notifications' user, as a compromised service
would, tries to call billing and to publish ``PaymentCaptured``: both must be refused.
"""

from __future__ import annotations

import importlib
from typing import Final

from eventmicro._errors import ConfigurationError, EventMicroError, PermissionDenied
from eventmicro.cli.failures import ToolError
from eventmicro.cli.permissions import write
from eventmicro.service.client import Client
from eventmicro.service.permissions import Permissions, admin, for_client, for_service
from eventmicro.transport.config import ConnectOptions
from eventmicro.transport.connection import Connection
from eventmicro.transport.server import NatsServer

__all__ = ["FORGERIES", "OPS", "WEB", "attempt_forgeries", "least_privilege"]

ACCOUNT: Final = "SHOP"
SHOP_SERVICES: Final = ("orders", "inventory", "billing", "notifications", "audit")
OPS: Final = "ops"
WEB: Final = "web"
FORGERIES: Final = ("call billing.get_payment", "publish events.shop.billing.v1.PaymentCaptured")


def least_privilege(server: NatsServer) -> dict[str, dict[str, str]]:
    """Configure the (not yet started) ``server`` with the shop's users; each user's environment
    (``EVENTMICRO_NATS_NKEY_SEED``, ``EVENTMICRO_NATS_INBOX_PREFIX``) by user name."""
    folder = server.directory / "secrets"
    users: list[Permissions] = [
        for_service(importlib.import_module(f"subscribers.{name}").svc) for name in SHOP_SERVICES
    ]
    users += [for_client(WEB, calls=["orders"]), admin(OPS)]
    try:
        write(folder, ACCOUNT, users, rotate=set())
    except ToolError as exc:
        raise ConfigurationError(f"--secure: {exc}") from exc
    server.extra_config = 'include "secrets/accounts.conf"'  # relative to the server's own file
    print(f"  least privilege: account {ACCOUNT}, one nkey user per service, {WEB} (calls orders), {OPS}")
    environments = {}
    for user in users:
        lines = (folder / f"{user.user}.env").read_text(encoding="utf-8").splitlines()
        environments[user.user] = dict(line.split("=", 1) for line in lines if "=" in line)
    return environments


def without_credentials(environ: dict[str, str]) -> dict[str, str]:
    """``environ`` without NATS credentials of the caller's own (each user brings its own)."""
    return {key: value for key, value in environ.items() if not key.startswith("EVENTMICRO_NATS_")}


async def attempt_forgeries(url: str, environ: dict[str, str], users: dict[str, dict[str, str]]) -> list[str]:
    """What notifications' user was refused of `FORGERIES`, as a compromised service would try."""
    from schemas.shop.billing.v1 import billing_pb2 as billing

    options = ConnectOptions.from_env(url, environ={**environ, **users["notifications"]}, connect_attempts=5)
    refused = []
    async with Connection(options) as connection:
        client = Client(connection, source="/notifications")
        try:
            ask = billing.GetPaymentRequest(order_id="ord-forged")
            await client.call("billing.get_payment", ask, returns=billing.Payment, timeout=5)
        except PermissionDenied as exc:
            refused.append(f"call {exc.subject}")
        except EventMicroError:
            pass  # answered: not refused
        try:
            forged = billing.PaymentCaptured(order_id="ord-forged", payment_id="pay-forged", amount_cents=1)
            await client.publish(forged, durable=True)
        except PermissionDenied as exc:
            refused.append(f"publish {exc.subject}")
        except EventMicroError:
            pass
    return refused
