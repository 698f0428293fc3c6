"""The ``eventmicro`` command line: server, demo, run, call, publish, tail, services, bench, deadletters."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
import threading
from collections.abc import Sequence

from eventmicro._cluster import NatsCluster
from eventmicro._errors import EventMicroError
from eventmicro._server import NatsServer

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
  eventmicro COMMAND -h                   # each command's options and examples
"""


def _server(args: argparse.Namespace) -> int:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    if args.cluster > 1:
        cluster = NatsCluster(args.cluster, jetstream=args.jetstream)
        if args.port:
            for i, node in enumerate(cluster.nodes):
                node.port = args.port + i
        with cluster:
            print(f"nats cluster of {args.cluster} nodes ready: {cluster.url}", flush=True)
            for node in cluster:
                print(
                    f"  {node.name}: {node.url}  monitoring {node.monitor_url}  store {node.store_dir}",
                    flush=True,
                )
            print("Ctrl-C to stop", flush=True)
            stop.wait()
    else:
        with NatsServer(port=args.port, jetstream=args.jetstream) as server:
            js = f", JetStream store {server.store_dir}" if args.jetstream else ""
            print(f"nats-server ready: {server.url} (monitoring {server.monitor_url}{js})", flush=True)
            print("Ctrl-C to stop", flush=True)
            stop.wait()
    print("stopped", flush=True)
    return 0


def _demo(args: argparse.Namespace) -> int:
    from eventmicro._cli_common import connection_env
    from eventmicro._demo import run_demo

    return asyncio.run(run_demo(args.url, orders_count=args.orders, auth=connection_env(args)))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="eventmicro",
        description="Python microservices over NATS, with CloudEvents on the wire.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at debug level")
    commands = parser.add_subparsers(dest="command", required=True)

    server = commands.add_parser(
        "server",
        help="run a nats-server in the foreground until Ctrl-C",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    server.add_argument("--port", type=int, default=0, help="client port (default: a free one)")
    server.add_argument(
        "--jetstream",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="enable JetStream (default: on)",
    )
    server.add_argument("--cluster", type=int, default=1, metavar="N", help="run N routed nodes")
    server.set_defaults(run=_server)

    demo = commands.add_parser(
        "demo",
        help="run the demo round trip",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    demo.add_argument("--url", default=None, help="use this NATS instead of starting one")
    demo.add_argument("--orders", type=int, default=200, help="how many orders to place (default 200)")
    demo.set_defaults(run=_demo)

    from eventmicro import _cli_deadletters, _cli_run

    _cli_deadletters.add_parser(commands)
    from eventmicro import _cli_tools  # call, publish, tail, services

    _cli_tools.add_parser(commands)
    _cli_run.add_parser(commands)
    from eventmicro import _cli_bench

    _cli_bench.add_parser(commands)
    from eventmicro import _cli_new

    _cli_new.add_parser(commands)
    from eventmicro import _cli_docs, _cli_gateway

    _cli_gateway.add_parser(commands)  # gateway, dashboard
    _cli_docs.add_parser(commands)  # docs (AsyncAPI)
    from eventmicro._cli_common import add_connection_flags

    for command in commands.choices.values():  # every command that talks to NATS: auth flags too
        if any("--url" in action.option_strings for action in command._actions):
            add_connection_flags(command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    tools = ("deadletters", "call", "publish", "tail", "services", "bench", "docs")
    quiet = logging.ERROR if args.command in tools else logging.WARNING  # tools: no retry chatter
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
