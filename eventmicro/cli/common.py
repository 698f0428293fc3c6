"""What every CLI command that talks to NATS shares: the connection options.

Each flag has an environment variable of the same meaning (the flag wins), so the same command
works with flags on a laptop and with the environment in a container. Prefer the environment or
a file (``--creds``, ``--nkey``) for secrets: command lines are visible to other local users.
"""

from __future__ import annotations

import argparse
import os
from typing import Any, Final

from eventmicro.transport.config import ConnectOptions

# flag destination -> the environment variable ConnectOptions.from_env reads
FLAGS: Final = (
    ("user", "--user", "EVENTMICRO_NATS_USER", "user name (user/password auth)"),
    ("password", "--password", "EVENTMICRO_NATS_PASSWORD", "password (prefer the environment variable)"),
    ("token", "--token", "EVENTMICRO_NATS_TOKEN", "auth token (prefer the environment variable)"),
    ("creds", "--creds", "EVENTMICRO_NATS_CREDS", "a .creds file (JWT + nkey)"),
    ("nkey", "--nkey", "EVENTMICRO_NATS_NKEY_SEED", "an nkey seed file"),
    ("tls_ca", "--tls-ca", "EVENTMICRO_NATS_TLS_CA", "CA certificate file (TLS)"),
    ("tls_cert", "--tls-cert", "EVENTMICRO_NATS_TLS_CERT", "client certificate file (mutual TLS)"),
    ("tls_key", "--tls-key", "EVENTMICRO_NATS_TLS_KEY", "client key file (mutual TLS)"),
)


def add_connection_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("NATS connection (flags win over EVENTMICRO_NATS_* variables)")
    for dest, flag, variable, text in FLAGS:
        group.add_argument(flag, dest=dest, default=None, metavar=variable.removeprefix("EVENTMICRO_NATS_"),
                           help=f"{text}; env {variable}")  # fmt: skip


def connection_env(args: argparse.Namespace) -> dict[str, str]:
    """The environment variables the given flags stand for (to hand to child processes too)."""
    return {variable: value for dest, _, variable, _ in FLAGS if (value := getattr(args, dest, None))}


def connect_options(args: argparse.Namespace, **overrides: Any) -> ConnectOptions:
    """Options from ``--url`` and the connection flags, then the environment, then defaults."""
    return ConnectOptions.from_env(
        getattr(args, "url", None), environ={**os.environ, **connection_env(args)}, **overrides
    )
