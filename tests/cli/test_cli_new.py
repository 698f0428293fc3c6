"""``eventmicro new``: the scaffold passes its own test, ruff and mypy --strict, and its commands work."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import eventmicro
from eventmicro import NatsServer
from eventmicro.cli.main import main

BIN = Path(sys.executable).parent
FILES = [
    "proto/greeter/v1/greeter.proto",
    "greeter/__init__.py",
    "greeter/v1/__init__.py",
    "greeter/v1/greeter_pb2.py",
    "greeter/v1/greeter_pb2.pyi",
    "greeter/v1/greeter_micro.py",
    "greeter_service.py",
    "tests/test_greeter.py",
    "regen.py",
    "pyproject.toml",
    "README.md",
    ".gitignore",
]
GENERATED = ("greeter/v1/greeter_pb2.py", "greeter/v1/greeter_pb2.pyi", "greeter/v1/greeter_micro.py")


@pytest.fixture(scope="module")
def created(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """``eventmicro new greeter --dir <tmp>``, once for the module: the project and what was printed."""
    where = tmp_path_factory.mktemp("new")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["new", "greeter", "--dir", str(where)]) == 0
    return where / "greeter", out.getvalue()


def tool(project: Path, *command: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run a command in the project, as a user of it would (its own configuration, if any)."""
    return subprocess.run(
        command, cwd=project, env=_env(project), capture_output=True, text=True, timeout=timeout, check=False
    )


