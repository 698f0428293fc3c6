"""Every code block of README.md runs as written (issue 15).

The ```python, ```sh, ```bash and ```console blocks are extracted and run, each on a
nats-server of its own (``fresh_nats_server``; ``NATS_URL`` points at it, no other
``NATS_*``/``EVENTMICRO_*`` variable is passed on), in a temporary directory, with the
repository on ``PYTHONPATH`` (the snippets import the shop's ``schemas`` and ``subscribers``).

- A Python block runs as a script (``python snippet.py``) and must exit 0.
- A shell block runs under ``bash`` with ``set -euo pipefail``; ``curl`` fails on an HTTP
  error (``--fail-with-body``), so a 415 fails the block.

An HTML comment on the line right before a block's fence changes that:

``<!-- readme-test: skip REASON -->``
    not run; the reason is required and shown by ``pytest -rs``.
``<!-- readme-test: continues -->``
    a Python block run after the Python blocks before it (back to the last one not marked).
``<!-- readme-test: pytest -->``
    a Python test file, run with ``python -m pytest`` in a directory holding the files below.
``<!-- readme-test: file NAME -->``
    a block (any language) written as NAME into the directory of every later block.
``<!-- readme-test: serve=N ready=URL service=NAME port=P -->`` (shell blocks)
    the first N commands are servers ("in a terminal of its own"): they start in the
    background; the rest runs once each ``ready`` URL answers 200 and each ``service``
    answers ``$SRV.PING``; then the servers get SIGTERM. ``port=P`` replaces P in the block
    by a free port, so two test runs never share one.

Each block has ``BLOCK_TIMEOUT`` seconds, and all of them together ``BUDGET`` seconds.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from eventmicro import Connection, ConnectOptions, NatsServer
from eventmicro._errors import EventMicroError

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
RUN = {"python": "python", "sh": "sh", "bash": "sh", "console": "sh"}
BLOCK_TIMEOUT = 45.0
BUDGET = 100.0  # seconds for every block together; pytest-timeout's 120 s is per test
_MARKER = re.compile(r"^\s*<!--\s*readme-test:\s*(.*?)\s*-->\s*$")
_FENCE = re.compile(r"^(\s*)```\s*([\w+-]*)\s*$")
_OPTION = re.compile(r"(\w+)=(\S+)")
_DIRECTIVES = ("skip", "continues", "pytest", "file", "serve")
_started: list[float] = []


@dataclass
class Block:
    line: int  # of the opening fence, 1-based
    lang: str
    code: str
    heading: str
    directive: str = "run"  # run, skip, continues, pytest, file, serve
    argument: str = ""  # skip's reason, file's name
    options: dict[str, list[str]] = field(default_factory=dict)

    @property
    def runnable(self) -> bool:
        return RUN.get(self.lang) is not None and self.directive != "file"

    @property
    def name(self) -> str:
        slug = re.sub(r"[^a-z0-9]+", "-", self.heading.lower()).strip("-")[:40]
        return f"L{self.line}-{slug}"


def parse(text: str) -> list[Block]:
    """The README's fenced blocks with their markers; a marker not right before a fence fails."""
    blocks: list[Block] = []
    lines = text.splitlines()
    heading = "top"
    marker: tuple[int, str] | None = None
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("#"):
            heading = line.lstrip("#").strip()
        found = _MARKER.match(line)
        fence = _FENCE.match(line)
        if found:
            marker = (i + 1, found.group(1))
        elif fence:
            indent, lang = fence.group(1), fence.group(2).lower()
            end = i + 1
            while end < len(lines) and lines[end].strip() != "```":
                end += 1
            body = [
                entry[len(indent) :] if entry.startswith(indent) else entry for entry in lines[i + 1 : end]
            ]
            block = Block(line=i + 1, lang=lang, code="\n".join(body) + "\n", heading=heading)
            if marker is not None:
                if marker[0] != i:
                    raise AssertionError(
                        f"README.md:{marker[0]}: a readme-test marker not right before a fence"
                    )
                _apply(block, marker[1])
                marker = None
            blocks.append(block)
            i = end
        elif marker is not None and line.strip():
            raise AssertionError(f"README.md:{marker[0]}: a readme-test marker not right before a fence")
        i += 1
    return blocks


