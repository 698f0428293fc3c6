"""The CLI as a newcomer meets it: ``--version``, shell completion, each command's help and
examples, ``publish --json``, the warning for a type that is not installed, and where the
protobuf types come from (``EVENTMICRO_SCHEMAS``, or the package the type's name starts with).

Commands run as their own processes (``python -m eventmicro``), as a user runs them, so the
protobuf types each test makes up stay in that process.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

import eventmicro
from eventmicro import Connection, ConnectOptions, NatsServer, Stream, discover
from eventmicro.cli.completion import ZSH_PRELUDE
from eventmicro.cli.main import build_parser
from eventmicro.transport import jetstream

ROOT = Path(__file__).resolve().parents[2]


def eventmicro_cli(
    *argv: str, cwd: Path = ROOT, env: dict[str, str] | None = None, path: str = ""
) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, **(env or {})}
    environ["PYTHONPATH"] = os.pathsep.join(p for p in (path, str(ROOT)) if p)
    done = subprocess.run(
        [sys.executable, "-m", "eventmicro", *argv],
        cwd=cwd,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert "Traceback" not in done.stdout + done.stderr
    return done


def verbs() -> list[str]:
    parser = build_parser()
    return [name for action in parser._actions if action.choices for name in action.choices]


# --- --version and completion -------------------------------------------------------------


def test_version_prints_the_installed_version() -> None:
    done = eventmicro_cli("--version")
    assert done.returncode == 0
    assert done.stdout.startswith(f"eventmicro {eventmicro.__version__} (Python 3.")


def complete(script: Path, line: str) -> list[str]:
    """What bash offers for Tab at the end of ``line`` with the generated script loaded."""
    words = shlex.split(line) + ([""] if line.endswith(" ") else [])
    array = " ".join(shlex.quote(w) for w in words)
    program = f"source {shlex.quote(str(script))}\nCOMP_WORDS=({array}); COMP_CWORD={len(words) - 1}\n"
    program += '_eventmicro; printf "%s\\n" "${COMPREPLY[@]}"\n'
    done = subprocess.run(["bash", "-c", program], capture_output=True, text=True, timeout=30, check=True)
    return [w for w in done.stdout.splitlines() if w]


def test_bash_completion_knows_every_command_sub_command_and_option(tmp_path: Path) -> None:
    done = eventmicro_cli("completion", "bash")
    assert done.returncode == 0
    script = tmp_path / "eventmicro.bash"
    script.write_text(done.stdout)
    assert "complete -o default -F _eventmicro eventmicro" in done.stdout
    assert set(complete(script, "eventmicro ")) >= {*verbs(), "--version", "--help"}
    assert set(verbs()) >= {"server", "demo", "run", "call", "publish", "tail", "services", "completion"}
    assert complete(script, "eventmicro ser") == ["server", "services"]
    assert complete(script, "eventmicro services ")[:3] == ["ls", "info", "stats"]
    assert complete(script, "eventmicro deadletters --url nats://x:4222 re") == ["replay"]
    assert "--json" in complete(script, "eventmicro publish shop.orders.v1.OrderPlaced --j")
    assert complete(script, "eventmicro call --timeout ") == []  # a value: left to the shell's files
    assert complete(script, "eventmicro call orders.get ") == []  # the JSON: ditto


def test_zsh_completion_is_the_same_script_through_bashcompinit() -> None:
    done = eventmicro_cli("completion", "zsh")
    assert done.returncode == 0
    assert done.stdout.startswith(ZSH_PRELUDE)
    for verb in verbs():
        assert re.search(rf'^\s+"{verb}"\)', done.stdout, re.MULTILINE), verb
    assert eventmicro_cli("completion", "fish").returncode == 2  # argparse names the choices


# --- help texts ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "example"),
    [("server", "eventmicro server --cluster 3"), ("demo", "eventmicro demo --orders 20")],
)
def test_server_and_demo_help_show_their_own_examples(command: str, example: str) -> None:
    done = eventmicro_cli(command, "--help")
    assert done.returncode == 0
    assert example in done.stdout
    other_commands = {f"eventmicro {verb} " for verb in verbs() if verb != command}
    assert not [line for line in done.stdout.splitlines() if any(c in line for c in other_commands)]


def test_call_help_names_only_endpoints_the_reference_shop_serves() -> None:
    from subscribers import audit, billing, inventory, notifications, orders

    served = {
        spec.subject for m in (audit, billing, inventory, notifications, orders) for spec in m.svc.handlers
    }
    for argv in (["call", "--help"], ["--help"]):
        text = eventmicro_cli(*argv).stdout
        named = re.findall(r"eventmicro call ([\w-]+\.\w+)", text)
        assert named, text
        assert set(named) <= served, f"{argv}: {set(named) - served} not in the shop"


# --- publish --json, the not-installed warning, where types come from ---------------------


def make_types(directory: Path, package: str, proto_package: str) -> None:
    """A package with one protobuf module (as protoc would generate it): message Note {text}."""
    directory.mkdir(parents=True)
    (directory / "__init__.py").write_text("")
    (directory / "note_pb2.py").write_text(
        textwrap.dedent(
            f"""
            from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

            _file = descriptor_pb2.FileDescriptorProto(name="{package}/note.proto", package="{proto_package}")
            _note = _file.message_type.add(name="Note")
            _note.field.add(name="text", number=1, type=9, label=1)
            descriptor_pool.Default().Add(_file)
            Note = message_factory.GetMessageClass(
                descriptor_pool.Default().FindMessageTypeByName("{proto_package}.Note")
            )
            """
        )
    )


def published(done: subprocess.CompletedProcess[str]) -> dict[str, object]:
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert isinstance(document, dict)
    return document


def test_publish_json_prints_what_was_sent_durable_too(nats_server: NatsServer) -> None:
    stream = f"CLIJSON{uuid.uuid4().hex[:8]}"

    async def declare() -> None:
        async with Connection(ConnectOptions.from_env(nats_server.url, environ={})) as conn:
            await jetstream.ensure_stream(conn, Stream(stream, [f"{stream}.>"]))

    asyncio.run(declare())
    argv = ("publish", "shop.orders.v1.OrderPlaced", '{"orderId": "o-1"}', "--url", nats_server.url, "--json")
    sent = published(eventmicro_cli(*argv, "--subject", f"{stream}.core"))
    assert sent["type"] == "shop.orders.v1.OrderPlaced"
    assert (sent["subject"], sent["encoding"], sent["source"]) == (
        f"{stream}.core",
        "protobuf",
        "/eventmicro/cli",
    )
    assert isinstance(sent["id"], str)
    assert sent["id"]
    stored = published(eventmicro_cli(*argv, "--subject", f"{stream}.durable", "--durable"))
    assert (stored["stream"], stored["seq"], stored["duplicate"]) == (stream, 2, False)


def test_publishing_a_type_that_is_not_installed_warns_and_names_a_near_miss(nats_server: NatsServer) -> None:
    done = eventmicro_cli(
        "publish", "shop.orders.v1.OrderCanceled", '{"orderId": "o-1"}', "--url", nats_server.url
    )
    assert done.returncode == 0  # sent, as JSON
    assert "published " in done.stdout
    assert "warning: shop.orders.v1.OrderCanceled is not an installed protobuf type" in done.stderr
    assert "(did you mean shop.orders.v1.OrderCancelled?)" in done.stderr
    assert "sending the data as JSON" in done.stderr
    known = eventmicro_cli(
        "publish", "shop.orders.v1.OrderCancelled", '{"orderId": "o-1"}', "--url", nats_server.url
    )
    assert known.returncode == 0
    assert known.stderr == ""


def test_schema_packages_come_from_the_environment_and_the_flag_wins(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    make_types(tmp_path / "lib" / "envtypes", "envtypes", "clienv.v1")
    argv = ("publish", "clienv.v1.Note", '{"text": "hi"}', "--url", nats_server.url, "--json")
    lib = str(tmp_path / "lib")
    without = eventmicro_cli(*argv, cwd=tmp_path, path=lib)
    assert published(without)["encoding"] == "json"
    assert "is not an installed protobuf type" in without.stderr

    env = {"EVENTMICRO_SCHEMAS": "schemas, envtypes"}
    with_env = eventmicro_cli(*argv, cwd=tmp_path, path=lib, env=env)
    assert published(with_env)["encoding"] == "protobuf"
    assert published(with_env)["datacontenttype"] == "application/protobuf"
    assert with_env.stderr == ""

    bad = eventmicro_cli(*argv, cwd=tmp_path, path=lib, env={"EVENTMICRO_SCHEMAS": "no_such_types"})
    assert bad.returncode == 2
    assert "cannot import schema package 'no_such_types'" in bad.stderr
    flag_wins = eventmicro_cli(*argv, "--schemas", "envtypes", cwd=tmp_path, path=lib, env=env)
    assert published(flag_wins)["encoding"] == "protobuf"


def test_the_package_named_by_the_type_in_the_current_directory_is_found(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    """The layout of ``eventmicro new``: type order_tracker.v1.X lives in ./order_tracker."""
    package = f"cliinfer{uuid.uuid4().hex[:8]}"
    make_types(tmp_path / package, package, f"{package}.v1")
    (tmp_path / package / "service.py").write_text(
        textwrap.dedent(
            f"""
            from eventmicro import Service
            from {package}.note_pb2 import Note

            svc = Service("{package}", version="1.0.0")


            @svc.rpc
            async def echo(req: Note) -> Note:
                return Note(text=req.text + "!")
            """
        )
    )
    sent = eventmicro_cli("publish", f"{package}.v1.Note", '{"text": "hi"}', "--url", nats_server.url,
                          "--json", cwd=tmp_path)  # fmt: skip
    assert published(sent)["encoding"] == "protobuf"
    assert sent.stderr == ""

    service = subprocess.Popen(
        [sys.executable, "-m", "eventmicro", "run", f"{package}.service", "--url", nats_server.url],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        asyncio.run(serving(nats_server.url, package))
        done = eventmicro_cli(
            "call", f"{package}.echo", '{"text": "hi"}', "--url", nats_server.url, cwd=tmp_path
        )
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout) == {"text": "hi!"}
        elsewhere = eventmicro_cli("call", f"{package}.echo", '{"text": "hi"}', "--url", nats_server.url)
        assert elsewhere.returncode == 3  # not in this directory: the hint names both ways
        assert (
            f"the request type {package}.v1.Note is not installed: pass --schemas PACKAGE" in elsewhere.stderr
        )
        assert "EVENTMICRO_SCHEMAS" in elsewhere.stderr
    finally:
        service.terminate()
        service.wait(60)


async def serving(url: str, name: str) -> None:
    async with Connection(ConnectOptions.from_env(url, environ={})) as conn:
        async with asyncio.timeout(60):
            while not await discover(conn, "INFO", name, window=0.3):
                pass
