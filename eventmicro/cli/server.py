"""``eventmicro server``: a nats-server (or a routed cluster) in the foreground until Ctrl-C.

It prints the URL to use; without ``--port`` it takes the port clients look at when they are
given no URL (4222, or NATS_URL's port) when that is free, else a free one.
"""

from __future__ import annotations

import argparse
import signal
import threading
from typing import Final

from eventmicro._errors import ServerStartError
from eventmicro.cli.common import Subparsers
from eventmicro.transport.cluster import NatsCluster
from eventmicro.transport.server import NatsServer, client_port, port_is_free

__all__ = ["register"]

EXAMPLES: Final = """examples:
  eventmicro server                       # one node with JetStream; prints its URL
  eventmicro server --port 4222 --no-jetstream   # core NATS only, on a chosen port
  eventmicro server --cluster 3           # three routed nodes, a JetStream store each

Leave it running in one terminal and point the other commands at the URL it prints
(--url, or export NATS_URL). Ctrl-C stops it and removes its JetStream store.
"""


def register(subparsers: Subparsers) -> None:
    """Add ``server`` to the ``eventmicro`` parser."""
    server = subparsers.add_parser(
        "server",
        help="run a nats-server in the foreground until Ctrl-C",
        description="Run a nats-server (or a routed cluster) in the foreground until Ctrl-C; "
        "it prints the URL to use.",
        epilog=EXAMPLES,
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
