"""The gateway's options: limits, CORS, authentication, what it serves."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Final

from eventmicro._errors import ConfigurationError
from eventmicro.gateway._clients import GatewayClient, check_clients
from eventmicro.gateway._jwt import check_secret
from eventmicro.service.breaker import BreakerPolicy

__all__ = ["GatewayConfig"]

KIB: Final = 1024
MIB: Final = 1024 * KIB


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    """How the gateway serves HTTP.

    ``token``: when set, every data route asks for ``Authorization: Bearer <token>`` (the
    dashboard's page and static files do not: they carry no data). ``clients``: instead of one
    shared token, a token per client with its scopes and rate (`GatewayClient`, or
    ``load_clients(path)`` of a clients file); not both. ``jwt_secret``: with clients, HS256
    JWTs whose ``sub`` names a client are taken too. ``cors_origins``: origins allowed to
    call from a browser (``("*",)`` for any); none by default.
    """

    max_body: int = 1 * MIB  # bytes of a request body; larger is 413
    # a request's head (request line and headers), bounded while it arrives, before auth:
    max_header_bytes: int = 16 * KIB  # bytes of it; larger is 431 (Node.js's default too)
    max_headers: int = 100  # header fields in it; more is 431 (Apache's LimitRequestFields)
    header_timeout: float = 10.0  # seconds from its first byte to its end; slower is 408
    body_timeout: float = 30.0  # seconds from a head's end to its body's end; slower is 408, closed
    default_timeout: float = 5.0  # seconds of a call that asks for no timeout
    max_timeout: float = 30.0  # a caller's X-Timeout (or ?timeout=) is capped at this
    cors_origins: tuple[str, ...] = ()
    token: str | None = field(default=None, repr=False)  # a secret: never in logs or tracebacks
    clients: tuple[GatewayClient, ...] = ()  # a token per client, with scopes and a rate (see _clients)
    jwt_secret: str | None = field(default=None, repr=False)  # HS256 tokens naming a client (see _jwt)
    schemas: tuple[str, ...] = ()  # packages of protobuf modules to load (default: schemas)
    dashboard: bool = True  # serve the dashboard under /dashboard
    events_subject: str = "events.>"  # what the dashboard's live stream subscribes to at most
    max_streams: int = 64  # dashboard event streams open at once (a NATS subscription each); then 503
    source: str = "/eventmicro/gateway"  # CloudEvent source of events the gateway builds
    discovery_ttl: float = 2.0  # seconds a service's $SRV.INFO answer is reused
    breaker: BreakerPolicy | None = None  # a circuit per endpoint: open ones answer 503 at once

    def __post_init__(self) -> None:
        if self.max_body <= 0:
            raise ConfigurationError("max_body must be a positive number of bytes")
        if (
            self.max_header_bytes < 1024
            or self.max_headers < 1
            or not self.header_timeout > 0
            or not self.body_timeout > 0
        ):
            raise ConfigurationError(
                "max_header_bytes must be at least 1024; max_headers, header_timeout and "
                "body_timeout positive"
            )
        if not 0 < self.default_timeout <= self.max_timeout:
            raise ConfigurationError("timeouts must be positive, default_timeout <= max_timeout")
        if self.token is not None and not self.token.strip():
            raise ConfigurationError("token must not be empty (leave it unset for no authentication)")
        self._check_clients()
        if self.max_streams < 1:
            raise ConfigurationError("max_streams must be at least 1")
        if self.discovery_ttl < 0:
            raise ConfigurationError("discovery_ttl must not be negative")
        if self.breaker is not None and not isinstance(self.breaker, BreakerPolicy):
            raise ConfigurationError(f"breaker must be a BreakerPolicy, not {self.breaker!r}")

    def _check_clients(self) -> None:
        if self.clients and self.token is not None:
            raise ConfigurationError(
                "give a shared token or clients, not both (a client with every scope stands for the token)"
            )
        check_clients(self.clients)
        if self.jwt_secret is not None:
            if not self.clients:
                raise ConfigurationError("jwt_secret needs clients: a token's sub names one of them")
            check_secret(self.jwt_secret)

    def replace(self, **changes: object) -> GatewayConfig:
        """A copy with ``changes`` applied (and checked)."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]
