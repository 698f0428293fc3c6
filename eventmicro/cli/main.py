"""The ``eventmicro`` command line: server, demo, run, call, publish, tail, services, bench,
deadletters, new, gateway, dashboard, docs, completion."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
import threading
from collections.abc import Sequence

from eventmicro._errors import EventMicroError, ServerStartError
from eventmicro.transport.cluster import NatsCluster
from eventmicro.transport.server import NatsServer, client_port, port_is_free

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
  eventmicro completion bash > ~/.local/share/bash-completion/completions/eventmicro
  eventmicro COMMAND -h                   # each command's options and examples
"""
SERVER_EXAMPLES = """examples:
  eventmicro server                       # one node with JetStream; prints its URL
  eventmicro server --port 4222 --no-jetstream   # core NATS only, on a chosen port
  eventmicro server --cluster 3           # three routed nodes, a JetStream store each

Leave it running in one terminal and point the other commands at the URL it prints
(--url, or export NATS_URL). Ctrl-C stops it and removes its JetStream store.
"""
DEMO_EXAMPLES = """examples:
  eventmicro demo                         # starts its own nats-server; ends with "result OK"
  eventmicro demo --orders 20             # a shorter run
  eventmicro demo --url nats://127.0.0.1:4222   # on a server you run (eventmicro server)

The shop's services run as separate processes (orders and inventory twice, billing,
notifications and audit once); the demo places orders through the typed RPC client, waits until
every order has settled and prints what happened. Exit code 0 only when nothing was lost.
"""


def _server(args: argparse.Namespace) -> int:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    wanted = client_port()  # where clients look when given no URL: 4222, or NATS_URL's port
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
            print(f"point clients at it:\n  export NATS_URL={cluster.url}", flush=True)
            print("Ctrl-C to stop", flush=True)
            stop.wait()
    else:
        with _start_server(args, wanted) as server:
            js = f", JetStream store {server.store_dir}" if args.jetstream else ""
            print(f"nats-server ready: {server.url} (monitoring {server.monitor_url}{js})", flush=True)
            if server.port == wanted:
                print(f"clients reach it with no --url (they look at port {wanted})", flush=True)
            else:
                print(f"clients look for port {wanted}; point them here:\n  export NATS_URL={server.url}",
                      flush=True)  # fmt: skip
            print("Ctrl-C to stop", flush=True)
            stop.wait()
    print("stopped", flush=True)
    return 0


def _start_server(args: argparse.Namespace, wanted: int) -> NatsServer:
    """The server on ``--port``; without one, on the port clients look at, else on a free one."""
    if args.port is not None:
        candidates = [args.port]
    elif port_is_free(wanted):
        candidates = [wanted, 0]  # 0: should another process take it meanwhile
    else:
        print(f"port {wanted} is in use (another nats-server?); starting on a free port", flush=True)
        candidates = [0]
    for port in candidates:
        server = NatsServer(port=port, jetstream=args.jetstream)
        try:
            return server.start()
        except ServerStartError as exc:
            if port == candidates[-1] or "address already in use" not in str(exc):
                raise  # the message names the log: it stays
            server.close()
    raise AssertionError("unreachable")  # pragma: no cover


def _demo(args: argparse.Namespace) -> int:
    from eventmicro.cli.common import connection_env
    from eventmicro.cli.demo import run_demo

    return asyncio.run(run_demo(args.url, orders_count=args.orders, auth=connection_env(args)))


def _version() -> str:
    from eventmicro import __version__

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
    commands = parser.add_subparsers(dest="command", required=True)

    server = commands.add_parser(
        "server",
        help="run a nats-server in the foreground until Ctrl-C",
        description="Run a nats-server (or a routed cluster) in the foreground until Ctrl-C; "
        "it prints the URL to use.",
        epilog=SERVER_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    server.add_argument(
        "--port",
        type=int,
        default=None,
        help="client port (default: 4222, or NATS_URL's port, when free; else a free one)",
    )
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
        description="Run the reference shop's services, place orders through it and check the result.",
        epilog=DEMO_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    demo.add_argument("--url", default=None, help="use this NATS instead of starting one")
    demo.add_argument("--orders", type=int, default=200, help="how many orders to place (default 200)")
    demo.set_defaults(run=_demo)

    from eventmicro.cli import deadletters as _cli_deadletters
    from eventmicro.cli import run as _cli_run

    _cli_deadletters.add_parser(commands)
    from eventmicro.cli import tools as _cli_tools  # call, publish, tail, services

    _cli_tools.add_parser(commands)
    _cli_run.add_parser(commands)
    from eventmicro.cli import bench as _cli_bench

    _cli_bench.add_parser(commands)
    from eventmicro.cli import new as _cli_new

    _cli_new.add_parser(commands)
    from eventmicro.cli import docs as _cli_docs
    from eventmicro.cli import gateway as _cli_gateway

    _cli_gateway.add_parser(commands)  # gateway, dashboard
    _cli_docs.add_parser(commands)  # docs (AsyncAPI)
    from eventmicro.cli import completion as _cli_completion

    _cli_completion.add_parser(commands)
    from eventmicro.cli.common import add_connection_flags

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
