"""``eventmicro gateway`` as a user runs it: its own process, a free port, SIGTERM to stop."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]


@contextmanager
def gateway_process(
    url: str, *extra: str, env: dict[str, str] | None = None, ready: list[str] | None = None
) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """The gateway in a process of its own and its base URL; its ready line appended to ``ready``."""
    with subprocess.Popen(
        [sys.executable, "-m", "eventmicro", "gateway", "--port", "0", "--url", url, *extra],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    ) as process:
        try:
            line = _ready(process)
            if ready is not None:
                ready.append(line)
            yield line.split()[3], process
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                process.wait(timeout=30)


def _ready(process: subprocess.Popen[str]) -> str:
    """The gateway's ready line (its base URL is the fourth word)."""
    try:
        assert process.stdout is not None
        line = process.stdout.readline()  # the ready line, or nothing when it failed to start
        assert line.startswith("eventmicro gateway ready: http://127.0.0.1:"), line + (
            process.stderr.read() if process.stderr else ""
        )
    except BaseException:
        process.kill()
        raise
    return line


def test_the_gateway_serves_until_sigterm(nats_url: str) -> None:
    with gateway_process(nats_url) as (base, process):
        health = httpx.get(f"{base}/healthz", timeout=10)
        unknown = httpx.post(f"{base}/api/nosuchservice/get", json={}, timeout=10)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    assert (health.status_code, health.json()) == (200, {"nats": "connected"})
    assert unknown.status_code == 404


def test_the_token_comes_from_the_environment_or_a_file(nats_url: str, tmp_path: Path) -> None:
    with gateway_process(nats_url, env={"EVENTMICRO_GATEWAY_TOKEN": " from-env\n"}) as (base, _):
        assert httpx.get(f"{base}/openapi.json", timeout=10).status_code == 401
        authorized = httpx.get(
            f"{base}/openapi.json", headers={"authorization": "Bearer from-env"}, timeout=10
        )
        assert authorized.status_code == 200
    token_file = tmp_path / "token"
    token_file.write_text("from-file\n")
    with gateway_process(nats_url, "--token-file", str(token_file)) as (base, _):
        authorized = httpx.get(
            f"{base}/openapi.json", headers={"authorization": "Bearer from-file"}, timeout=10
        )
        assert authorized.status_code == 200


def test_gateway_client_mints_an_entry_the_gateway_accepts(nats_url: str, tmp_path: Path) -> None:
    minted = subprocess.run(
        [sys.executable, "-m", "eventmicro", "gateway-client", "ops", "--discovery", "--rate", "50"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    token = minted.stderr.split()[-1]  # "the token of ops (shown once, not stored): <token>"
    assert token not in minted.stdout  # the entry holds its hash only
    clients = tmp_path / "clients.toml"
    clients.write_text(minted.stdout, encoding="utf-8")
    for extra, env in (([], {"EVENTMICRO_GATEWAY_CLIENTS": str(clients)}), (["--clients", str(clients)], {})):
        ready: list[str] = []
        with gateway_process(nats_url, "--metrics-port", "0", *extra, env=env, ready=ready) as (
            base,
            process,
        ):
            anonymous = httpx.get(f"{base}/openapi.json", timeout=10)
            authorized = httpx.get(
                f"{base}/openapi.json", headers={"authorization": f"Bearer {token}"}, timeout=10
            )
            scraped = httpx.get(ready[0].split("metrics: ")[1].strip(), timeout=10).text
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=30) == 0
            assert process.stderr is not None
            log = process.stderr.read()  # the process has exited: all of it
        assert (anonymous.status_code, authorized.status_code) == (401, 200)
        assert "gateway: client - GET /openapi.json: 401" in log
        assert "gateway: client ops GET /openapi.json: 200" in log
        assert 'eventmicro_gateway_requests_total{client="ops",outcome="ok"} 1.0' in scraped
        assert 'eventmicro_gateway_requests_total{client="-",outcome="unauthorized"} 1.0' in scraped
        assert token not in log


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--token-file", "/nonexistent/token"], "cannot read the token file"),
        (["--timeout", "60", "--max-timeout", "30"], "default_timeout <= max_timeout"),
        (["--port", "{taken}"], "cannot listen on 127.0.0.1:{taken}"),
        (["--clients", "/nonexistent/clients.toml"], "cannot read the clients file"),
    ],
)
def test_bad_options_are_one_line_errors(nats_url: str, extra: list[str], message: str) -> None:
    taken = socket.create_server(("127.0.0.1", 0))  # a port somebody else listens on
    port = str(taken.getsockname()[1])
    extra = [arg.replace("{taken}", port) for arg in extra]
    with taken:
        result = subprocess.run(
            [sys.executable, "-m", "eventmicro", "gateway", "--url", nats_url, *extra],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode == 2
    assert message.replace("{taken}", port) in result.stderr
    assert "Traceback" not in result.stderr
