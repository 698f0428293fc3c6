"""The gateway's clients: who may call, what they may reach, how fast (a TOML clients file).

::

    [[client]]
    id = "shop-web"                              # in logs and metrics (never the token)
    token_sha256 = "9f86d081884c7d65..."         # sha256 of the token, hex: the file holds no secret
    services = ["orders.*", "inventory.get_stock"]  # endpoints it may call (POST /api)
    events = ["shop.orders.v1.*"]                # event types it may publish (POST /events)
    discovery = true                             # /openapi.json, /asyncapi.json, the dashboard's data
    rate = 10                                    # requests per second, on average ...
    burst = 20                                   # ... and at most this many at once

A pattern is a name (``orders.place``), ``*`` (everything), or a name ending in ``.*``: every
name below it, at any depth (``shop.orders.*`` covers ``shop.orders.v1.OrderPlaced``). What a
client does not list it may not do; without ``rate`` it is not limited. The file is read once,
when the gateway starts; mistakes in it are a `ConfigurationError` naming the client and key.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from eventmicro._errors import ConfigurationError

__all__ = ["GatewayClient", "check_clients", "load_clients", "mint_token", "parse_clients", "token_digest"]

MAX_CLIENTS: Final = 10_000  # clients in one file: their hashes and buckets stay in memory
_ID: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:@-]{0,63}")  # printable, safe in logs and labels
_DIGEST: Final = re.compile(r"[0-9a-f]{64}")
_NAME_TOKEN: Final = re.compile(r"[^\s.*>]+")
_KEYS: Final = frozenset({"id", "token_sha256", "services", "events", "discovery", "rate", "burst"})


@dataclass(frozen=True, slots=True)
class GatewayClient:
    """One client of the gateway: its identity, the hash of its token, its scopes and rate.

    ``services`` and ``events`` are patterns (see the module docstring); ``rate`` requests per
    second with bursts of ``burst`` (a token bucket), or ``None`` for no limit.
    """

    id: str
    token_sha256: str = field(repr=False)
    services: tuple[str, ...] = ()
    events: tuple[str, ...] = ()
    discovery: bool = False
    rate: float | None = None
    burst: int = 1

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not _ID.fullmatch(self.id):
            raise ConfigurationError(
                "a client id is 1-64 letters, digits or _.:@- (starting with a letter or digit)"
            )
        if not isinstance(self.token_sha256, str) or not _DIGEST.fullmatch(self.token_sha256):
            raise ConfigurationError(f"client {self.id}: token_sha256 is 64 lower-case hex digits")
        for key in ("services", "events"):
            patterns = getattr(self, key)
            if isinstance(patterns, str) or not isinstance(patterns, tuple | list):
                raise ConfigurationError(f"client {self.id}: {key} is a tuple of patterns, not {patterns!r}")
            object.__setattr__(self, key, tuple(patterns))  # frozen: a list given is kept as a tuple
            for pattern in self.services if key == "services" else self.events:
                _check_pattern(self.id, key, pattern)
        if self.rate is not None and (isinstance(self.rate, bool) or not 0 < self.rate < float("inf")):
            raise ConfigurationError(f"client {self.id}: rate is a positive number of requests per second")
        if isinstance(self.burst, bool) or not isinstance(self.burst, int) or self.burst < 1:
            raise ConfigurationError(f"client {self.id}: burst is a whole number of requests, at least 1")
        if self.rate is None and self.burst != 1:
            raise ConfigurationError(f"client {self.id}: burst without rate limits nothing: give rate too")

    def may_call(self, service: str, endpoint: str) -> bool:
        """Whether a service pattern covers ``service.endpoint``."""
        return allowed(self.services, f"{service}.{endpoint}")

    def may_publish(self, event_type: str) -> bool:
        """Whether an event pattern covers ``event_type``."""
        return allowed(self.events, event_type)


def allowed(patterns: tuple[str, ...], name: str) -> bool:
    """Whether one of ``patterns`` covers ``name`` (exact, ``*``, or a ``prefix.*``)."""
    for pattern in patterns:
        if pattern in ("*", name):
            return True
        if pattern.endswith(".*") and name.startswith(pattern[:-1]):
            return True
    return False


def _check_pattern(client: str, key: str, pattern: object) -> None:
    if not isinstance(pattern, str):
        raise ConfigurationError(f"client {client}: {key} holds strings, not {type(pattern).__name__}")
    if pattern == "*":
        return
    name = pattern.removesuffix(".*")
    if key == "services" and name == pattern and "." not in name:
        raise ConfigurationError(
            f"client {client}: services pattern {pattern[:100]!r} names no endpoint: "
            f"'{pattern[:100]}.*' for all of them, or '{pattern[:100]}.<endpoint>'"
        )
    if not all(_NAME_TOKEN.fullmatch(part) for part in name.split(".")):
        raise ConfigurationError(
            f"client {client}: {key} pattern {pattern[:100]!r} is not a dotted name, "
            "'*' or a name ending in '.*'"
        )


def token_digest(token: str | bytes) -> str:
    """The sha256 of a token as hex, as the clients file holds it (a str is encoded as UTF-8)."""
    raw = token.encode("utf-8") if isinstance(token, str) else token
    return hashlib.sha256(raw).hexdigest()


def mint_token() -> tuple[str, str]:
    """A new random token (256 bits, URL-safe) and its `token_digest`."""
    token = secrets.token_urlsafe(32)
    return token, token_digest(token)


def load_clients(path: Path) -> tuple[GatewayClient, ...]:
    """The clients of a TOML clients file; `ConfigurationError` when it cannot be read or is wrong."""
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigurationError(f"cannot read the clients file {path}: {exc.strerror}") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"the clients file {path} is not TOML: {exc}") from exc
    return parse_clients(document)


def parse_clients(document: dict[str, Any]) -> tuple[GatewayClient, ...]:
    """The clients of a parsed clients file (a ``client`` array of tables), checked together:
    ids and tokens unique, at least one client, at most `MAX_CLIENTS`."""
    unknown = set(document) - {"client"}
    tables = document.get("client")
    if unknown or not isinstance(tables, list) or not tables:
        raise ConfigurationError("a clients file is one or more [[client]] tables, and nothing else")
    if len(tables) > MAX_CLIENTS:
        raise ConfigurationError(f"a clients file names at most {MAX_CLIENTS} clients")
    clients = tuple(_client(table, number) for number, table in enumerate(tables, 1))
    check_clients(clients)
    return clients


def check_clients(clients: object) -> None:
    """`ConfigurationError` unless ``clients`` is a tuple of `GatewayClient` with unique ids and tokens."""
    if not isinstance(clients, tuple) or not all(isinstance(c, GatewayClient) for c in clients):
        raise ConfigurationError("clients is a tuple of GatewayClient (load_clients reads a clients file)")
    for key in ("id", "token_sha256"):
        values = [getattr(client, key) for client in clients]
        if len(set(values)) != len(values):
            raise ConfigurationError(f"two clients have the same {key}: each needs its own")


def _client(table: object, number: int) -> GatewayClient:
    if not isinstance(table, dict):
        raise ConfigurationError(f"client #{number} is not a table")
    name = table.get("id", f"#{number}")
    extra = sorted(set(table) - _KEYS)
    if extra:
        raise ConfigurationError(f"client {name}: unknown keys {extra} (known: {sorted(_KEYS)})")
    if "id" not in table or "token_sha256" not in table:
        raise ConfigurationError(f"client {name}: id and token_sha256 are required")
    for key in ("services", "events"):
        if not isinstance(table.get(key, []), list):
            raise ConfigurationError(f"client {name}: {key} is a list of patterns")
    if not isinstance(table.get("discovery", False), bool):
        raise ConfigurationError(f"client {name}: discovery is true or false")
    rate = table.get("rate")
    if rate is not None and (isinstance(rate, bool) or not isinstance(rate, int | float)):
        raise ConfigurationError(f"client {name}: rate is a number of requests per second")
    return GatewayClient(
        id=table["id"],
        token_sha256=table["token_sha256"],
        services=tuple(table.get("services", [])),
        events=tuple(table.get("events", [])),
        discovery=table.get("discovery", False),
        rate=None if rate is None else float(rate),
        burst=table.get("burst", max(1, round(rate)) if rate else 1),
    )
