"""``eventmicro gateway``: the HTTP gateway, with or without its dashboard (``eventmicro dashboard`` too).

The token is never a command-line flag (it would show in ``ps``): it comes from
``EVENTMICRO_GATEWAY_TOKEN`` or ``--token-file``. A token per client, with scopes and rates,
comes from a clients file (``--clients`` or ``EVENTMICRO_GATEWAY_CLIENTS``; see
``eventmicro gateway-client`` to make an entry); ``EVENTMICRO_GATEWAY_JWT_SECRET`` also takes
HS256 JWTs naming those clients.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Final

from eventmicro._errors import ConfigurationError
from eventmicro.cli.common import Subparsers, add_nats_options, connection
from eventmicro.cli.failures import ToolError, runner

if TYPE_CHECKING:  # pragma: no cover
    from eventmicro.gateway import GatewayClient

__all__ = ["add_gateway_parser", "register"]

TOKEN_VARIABLE: Final = "EVENTMICRO_GATEWAY_TOKEN"  # noqa: S105 - the variable's name, not a token
CLIENTS_VARIABLE: Final = "EVENTMICRO_GATEWAY_CLIENTS"
JWT_VARIABLE: Final = "EVENTMICRO_GATEWAY_JWT_SECRET"
METRICS_VARIABLE: Final = "EVENTMICRO_METRICS_PORT"
EXAMPLES: Final = f"""examples:
  eventmicro gateway                                  # http://127.0.0.1:8080, NATS from the environment
  eventmicro gateway --host 0.0.0.0 --port 8000 --cors https://app.example.com
  {TOKEN_VARIABLE}=s3cret eventmicro gateway      # every data route asks for Authorization: Bearer s3cret
  eventmicro gateway --clients clients.toml       # a token per client, with scopes and a rate
  curl -X POST localhost:8080/api/orders/get -d '{{"orderId": "o-1"}}'
  curl -X POST localhost:8080/events/shop.orders.v1.OrderCancelled -d '{{"orderId": "o-1"}}'
  curl localhost:8080/openapi.json                    # the discovered services as OpenAPI 3.1
"""


def register(subparsers: Subparsers) -> None:
    """Add ``gateway`` to the ``eventmicro`` parser."""
    add_gateway_parser(
        subparsers,
        "gateway",
        "serve services and events over HTTP (/api, /events, /openapi.json, /dashboard)",
    )


def add_gateway_parser(subparsers: Subparsers, name: str, help_text: str) -> None:
    """A verb that serves the gateway: ``gateway``, or ``dashboard`` (the gateway, printing the
    dashboard's address, which it always serves)."""
    parser = subparsers.add_parser(
        name, help=help_text, epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="port (default 8080; 0: a free one)")
    parser.add_argument(
        "--cors",
        action="append",
        metavar="ORIGIN",
        default=[],
        help="allow browser calls from ORIGIN (repeatable; * for any)",
    )
    parser.add_argument("--token-file", type=Path, help=f"bearer token in a file (or set {TOKEN_VARIABLE})")
    parser.add_argument(
        "--clients",
        type=Path,
        metavar="FILE",
        help=f"a TOML clients file: a token per client, its scopes and rate (or set {CLIENTS_VARIABLE})",
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        metavar="PORT",
        help=f"serve Prometheus /metrics on PORT, requests per client among them (or {METRICS_VARIABLE})",
    )
    parser.add_argument(
        "--max-body", type=int, default=1024 * 1024, help="largest request body in bytes (default 1 MiB)"
    )
    parser.add_argument(
        "--timeout", type=float, default=5.0, help="seconds of a call without X-Timeout (default 5)"
    )
    parser.add_argument(
        "--max-timeout", type=float, default=30.0, help="cap on X-Timeout, seconds (default 30)"
    )
    if name == "gateway":
        parser.add_argument("--no-dashboard", action="store_true", help="do not serve /dashboard")
    add_nats_options(parser, schemas=True)
    parser.set_defaults(run=runner(_serve), dashboard_command=name == "dashboard")


async def _serve(args: argparse.Namespace) -> int:
    try:
        from eventmicro.gateway import GatewayConfig, serve
    except ImportError as exc:
        raise ToolError(str(exc)) from exc
    try:
        config = GatewayConfig(
            max_body=args.max_body,
            default_timeout=args.timeout,
            max_timeout=args.max_timeout,
            cors_origins=tuple(args.cors),
            token=_token(args),
            clients=_clients(args),
            jwt_secret=os.environ.get(JWT_VARIABLE) or None,
            schemas=tuple(args.schemas or ()),
            dashboard=args.dashboard_command or not args.no_dashboard,
        )
    except ConfigurationError as exc:
        raise ToolError(str(exc)) from exc

    if config.clients:  # each request's line names its client: the access log is on with them
        logging.getLogger("eventmicro.gateway.access").setLevel(logging.INFO)
    async with connection(args) as conn, _metrics(args) as metrics_url:

        def ready(url: str) -> None:
            where = f"{url}/dashboard/" if args.dashboard_command else url
            auth = f" ({len(config.clients)} clients)" if config.clients else ""
            auth = " (bearer token required)" if config.token else auth
            scrape = f" metrics: {metrics_url}/metrics" if metrics_url else ""
            verb = "dashboard" if args.dashboard_command else "gateway"
            print(f"eventmicro {verb} ready: {where}{auth}{scrape}", flush=True)

        for sig in (signal.SIGINT, signal.SIGTERM):
            # uvicorn catches these while it serves, shuts down gracefully, then raises them
            # again for the handler it found: this one, so the connection is closed and we exit 0
            signal.signal(sig, lambda *_: None)
        try:
            await serve(conn, config, host=args.host, port=args.port, ready=ready)
        except ConfigurationError as exc:
            raise ToolError(str(exc)) from exc
    print("stopped", file=sys.stderr, flush=True)
    return 0


@contextlib.asynccontextmanager
async def _metrics(args: argparse.Namespace) -> AsyncIterator[str | None]:
    """``/metrics`` on ``--metrics-port`` (or ``EVENTMICRO_METRICS_PORT``) while the gateway
    serves: requests per client among them. Yields its base URL, or None when not asked for."""
    port = args.metrics_port
    if port is None and os.environ.get(METRICS_VARIABLE):
        try:
            port = int(os.environ[METRICS_VARIABLE])
        except ValueError:
            raise ToolError(f"{METRICS_VARIABLE} is not a port number") from None
    if port is None:
        yield None
        return
    from eventmicro.observability.http import serve as serve_metrics

    try:
        endpoint = await serve_metrics(port, args.host, metrics=True)
    except (OSError, OverflowError) as exc:
        raise ToolError(f"cannot serve metrics on {args.host}:{port}: {exc}") from exc
    try:
        yield endpoint.url
    finally:
        await endpoint.close()


def _token(args: argparse.Namespace) -> str | None:
    if args.token_file is not None:
        try:
            token: str = args.token_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ToolError(f"cannot read the token file {args.token_file}: {exc.strerror}") from exc
        if not token:
            raise ToolError(f"the token file {args.token_file} is empty")
        return token
    return os.environ.get(TOKEN_VARIABLE, "").strip() or None  # HTTP strips a header's edges too


def _clients(args: argparse.Namespace) -> tuple[GatewayClient, ...]:
    from eventmicro.gateway import load_clients  # imported by _serve already: the extra is there

    path = args.clients or (Path(os.environ[CLIENTS_VARIABLE]) if os.environ.get(CLIENTS_VARIABLE) else None)
    return () if path is None else load_clients(path)
