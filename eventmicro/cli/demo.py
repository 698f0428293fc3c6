"""``eventmicro demo``: the reference shop (subscribers/) run as separate processes, with orders.

It uses the NATS at ``--url``, or starts an embedded nats-server with JetStream; starts orders
and inventory twice (to show queue-group balancing and shared durable consumers), billing,
notifications and audit once; places ``--orders`` orders through the typed RPC client; waits
until the saga has settled every order; prints what happened; stops the services with SIGTERM.
Exit code 0 only when every order reached a final state and no event is missing.

Where the shop comes from (`shop_root`): a wheel carries a copy of the repository's ``schemas/``
and ``subscribers/`` as ``eventmicro/_demo_shop/`` (setup.py copies it at build time), never as
top-level packages; an editable install uses the checkout's own. That directory goes first on
the path of this process and of the services' (``python -P``, so the current directory comes
after it): a user's own ``schemas`` or ``subscribers`` package neither shadows the shop nor is
shadowed by it outside the demo.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from eventmicro._errors import ConfigurationError, EventMicroError
from eventmicro.cli.common import Subparsers, connection_env
from eventmicro.cli.demo_secure import (
    FORGERIES,
    OPS,
    WEB,
    attempt_forgeries,
    least_privilege,
    without_credentials,
)
from eventmicro.service.client import Client
from eventmicro.service.discovery import discover
from eventmicro.transport.config import ConnectOptions
from eventmicro.transport.connection import Connection
from eventmicro.transport.jetstream import publish, subject_counts
from eventmicro.transport.kv import Store
from eventmicro.transport.server import NatsServer
from eventmicro.wire.names import DEAD_LETTER_STREAM
from eventmicro.wire.service_errors import BadRequest

SERVICES: Final = (("orders", 2), ("inventory", 2), ("billing", 1), ("notifications", 1), ("audit", 1))
STREAM: Final = "SHOP"
CONCURRENT_CALLS: Final = 16
SETTLE_TIMEOUT: Final = 120.0
SHOP_PACKAGES: Final = ("schemas", "subscribers")
EXAMPLES: Final = """examples:
  eventmicro demo                         # starts its own nats-server; ends with "result OK"
  eventmicro demo --orders 20             # a shorter run
  eventmicro demo --url nats://127.0.0.1:4222   # on a server you run (eventmicro server)
  eventmicro demo --secure                # every service its own least-privilege NATS user

