"""The embedded nats-server manager: binary lookup, start, readiness, restart, kill, clusters."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from eventmicro import (
    Connection,
    ConnectOptions,
    Message,
    NatsCluster,
    NatsServer,
    ServerNotFound,
    ServerStartError,
    find_server_binary,
)
from eventmicro.transport.server import ENV_BINARY, free_port


def options(url: str, **extra: object) -> ConnectOptions:
    return ConnectOptions.from_env(url, environ={}, connect_attempts=3, **extra)


def running(server: NatsServer) -> bool:
    """Read through a call so that type narrowing does not freeze the answer."""
    return server.is_running


def accepts_connections(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            return sock.recv(5) == b"INFO "
    except OSError:
        return False


def test_the_binary_is_found_from_the_server_extra() -> None:
    binary = find_server_binary()
    assert binary.name == "nats-server"
    version = subprocess.run([binary, "--version"], capture_output=True, text=True, check=True)
    assert "nats-server" in version.stdout


def test_an_explicit_path_or_env_var_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = find_server_binary()
    link = tmp_path / "my-nats-server"
    link.symlink_to(real)
    assert find_server_binary(link) == link
    monkeypatch.setenv(ENV_BINARY, str(link))
    assert find_server_binary() == link


def test_a_missing_binary_says_how_to_get_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_BINARY, str(tmp_path / "nope"))
    with pytest.raises(ServerNotFound) as caught:
        NatsServer()
    assert "pip install 'eventmicro[server]'" in str(caught.value)
    assert ENV_BINARY in str(caught.value)


def test_no_binary_anywhere_gives_the_same_single_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_BINARY, raising=False)
    monkeypatch.setenv("PATH", "")
    monkeypatch.setattr("sysconfig.get_path", lambda name: "/nonexistent")
    monkeypatch.setattr(sys, "executable", "/nonexistent/python")
    with pytest.raises(ServerNotFound, match="nats-server was not found"):
        find_server_binary()


def test_server_starts_on_a_free_port_with_jetstream_and_stops(tmp_path: Path) -> None:
    server = NatsServer()
    with server:
        assert server.is_running
        assert server.url.startswith("nats://127.0.0.1:")
        assert accepts_connections(server.port)
        assert server.store_dir.is_dir()
        directory = server.directory
    assert not running(server)
    assert not accepts_connections(server.port)
    assert not directory.exists()


async def test_jetstream_is_ready_when_start_returns(fresh_nats_server: NatsServer) -> None:
    async with Connection(options(fresh_nats_server.url)) as conn:
        info = await conn.request("$JS.API.INFO", b"", timeout=2)
    assert b'"type":"io.nats.jetstream.api.v1.account_info_response"' in info.data


def test_a_server_that_cannot_start_fails_with_its_log(tmp_path: Path) -> None:
    server = NatsServer(extra_config="this is not { valid config")
    with pytest.raises(ServerStartError) as caught:
        server.start(timeout=10)
    assert caught.value.log_tail
    assert not server.is_running
    server.close()


def test_a_taken_port_fails_clearly() -> None:
    with NatsServer(jetstream=False) as first:
        second = NatsServer(port=first.port, jetstream=False)
        with pytest.raises(ServerStartError) as caught:
            second.start(timeout=10)
        second.close()
    # nats-server's own reason, not just "exited with code 1"
    assert f"Error listening on port: 127.0.0.1:{first.port}" in str(caught.value)
    assert "address already in use" in str(caught.value)


def test_restart_keeps_port_and_jetstream_store() -> None:
    with NatsServer() as server:
        port = server.port
        marker = server.store_dir / "marker"
        marker.write_text("kept")
        server.restart()
        assert server.port == port
        assert accepts_connections(port)
        assert marker.read_text() == "kept"


async def test_jetstream_data_survives_a_kill_and_restart(fresh_nats_server: NatsServer) -> None:
    url = fresh_nats_server.url
    config = b'{"name":"KEEP","subjects":["keep.>"],"storage":"file"}'
    async with Connection(options(url)) as conn:
        await conn.request("$JS.API.STREAM.CREATE.KEEP", config, timeout=5)
        ack = await conn.request("keep.one", b"remember me", timeout=5)
        assert b'"seq":1' in ack.data
    fresh_nats_server.kill()
    assert not fresh_nats_server.is_running
    await fresh_nats_server.arestart()
    async with Connection(options(url)) as conn:
        got = await conn.request("$JS.API.STREAM.MSG.GET.KEEP", b'{"seq":1}', timeout=5)
    stored = json.loads(got.data)["message"]
    assert base64.b64decode(stored["data"]) == b"remember me"


def test_stop_kills_a_server_that_ignores_sigterm() -> None:
    with NatsServer(jetstream=False) as server:
        pid = server.pid
        assert pid is not None
        os.kill(pid, 19)  # SIGSTOP: it cannot handle SIGTERM any more
        server.stop(timeout=1)
        assert not server.is_running


@pytest.mark.slow
async def test_three_node_cluster_routes_messages_between_nodes(nats_cluster: NatsCluster) -> None:
    assert len(nats_cluster) == 3
    assert all(node.connected_peers() == 2 for node in nats_cluster)
    received: asyncio.Future[Message] = asyncio.get_running_loop().create_future()

    async def handler(msg: Message) -> None:
        if not received.done():
            received.set_result(msg)

    async with (
        Connection(options(nats_cluster[0].url)) as left,
        Connection(options(nats_cluster[2].url)) as right,
    ):
        await left.subscribe("across.nodes", handler)
        await left.flush()
        # interest propagates over the routes; keep publishing until it has arrived
        while not received.done():
            await right.publish("across.nodes", b"hello")
            await right.flush()
            await asyncio.wait([received], timeout=0.05)
    message = received.result()
    assert message.data == b"hello"


@pytest.mark.slow
def test_a_killed_cluster_node_rejoins_after_restart(nats_cluster: NatsCluster) -> None:
    node = nats_cluster[1]
    node.kill()
    node.start()
    nats_cluster.wait_formed()
    assert node.connected_peers() == 2


def test_cli_server_runs_until_interrupted() -> None:
    with subprocess.Popen(
        [sys.executable, "-m", "eventmicro", "server", "--no-jetstream"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "NATS_URL": f"nats://127.0.0.1:{free_port()}"},  # never 4222
    ) as process:
        try:
            assert process.stdout is not None
            line = process.stdout.readline()
            assert line.startswith("nats-server ready: nats://127.0.0.1:")
            port = int(line.split()[2].rsplit(":", 1)[1])
            assert accepts_connections(port)
            process.send_signal(2)
            assert process.wait(timeout=20) == 0
            assert not accepts_connections(port)
        finally:
            process.kill()


def test_cli_reports_a_missing_binary_without_a_traceback(tmp_path: Path) -> None:
    env = {**os.environ, ENV_BINARY: str(tmp_path / "missing")}
    result = subprocess.run(
        [sys.executable, "-m", "eventmicro", "server"],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert result.returncode == 2
    assert "pip install 'eventmicro[server]'" in result.stderr
    assert "Traceback" not in result.stderr


def test_server_files_are_private_to_the_test(tmp_path: Path) -> None:
    with NatsServer(store_dir=tmp_path / "store") as server:
        assert server.store_dir.is_relative_to(tmp_path)
        config = (server.directory / "nats-server.conf").read_text()
        assert str(server.store_dir) in config
    assert (tmp_path / "store").exists()  # a store the caller gave is not deleted
    assert stat.S_ISDIR((tmp_path / "store").stat().st_mode)
