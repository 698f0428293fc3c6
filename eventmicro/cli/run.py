"""``eventmicro run MODULE[:ATTR]``: serve one or more services, in one or several worker processes.

::

    eventmicro run subscribers.orders            # the module's `svc`
    eventmicro run myapp.services:all_services   # a Service, or a list of them
    eventmicro run subscribers.orders --workers 4
    eventmicro run subscribers.orders --reload   # restart when a .py file under the module changes

One worker serves in this process. With ``--workers N`` (or ``--reload``) this process is a
supervisor: each worker is a child process serving the same services, so the instances share
queue groups and durable consumers; SIGINT/SIGTERM are passed on and every worker drains; a
worker that dies is started again (up to 5 times a minute), but not one that stopped on a
configuration error (a bad target, options or declaration, refused credentials): that would
fail the same way again, so every worker stops and the exit code is 78 (``EX_CONFIG``).

A stop is bounded in every connection state (``--drain-timeout`` or ``EVENTMICRO_DRAIN_TIMEOUT``
for in-flight work, a few seconds more to close); a second SIGINT/SIGTERM exits at once, the
supervisor passing it on to its workers (they run in their own process group, so a terminal's
Ctrl-C reaches them once, through the supervisor).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from eventmicro._errors import AuthorizationError, ConfigurationError, StreamConflict
from eventmicro.cli.common import Subparsers, connect_options, connection_env
from eventmicro.service.process import DRAIN_TIMEOUT_VARIABLE, Serve, drain_timeout_from_env, run_services
from eventmicro.service.service import Service
from eventmicro.transport.config import ConnectOptions

EXAMPLES = """examples:
  eventmicro run subscribers.orders                     # serve `svc` of that module
  eventmicro run myapp.services:services --workers 4    # a list of services, four processes
  eventmicro run subscribers.orders --reload            # restart on code changes (development)
  eventmicro run subscribers.orders --url nats://10.0.0.5:4222
