"""Connection settings: from arguments, then ``EVENTMICRO_*`` / ``NATS_URL`` environment, then defaults.

============================  ================================================
environment variable          meaning
============================  ================================================
EVENTMICRO_NATS_URL           comma-separated server URLs (wins over NATS_URL)
NATS_URL                      comma-separated server URLs
EVENTMICRO_NATS_USER          user name
EVENTMICRO_NATS_PASSWORD      password
EVENTMICRO_NATS_TOKEN         token
EVENTMICRO_NATS_NKEY_SEED     nkey seed file
EVENTMICRO_NATS_CREDS         .creds file
EVENTMICRO_NATS_NAME          connection name
EVENTMICRO_NATS_TLS_CA        CA bundle
EVENTMICRO_NATS_TLS_CERT      client certificate (with EVENTMICRO_NATS_TLS_KEY)
EVENTMICRO_NATS_INBOX_PREFIX  prefix of this connection's reply subjects
============================  ================================================

Secrets never appear in ``repr()`` or logs: `redact_url` strips passwords from URLs.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

from eventmicro._errors import ConfigurationError
from eventmicro.transport.creds import check_creds

__all__ = ["DEFAULT_URL", "ConnectOptions", "TLSOptions", "redact_url"]

DEFAULT_URL: Final = "nats://127.0.0.1:4222"
_INBOX_PREFIX: Final = re.compile(r"[A-Za-z0-9_$-]+(\.[A-Za-z0-9_$-]+)*")


@dataclass(frozen=True, slots=True)
class TLSOptions:
    """TLS for the NATS connection: a CA bundle to verify the server, and an optional client cert."""

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    hostname: str | None = None

    def __post_init__(self) -> None:
        if (self.cert_file is None) != (self.key_file is None):
            raise ConfigurationError("a TLS client certificate needs both cert_file and key_file")
        for path in (self.ca_file, self.cert_file, self.key_file):
            if path is not None and not Path(path).is_file():
                raise ConfigurationError(f"TLS file not found: {path}")


@dataclass(frozen=True, slots=True)
class ConnectOptions:
    """How to reach NATS. Build with `ConnectOptions.from_env`, which reads the environment.

    ``connect_attempts`` bounds the initial connect (exponential backoff between attempts);
    after that the connection reconnects forever unless ``max_reconnect_attempts`` says
    otherwise. ``no_randomize=True`` tries ``servers`` in the given order (nats-py shuffles
    them by default): a connection goes to the first reachable URL, e.g. to pin each instance
    to a cluster node while still listing every node for failover. A server that vanishes
    without closing the socket (power loss, partition) is noticed after ``ping_interval`` x
    ``max_outstanding_pings`` seconds (30 s x 2; nats-py's own default is 120 s x 2), after
    which the connection fails over to another server. ``inbox_prefix`` (default ``_INBOX``)
    starts the subjects replies come back on: give each service user its own (``_INBOX_orders``)
    and permit it only that one, and no service can read another's replies
    (``docs/permissions.md``).
    """

    servers: tuple[str, ...] = (DEFAULT_URL,)
    name: str | None = None
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    nkey_seed_file: str | None = None
    creds_file: str | None = None
    tls: TLSOptions | None = None
    connect_timeout: float = 2.0
    connect_attempts: int = 5
    reconnect_wait: float = 1.0
    max_reconnect_attempts: int = -1
    drain_timeout: float = 30.0
    pending_size: int = 2 * 1024 * 1024
    no_randomize: bool = False
    ping_interval: float = 30.0
    max_outstanding_pings: int = 2
    inbox_prefix: str = "_INBOX"

    def __post_init__(self) -> None:
        if not self.servers:
            raise ConfigurationError("at least one NATS server URL is needed")
        if not self.ping_interval > 0 or self.max_outstanding_pings < 1:
            raise ConfigurationError("ping_interval must be positive and max_outstanding_pings at least 1")
        for url in self.servers:
            scheme = urlsplit(url).scheme
            if scheme not in ("nats", "tls", "ws", "wss"):
                raise ConfigurationError(
                    f"unsupported server URL {redact_url(url)!r}: use nats://, tls://, ws:// or wss://"
                )
        if (self.user is None) != (self.password is None):
            raise ConfigurationError("user and password go together")
        methods = [
            m
            for m, on in (
                ("user/password", self.user is not None),
                ("token", self.token is not None),
                ("nkey seed", self.nkey_seed_file is not None),
                ("creds file", self.creds_file is not None),
            )
            if on
        ]
        if len(methods) > 1:
            raise ConfigurationError(f"choose one authentication method, not {' and '.join(methods)}")
        for path in (self.nkey_seed_file, self.creds_file):
            if path is not None and not Path(path).is_file():
                raise ConfigurationError(f"credentials file not found: {path}")
        if self.creds_file is not None:
            check_creds(self.creds_file)
        if not _INBOX_PREFIX.fullmatch(self.inbox_prefix):
            raise ConfigurationError(
                f"inbox_prefix {self.inbox_prefix!r} is not a subject prefix: tokens of letters, digits, "
                "'-', '_' or '$' separated by dots, no wildcards"
            )
        if self.connect_attempts < 1:
            raise ConfigurationError("connect_attempts must be at least 1")
        if self.connect_timeout <= 0 or self.drain_timeout <= 0:
            raise ConfigurationError("timeouts must be positive")

    @classmethod
    def from_env(
        cls,
        servers: str | list[str] | tuple[str, ...] | None = None,
        *,
        environ: Mapping[str, str] | None = None,
        **overrides: Any,
    ) -> ConnectOptions:
        """Options from arguments first, then the environment, then defaults.

        >>> ConnectOptions.from_env("nats://a:4222,nats://b:4222", environ={}).servers
        ('nats://a:4222', 'nats://b:4222')
        """
        env = os.environ if environ is None else environ
        if servers is None:
            servers = env.get("EVENTMICRO_NATS_URL") or env.get("NATS_URL") or DEFAULT_URL
        urls = _split_urls(servers)
        values: dict[str, Any] = {"servers": urls}
        for key, var in (
            ("user", "EVENTMICRO_NATS_USER"),
            ("password", "EVENTMICRO_NATS_PASSWORD"),
            ("token", "EVENTMICRO_NATS_TOKEN"),
            ("nkey_seed_file", "EVENTMICRO_NATS_NKEY_SEED"),
            ("creds_file", "EVENTMICRO_NATS_CREDS"),
            ("name", "EVENTMICRO_NATS_NAME"),
            ("inbox_prefix", "EVENTMICRO_NATS_INBOX_PREFIX"),
        ):
            if env.get(var):
                values[key] = env[var]
        ca, cert, private = (env.get(f"EVENTMICRO_NATS_TLS_{n}") for n in ("CA", "CERT", "KEY"))
        if ca or cert or private:
            values["tls"] = TLSOptions(ca_file=ca or None, cert_file=cert or None, key_file=private or None)
        values.update({k: v for k, v in overrides.items() if v is not None})
        if overrides.get("servers") is not None:
            values["servers"] = _split_urls(overrides["servers"])
        return replace(cls(), **values)

    def __repr__(self) -> str:
        shown = ", ".join(
            f"{f.name}={getattr(self, f.name)!r}"
            for f in fields(self)
            if f.repr and f.name != "servers" and getattr(self, f.name) != f.default
        )
        return f"ConnectOptions(servers={self.redacted_servers!r}{', ' + shown if shown else ''})"

    @property
    def redacted_servers(self) -> tuple[str, ...]:
        """The server URLs with any password replaced by ``***``, for logs."""
        return tuple(redact_url(url) for url in self.servers)


def _split_urls(servers: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    items = servers.split(",") if isinstance(servers, str) else list(servers)
    urls = tuple(u.strip() for u in items if u.strip())
    if not urls:
        raise ConfigurationError("at least one NATS server URL is needed")
    return tuple(u if "://" in u else f"nats://{u}" for u in urls)


def redact_url(url: str) -> str:
    """Hide credentials embedded in a URL.

    >>> redact_url("nats://alice:s3cret@host:4222")
    'nats://alice:***@host:4222'
    >>> redact_url("nats://t0ken@host:4222")
    'nats://***@host:4222'
    """
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    userinfo, host = parts.netloc.rsplit("@", 1)
    shown = f"{userinfo.split(':', 1)[0]}:***" if ":" in userinfo else "***"
    return urlunsplit(parts._replace(netloc=f"{shown}@{host}"))
