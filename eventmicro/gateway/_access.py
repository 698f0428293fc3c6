"""Who is calling: a bearer token names a client; its rate and scopes decide; each request is
logged with the client's id and counted per client.

::

    no token, or not a client's          401, WWW-Authenticate: Bearer realm="eventmicro"
    over the client's rate               429, Retry-After: <whole seconds until a request fits>
    discovery (/openapi.json, /asyncapi.json, the dashboard's data) without discovery = true
                                         403
    POST /api or /events out of scope    403 from the route (`refuse_call`, `refuse_events`)
    otherwise                            the route's answer

The shared token (``GatewayConfig.token``) is one client, ``shared``, that may do everything
at any rate. With ``GatewayConfig.jwt_secret``, an HS256 JWT whose ``sub`` names a client
stands for that client's token (see _jwt). A token is hashed (sha256); the first 8 bytes of
the hash pick the candidate clients (a dict), and the whole hash is compared with theirs in
constant time. The lookup's timing could only tell how the sha256 of a guess relates to a
stored hash, which brings a guess no closer to a token (that would take a preimage of
sha256); it costs the same for 1 or 10,000 clients, where comparing with every client's hash
in turn took 0.6 ms a request at 10,000 (``python -m bench.gateway_clients``).

Public paths (the dashboard's page and static files, /healthz) ask for nothing and are
neither logged nor counted. A 401 or a 429 takes nothing from a bucket (a client that waits
as told gets through); a 403 was a request, and counts.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import time
from collections.abc import Callable, Iterable
from typing import Final

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from eventmicro.gateway._clients import GatewayClient, token_digest
from eventmicro.gateway._jwt import JwtVerifier
from eventmicro.gateway._problems import Problem, problem_response
from eventmicro.wire.names import EVENT_PREFIX

__all__ = ["Counters", "Gate", "refuse_call", "refuse_events", "route_path", "shared_client"]

log = logging.getLogger("eventmicro.gateway.access")

SHARED_ID: Final = "shared"
NOBODY: Final = "-"  # the client label of requests no client made (no client id starts with "-")
CLIENT_KEY: Final = "eventmicro.gateway.client"  # in the ASGI scope: the GatewayClient calling
REFUSED_KEY: Final = "eventmicro.gateway.refused"  # in the ASGI scope: set when a route refused it
PUBLIC_PATHS: Final = frozenset({"/", "/healthz", "/dashboard", "/dashboard/"})
PUBLIC_PREFIX: Final = "/dashboard/static/"
_DISCOVERY_PATHS: Final = frozenset({"/openapi.json", "/asyncapi.json"})
_PREFIX: Final = 8  # bytes of a token's hash that pick the clients it is compared with
_CHALLENGE: Final = {"WWW-Authenticate": 'Bearer realm="eventmicro"'}


def shared_client(token: str) -> GatewayClient:
    """The client the one shared token stands for: every scope, no rate limit."""
    return GatewayClient(
        id=SHARED_ID, token_sha256=token_digest(token), services=("*",), events=("*",), discovery=True
    )


class Counters:
    """Requests per (client id, outcome): ok, error, unauthorized, forbidden, rate_limited.

    Bounded: the configured clients (plus `NOBODY`) times five outcomes."""

    def __init__(self) -> None:
        self.counts: dict[tuple[str, str], int] = {}

    def add(self, client: str, outcome: str) -> None:
        key = (client, outcome)
        self.counts[key] = self.counts.get(key, 0) + 1


class _Bucket:
    """A token bucket: ``burst`` requests at once, refilled at ``rate`` per second."""

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate, self.burst = rate, burst
        self.tokens, self.stamp = float(burst), now

    def take(self, now: float) -> float:
        """0 when a request fits now (one token taken), else the seconds until one would."""
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


class Gate:
    """ASGI middleware: identify the client, apply its rate and discovery scope, log and count."""

    def __init__(
        self,
        app: ASGIApp,
        clients: Iterable[GatewayClient],
        counters: Counters,
        jwt_secret: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        listed = tuple(clients)
        self.app = app
        self.clients: dict[bytes, list[tuple[bytes, GatewayClient]]] = {}
        for c in listed:
            digest = bytes.fromhex(c.token_sha256)
            self.clients.setdefault(digest[:_PREFIX], []).append((digest, c))
        self.jwt = None if jwt_secret is None else JwtVerifier(jwt_secret, {c.id: c for c in listed})
        self.counters = counters
        self.clock = clock
        now = clock()  # one bucket per limited client: memory bounded by the clients file
        self.buckets = {c.id: _Bucket(c.rate, c.burst, now) for c in listed if c.rate is not None}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = route_path(scope)
        if scope["type"] != "http" or _public(scope["method"], path):
            await self.app(scope, receive, send)
            return
        client = self._identify(scope)
        problem = self._refusal(client, path)
        if problem is not None:
            await problem_response(problem)(scope, receive, send)
            self._done(scope, client, problem.status, outcome=_OUTCOMES[problem.status])
            return
        scope[CLIENT_KEY] = client
        status = 500  # unless the app answers: an exception passes through here to the app's handler
        try:
            status = await _answered(self.app, scope, receive, send)
        finally:
            self._done(scope, client, status, outcome=scope.get(REFUSED_KEY))

    def _identify(self, scope: Scope) -> GatewayClient | None:
        scheme, _, credentials = Headers(scope=scope).get("authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            return None
        token = credentials.strip()
        if self.jwt is not None and token.count(".") == 2:  # a JWT; else (or when not valid) a token
            named = self.jwt.client_of(token, time.time())
            if named is not None:
                return named
        # the bytes sent (Starlette decoded them as Latin-1), hashed: see the module docstring
        given = hashlib.sha256(token.encode("latin-1")).digest()
        found = None
        for digest, client in self.clients.get(given[:_PREFIX], ()):
            if hmac.compare_digest(given, digest):
                found = client
        return found

    def _refusal(self, client: GatewayClient | None, path: str) -> Problem | None:
        if client is None:
            return Problem(401, "Unauthorized", "send Authorization: Bearer <token>", headers=_CHALLENGE)
        bucket = self.buckets.get(client.id)
        wait = bucket.take(self.clock()) if bucket is not None else 0.0
        if wait > 0:
            retry = str(max(1, math.ceil(wait)))
            detail = f"client {client.id} is over its rate of {client.rate:g} requests per second"
            return Problem(429, "RateLimited", detail, headers={"Retry-After": retry})
        if not client.discovery and (path in _DISCOVERY_PATHS or path.startswith("/dashboard/")):
            return Problem(
                403, "Forbidden", f"client {client.id} may not read discovery ({_printable(path)})"
            )
        return None

    def _done(self, scope: Scope, client: GatewayClient | None, status: int, *, outcome: str | None) -> None:
        who = NOBODY if client is None else client.id
        self.counters.add(who, outcome or ("ok" if status < 400 else "error"))
        log.info("gateway: client %s %s %s: %d", who, scope["method"], _printable(route_path(scope)), status)


_OUTCOMES: Final = {401: "unauthorized", 403: "forbidden", 429: "rate_limited"}


async def _answered(app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> int:
    """Run ``app`` and return the status it answered."""
    status = 500

    async def sending(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = int(message["status"])
        await send(message)

    await app(scope, receive, sending)
    return status


def refuse_call(request: Request, service: str, endpoint: str) -> None:
    """403 unless the calling client may call ``service.endpoint`` (any caller when no client
    is configured)."""
    client: GatewayClient | None = request.scope.get(CLIENT_KEY)
    if client is not None and not client.may_call(service, endpoint):
        _forbid(request, f"client {client.id} may not call {_printable(f'{service}.{endpoint}')}")


def refuse_events(request: Request, events: Iterable[tuple[str, str]]) -> None:
    """403 unless the calling client may publish every one of ``events`` (type, subject): its
    type, and its subject below ``events.`` (a ``?subject=`` too), each covered by an event
    pattern. Names the first refused; a batch is refused whole, before any event is sent."""
    client: GatewayClient | None = request.scope.get(CLIENT_KEY)
    if client is None:
        return
    for event_type, subject in events:
        if not client.may_publish(event_type):
            _forbid(request, f"client {client.id} may not publish events of type {_printable(event_type)}")
        if not client.may_publish(subject.removeprefix(f"{EVENT_PREFIX}.")):
            _forbid(request, f"client {client.id} may not publish on the subject {_printable(subject)}")


def _forbid(request: Request, detail: str) -> None:
    request.scope[REFUSED_KEY] = "forbidden"
    raise Problem(403, "Forbidden", detail)


def _public(method: str, path: str) -> bool:
    return method in ("GET", "HEAD") and (path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIX))


def route_path(scope: Scope) -> str:
    """The path below the app's mount point (``root_path``): what its router matches, as Starlette's
    ``get_route_path`` computes it."""
    path: str = scope.get("path", "")
    root: str = scope.get("root_path", "")
    if root and path.startswith(root) and path[len(root) : len(root) + 1] in ("", "/"):
        return path[len(root) :]
    return path


def _printable(text: str) -> str:
    """``text`` cut to 200 characters, anything unprintable as ``?``: safe in a log line or an answer."""
    return "".join(c if c.isprintable() else "?" for c in text[:200])