"""

log = logging.getLogger("eventmicro.run")
RESTARTS_PER_MINUTE: Final = 5
CONFIGURATION_FAILED: Final = 78  # EX_CONFIG of sysexits.h: the same start would fail again
POLL: Final = 0.5  # seconds between looks at the source files (--reload)
# --reload does not look into these (nor into hidden directories, *.egg-info, or any directory
# holding a pyvenv.cfg, i.e. a virtualenv of any name): a 2,248-file venv polled every 0.5 s
# cost a core 7-12% while idle
UNWATCHED: Final = frozenset({"__pycache__", "node_modules", "site-packages", "dist-packages"})


def register(subparsers: Subparsers) -> None:
    """Add ``run`` to the ``eventmicro`` parser."""
    parser = subparsers.add_parser(
        "run",
        help="serve services from a module, in one or more worker processes",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "target", metavar="MODULE[:ATTR]", help="where the service(s) are (ATTR default: svc)"
    )
    parser.add_argument("--workers", type=int, default=1, help="worker processes (default 1: this one)")
    parser.add_argument(
        "--reload", action="store_true", help="restart the workers when a source file changes"
    )
    parser.add_argument("--url", default=None, help="NATS URL (default: from the environment)")
    parser.add_argument(
        "--drain-timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="time in-flight work gets to finish on SIGTERM (default: EVENTMICRO_DRAIN_TIMEOUT or 30)",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except (ConfigurationError, AuthorizationError, StreamConflict) as exc:  # permanent: say so
        print(f"eventmicro run: configuration error: {exc}", file=sys.stderr, flush=True)
        return CONFIGURATION_FAILED


def _run(args: argparse.Namespace) -> int:
    if args.workers < 1:
        raise ConfigurationError("--workers must be at least 1")
    drain_timeout = drain_timeout_from_env(getattr(args, "drain_timeout", None))
    services = load_services(args.target)  # fails here, before any process starts
    if args.workers == 1 and not args.reload:
        return serve(services, connect_options(args), drain_timeout=drain_timeout)
    supervisor = Supervisor(args.target, args.workers, url=args.url, reload=args.reload)
    # auth flags and the drain timeout reach the workers as environment variables
    supervisor.env = {**os.environ, **connection_env(args), DRAIN_TIMEOUT_VARIABLE: str(drain_timeout)}
    return supervisor.run()


def load_services(target: str) -> list[Service]:
    """The services ``MODULE[:ATTR]`` names; raises `ConfigurationError` saying what is wrong."""
    module_name, _, attr = target.partition(":")
    sys.path.insert(0, os.getcwd())  # like `python -m`: modules of the current directory
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(f"cannot import {module_name}: {exc}") from exc
    name = attr or "svc"
    value = getattr(module, name, None)
    if value is None:
        raise ConfigurationError(f"{module_name} has no attribute {name!r} (give MODULE:ATTR)")
    services = [value] if isinstance(value, Service) else value
    if (
        not isinstance(services, list | tuple)
        or not services
        or not all(isinstance(s, Service) for s in services)
    ):
        raise ConfigurationError(f"{target} is not a Service or a list of Services")
    return list(services)


def serve(services: Sequence[Service], options: ConnectOptions, *, drain_timeout: float) -> int:
    """Serve ``services`` on one connection until SIGINT/SIGTERM, then drain them all (bounded,
    see `eventmicro.service.process`); the exit code.

    Observability as `Service.run`: ``EVENTMICRO_LOG_FORMAT``, ``EVENTMICRO_METRICS_PORT`` and
    ``EVENTMICRO_HEALTH_PORT`` (worker ``i`` of ``--workers`` listens on port + i).
    """
    if os.environ.get("EVENTMICRO_LOG_FORMAT"):
        from eventmicro.observability.logs import configure

        configure()
    ours = logging.getLogger("eventmicro")
    if ours.getEffectiveLevel() > logging.INFO and not os.environ.get("EVENTMICRO_LOG_LEVEL"):
        # what is served is shown; -v (debug) and EVENTMICRO_LOG_LEVEL stay as they are
        ours.setLevel(logging.INFO)
    offset = int(os.environ.get(WORKER_INDEX, "0"))
    metrics_port, health_port = (_env_port(name, offset) for name in ("METRICS", "HEALTH"))
    if metrics_port is not None:
        from eventmicro.observability.metrics import enable

        enable()
    names = ", ".join(f"{s.name} {s.version}" for s in services)
    return run_services(
        Serve(
            services,
            options,
            drain_timeout=drain_timeout,
            metrics_port=metrics_port,
            health_port=health_port,
            on_serving=lambda _: log.info("serving %s (pid %d)", names, os.getpid()),
            on_stopping=lambda: log.info("stopping %s", names),
        )
    )


WORKER_INDEX: Final = "EVENTMICRO_WORKER_INDEX"


def _env_port(kind: str, offset: int) -> int | None:
    text = os.environ.get(f"EVENTMICRO_{kind}_PORT")
    if not text:
        return None
    try:
        return int(text) + offset
    except ValueError as exc:
        raise ConfigurationError(f"EVENTMICRO_{kind}_PORT must be a port number, not {text!r}") from exc


class Supervisor:
    """Runs the workers, passes signals on, restarts crashed workers, reloads on changes."""

    def __init__(self, target: str, workers: int, *, url: str | None, reload: bool) -> None:
        self.target = target
        self.count = workers
        self.url = url
        self.reload = reload
        self.workers: list[subprocess.Popen[bytes]] = []
        self.env: dict[str, str] | None = None  # the workers' environment (None: this one's)
        self.stop = threading.Event()
        self.restarts: list[float] = []

    def run(self) -> int:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._signalled)
        root = self._source_root()
        seen = _mtimes(root) if self.reload else {}
        self.workers = [self._spawn(i) for i in range(self.count)]
        print(f"eventmicro run: {self.count} worker(s) serving {self.target}", flush=True)
        if self.reload:
            print(f"eventmicro run: --reload watches {len(seen)} .py file(s) under {root}", flush=True)
        failed = 0  # the exit code of giving up
        parked: set[int] = set()  # --reload: workers that kept crashing wait for the next change
        while not self.stop.wait(POLL):
            if self.reload:
                now = _mtimes(root)
                if now != seen:
                    changed = sorted({*now.items()} ^ {*seen.items()})
                    names = ", ".join(dict.fromkeys(str(p.relative_to(root)) for p, _ in changed[:3]))
                    seen = now
                    print(f"eventmicro run: source changed; restarting the workers ({names})", flush=True)
                    self._stop_workers()
                    self.workers = [self._spawn(i) for i in range(self.count)]
                    self.restarts.clear()
                    parked.clear()
                    continue
            for i, worker in enumerate(self.workers):
                code = worker.poll()
                if code is None or i in parked:
                    continue
                why_not = self._why_not_restart(code)
                if why_not and self.reload:  # most likely code being edited
                    message = f"worker {worker.pid} {why_not}; waiting for a change to the source"
                    print(f"eventmicro run: {message}", file=sys.stderr, flush=True)
                    parked.add(i)
                    continue
                if why_not:
                    message = f"worker {worker.pid} {why_not}, giving up"
                    print(f"eventmicro run: {message}", file=sys.stderr, flush=True)
                    failed = CONFIGURATION_FAILED if code == CONFIGURATION_FAILED else 1
                    self.stop.set()
                    break
                print(f"eventmicro run: worker {worker.pid} exited ({code}); starting another", flush=True)
                self.workers[i] = self._spawn(i)
        codes = self._stop_workers()
        return failed or (1 if any(codes) else 0)

    def _signalled(self, signum: int, frame: object) -> None:
        """First signal: stop (the workers drain). Again: the workers exit at once, and so do we."""
        if not self.stop.is_set():
            self.stop.set()
            return
        print("eventmicro run: signalled again; the workers exit at once", file=sys.stderr, flush=True)
        for worker in self.workers:
            if worker.returncode is None:  # a worker's second signal: it exits at once
                with contextlib.suppress(OSError):
                    os.kill(worker.pid, signal.SIGTERM)

    def _spawn(self, index: int) -> subprocess.Popen[bytes]:
        command = [sys.executable, "-m", "eventmicro", "run", self.target]
        if self.url:
            command += ["--url", self.url]
        env = {**(self.env or os.environ), WORKER_INDEX: str(index)}
        # its own process group: a terminal's Ctrl-C reaches it once, passed on by the supervisor
        return subprocess.Popen(command, env=env, process_group=0)

    def _stop_workers(self) -> list[int]:
        return stop_processes(self.workers, timeout=60)

    def _why_not_restart(self, code: int) -> str:
        """Why a worker that exited with ``code`` is not started again ("": it is)."""
        if code == CONFIGURATION_FAILED:  # the worker said why; another start would fail the same way
            return f"stopped on a configuration error (exit code {code})"
        if not self._may_restart():
            return f"exited ({code}); too many restarts"
        return ""

    def _may_restart(self) -> bool:
        now = time.monotonic()
        self.restarts = [t for t in self.restarts if now - t < 60]
        if len(self.restarts) >= RESTARTS_PER_MINUTE:
            return False
        self.restarts.append(now)
        return True

    def _source_root(self) -> Path:
        module = importlib.import_module(self.target.partition(":")[0])
        file = Path(module.__file__ or ".").resolve()
        top = module.__name__.partition(".")[0]
        root = file.parent
        for _ in range(module.__name__.count(".")):
            root = root.parent
        return root / top if (root / top).is_dir() else file.parent


def stop_processes(processes: Sequence[subprocess.Popen[Any]], *, timeout: float) -> list[int]:
    """SIGTERM every process still running, wait up to ``timeout`` s each (then kill); exit codes."""
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    codes = []
    for process in processes:
        try:
            codes.append(process.wait(timeout=timeout))
        except subprocess.TimeoutExpired:
            process.kill()
            codes.append(process.wait())
    return codes


def _mtimes(root: Path) -> dict[Path, float]:
    """Every ``.py`` file under ``root`` (but not in `UNWATCHED` trees) with its mtime."""
    out: dict[Path, float] = {}
    _scan(str(root), out)
    return out


def _scan(directory: str, out: dict[Path, float]) -> None:
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return
    if any(entry.name == "pyvenv.cfg" for entry in entries):
        return  # a virtualenv
    for entry in entries:
        with contextlib.suppress(OSError):
            if entry.is_dir(follow_symlinks=False):
                name = entry.name
                if not (name.startswith(".") or name in UNWATCHED or name.endswith(".egg-info")):
                    _scan(entry.path, out)
            elif entry.name.endswith(".py"):
                out[Path(entry.path)] = entry.stat().st_mtime
