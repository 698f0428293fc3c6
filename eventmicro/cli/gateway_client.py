"""``eventmicro gateway-client ID``: a new client of the gateway, as a clients-file entry.

Mints a random token and prints the ``[[client]]`` table holding only its sha256 on stdout (to
append to the clients file) and the token itself on stderr, once: the gateway never stores it,
so a lost token is replaced by minting another.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Final

from eventmicro.cli.common import Subparsers
from eventmicro.cli.failures import ToolError

__all__ = ["register"]

EXAMPLES: Final = """examples:
  eventmicro gateway-client shop-web --services 'orders.*' --events 'shop.orders.*' --rate 10 >> clients.toml
  eventmicro gateway-client ops --services '*' --events '*' --discovery
  eventmicro gateway --clients clients.toml
"""


def register(subparsers: Subparsers) -> None:
    """Add ``gateway-client`` to the ``eventmicro`` parser."""
    parser = subparsers.add_parser(
        "gateway-client",
        help="mint a gateway client's token and print its clients-file entry (the token's hash)",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("id", help="the client's id, as logs and metrics show it")
    parser.add_argument(
        "--services",
        action="append",
        default=[],
        metavar="PATTERN",
        help="endpoints it may call (repeatable)",
    )
    parser.add_argument(
        "--events",
        action="append",
        default=[],
        metavar="PATTERN",
        help="event types it may publish (repeatable)",
    )
    parser.add_argument(
        "--discovery", action="store_true", help="it may read /openapi.json and the dashboard"
    )
    parser.add_argument("--rate", type=float, help="requests per second (default: not limited)")
    parser.add_argument("--burst", type=int, help="requests at once (default: the rate, at least 1)")
    parser.set_defaults(run=_mint)


def _mint(args: argparse.Namespace) -> int:
    try:
        from eventmicro.gateway import mint_token
        from eventmicro.gateway._clients import parse_clients
    except ImportError as exc:
        raise ToolError(str(exc)) from exc
    token, digest = mint_token()
    table: dict[str, object] = {"id": args.id, "token_sha256": digest, "services": args.services}
    table |= {"events": args.events, "discovery": args.discovery}
    if args.rate is not None:
        table["rate"] = args.rate
        table["burst"] = args.burst if args.burst is not None else max(1, round(args.rate))
    parse_clients({"client": [table]})  # the same checks as the gateway's: a bad entry is never printed
    lines = ["[[client]]", *(f"{key} = {_toml(value)}" for key, value in table.items())]
    print("\n".join(lines), flush=True)
    print(f"the token of {args.id} (shown once, not stored): {token}", file=sys.stderr, flush=True)
    return 0


def _toml(value: object) -> str:
    """A TOML value of a str, bool, number or list of str (JSON's spelling is TOML's for these)."""
    return json.dumps(value)