def _apply(block: Block, marker: str) -> None:
    word, _, rest = marker.partition(" ")
    where = f"README.md:{block.line - 1}"
    if "=" in word:  # only options: a served shell block
        word, rest = "serve", marker
    if word not in _DIRECTIVES:
        raise AssertionError(f"{where}: unknown readme-test directive {word!r}")
    block.directive = word
    if word == "skip":
        if not rest.strip():
            raise AssertionError(f"{where}: a skipped block needs its reason")
        block.argument = rest.strip()
    elif word == "file":
        block.argument = rest.strip()
        if not block.argument:
            raise AssertionError(f"{where}: file needs a name")
    elif word == "serve":
        for key, value in _OPTION.findall(rest):
            block.options.setdefault(key, []).append(value)
        if set(block.options) - {"serve", "ready", "service", "port"}:
            raise AssertionError(f"{where}: unknown option in {rest!r}")
        if block.lang not in ("sh", "bash", "console"):
            raise AssertionError(f"{where}: serve=... is for shell blocks")
    elif rest.strip():
        raise AssertionError(f"{where}: {word} takes no argument")


BLOCKS = parse(README.read_text(encoding="utf-8"))
RUNNABLE = [b for b in BLOCKS if b.runnable]


def test_every_block_is_run_or_skipped_with_a_reason() -> None:
    """Nothing is skipped silently: the list of skipped blocks and their reasons is printed."""
    skipped = [b for b in RUNNABLE if b.directive == "skip"]
    run = [b for b in RUNNABLE if b.directive != "skip"]
    print(f"README.md: {len(run)} blocks run, {len(skipped)} skipped")
    for block in skipped:
        print(f"  skipped {block.name}: {block.argument}")
    assert run, "no README block is run"
    assert all(b.argument for b in skipped)
    first = next((b for b in RUNNABLE if b.lang == "python" and b.directive != "skip"), None)
    assert first is None or first.directive != "continues", "the first Python block continues nothing"


@pytest.mark.parametrize("block", RUNNABLE, ids=[b.name for b in RUNNABLE])
def test_readme_block(block: Block, fresh_nats_server: NatsServer, tmp_path: Path) -> None:
    """The block runs as written and succeeds against a nats-server of its own."""
    if block.directive == "skip":
        pytest.skip(f"README.md:{block.line}: {block.argument}")
    if not _started:
        _started.append(time.monotonic())
    timeout = min(BLOCK_TIMEOUT, BUDGET - (time.monotonic() - _started[0]))
    assert timeout > 1, f"the README's blocks took more than {BUDGET:g} s together"
    for earlier in BLOCKS:  # files declared before this block
        if earlier.directive == "file" and earlier.line < block.line:
            (tmp_path / earlier.argument).write_text(earlier.code, encoding="utf-8")
    env = _environment(fresh_nats_server.url)
    if block.lang == "python":
        _run_python(block, tmp_path, env, timeout)
    else:
        _run_shell(block, tmp_path, env, timeout, fresh_nats_server.url)


