"""``eventmicro run --reload`` in a project as people have them: a virtualenv, .git, node_modules
and caches beside the code. Only the project's own ``.py`` files are watched (polling a
2,248-file venv twice a second cost 7-12% of a core while idle), and a restart says which file
changed. An edit that leaves a module that does not import is waited out until the next edit fixes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from eventmicro import Connection, ConnectOptions, NatsServer, discover

ROOT = Path(__file__).resolve().parents[2]
APP = textwrap.dedent(
    """
    from eventmicro import Service

    svc = Service("reloadtree", version="{version}")
    """
)


def project(tmp_path: Path) -> Path:
    """app.py and a package, beside a venv (of any name), .git, node_modules and caches."""
    (tmp_path / "app.py").write_text(APP.format(version="1.0.0"))
    (tmp_path / "helpers").mkdir()
    (tmp_path / "helpers" / "__init__.py").write_text("")
    (tmp_path / "helpers" / "text.py").write_text("X = 1\n")
    noise = [
        "myenv/lib/python3.11/site-packages/big/__init__.py",  # a venv: it holds pyvenv.cfg
        ".venv/lib/python3.11/site-packages/big/__init__.py",
        ".git/hooks/pre_commit.py",
        "node_modules/pkg/gyp.py",
        "helpers/__pycache__/text.py",
        "build/lib/site-packages/copy.py",
        "helpers.egg-info/x.py",
    ]
    for name in noise:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("")
    (tmp_path / "myenv" / "pyvenv.cfg").write_text("home = /usr/bin\n")
    return tmp_path


async def versions(url: str, wanted: str) -> None:
    async with Connection(ConnectOptions.from_env(url, environ={})) as conn:
        async with asyncio.timeout(60):
            while [a["version"] for a in await discover(conn, "INFO", "reloadtree", window=0.3)] != [wanted]:
                pass


def test_reload_watches_the_project_not_its_venv_and_says_what_changed(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    root = project(tmp_path)
    process = subprocess.Popen(
        [sys.executable, "-m", "eventmicro", "run", "app", "--reload", "--url", nats_server.url],
        cwd=root,
        env={**os.environ, "PYTHONPATH": f"{root}{os.pathsep}{ROOT}"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    try:
        lines = [process.stdout.readline() for _ in range(2)]
        assert f"eventmicro run: --reload watches 3 .py file(s) under {root}\n" in lines  # app + helpers
        asyncio.run(versions(nats_server.url, "1.0.0"))
        (root / ".venv/lib/python3.11/site-packages/big/__init__.py").write_text("CHANGED = 1\n")
        (root / "myenv/lib/python3.11/site-packages/big/__init__.py").write_text("CHANGED = 1\n")
        (root / "app.py").write_text(APP.format(version="1.0.1"))
        asyncio.run(versions(nats_server.url, "1.0.1"))
    finally:
        process.send_signal(signal.SIGTERM)
        out, _ = process.communicate(timeout=60)
    assert process.returncode == 0, out
    restarts = [line for line in out.splitlines() if "source changed" in line]
    assert restarts == ["eventmicro run: source changed; restarting the workers (app.py)"]


SERVICE_V1 = """from eventmicro import Service

svc = Service("reloaded", version="1.0.0")


@svc.rpc
async def version(req: str) -> str:
    return "one"
"""


def test_run_reload_waits_for_a_fix_after_an_edit_that_does_not_import(
    tmp_path: Path, nats_server: NatsServer
) -> None:
    package = tmp_path / "reloadpkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    module = package / "svc.py"
    module.write_text(SERVICE_V1)
    command = [
        sys.executable,
        "-m",
        "eventmicro",
        "run",
        "reloadpkg.svc",
        "--reload",
        "--url",
        nats_server.url,
    ]
    supervisor = subprocess.Popen(
        command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        assert supervisor.stdout is not None
        lines = []
        for line in supervisor.stdout:  # the first workers come up, then an edit breaks the module
            lines.append(line)
            if "worker(s) serving" in line:
                module.write_text(SERVICE_V1 + "\nthis is not python\n")
            if "giving up" in line or "waiting for a change" in line:
                break
        assert supervisor.poll() is None, "".join(lines)  # still there for the fix
        assert not any("giving up" in x for x in lines), "".join(lines)
        module.write_text(SERVICE_V1.replace('"one"', '"two"'))
        for line in supervisor.stdout:
            lines.append(line)
            if "source changed" in line:
                break
        assert supervisor.poll() is None, "".join(lines)
    finally:
        with contextlib.suppress(ProcessLookupError):
            supervisor.terminate()
        supervisor.wait(timeout=60)
        if supervisor.stdout is not None:
            supervisor.stdout.close()
