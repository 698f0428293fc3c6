"""``eventmicro dashboard``: the HTTP gateway with its web dashboard, printing the dashboard's address.

The same server and options as ``eventmicro gateway`` (see `eventmicro.cli.gateway`), the
dashboard always on.
"""

from __future__ import annotations

from eventmicro.cli.common import Subparsers
from eventmicro.cli.gateway import add_gateway_parser

__all__ = ["register"]


def register(subparsers: Subparsers) -> None:
    """Add ``dashboard`` to the ``eventmicro`` parser."""
    add_gateway_parser(
        subparsers, "dashboard", "the gateway with its web dashboard, printing the dashboard's address"
    )
