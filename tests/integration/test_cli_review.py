"""Review findings in the command line: the demo's counts on a server with earlier runs, and
``eventmicro run --reload`` surviving a file that does not import while it is being edited."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from pathlib import Path

from eventmicro import Connection, ConnectOptions, NatsServer
from eventmicro.cli.demo import Run, _collect, _snapshot
from eventmicro.transport import jetstream
from eventmicro.wire.names import dead_letter_subject
from subscribers import orders as orders_service


async def test_the_demo_counts_only_the_dead_letters_of_its_own_run(fresh_nats_server: NatsServer) -> None:
    async with Connection(ConnectOptions.from_env(fresh_nats_server.url, environ={})) as conn:
        async with orders_service.svc.serving(conn):  # it declares the dead-letter stream
            # an earlier run left a dead letter behind
            await jetstream.publish(
                conn, dead_letter_subject("orders", "on_stock_rejected"), b"", {}, msg_id="earlier-run"
            )
        before = await _snapshot(conn)
        run = Run()
        await _collect(conn, run, before)
        assert run.dead_letters == 0


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
