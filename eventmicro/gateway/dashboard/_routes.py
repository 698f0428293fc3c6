"""The dashboard's routes, mounted by the gateway under ``/dashboard``.

==============================  ==========================================================
``GET /dashboard``, ``/``       the page (static HTML; no data, so no token needed)
``GET /dashboard/static/*``     its script and style sheet
``GET /dashboard/services``     every service: instances, endpoints, types, live stats (JSON)
``GET /dashboard/events``       live CloudEvents as Server-Sent Events (see `EventsEndpoint`)
==============================  ==========================================================

The page calls endpoints through the gateway's ``POST /api/{service}/{endpoint}`` and reads
request and reply schemas from its ``/openapi.json``; nothing is loaded from elsewhere.
"""

from __future__ import annotations

import html
import logging
from pathlib import Path
from typing import Final

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from eventmicro._errors import EventMicroError
from eventmicro.gateway._config import GatewayConfig
from eventmicro.gateway._problems import problem_response, unavailable
from eventmicro.gateway.dashboard._feed import MAX_QUEUE
from eventmicro.gateway.dashboard._services import ServiceOverview
from eventmicro.gateway.dashboard._stream import HEARTBEAT, EventsEndpoint, error_response
from eventmicro.transport.connection import Connection
from eventmicro.wire.types import SchemaPackageError, load_schemas

__all__ = ["STATIC", "routes"]

log = logging.getLogger("eventmicro.gateway.dashboard")

STATIC: Final = Path(__file__).parent / "static"
_ROOT_MARK: Final = "__EVENTMICRO_ROOT__"
_PAGE_HEADERS: Final = {
    "cache-control": "no-cache",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    # the page loads nothing from anywhere else, and runs no inline script
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
}


def routes(
    connection: Connection,
    config: GatewayConfig,
    *,
    max_queue: int = MAX_QUEUE,
    heartbeat: float = HEARTBEAT,
) -> list[BaseRoute]:
    """The dashboard's routes, to mount at the gateway's root (they all start with ``/dashboard``).

    ``max_queue``: events a slow browser may fall behind before the oldest are dropped;
    ``heartbeat``: seconds of silence on an event stream before a comment line is sent.

    >>> from eventmicro import Connection, ConnectOptions
    >>> from eventmicro.gateway import GatewayConfig
    >>> sorted(r.path for r in routes(Connection(ConnectOptions()), GatewayConfig()))[:2]
    ['/dashboard', '/dashboard/']
    """
    try:
        load_schemas(config.schemas or None)  # protobuf event data shown as JSON
    except SchemaPackageError as exc:
        log.warning("dashboard: %s; protobuf data of its types is shown as base64", exc)
    page = (STATIC / "index.html").read_text(encoding="utf-8")
    services = ServiceOverview(connection, ttl=min(config.discovery_ttl, 1.0))

    async def index(request: Request) -> Response:
        root = html.escape(str(request.scope.get("root_path", "")).rstrip("/"), quote=True)
        return HTMLResponse(page.replace(_ROOT_MARK, root), headers=_PAGE_HEADERS)

    async def list_services(request: Request) -> Response:
        if not connection.is_connected:  # discovery would find nothing: an outage is no empty list
            return problem_response(unavailable())
        try:
            document = await services.get()
        except EventMicroError as exc:
            log.warning("dashboard: service discovery failed: %s", exc)
            return error_response(503, "Unavailable", "service discovery failed")
        return JSONResponse(document, headers={"cache-control": "no-store"})

    allowed = config.events_subject
    events = EventsEndpoint(
        connection, allowed=allowed, max_queue=max_queue, heartbeat=heartbeat, max_streams=config.max_streams
    )
    return [
        Route("/dashboard", index, methods=["GET"], name="dashboard"),
        Route("/dashboard/", index, methods=["GET"], name="dashboard-slash"),
        Route("/dashboard/services", list_services, methods=["GET"], name="dashboard-services"),
        Route("/dashboard/events", events, methods=["GET"], name="dashboard-events"),
        Mount("/dashboard/static", StaticFiles(directory=STATIC), name="dashboard-static"),
    ]
