"""`eventmicro server` and the clients tell one URL story: the server listens where clients look
(port 4222, or the port of ``NATS_URL``) when it is free, and otherwise prints the line to export.

These tests point ``NATS_URL`` at a free port of their own: they never touch 4222.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from eventmicro import Connection, ConnectOptions
from eventmicro.transport.server import free_port


@contextmanager
def cli_server(env: dict[str, str], *args: str) -> Iterator[list[str]]:
    """`eventmicro server` until it says "Ctrl-C to stop"; the lines it printed until then."""
    with subprocess.Popen(
        [sys.executable, "-m", "eventmicro", "server", "--no-jetstream", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    ) as process:
        try:
            assert process.stdout is not None
            lines: list[str] = []
            while not lines or lines[-1] != "Ctrl-C to stop":
                line = process.stdout.readline()
                assert line, f"the server exited: {process.communicate()[1]}"
                lines.append(line.rstrip("\n"))
            yield lines
            process.send_signal(2)
            assert process.wait(timeout=20) == 0
        finally:
            process.kill()


async def connects(url: str | None, env: dict[str, str]) -> bool:
    """Whether a client configured like the CLI's (``--url`` or the environment) gets through."""
    options = ConnectOptions.from_env(url, environ=env, connect_attempts=1)
    async with Connection(options) as connection:
        return connection.is_connected


@pytest.fixture
def env() -> dict[str, str]:
    """This test's environment: clients look at a free loopback port of its own."""
    clean = {k: v for k, v in os.environ.items() if k not in {"NATS_URL", "EVENTMICRO_NATS_URL"}}
    return {**clean, "NATS_URL": f"nats://127.0.0.1:{free_port()}"}


async def test_the_server_listens_where_clients_look_when_that_port_is_free(env: dict[str, str]) -> None:
    with cli_server(env) as lines:
        assert lines[0].startswith(f"nats-server ready: {env['NATS_URL']} ")
        assert "export" not in "\n".join(lines)
        assert await connects(None, env)  # a client with no --url finds it


async def test_a_taken_port_prints_the_line_to_export(env: dict[str, str]) -> None:
    wanted = int(env["NATS_URL"].rsplit(":", 1)[1])
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", wanted))
        squatter.listen()
        with cli_server(env) as lines:
            text = "\n".join(lines)
            assert f"port {wanted} is in use" in text
            exports = [line.strip() for line in lines if line.strip().startswith("export NATS_URL=")]
            assert len(exports) == 1
            url = exports[0].removeprefix("export NATS_URL=")
            assert url != env["NATS_URL"]
            assert await connects(None, {**env, "NATS_URL": url})  # as the user's shell would


def test_an_explicit_port_in_use_shows_nats_servers_own_reason(env: dict[str, str]) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "eventmicro", "server", "--port", str(port)],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=False,
        )
    assert result.returncode == 2
    assert f"Error listening on port: 127.0.0.1:{port}" in result.stderr
    assert "address already in use" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_cluster_prints_the_line_to_export(env: dict[str, str]) -> None:
    with cli_server(env, "--cluster", "2") as lines:
        exports = [line.strip() for line in lines if line.strip().startswith("export NATS_URL=")]
        assert len(exports) == 1
        urls = exports[0].removeprefix("export NATS_URL=").split(",")
        assert len(urls) == 2
        assert all(url.startswith("nats://127.0.0.1:") for url in urls)
