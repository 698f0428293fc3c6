"""``eventmicro run``: services from a module, in worker processes, restarted on code changes."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import subprocess
import sys
import textwrap
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from eventmicro import Client, ConfigurationError, Connection, ConnectOptions, NatsServer, discover
from eventmicro.cli.main import main
from eventmicro.cli.run import load_services
from eventmicro.transport.server import free_port

ROOT = Path(__file__).resolve().parents[2]


@dataclasses.dataclass
class Work:  # the shapes of tests/system/echo_service.py's request and reply (JSON)
    delay: float = 0.0


@dataclasses.dataclass
class Done:
    pid: int


def start(target: str, url: str, *extra: str, cwd: Path = ROOT, path: str = "") -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (path, str(ROOT)) if p)}
    return subprocess.Popen(
        [sys.executable, "-m", "eventmicro", "run", target, "--url", url, *extra],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


async def instances(
    url: str, name: str, condition: Callable[[list[dict[str, object]]], bool]
) -> list[dict[str, object]]:
    async with Connection(ConnectOptions.from_env(url, environ={})) as conn:
        async with asyncio.timeout(60):
            while True:
                answers = await discover(conn, "INFO", name, window=0.3)
                if condition(answers):
                    return answers


def stop(process: subprocess.Popen[str]) -> tuple[int, str]:
    process.send_signal(signal.SIGTERM)
    try:
        out, _ = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        out, _ = process.communicate()
    return process.returncode, out


def test_workers_share_the_queue_group_and_drain_on_sigterm(nats_server: NatsServer) -> None:
    process = start("tests.system.echo_service:svc", nats_server.url, "--workers", "2")
    try:
        found = asyncio.run(instances(nats_server.url, "echo", lambda a: len(a) >= 2))
        assert len({a["id"] for a in found}) == 2

        async def calls() -> set[int]:
            async with Client.connect(nats_server.url, environ={}) as client:
                replies = await asyncio.gather(
                    *(client.call("echo.work", Work(delay=0.01), returns=Done, timeout=10) for _ in range(60))
                )
            return {r.pid for r in replies}

        assert len(asyncio.run(calls())) == 2  # both worker processes answered
    finally:
        code, out = stop(process)
    assert code == 0, out
    assert "2 worker(s) serving tests.system.echo_service:svc" in out
    asyncio.run(instances(nats_server.url, "echo", lambda a: not a))  # both gone from discovery


def test_reload_restarts_the_workers_when_the_code_changes(nats_server: NatsServer, tmp_path: Path) -> None:
    package = tmp_path / "reloadme"
    package.mkdir()
    (package / "__init__.py").write_text("")
    source = textwrap.dedent(
        """
        from eventmicro import Service
        svc = Service("reloadme", version="{version}")
        """
    )
    (package / "app.py").write_text(source.format(version="1.0.0"))
    process = start("reloadme.app", nats_server.url, "--reload", cwd=tmp_path, path=str(tmp_path))
    try:
        asyncio.run(instances(nats_server.url, "reloadme", lambda a: [x["version"] for x in a] == ["1.0.0"]))
        (package / "app.py").write_text(source.format(version="1.0.1"))
        asyncio.run(instances(nats_server.url, "reloadme", lambda a: [x["version"] for x in a] == ["1.0.1"]))
    finally:
        code, out = stop(process)
    assert code == 0, out
    assert "source changed; restarting the workers" in out


def test_a_bad_target_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    # a configuration error: 78 (EX_CONFIG), as a worker's, which is not restarted
    assert main(["run", "no_such_module_here"]) == 78
    assert "cannot import no_such_module_here" in capsys.readouterr().err
    assert main(["run", "eventmicro:nothing"]) == 78
    assert "has no attribute 'nothing'" in capsys.readouterr().err
    with pytest.raises(ConfigurationError, match="not a Service"):
        load_services("eventmicro:__version__")


def test_run_serves_metrics_and_probes_from_the_environment(nats_server: NatsServer) -> None:
    port = free_port()
    env_port = str(port)
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "eventmicro",
            "run",
            "tests.system.echo_service:svc",
            "--url",
            nats_server.url,
        ],
        cwd=ROOT,
        env={
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "EVENTMICRO_METRICS_PORT": env_port,
            "EVENTMICRO_HEALTH_PORT": env_port,
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        asyncio.run(instances(nats_server.url, "echo", lambda a: len(a) == 1))

        async def one_call() -> None:
            async with Client.connect(nats_server.url, environ={}) as client:
                await client.call("echo.work", Work(), returns=Done, timeout=10)

        asyncio.run(one_call())
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as ready:
            assert ready.status == 200
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as scraped:
            text = scraped.read().decode()
        assert 'eventmicro_handled_total{handler="work",kind="rpc",outcome="ok",service="echo"} 1.0' in text
    finally:
        code, out = stop(process)
    assert code == 0, out
