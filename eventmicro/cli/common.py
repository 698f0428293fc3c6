"""What the CLI verbs share: the NATS connection options, ``--schemas``, and reading JSON arguments.

Each connection flag has an environment variable of the same meaning (the flag wins), so the
same command works with flags on a laptop and with the environment in a container. Prefer the
environment or a file (``--creds``, ``--nkey``) for secrets: command lines are visible to other
local users.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final, TypeAlias

from eventmicro.cli.failures import ToolError
from eventmicro.transport.config import ConnectOptions
from eventmicro.transport.connection import Connection
from eventmicro.wire.types import DEFAULT_SCHEMAS, load_schemas

__all__ = [
    "FLAGS",
    "NATS_HELP",
    "SCHEMAS_VARIABLE",
    "SOURCE",
    "Subparsers",
    "add_connection_flags",
    "add_nats_options",
    "connect_options",
    "connection",
    "connection_env",
    "load_type_package",
    "read_json",
]

# what each verb module's ``register(subparsers)`` adds its parser to
Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"

SOURCE: Final = "/eventmicro/cli"  # the CloudEvent source of what the CLI sends
SCHEMAS_VARIABLE: Final = "EVENTMICRO_SCHEMAS"  # default --schemas: packages, comma-separated
NATS_HELP: Final = "NATS: --url, or EVENTMICRO_NATS_URL / NATS_URL and the other EVENTMICRO_NATS_* variables."

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


# --- the connection -----------------------------------------------------------------------


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


def connection(args: argparse.Namespace) -> Connection:
    """A connection per ``--url``, with auth and TLS from the ``EVENTMICRO_NATS_*`` environment."""
    return Connection(connect_options(args))


# --- --url and --schemas ------------------------------------------------------------------


def add_nats_options(parser: argparse.ArgumentParser, *, schemas: bool) -> None:
    """The options every tool has: ``--url`` and, where payloads are typed, ``--schemas``."""
    parser.add_argument("--url", default=None, help="NATS URL (default: from the environment)")
    if schemas:
        parser.add_argument(
            "--schemas",
            action=_Packages,
            metavar="PKG",
            default=_env_schemas(),
            help=f"a package of protobuf modules to load, repeatable (default: {SCHEMAS_VARIABLE}, "
            "comma-separated, else schemas)",
        )


class _Packages(argparse._AppendAction):
    """``--schemas``: repeatable; given at all, it replaces the packages of the environment."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        if getattr(namespace, self.dest, None) is self.default:
            setattr(namespace, self.dest, None)
        super().__call__(parser, namespace, values, option_string)


def _env_schemas() -> list[str] | None:
    packages = [p.strip() for p in os.environ.get(SCHEMAS_VARIABLE, "").split(",") if p.strip()]
    return packages or None


def load_type_package(type_name: str, loaded: Sequence[str] | None) -> bool:
    """Load the package of the current directory that ``type_name`` starts with (the layout of
    `eventmicro new`: type ``order_tracker.v1.Greet``, package ``./order_tracker``); whether
    there was one to load. Only the current directory is looked in: a type named by a remote
    service never makes this process import an arbitrary installed module.
    """
    top = type_name.removeprefix("type.googleapis.com/").partition(".")[0]
    if not top.isidentifier() or top in (loaded or DEFAULT_SCHEMAS):
        return False
    if not (Path.cwd() / top / "__init__.py").is_file():
        return False
    load_schemas([top])
    return True


# --- JSON arguments -----------------------------------------------------------------------


def read_json(text: str, what: str) -> Any:
    """Parse the JSON given on the command line (``-``: standard input, ``@FILE``: a file)."""
    if text == "-":
        text = sys.stdin.read()
    elif text.startswith("@"):
        try:
            text = Path(text[1:]).read_text(encoding="utf-8")
        except OSError as exc:
            raise ToolError(f"cannot read {what} from {text[1:]}: {exc.strerror}") from exc
    try:
        return json.loads(text)
    except ValueError as exc:
        raise ToolError(f"{what} is not valid JSON: {exc}") from exc