def _env(project: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EVENTMICRO_", "NATS_", "PYTEST_"))}
    env["PYTHONPATH"] = str(project)
    # eventmicro is installed editable here (an import hook mypy cannot follow): show mypy the
    # source tree; an ordinary `pip install eventmicro` needs nothing of the kind.
    env["MYPYPATH"] = str(Path(eventmicro.__file__).resolve().parent.parent)
    return env


def test_new_writes_the_project_and_says_what_next(created: tuple[Path, str]) -> None:
    project, out = created
    assert sorted(str(p.relative_to(project)) for p in project.rglob("*") if p.is_file()) == sorted(FILES)
    listed = [line.strip() for line in out.split("next steps:")[0].splitlines()[1:] if line.strip()]
    assert listed == FILES  # in this order: the API, the generated code, the service, its test, the rest
    assert out.splitlines()[0].startswith("created the greeter service in ")
    for step in (
        "pytest",
        "eventmicro run greeter_service",
        """eventmicro call greeter.greet '{"name": "Ada"}' --schemas greeter""",
        "python regen.py",
    ):
        assert f"  {step}" in out
    proto = (project / "proto/greeter/v1/greeter.proto").read_text()
    for line in ("package greeter.v1;", "service Greeter {", "rpc Greet(GreetRequest) returns (GreetReply);"):
        assert line in proto
    assert "message Greeted {" in proto
    micro = (project / "greeter/v1/greeter_micro.py").read_text()
    assert "class GreeterClient:" in micro
    assert "class GreeterBase(abc.ABC):" in micro
    service = (project / "greeter_service.py").read_text()
    assert "class Greeter(GreeterBase):" in service
    assert 'svc = Greeter().service(version="0.1.0"' in service
    assert "ctx.publish(pb.Greeted(" in service
    pyproject = (project / "pyproject.toml").read_text()
    assert 'asyncio_mode = "auto"' in pyproject
    assert "eventmicro[server]" in pyproject
    readme = (project / "README.md").read_text()
    for command in (
        "eventmicro run greeter_service",
        "eventmicro call greeter.greet",
        "python regen.py",
        "pytest",
    ):
        assert command in readme


def test_the_generated_project_passes_its_own_test(created: tuple[Path, str]) -> None:
    project, _ = created
    result = tool(
        project, sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(project / "tests")
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout


def test_the_generated_project_is_clean_under_ruff_and_mypy_strict(created: tuple[Path, str]) -> None:
    project, _ = created
    config = str(project / "pyproject.toml")
    for command in (
        [str(BIN / "ruff"), "check", "--config", config, "."],
        [str(BIN / "ruff"), "format", "--check", "--config", config, "."],
        [str(BIN / "mypy"), "--config-file", config, "--cache-dir", str(project.parent / "mypy-cache")],
    ):
        result = tool(project, *command)
        assert result.returncode == 0, f"{command}: {result.stdout}{result.stderr}"
    assert "Success: no issues found in 7 source files" in result.stdout  # regen, service, test, 4 modules


def test_regen_py_reproduces_the_generated_code(created: tuple[Path, str]) -> None:
    project, _ = created
    before = {name: (project / name).read_bytes() for name in GENERATED}
    result = tool(project, sys.executable, "regen.py")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "wrote greeter/v1/greeter_micro.py" in result.stdout
    assert {name: (project / name).read_bytes() for name in GENERATED} == before


def test_the_readme_commands_serve_and_call_it(created: tuple[Path, str], nats_server: NatsServer) -> None:
    project, _ = created
    serving = subprocess.Popen(
        [sys.executable, "-m", "eventmicro", "run", "greeter_service", "--url", nats_server.url],
        cwd=project,
        env=_env(project),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        call = [sys.executable, "-m", "eventmicro", "call", "greeter.greet", '{"name": "Ada"}']
        call += ["--schemas", "greeter", "--url", nats_server.url]
        deadline = time.monotonic() + 30
        while True:
            result = tool(project, *call)
            if result.returncode != 3 or time.monotonic() > deadline:  # 3: no such service (yet)
                break
            time.sleep(0.2)
        assert result.returncode == 0, result.stdout + result.stderr
        assert json.loads(result.stdout) == {"message": "Hello, Ada!"}
        bad = tool(project, *call[:5], "{}", *call[6:])  # no name
        assert bad.returncode == 1
        assert "name is required" in bad.stderr
    finally:
        serving.send_signal(signal.SIGTERM)
        try:
            serving.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            serving.kill()
            serving.communicate()
    assert serving.returncode == 0


def test_a_hyphenated_camel_case_name_into_an_existing_empty_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "Order-Tracker").mkdir()
    assert main(["new", "Order-Tracker", "--dir", str(tmp_path)]) == 0
    project = tmp_path / "Order-Tracker"
    for name in (
        "proto/order_tracker/v1/order_tracker.proto",
        "order_tracker/v1/order_tracker_micro.py",
        "order_tracker_service.py",
        "tests/test_order_tracker.py",
    ):
        assert (project / name).is_file(), name
    assert "class OrderTracker(OrderTrackerBase):" in (project / "order_tracker_service.py").read_text()
    out = capsys.readouterr().out
    assert "created the order_tracker service in" in out
    assert "eventmicro call order_tracker.greet" in out
    config = str(project / "pyproject.toml")
    result = tool(project, str(BIN / "ruff"), "check", "--config", config, ".")
    assert result.returncode == 0, result.stdout


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("a.b", "may use only letters, digits, '-' and '_'"),
        ("", "may use only letters, digits, '-' and '_'"),
        ("9lives", "must start with a letter"),
        ("_private", "must start with a letter"),
        ("class", "is a Python keyword"),
        ("json", "a module named 'json' is already importable"),
        ("eventmicro", "a module named 'eventmicro' is already importable"),
        ("greet-request", "clashes with a name the scaffold uses (GreetRequest)"),
        ("tests", "clashes with a name the scaffold uses (tests)"),
        ("x" * 31, "is too long: at most 30 characters"),
    ],
)
def test_a_bad_name_is_refused(
    name: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["new", name, "--dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("eventmicro: error: ")
    assert message in err
    assert "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_an_existing_directory_is_never_overwritten(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "greeter").mkdir()
    (tmp_path / "greeter" / "keep.txt").write_text("mine")
    (tmp_path / "taken").write_text("a file")
    assert main(["new", "greeter", "--dir", str(tmp_path)]) == 2
    assert main(["new", "taken", "--dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [
        f"eventmicro: error: {tmp_path / 'greeter'} already exists and is not empty: nothing was written",
        f"eventmicro: error: {tmp_path / 'taken'} already exists and is not empty: nothing was written",
    ]
    assert [p.name for p in (tmp_path / "greeter").iterdir()] == ["keep.txt"]
    assert (tmp_path / "greeter" / "keep.txt").read_text() == "mine"
    assert main(["new", "greeter", "--dir", str(tmp_path / "taken")]) == 2  # --dir is a file
    assert (
        capsys.readouterr().err
        == f"eventmicro: error: cannot write {tmp_path / 'taken' / 'greeter'}: Not a directory\n"
    )
    assert (tmp_path / "taken").read_text() == "a file"


def test_without_grpcio_tools_one_line_says_what_to_install(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "grpc_tools" else find_spec(name, *a)
    )
    assert main(["new", "greeter", "--dir", str(tmp_path)]) == 2
    assert capsys.readouterr().err == (
        "eventmicro: error: generating code needs grpcio-tools: "
        "pip install 'grpcio-tools>=1.60' 'mypy-protobuf>=3.6'\n"
    )
    assert list(tmp_path.iterdir()) == []


def test_a_failed_generation_leaves_nothing_behind(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shutil, "which", lambda *a, **k: None)  # no protoc-gen-eventmicro anywhere
    assert main(["new", "greeter", "--dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("eventmicro: error: generating code failed: protoc-gen-eventmicro is not found")
    assert list(tmp_path.iterdir()) == []