def _environment(url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NATS_", "EVENTMICRO_", "PYTEST_"))}
    env["NATS_URL"] = url
    env["PYTHONPATH"] = str(ROOT)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def _run_python(block: Block, cwd: Path, env: dict[str, str], timeout: float) -> None:
    if block.directive == "pytest":
        (cwd / "test_readme_snippet.py").write_text(block.code, encoding="utf-8")
        argv = [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-W",
            "error",
            "test_readme_snippet.py",
        ]
        _check(block, argv, cwd, env, timeout)
        return
    code = block.code
    if block.directive == "continues":
        parts: list[str] = []
        for earlier in reversed([b for b in RUNNABLE if b.lang == "python" and b.line < block.line]):
            if earlier.directive == "skip":
                continue
            parts.insert(0, earlier.code)
            if earlier.directive != "continues":
                break
        code = "\n".join([*parts, code])
    (cwd / "snippet.py").write_text(code, encoding="utf-8")
    _check(block, [sys.executable, "snippet.py"], cwd, env, timeout)


def _commands(code: str) -> list[str]:
    """The block's commands: lines joined at a trailing backslash, blank and comment lines dropped."""
    commands: list[str] = []
    current = ""
    for line in code.splitlines():
        current += line + "\n"
        if line.rstrip().endswith("\\"):
            continue
        if current.strip() and not current.lstrip().startswith("#"):
            commands.append(current)
        current = ""
    if current.strip():
        commands.append(current)
    return commands


def _run_shell(block: Block, cwd: Path, env: dict[str, str], timeout: float, url: str) -> None:
    deadline = time.monotonic() + timeout
    ports = {port: str(_free_port()) for port in block.options.get("port", [])}
    code = block.code
    ready = block.options.get("ready", [])
    for port, free in ports.items():
        code = code.replace(port, free)
        ready = [address.replace(port, free) for address in ready]
    commands = _commands(code)
    served = int(block.options.get("serve", ["0"])[0])
    servers: list[tuple[str, subprocess.Popen[bytes], Path]] = []
    try:
        for n, command in enumerate(commands[:served]):
            log = cwd / f"server-{n}.log"
            with log.open("wb") as out:
                process = subprocess.Popen(
                    ["bash", "-c", "exec " + command.strip()],
                    cwd=cwd,
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            servers.append((command.strip(), process, log))
        for service in block.options.get("service", []):
            asyncio.run(_wait_service(url, service, deadline, servers))
        for address in ready:
            _wait_http(address, deadline, servers)
        rest = "".join(commands[served:])
        if rest.strip():
            prelude = 'set -euo pipefail\ncurl() { command curl --fail-with-body -sS "$@"; echo; }\n'
            _check(block, ["bash", "-c", prelude + rest], cwd, env, max(1.0, deadline - time.monotonic()))
        for command, process, log in servers:
            assert process.poll() is None, f"{command!r} ended early:\n{log.read_text(errors='replace')}"
    finally:
        for _, process, _ in servers:
            _stop(process)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def _wait_service(
    url: str, name: str, deadline: float, servers: list[tuple[str, subprocess.Popen[bytes], Path]]
) -> None:
    """Wait until an instance of service ``name`` answers ``$SRV.PING.<name>``."""
    async with Connection(ConnectOptions.from_env(url, environ={})) as connection:
        while True:
            _alive(servers)
            try:
                await connection.request(f"$SRV.PING.{name}", b"", timeout=0.5)
                return
            except EventMicroError:
                assert time.monotonic() < deadline, f"service {name} did not start"
                await asyncio.sleep(0.05)


def _wait_http(
    address: str, deadline: float, servers: list[tuple[str, subprocess.Popen[bytes], Path]]
) -> None:
    """Wait until ``address`` answers 200."""
    while True:
        _alive(servers)
        try:
            with urllib.request.urlopen(address, timeout=1) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        assert time.monotonic() < deadline, f"{address} did not answer"
        time.sleep(0.05)


def _alive(servers: list[tuple[str, subprocess.Popen[bytes], Path]]) -> None:
    for command, process, log in servers:
        assert process.poll() is None, f"{command!r} exited:\n{log.read_text(errors='replace')}"


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _check(block: Block, argv: list[str], cwd: Path, env: dict[str, str], timeout: float) -> None:
    """Run ``argv`` in a process group of its own; it must exit 0 within ``timeout``."""
    process = subprocess.Popen(
        argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        text = output.decode(errors="replace")
        pytest.fail(f"README.md:{block.line} did not finish within {timeout:.0f} s:\n{text}")
    if process.returncode != 0:
        pytest.fail(
            f"README.md:{block.line} exited with {process.returncode}:\n{block.code}\n--- output ---\n"
            f"{output.decode(errors='replace')}"
        )
