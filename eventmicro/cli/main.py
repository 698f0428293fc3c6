"""The ``eventmicro`` command line: the verb table, the top-level parser and `main`.

Each verb is one module of `eventmicro.cli` with ``register(subparsers)``, listed once in
`VERBS`: server, demo, deadletters, call, publish, tail, services, run, bench, new, gateway,
dashboard, docs, permissions, completion.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import Final, Protocol

from eventmicro._errors import EventMicroError
from eventmicro._version import __version__
from eventmicro.cli import (
    bench,
    call,
    completion,
    dashboard,
    deadletters,
    demo,
    docs,
    gateway,
    gateway_client,
    new,
    permissions,
    publish,
    run,
    server,
    services,
    tail,
)
from eventmicro.cli.common import Subparsers, add_connection_flags

__all__ = ["VERBS", "build_parser", "main"]


class Verb(Protocol):
    """A verb's module: it adds its parser, whose ``run`` default does the work."""

    def register(self, subparsers: Subparsers, /) -> None: ...


# every verb, in the order ``eventmicro -h`` lists them: its module, and whether it logs only
# errors (the tools: their failures are one line of their own, a retry's warning is chatter)
VERBS: Final[tuple[tuple[str, Verb, bool], ...]] = (
    ("server", server, False),
    ("demo", demo, False),
    ("deadletters", deadletters, True),
    ("call", call, True),
    ("publish", publish, True),
    ("tail", tail, True),
    ("services", services, True),
    ("run", run, False),
    ("bench", bench, True),
    ("new", new, False),
    ("gateway", gateway, False),
    ("gateway-client", gateway_client, True),
    ("dashboard", dashboard, False),
    ("docs", docs, True),
    ("permissions", permissions, True),
    ("completion", completion, False),
)
_QUIET: Final = frozenset(name for name, _, quiet in VERBS if quiet)

EXAMPLES = """examples:
  eventmicro server                       # one node with JetStream on a free port
  eventmicro server --port 4222 --no-jetstream
  eventmicro server --cluster 3           # three routed nodes, a JetStream store each
  eventmicro demo                         # the reference shop on an embedded server
  eventmicro demo --url nats://127.0.0.1:4222
  eventmicro run subscribers.orders --workers 2    # serve a module's services
  eventmicro call orders.get '{"orderId": "ord-1"}'  # typed RPC from JSON
  eventmicro publish shop.orders.v1.OrderCancelled '{"orderId": "o-1"}'
  eventmicro tail events.shop.>           # CloudEvents live, either mode
  eventmicro services info orders         # $SRV discovery as tables
  eventmicro bench rpc                    # eventmicro's throughput and latency
  eventmicro deadletters ls               # dead letters of durable handlers
  eventmicro new greeter                  # scaffold a service: .proto, generated code, a test
  eventmicro permissions subscribers.billing --out secrets/   # its least-privilege NATS user
  eventmicro completion bash > ~/.local/share/bash-completion/completions/eventmicro
  eventmicro COMMAND -h                   # each command's options and examples
"""


def _version() -> str:
    return f"eventmicro {__version__} (Python {sys.version.split()[0]})"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="eventmicro",
        description="Python microservices over NATS, with CloudEvents on the wire.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at debug level")
    parser.add_argument("--version", action="version", version=_version())
    parser.set_defaults(command_line=parser)  # the whole parser, for the verb that describes it (completion)
    commands = parser.add_subparsers(dest="command", required=True)
    for name, module, _ in VERBS:
        module.register(commands)
        if name not in commands.choices:  # pragma: no cover - a table line that names another verb
            raise AssertionError(f"{module!r} did not register {name!r}")
    for command in commands.choices.values():  # every command that talks to NATS: auth flags too
        if any("--url" in action.option_strings for action in command._actions):
            add_connection_flags(command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    quiet = logging.ERROR if args.command in _QUIET else logging.WARNING  # tools: no retry chatter
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else quiet,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        code: int = args.run(args)
    except EventMicroError as exc:
        print(f"eventmicro: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
