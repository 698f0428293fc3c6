"""Rotating a user's key: ``eventmicro permissions --rotate USER`` and a nats-server reload.

After the reload the old seed no longer authenticates (a connection that used it is dropped
and cannot come back), the new one does, and the other users are untouched.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from eventmicro import AuthorizationError, Connection, ConnectionState, ConnectOptions, NatsServer
from eventmicro.cli.main import main

Eventually = Callable[..., Awaitable[None]]


def generate(folder: Path, *extra: str) -> None:
    modules = ["subscribers.notifications", "subscribers.billing"]
    assert main(["permissions", *modules, "--out", str(folder), *extra]) == 0


def options(server: NatsServer, seed: Path, user: str) -> ConnectOptions:
    environ = {"EVENTMICRO_NATS_NKEY_SEED": str(seed), "EVENTMICRO_NATS_INBOX_PREFIX": f"_INBOX_{user}"}
    return ConnectOptions.from_env(server.url, environ=environ, connect_attempts=1, reconnect_wait=0.1)


async def test_a_rotated_key_stops_working_at_the_reload(tmp_path: Path, eventually: Eventually) -> None:
    server = NatsServer(jetstream=False)
    folder = server.directory / "secrets"
    generate(folder)
    server.extra_config = 'include "secrets/accounts.conf"'
    with server.start():
        old = tmp_path / "old.nk"
        old.write_bytes((folder / "notifications.nk").read_bytes())
        async with (
            Connection(options(server, old, "notifications")) as before,
            Connection(options(server, folder / "billing.nk", "billing")) as other,
        ):
            generate(folder, "--rotate", "notifications")
            assert old.read_bytes() != (folder / "notifications.nk").read_bytes()
            assert server.pid is not None
            os.kill(server.pid, signal.SIGHUP)  # nats-server reloads its configuration
            await eventually(lambda: before.state is ConnectionState.RECONNECTING)  # the old key's is dropped
            with pytest.raises(AuthorizationError):
                await Connection(options(server, old, "notifications")).open()
            async with Connection(options(server, folder / "notifications.nk", "notifications")) as after:
                await after.flush()
            await other.flush()  # billing's key was not rotated: its connection is untouched
            assert other.state is ConnectionState.CONNECTED
