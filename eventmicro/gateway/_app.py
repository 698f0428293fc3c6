"""The gateway as an ASGI app (Starlette), and `serve` to run it with uvicorn.

Routes::

    POST /api/{service}/{endpoint}   call an endpoint (see _calls)
    POST /events/{type}, /events     publish a CloudEvent (see _events)
    GET  /openapi.json               OpenAPI 3.1 of the discovered services
    GET  /asyncapi.json              AsyncAPI 3.0 of the discovered services
    GET  /healthz                    200 while connected to NATS, else 503
    GET  /dashboard/...              the web dashboard (eventmicro.gateway.dashboard), when enabled

Middleware, outermost first: CORS (when origins are configured), the client gate (when a
shared token or clients are configured, see _access: a client per bearer token, its rate and
scopes; the dashboard's page and static files and /healthz are public, they carry no data;
paths are read below the mount point, as the router reads them). The app
is an ordinary ASGI app: mount it in another Starlette or FastAPI app, or run it under any ASGI
server; it does not own the NATS connection it is given.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp

from eventmicro._errors import ConfigurationError, ConnectionClosed
from eventmicro._version import __version__
from eventmicro.gateway._access import Counters, Gate, shared_client
from eventmicro.gateway._calls import Calls
from eventmicro.gateway._catalog import INFO_TIMEOUT, Catalog
from eventmicro.gateway._config import GatewayConfig
from eventmicro.gateway._events import Events
from eventmicro.gateway._guard import HeaderLimits, guarded
from eventmicro.gateway._openapi import openapi_document
from eventmicro.gateway._problems import Problem, problem_response, require_nats, unavailable
from eventmicro.observability.metrics import watch_gateway
from eventmicro.service.client import Client
from eventmicro.transport.connection import Connection
from eventmicro.wire.types import load_schemas

__all__ = ["create_app", "serve", "serving"]

log = logging.getLogger("eventmicro.gateway")


def create_app(connection: Connection, config: GatewayConfig | None = None) -> Starlette:
    """The gateway's ASGI app, calling and publishing over ``connection`` (opened by the caller).

    Loads the protobuf modules of ``config.schemas`` (default: the ``schemas`` package, when
    installed) so JSON can be turned into the endpoints' request types; one that cannot be
    imported is a `ConfigurationError` (`SchemaPackageError`).
    """
    config = config or GatewayConfig()
    load_schemas(list(config.schemas) or None)
    catalog = Catalog(connection, config.discovery_ttl)
    calls = Calls(Client(connection, source=config.source, breaker=config.breaker), catalog, config)
    events = Events(connection, config)

    async def openapi(request: Request) -> JSONResponse:
        require_nats(connection)  # discovery would find nothing, and the document would say so
        return JSONResponse(openapi_document(await catalog.everything(), config, version=__version__))

    async def asyncapi(request: Request) -> JSONResponse:
        from eventmicro.docs.asyncapi import asyncapi_from_discovery

        require_nats(connection)
        return JSONResponse(asyncapi_from_discovery(await catalog.everything(), title="eventmicro services"))

    async def healthz(request: Request) -> JSONResponse:
        connected = connection.is_connected
        return JSONResponse(
            {"nats": "connected" if connected else "disconnected"}, status_code=200 if connected else 503
        )

    routes: list[BaseRoute] = [
        Route("/api/{service}/{endpoint}", calls.handle, methods=["POST"]),
        Route("/events", events.handle, methods=["POST"]),
        Route("/events/{type}", events.handle, methods=["POST"]),
        Route("/openapi.json", openapi, methods=["GET"]),
        Route("/asyncapi.json", asyncapi, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
    ]
    if config.dashboard:
        from eventmicro.gateway.dashboard import routes as dashboard_routes

        routes += dashboard_routes(connection, config)
        routes.append(Route("/", _to_dashboard, methods=["GET"]))
    middleware = []
    if config.cors_origins:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=list(config.cors_origins),
                allow_methods=["GET", "POST"],
                allow_headers=["*"],
                expose_headers=["WWW-Authenticate"],
                max_age=600,
            )
        )
    clients = config.clients or ((shared_client(config.token),) if config.token is not None else ())
    if clients:
        counters = Counters()
        watch_gateway(counters)
        middleware.append(Middleware(Gate, clients=clients, counters=counters, jwt_secret=config.jwt_secret))
    return Starlette(
        routes=routes,
        middleware=middleware,
        exception_handlers={
            Problem: _problem,
            HTTPException: _http_error,
            ConnectionClosed: _unavailable,
            ClientDisconnect: _gone,
            Exception: _internal,
        },
    )


async def _to_dashboard(request: Request) -> Response:
    root = str(request.scope.get("root_path", "")).rstrip("/")  # mounted at /ops: /ops/dashboard/
    return RedirectResponse(f"{root}/dashboard/")


async def _problem(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Problem)
    return problem_response(exc)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    kinds = {404: "NotFound", 405: "MethodNotAllowed"}
    detail = f"no route {request.method} {request.url.path}" if exc.status_code in kinds else str(exc.detail)
    return problem_response(
        Problem(exc.status_code, kinds.get(exc.status_code, "HTTPError"), detail, headers=exc.headers)
    )


async def _unavailable(request: Request, exc: Exception) -> Response:
    log.warning("gateway: %s %s: %s", request.method, request.url.path, exc)
    return problem_response(unavailable())


async def _gone(request: Request, exc: Exception) -> Response:
    """The client went (or was sent) away while its request was read: nobody reads an answer."""
    log.debug("gateway: %s %s: the client is gone", request.method, request.url.path)
    return Response(status_code=400)


async def _internal(request: Request, exc: Exception) -> Response:
    log.error("gateway: %s %s failed", request.method, request.url.path, exc_info=exc)
    return problem_response(Problem(500, "InternalError", "internal error"))


async def serve(
    connection: Connection,
    config: GatewayConfig | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    ready: Callable[[str], Any] | None = None,
) -> None:
    """Serve the gateway with uvicorn until SIGINT/SIGTERM (or cancellation).

    ``ready`` is called with the base URL once the socket listens (``port=0``: a free port).
    On SIGINT/SIGTERM, requests in flight get the longest a call may take (``max_timeout``
    plus discovery) to finish; responses still open then (live event streams) are cut.
    """
    config = config or GatewayConfig()
    app = create_app(connection, config)
    listener = _listen(host, port)
    grace = math.ceil(config.max_timeout + INFO_TIMEOUT)  # without a bound, an open stream never lets go
    if ready is not None:
        ready(_url(host, listener))
    try:
        await _server(app, grace, config).serve(sockets=[listener])
    finally:
        listener.close()


@contextlib.asynccontextmanager
async def serving(
    app: ASGIApp,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    grace: float = 2.0,
    config: GatewayConfig | None = None,
) -> AsyncIterator[str]:
    """Serve an ASGI app (the gateway's, or one that mounts it) in this event loop for the block.

    Yields the base URL; the socket listens before the block starts, so requests made at once
    wait in its backlog. On the way out, responses still open after ``grace`` seconds are cut.
    Requests are bounded by ``config``'s ``max_header_bytes``, ``max_headers``,
    ``header_timeout`` and ``body_timeout`` (default: `GatewayConfig`'s). For tests and for
    programs that run the gateway beside other work.
    """
    listener = _listen(host, port)
    server = _server(app, grace, config or GatewayConfig())
    task = asyncio.create_task(server.serve(sockets=[listener]))
    try:
        yield _url(host, listener)
    finally:
        server.should_exit = True
        try:
            await task
        finally:
            listener.close()


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say they are TCP; without
    # it every reply (head and body written apart) waits ~40 ms for a delayed ACK (bench/README.md)
    listener = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host, port))
        listener.listen(1024)  # connections wait in the backlog until uvicorn accepts them
    except (OSError, OverflowError) as exc:  # OverflowError: a port outside 0-65535
        listener.close()
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigurationError(f"cannot listen on {host}:{port}: {reason}") from exc
    return listener


def _server(app: ASGIApp, grace: float, config: GatewayConfig) -> uvicorn.Server:
    # a body's bytes on the wire: the body, its chunk framing (small unless the chunks are
    # tiny) and its trailers, which the parser buffers whole
    wire_body = 2 * config.max_body + config.max_header_bytes + 64 * 1024
    limits = HeaderLimits(
        config.max_header_bytes, config.max_headers, config.header_timeout, wire_body, config.body_timeout
    )
    options = uvicorn.Config(
        app,
        http=guarded(limits),  # heads bounded while they arrive (see _guard)
        ws="none",  # the gateway has no WebSocket routes
        log_level="warning",
        lifespan="off",
        access_log=False,
        timeout_graceful_shutdown=math.ceil(grace),
    )
    return uvicorn.Server(options)


def _url(host: str, listener: socket.socket) -> str:
    return f"http://{_host(host)}:{listener.getsockname()[1]}"


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
