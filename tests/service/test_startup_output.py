"""What a user sees when a service starts, fails to connect, fails a request or is misconfigured:
the start-up log at INFO (service, instance, endpoints with subjects, handlers with delivery),
one line per connect attempt and a final hint, an error id shared by a 500 reply and the
service's log, a handler taking the Context first refused when decorated, and workers that are
not restarted on a configuration error."""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from eventmicro import (
    Client,
    ConfigurationError,
    Connection,
    Context,
    InternalError,
    NatsServer,
    Service,
    ServiceError,
)
from eventmicro.transport.server import free_port

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
APP = "startup_app"  # tests/service/startup_app.py


def environment(**extra: str) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("EVENTMICRO_", "NATS_URL"))}
    return {**clean, "PYTHONPATH": os.pathsep.join((str(HERE), str(ROOT))), **extra}


class Output:
    """A process's merged output, read line by line in a thread; wait for a line, not a time."""

    def __init__(self, command: list[str], env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()

    def wait_for(self, text: str) -> list[str]:
        """The output up to the first line holding ``text``."""
        with self._changed:
            found = self._changed.wait_for(lambda: any(text in line for line in self.lines), timeout=60)
            assert found, "\n".join(self.lines)
            return list(self.lines)

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=60)

    def close(self) -> None:
        self.process.kill()
        self.process.wait()
        self._reader.join(timeout=60)  # the output ends with the process
        assert self.process.stdout is not None
        self.process.stdout.close()


@contextmanager
def running(command: list[str], env: dict[str, str]) -> Iterator[Output]:
    output = Output(command, env)
    try:
        yield output
        assert output.stop() == 0
    finally:
        output.close()


def assert_shows_what_it_serves(lines: list[str]) -> None:
    text = "\n".join(lines)
    assert re.search(r"INFO .*service startup-greeter 1\.2\.3 instance \w+ started", text), text
    assert "serves endpoint greet on subject 'startup-greeter.greet' (queue group 'startup-greeter'" in text
    assert (
        "serves event handler on_greeted on subject 'events.test.startup.greeted.v1' "
        "(core NATS, at most once, to one instance of queue group 'startup-greeter.on_greeted')"
    ) in text
    assert "WARNING" not in text  # a normal start is not a warning


def test_eventmicro_run_logs_what_it_serves_at_info(nats_server: NatsServer) -> None:
    command = [sys.executable, "-m", "eventmicro", "run", APP, "--url", nats_server.url]
    with running(command, environment()) as output:
        assert_shows_what_it_serves(output.wait_for("serving startup-greeter 1.2.3"))


def test_service_run_logs_what_it_serves_with_no_logging_set_up(nats_server: NatsServer) -> None:
    command = [sys.executable, str(HERE / "startup_app.py")]
    with running(command, environment(NATS_URL=nats_server.url)) as output:
        assert_shows_what_it_serves(output.wait_for("service startup-greeter 1.2.3 serving"))


@pytest.mark.parametrize("verb", ["run", "gateway"])
def test_no_server_is_one_line_per_attempt_then_a_hint(verb: str) -> None:
    url = f"nats://127.0.0.1:{free_port()}"  # nothing listens there
    command = [sys.executable, "-m", "eventmicro", verb, *([APP] if verb == "run" else []), "--url", url]
    result = subprocess.run(
        command, cwd=ROOT, env=environment(), capture_output=True, text=True, timeout=120, check=False
    )
    lines = result.stderr.splitlines()
    warnings = [line for line in lines if " WARNING " in line]
    assert 1 <= len(warnings) <= 4, result.stderr  # five attempts: one line for each retry, no more
    assert all("connect attempt" in line for line in warnings), result.stderr
    assert result.returncode == 2
    assert lines[-1].startswith(f"eventmicro: error: cannot connect to NATS at {url}"), result.stderr
    assert "`eventmicro server`" in lines[-1]
    assert "NATS_URL" in lines[-1]
    assert "Traceback" not in result.stderr


boom = Service("startup-boom", version="1.0.0")


@boom.rpc
async def explode(request: dict[str, str]) -> dict[str, str]:
    raise RuntimeError(f"database password hunter2 rejected for {request}")