The shop's services run as separate processes (orders and inventory twice, billing,
notifications and audit once); the demo places orders through the typed RPC client, waits until
every order has settled and prints what happened. Exit code 0 only when nothing was lost.
"""


def register(subparsers: Subparsers) -> None:
    """Add ``demo`` to the ``eventmicro`` parser."""
    demo = subparsers.add_parser(
        "demo",
        help="run the demo round trip",
        description="Run the reference shop's services, place orders through it and check the result.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    demo.add_argument("--url", default=None, help="use this NATS instead of starting one")
    demo.add_argument("--orders", type=int, default=200, help="how many orders to place (default 200)")
    demo.add_argument(
        "--secure",
        action="store_true",
        help="least privilege: each service as its own NATS user (eventmicro permissions), on its own server",
    )
    demo.set_defaults(run=_demo)


def _demo(args: argparse.Namespace) -> int:
    return asyncio.run(
        run_demo(args.url, orders_count=args.orders, auth=connection_env(args), secure=args.secure)
    )


def shop_root() -> Path:
    """The directory holding the reference shop's ``schemas/`` and ``subscribers/``: the copy
    inside the installed package (a wheel), else the checkout eventmicro runs from (``pip
    install -e .``). `ConfigurationError` when neither has it."""
    package = Path(__file__).resolve().parent.parent  # eventmicro/, above cli/
    for root in (package / "_demo_shop", package.parent):
        if (root / "subscribers" / "orders.py").is_file() and (root / "schemas" / "shop").is_dir():
            return root
    raise ConfigurationError(
        f"the demo's reference shop is not installed with eventmicro ({package}): install eventmicro "
        "from a wheel, a git URL or a checkout (pip install -e .)"
    )


def use_shop(root: Path) -> None:
    """Make ``schemas`` and ``subscribers`` of this process the shop's, whatever the current
    directory holds; `ConfigurationError` when other packages of those names are imported."""
    for name in SHOP_PACKAGES:
        module = sys.modules.get(name)
        where = Path(getattr(module, "__file__", None) or ".").resolve()
        if module is not None and not where.is_relative_to(root):
            raise ConfigurationError(
                f"another {name!r} package is already imported ({where}): run the demo as `eventmicro demo`"
            )
    if str(root) in sys.path:
        sys.path.remove(str(root))
    sys.path.insert(0, str(root))


def shop_environ(root: Path, environ: dict[str, str]) -> dict[str, str]:
    """The environment of a shop process: the shop first on PYTHONPATH (run it with ``python -P``)."""
    path = [str(root), *filter(None, environ.get("PYTHONPATH", "").split(os.pathsep))]
    return {**environ, "PYTHONPATH": os.pathsep.join(path)}


def say(text: str = "") -> None:
    print(text, flush=True)


@dataclass
class Run:
    """What the demo did and saw."""

    accepted: list[str] = field(default_factory=list)
    rejected: int = 0
    failed_calls: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    status: Counter[str] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)
    events: dict[str, int] = field(default_factory=dict)
    audited: dict[str, int] = field(default_factory=dict)
    calls_per_instance: dict[str, int] = field(default_factory=dict)
    dead_letters: int = 0
    retried: int = 0  # billing's charge attempts that failed and were redelivered
    unsettled: int = 0
    exit_codes: list[int] = field(default_factory=list)
    refusals: list[str] | None = None  # --secure: what notifications' user was refused


async def run_demo(
    url: str | None, *, orders_count: int = 200, auth: dict[str, str] | None = None, secure: bool = False
) -> int:
    """Run the demo; returns the process exit code. ``auth``: EVENTMICRO_NATS_* variables for
    a given server that needs credentials (handed to the services' processes too).

    ``secure``: the embedded server gets the account ``SHOP`` that ``eventmicro permissions``
    derives from the services (`eventmicro.cli.demo_secure`); each service runs as its own user,
    orders are placed by the client ``web`` (it may call orders only), the demo watches as ``ops``,
    and shows that notifications' user can neither call billing nor publish PaymentCaptured."""
    root = shop_root()
    use_shop(root)
    environ = shop_environ(root, {**os.environ, **(auth or {})})
    if secure and (url is not None or auth):
        raise ConfigurationError("--secure starts its own nats-server: it takes no --url or credentials")
    server = None
    users: dict[str, dict[str, str]] = {}
    if url is None:
        say("starting an embedded nats-server with JetStream ...")
        server = NatsServer()
        if secure:
            environ = without_credentials(environ)
            users = least_privilege(server)
        server = await server.astart()
        url = server.url
        say(f"  nats-server listening on {url} (store {server.store_dir})")
    processes: list[tuple[str, subprocess.Popen[bytes]]] = []
    try:
        processes = _start_services(url, environ, users)
        run = Run()
        watching = ConnectOptions.from_env(url, environ={**environ, **users.get(OPS, {})}, connect_attempts=5)
        ordering = ConnectOptions.from_env(url, environ={**environ, **users.get(WEB, {})}, connect_attempts=5)
        async with Connection(watching) as connection, Connection(ordering) as web:
            await _wait_for_services(connection, processes)
            before = await _snapshot(connection)  # a server given by --url may hold earlier runs
            await _place_orders(Client(web, source="/eventmicro/demo"), orders_count, run)
            if secure:
                run.refusals = await attempt_forgeries(url, environ, users)
            await _publish_junk(connection)
            await _wait_until_settled(connection, run)
            await _collect(connection, run, before, expect_dead_letters=JUNK_LETTERS)
        run.exit_codes = await asyncio.to_thread(_stop_services, processes)
        processes = []
        return _summary(run, orders_count)
    finally:
        if processes:
            _stop_services(processes)
        if server is not None:
            await asyncio.to_thread(server.close)
            say("embedded nats-server stopped")


# --- the services ---------------------------------------------------------------------------


def _start_services(
    url: str, environ: dict[str, str], users: dict[str, dict[str, str]]
) -> list[tuple[str, subprocess.Popen[bytes]]]:
    env = {**environ, "EVENTMICRO_NATS_URL": url, "SHOP_LOG_LEVEL": "ERROR"}
    started = []
    for name, count in SERVICES:
        for _ in range(count):
            # -P: the current directory is not first on the path (it may have its own schemas/)
            process = subprocess.Popen(
                [sys.executable, "-P", "-m", f"subscribers.{name}"], env={**env, **users.get(name, {})}
            )
            started.append((name, process))
    say("started " + ", ".join(f"{name} x{count}" for name, count in SERVICES))
    return started


async def _wait_for_services(
    connection: Connection, processes: list[tuple[str, subprocess.Popen[bytes]]]
) -> None:
    wanted = dict(SERVICES)
    deadline = time.monotonic() + 90
    while True:
        answers = await discover(connection, "PING", window=0.3)
        seen = Counter(a.get("name") for a in answers)
        if all(seen[name] >= count for name, count in wanted.items()):
            say("  every instance answers $SRV.PING")
            return
        dead = [name for name, p in processes if p.poll() is not None]
        if dead:
            raise EventMicroError(f"service process(es) exited during start-up: {', '.join(dead)}")
        if time.monotonic() > deadline:
            missing = {n: c - seen[n] for n, c in wanted.items() if seen[n] < c}
            raise EventMicroError(f"services did not come up in time (missing {missing})")


def _stop_services(processes: list[tuple[str, subprocess.Popen[bytes]]]) -> list[int]:
    from eventmicro.cli.run import stop_processes

    return stop_processes([process for _, process in processes], timeout=40)


# --- the orders ------------------------------------------------------------------------------


async def _place_orders(client: Client, count: int, run: Run) -> None:
    from schemas.shop.orders.v1 import orders_pb2 as orders
    from schemas.shop.orders.v1.orders_micro import OrdersClient
    from subscribers.shop import PRICE_CENTS, SKUS

    shop = OrdersClient(client)  # the typed client generated from orders.proto
    chooser = random.Random(42)  # the same orders every run  # noqa: S311 - not for security
    requests = []
    for n in range(count):
        items = [
            orders.LineItem(
                sku=chooser.choice(SKUS), quantity=chooser.randint(1, 4), unit_price_cents=PRICE_CENTS
            )
            for _ in range(chooser.randint(1, 3))
        ]
        if n % 50 == 49:
            items = []  # an invalid order now and then: the service answers 400
        requests.append(orders.PlaceOrder(customer_id=f"cust-{n % 37:03d}", currency="EUR", items=items))
    pending = iter(requests)
    done = 0

    async def caller() -> None:
        nonlocal done
        for request in pending:
            started = time.perf_counter()
            try:
                accepted = await shop.place(request, timeout=10)
            except BadRequest:
                run.rejected += 1
            except EventMicroError as exc:
                run.failed_calls.append(exc.message)
            else:
                run.accepted.append(accepted.order_id)
            run.latencies.append((time.perf_counter() - started) * 1000)
            done += 1
            _progress("placing orders", done, count)

    async with asyncio.TaskGroup() as group:
        for _ in range(CONCURRENT_CALLS):
            group.create_task(caller())
    say()


JUNK_SUBJECT: Final = "events.shop.junk"
JUNK_LETTERS: Final = 1  # audit, the one durable subscriber of that subject, dead-letters it


async def _publish_junk(connection: Connection) -> None:
    """One malformed event (no ``ce-id``, a body that decodes to nothing): audit cannot handle
    it and dead-letters it at once, while the saga goes on."""
    headers = {
        "ce-specversion": "1.0",
        "ce-type": "shop.orders.v1.OrderPlaced",
        "ce-source": "/eventmicro/demo",
    }
    await publish(
        connection, JUNK_SUBJECT, b"\xff\xfe not an order", headers, msg_id=f"junk-{time.time_ns()}"
    )
    say(f"  published one malformed event on {JUNK_SUBJECT} (it should end as a dead letter)")


async def _wait_until_settled(connection: Connection, run: Run) -> None:
    from schemas.shop.orders.v1 import orders_pb2 as orders

    store = await Store.open(connection, "orders", orders.Order)
    waiting = set(run.accepted)
    total = len(waiting)
    deadline = time.monotonic() + SETTLE_TIMEOUT
    while waiting and time.monotonic() < deadline:
        for order_id in list(waiting):
            entry = await store.get(order_id)
            if (
                entry is not None
                and entry.value is not None
                and entry.value.status
                in (
                    orders.ORDER_STATUS_CONFIRMED,
                    orders.ORDER_STATUS_CANCELLED,
                )
            ):
                waiting.discard(order_id)
                run.status[
                    orders.OrderStatus.Name(entry.value.status).removeprefix("ORDER_STATUS_").lower()
                ] += 1
                if entry.value.reason:
                    run.reasons[entry.value.reason.split(":")[0]] += 1
        _progress("settling the saga", total - len(waiting), total)
        if waiting:
            await asyncio.sleep(0.2)  # polling the orders bucket; each pass reads every pending order
    say()
    run.unsettled = len(waiting)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What the server held before the orders were placed: the summary counts the difference."""

    events: dict[str, int]
    audited: dict[str, int]
    dead_letters: int


async def _snapshot(connection: Connection) -> Snapshot:
    dead = sum((await subject_counts(connection, DEAD_LETTER_STREAM)).values())
    return Snapshot(await _event_counts(connection), await _audit_counts(connection), dead)


async def _collect(
    connection: Connection, run: Run, before: Snapshot, *, expect_dead_letters: int = 0
) -> None:
    deadline = time.monotonic() + 60
    while True:  # the audit service consumes durably and may still be catching up
        now = await _event_counts(connection)
        now.pop(JUNK_SUBJECT.removeprefix("events."), None)  # not an event of the saga
        run.events = {
            k: now.get(k, 0) - before.events.get(k, 0)
            for k in now
            if now.get(k, 0) != before.events.get(k, 0)
        }
        audited = await _audit_counts(connection)
        run.audited = {k: audited.get(k, 0) - before.audited.get(k, 0) for k in audited}
        run.audited = {k: v for k, v in run.audited.items() if v}
        if run.audited == run.events or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    for answer in await discover(connection, "STATS", "orders", window=0.5):
        place: dict[str, Any] = next((e for e in answer.get("endpoints", []) if e.get("name") == "place"), {})
        run.calls_per_instance[str(answer.get("id", "?"))[:8]] = int(place.get("num_requests", 0))
    for answer in await discover(connection, "STATS", "billing", window=0.5):
        charge = answer.get("data", {}).get("events", {}).get("on_stock_reserved", {})
        run.retried += int(charge.get("errors", 0))
    deadline = time.monotonic() + 30  # the expected dead letters come after audit's one attempt
    while True:
        dead = sum((await subject_counts(connection, DEAD_LETTER_STREAM)).values())
        run.dead_letters = max(0, dead - before.dead_letters)
        if run.dead_letters >= expect_dead_letters or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)


async def _event_counts(connection: Connection) -> dict[str, int]:
    """Stored events per CloudEvent type (from the stream's per-subject counts)."""
    counts = await subject_counts(connection, STREAM)
    return {subject.removeprefix("events."): n for subject, n in counts.items()}


async def _audit_counts(connection: Connection) -> dict[str, int]:
    try:
        store = await Store.open(connection, "audit", str, create=False)
    except EventMicroError:
        return {}
    out = {}
    for key in await store.keys():
        entry = await store.get(key)
        if entry is not None and entry.value is not None:
            out[key] = int(entry.value)
    return out


def _progress(label: str, done: int, total: int) -> None:
    width = 30
    filled = width * done // max(total, 1)
    line = f"  {label:<18} [{'#' * filled}{'.' * (width - filled)}] {done}/{total}"
    if sys.stdout.isatty():
        print("\r" + line, end="", flush=True)
    elif done == total or done % max(1, total // 4) == 0:
        print(line, flush=True)


# --- the summary -----------------------------------------------------------------------------


def _summary(run: Run, count: int) -> int:
    say()
    say("summary")
    rows: list[tuple[str, Any]] = [
        ("orders placed", f"{count} ({len(run.accepted)} accepted, {run.rejected} rejected as invalid)"),
        ("calls failed", len(run.failed_calls)),
        ("orders confirmed", run.status.get("confirmed", 0)),
        ("orders cancelled", f"{run.status.get('cancelled', 0)} " + _reasons(run.reasons)),
        ("orders unsettled", run.unsettled),
    ]
    if run.latencies:
        ordered = sorted(run.latencies)
        p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
        rows.append(("call latency", f"p50 {statistics.median(ordered):.1f} ms, p99 {p99:.1f} ms"))
    rows.append(
        ("calls per instance", ", ".join(f"{k}: {v}" for k, v in sorted(run.calls_per_instance.items())))
    )
    for name, stored in sorted(run.events.items()):
        rows.append((f"  {name}", f"{stored} stored, {run.audited.get(name, 0)} audited"))
    missing = sum(max(0, n - run.audited.get(k, 0)) for k, n in run.events.items())
    rows += [
        ("events missing", missing),
        ("charge attempts retried", f"{run.retried} (gateway timeouts, redelivered after a backoff)"),
        (
            "dead letters",
            f"{run.dead_letters} (expected {JUNK_LETTERS}: the malformed event, refused by audit)",
        ),
        ("services exit codes", ", ".join(map(str, run.exit_codes))),
    ]
    if run.refusals is not None:
        refused = f"notifications' user: {len(run.refusals)} of {len(FORGERIES)} forgeries refused"
        rows += [("least privilege", refused), *(("  refused", refusal) for refusal in run.refusals)]
    for label, value in rows:
        say(f"  {label:<40} {value}")
    ok = (
        len(run.accepted) + run.rejected == count
        and not run.failed_calls
        and run.unsettled == 0
        and missing == 0
        and run.dead_letters == JUNK_LETTERS
        and all(code == 0 for code in run.exit_codes)
        and (run.refusals is None or len(run.refusals) == len(FORGERIES))
    )
    say("  result" + " " * 35 + ("OK" if ok else "FAILED"))
    for message in run.failed_calls[:5]:
        say(f"  failed call: {message}")
    return 0 if ok else 1


def _reasons(reasons: Counter[str]) -> str:
    if not reasons:
        return ""
    return "(" + ", ".join(f"{reason}: {n}" for reason, n in reasons.most_common()) + ")"
