"""The HTTP gateway (``pip install 'eventmicro[gateway]'``): services and events over HTTP.

>>> async def main(connection: Connection) -> None:     # doctest: +SKIP
...     await serve(connection, GatewayConfig(token="s3cret"), port=8080)

or, a token per client with its scopes and rate (see ``_clients``)::

    config = GatewayConfig(clients=load_clients(Path("clients.toml")))

or mount ``create_app(connection, config)`` in any ASGI server or app; ``async with
serving(app) as url:`` serves it in the current event loop for a block (tests). See ``_app`` for the
routes and ``_calls`` for the status mapping.

An edge: it may import every layer below it, never the CLI; its modules (the dashboard's too)
import one another, never this package, which only re-exports.
"""

from __future__ import annotations

try:
    import httptools  # noqa: F401
    import starlette  # noqa: F401
except ImportError as exc:  # pragma: no cover - only without the extra
    raise ImportError("the gateway needs its extra: pip install 'eventmicro[gateway]'") from exc

from eventmicro.gateway._app import create_app, serve, serving
from eventmicro.gateway._clients import GatewayClient, load_clients, mint_token, token_digest
from eventmicro.gateway._config import GatewayConfig
from eventmicro.gateway._jwt import sign as sign_jwt

__all__ = [
    "GatewayClient",
    "GatewayConfig",
    "create_app",
    "load_clients",
    "mint_token",
    "serve",
    "serving",
    "sign_jwt",
    "token_digest",
]