async def test_a_500_reply_and_the_services_log_share_an_error_id(
    nats_connection: Connection, service_conn: Connection, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="eventmicro")
    async with boom.serving(service_conn):
        with pytest.raises(InternalError) as caught:
            await Client(nats_connection).call("startup-boom.explode", {"x": "1"}, returns=dict)
    incident = caught.value.incident
    assert incident is not None
    assert re.fullmatch(r"[0-9a-f]{12}", incident)  # random: nothing of the service or the failure
    assert f"(error id {incident})" in str(caught.value)
    assert "hunter2" not in str(caught.value)
    logged = [r for r in caplog.records if incident in r.getMessage()]
    assert len(logged) == 1
    assert logged[0].levelno == logging.ERROR
    assert "explode" in logged[0].getMessage()


async def test_each_failure_gets_its_own_error_id(
    nats_connection: Connection, service_conn: Connection
) -> None:
    ids = set()
    async with boom.serving(service_conn):
        for _ in range(3):
            with pytest.raises(ServiceError) as caught:
                await Client(nats_connection).call("startup-boom.explode", {}, returns=dict)
            ids.add(caught.value.incident)
    assert len(ids) == 3
    assert None not in ids


def test_a_handler_taking_the_context_first_is_refused_when_decorated() -> None:
    svc = Service("startup-swapped", version="1.0.0")
    with pytest.raises(
        ConfigurationError, match=r"handler .*swapped: its first parameter 'ctx' is annotated Context"
    ):

        @svc.rpc
        async def swapped(ctx: Context, request: dict[str, str]) -> dict[str, str]:
            return request

    with pytest.raises(ConfigurationError, match=r"handler .*alone: its first parameter 'ctx'"):

        @svc.subscribe
        async def alone(ctx: Context) -> None:
            return None


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_configuration_error_is_not_restarted(nats_server: NatsServer, workers: str) -> None:
    command = [sys.executable, "-m", "eventmicro", "run", APP, "--url", nats_server.url, "--workers", workers]
    env = environment(EVENTMICRO_HEALTH_PORT="not-a-port")  # each worker fails the same way
    result = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 78, result.stderr  # EX_CONFIG: distinct from a crash (1) or a usage error (2)
    assert (
        "configuration error: EVENTMICRO_HEALTH_PORT must be a port number, not 'not-a-port'" in result.stderr
    )
    assert "starting another" not in result.stdout + result.stderr
    if workers == "2":
        assert "stopped on a configuration error (exit code 78), giving up" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(("chosen", "loop"), [("", "uvloop"), ("asyncio", "asyncio"), ("uvloop", "uvloop")])
def test_a_process_serves_on_uvloop_when_installed_unless_told_otherwise(
    nats_server: NatsServer, chosen: str, loop: str
) -> None:
    """The dev extra installs uvloop (the ``uvloop`` extra): ``eventmicro run`` picks it up, and
    a call is answered on whichever loop the process says it runs."""
    command = [sys.executable, "-m", "eventmicro", "run", APP, "--url", nats_server.url]
    with running(command, environment(EVENTMICRO_LOOP=chosen)) as output:
        lines = output.wait_for("serving startup-greeter 1.2.3")
        assert f"event loop: {loop}" in "\n".join(lines)
        call = ["call", "startup-greeter.greet", '{"name": "loop"}', "--url", nats_server.url]
        reply = subprocess.run(
            [sys.executable, "-m", "eventmicro", *call],
            cwd=ROOT, env=environment(), capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert reply.returncode == 0, reply.stderr
        assert "hello loop" in reply.stdout


def test_an_unknown_event_loop_is_a_configuration_error(nats_server: NatsServer) -> None:
    command = [sys.executable, "-m", "eventmicro", "run", APP, "--url", nats_server.url]
    result = subprocess.run(
        command, cwd=ROOT, env=environment(EVENTMICRO_LOOP="trio"), capture_output=True, text=True,
        timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 78, result.stderr
    assert "EVENTMICRO_LOOP must be one of auto, asyncio, uvloop, not 'trio'" in result.stderr
    assert "Traceback" not in result.stderr
