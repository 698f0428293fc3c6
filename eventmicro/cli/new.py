"""``eventmicro new NAME [--dir PATH]``: scaffold a service project that works at once.

::

    eventmicro new greeter            ->  ./greeter/
        proto/greeter/v1/greeter.proto        the API: service Greeter { rpc Greet }, a Greeted event
        greeter/v1/greeter_pb2.py, .pyi       generated (protoc, mypy-protobuf)
        greeter/v1/greeter_micro.py           generated (protoc-gen-eventmicro): GreeterClient, GreeterBase
        greeter_service.py                    Greeter(GreeterBase) and ``svc``
        tests/test_greeter.py                 serves svc on a real nats-server, calls it, sees the event
        regen.py, pyproject.toml, README.md, .gitignore

The code is generated with grpcio-tools in this process (the ``codegen`` extra's packages:
``pip install 'grpcio-tools>=1.60' 'mypy-protobuf>=3.6'``), by the project's own ``regen.py``,
so the scaffold regenerates exactly as it was made. An
existing non-empty directory is never written to; when generation fails, what was written is
removed again.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import keyword
import os
import re
import shlex
import shutil
import string
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, distributions, version
from pathlib import Path
from typing import Final
from urllib.parse import unquote, urlsplit

from eventmicro._errors import ConfigurationError
from eventmicro.cli.common import Subparsers
from eventmicro.codegen import snake_case
from eventmicro.wire.names import check_service_name

__all__ = ["create", "register"]

INSTALL: Final = "pip install 'grpcio-tools>=1.60' 'mypy-protobuf>=3.6'"
EXAMPLES: Final = f"""examples:
  eventmicro new greeter                     # ./greeter: a .proto, generated code, a service, a test
  eventmicro new order-tracker --dir ~/src   # ~/src/order-tracker, Python package order_tracker

NAME: up to 30 letters, digits, '-' and '_', starting with a letter ('-' becomes '_' in Python
names, CamelCase becomes snake_case).
The target directory must not exist or be empty. Needs grpcio-tools: {INSTALL}
"""
_MODULE: Final = re.compile(r"[a-z][a-z0-9_]*")
MAX_NAME: Final = 30  # keeps every line of the scaffold within its line length (120)
# names the scaffold itself uses in the .proto and the generated Python files
_TAKEN: Final = frozenset(
    {"GreetRequest", "GreetReply", "Greeted", "BadRequest", "Client", "Connection", "Context", "Service"}
)
_TAKEN_MODULES: Final = frozenset({"proto", "regen", "tests"})  # the scaffold's own directories and files


@dataclass(frozen=True, slots=True)
class Names:
    """How NAME appears in each place: ``order-tracker`` -> order_tracker, OrderTracker, ..."""

    project: str  # the directory and distribution: order-tracker
    module: str  # the Python package and proto package root: order_tracker
    camel: str  # the proto service and the implementation class: OrderTracker
    service: str  # the eventmicro service name (what protoc-gen-eventmicro derives): order_tracker

    @classmethod
    def of(cls, name: str) -> Names:
        """The names of ``name``; `ConfigurationError` saying what is wrong with it."""
        check_service_name(name)
        module = snake_case(name.replace("-", "_"))
        if len(module) > MAX_NAME:
            raise ConfigurationError(f"project name {name!r} is too long: at most {MAX_NAME} characters")
        if not _MODULE.fullmatch(module):
            raise ConfigurationError(f"project name {name!r} must start with a letter")
        if keyword.iskeyword(module):
            raise ConfigurationError(f"project name {name!r} is a Python keyword: pick another name")
        camel = "".join(part[:1].upper() + part[1:] for part in module.split("_"))
        if camel in _TAKEN or module in _TAKEN_MODULES:
            taken = module if module in _TAKEN_MODULES else camel
            raise ConfigurationError(f"project name {name!r} clashes with a name the scaffold uses ({taken})")
        if module in sys.stdlib_module_names or _importable(module):
            raise ConfigurationError(
                f"project name {name!r}: a module named {module!r} is already importable "
                "(the standard library or an installed package); pick another name"
            )
        return cls(project=name, module=module, camel=camel, service=snake_case(camel))


def register(subparsers: Subparsers) -> None:
    """Add ``new`` to the ``eventmicro`` parser."""
    parser = subparsers.add_parser(
        "new",
        help="scaffold a service project: a .proto, generated code, a service and a passing test",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("name", metavar="NAME", help="the service, e.g. greeter or order-tracker")
    parser.add_argument(
        "--dir",
        default=".",
        metavar="PATH",
        help="where to create the NAME directory (default: the current directory)",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    names = Names.of(args.name)
    target = Path(args.dir).expanduser() / names.project
    files = create(names, target)
    shown = _shown(target)
    print(f"created the {names.service} service in {shown}/:")
    for path in files:
        print(f"  {path.relative_to(target).as_posix()}")
    steps = [
        (f"cd {shlex.quote(shown)}", ""),
        ("pip install -e '.[dev]'", "eventmicro's testing and codegen extras, mypy, ruff"),
        ("pytest", "the test, on an embedded nats-server"),
        ("eventmicro server --port 4222", "a local NATS, in another terminal"),
        (f"eventmicro run {names.module}_service", "serve it (--url, or NATS_URL)"),
        (f'eventmicro call {names.service}.greet \'{{"name": "Ada"}}\' --schemas {names.module}', ""),
        ("python regen.py", f"after editing proto/{names.module}/v1/{names.module}.proto"),
    ]
    width = max(len(command) for command, note in steps if note) + 2
    print("\nnext steps:")
    for command, note in steps:
        print(f"  {command.ljust(width)}# {note}" if note else f"  {command}")
    return 0


def create(names: Names, target: Path) -> list[Path]:
    """Write the project into ``target`` (absent or empty) and generate its code; the files made."""
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise ConfigurationError(f"{target} already exists and is not empty: nothing was written")
    if importlib.util.find_spec("grpc_tools") is None:
        raise ConfigurationError(f"generating code needs grpcio-tools: {INSTALL}")
    existed = target.exists()
    written: list[Path] = []
    try:
        target.mkdir(parents=True, exist_ok=True)
        for relative, template in _templates(names).items():
            path = target / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(template, encoding="utf-8")
            written.append(path)
        written += _regenerate(target)
    except BaseException as exc:
        _remove(target, existed)
        if isinstance(exc, OSError):
            raise ConfigurationError(f"cannot write {target}: {exc.strerror or exc}") from exc
        raise
    return sorted(set(written), key=lambda path: (_rank(path), str(path)))


def _regenerate(target: Path) -> list[Path]:
    """Run the project's ``regen.py`` in this process: protoc via grpc_tools, and the plugins."""
    spec = importlib.util.spec_from_file_location("_eventmicro_new_regen", target / "regen.py")
    if spec is None or spec.loader is None:  # pragma: no cover - we just wrote the file
        raise ConfigurationError(f"cannot load {target / 'regen.py'}")
    regen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(regen)
    try:
        with _plugin_chatter_dropped():
            files: list[Path] = regen.generate(target)
    except regen.RegenError as exc:
        raise ConfigurationError(f"generating code failed: {exc}") from exc
    return files


@contextlib.contextmanager
def _plugin_chatter_dropped() -> Iterator[None]:
    """Pass on what protoc and its plugins write to fd 2, but mypy-protobuf's progress lines."""
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # pragma: no cover - no stderr at all
        yield
        return
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            text = captured.read().decode("utf-8", "replace")
            kept = [line for line in text.splitlines() if not line.startswith("Writing mypy to ")]
            if kept:
                print("\n".join(kept), file=sys.stderr)


def _remove(target: Path, existed: bool) -> None:
    """Undo a failed ``create``: the directory made, or the contents put in the empty one."""
    if not existed:
        shutil.rmtree(target, ignore_errors=True)
        return
    for child in target.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve())) or "."
    except ValueError:
        return str(path.resolve())


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _eventmicro_requirement() -> str:
    try:
        current = version("eventmicro")
    except PackageNotFoundError:  # pragma: no cover - a source tree without install
        return "eventmicro[server]"
    return f"eventmicro[server]>={current}"


def eventmicro_install() -> str:
    """The ``pip install`` argument for the eventmicro running this, from where it was installed
    (its PEP 610 ``direct_url.json``): a checkout, a git URL or a wheel file. eventmicro is on no
    package index, so a fresh venv needs this before the project's own ``pip install -e .``."""
    # the first metadata that says where it came from (a stale eventmicro.egg-info may come first)
    texts = (found.read_text("direct_url.json") for found in distributions(name="eventmicro"))
    text = next(filter(None, texts), None)
    fallback = "'eventmicro[server] @ git+<the eventmicro repository URL>'"
    if not text:
        return fallback
    try:
        origin = json.loads(text)
        url = str(origin["url"])
    except (ValueError, KeyError, TypeError):
        return fallback
    vcs = origin.get("vcs_info")
    if isinstance(vcs, dict) and vcs.get("vcs"):
        commit = f"@{vcs['commit_id']}" if vcs.get("commit_id") else ""
        return shlex.quote(f"eventmicro[server] @ {vcs['vcs']}+{url}{commit}")
    parts = urlsplit(url)
    if parts.scheme != "file" or not Path(unquote(parts.path)).exists():
        return shlex.quote(f"eventmicro[server] @ {url}") if parts.scheme != "file" else fallback
    path = unquote(parts.path)
    editable = isinstance(origin.get("dir_info"), dict) and origin["dir_info"].get("editable") is True
    return ("-e " if editable else "") + shlex.quote(f"{path}[server]")


def _templates(names: Names) -> dict[str, str]:
    values = {
        "project": names.project,
        "module": names.module,
        "Camel": names.camel,
        "service": names.service,
        "eventmicro": _eventmicro_requirement(),
        "install": INSTALL,
        "eventmicro_install": eventmicro_install(),
    }
    m = names.module
    paths = {
        "proto": f"proto/{m}/v1/{m}.proto",
        "package": f"{m}/__init__.py",
        "v1": f"{m}/v1/__init__.py",
        "service_module": f"{m}_service.py",
        "test": f"tests/test_{m}.py",
        "regen": "regen.py",
        "pyproject": "pyproject.toml",
        "readme": "README.md",
        "gitignore": ".gitignore",
    }
    return {path: string.Template(_TEMPLATES[key]).substitute(values) for key, path in paths.items()}


# the order the created files are listed in: the API, generated code, the service, its test, the rest
_ORDER: Final = (".proto", "__init__.py", "_pb2.py", "_pb2.pyi", "_micro.py", "_service.py")
_ORDER_NAMES: Final = ("test_", "regen.py", "pyproject.toml", "README.md", ".gitignore")


def _rank(path: Path) -> int:
    for i, suffix in enumerate(_ORDER):
        if path.name.endswith(suffix):
            return i
    for i, prefix in enumerate(_ORDER_NAMES):
        if path.name.startswith(prefix):
            return len(_ORDER) + i
    return len(_ORDER) + len(_ORDER_NAMES)


_TEMPLATES: Final[dict[str, str]] = {
    "proto": """\
syntax = "proto3";

package ${module}.v1;

// The ${service} service: greets people, and tells everyone who listens that it did.
service ${Camel} {
  // Greet someone by name (BadRequest without one); publishes Greeted.
  rpc Greet(GreetRequest) returns (GreetReply);
}

message GreetRequest {
  string name = 1;
}

message GreetReply {
  string message = 1;
}

// A domain event, published on events.${module}.v1.Greeted after each greeting.
message Greeted {
  string name = 1;
  string message = 2;
}
""",
    "package": '"""Code generated from the .proto files under proto/${module}/."""\n',
    "v1": '"""Generated by ``python regen.py`` from proto/${module}/v1/ (do not edit)."""\n',
    "service_module": '''\
"""The ${service} service.

Serve it: ``eventmicro run ${module}_service``,
or ``python ${module}_service.py``.
"""

from __future__ import annotations

from eventmicro import BadRequest, Context

from ${module}.v1 import ${module}_pb2 as pb
from ${module}.v1.${module}_micro import ${Camel}Base


class ${Camel}(${Camel}Base):
    """Implements ``service ${Camel}``: one method per rpc.

    The API: proto/${module}/v1/${module}.proto.
    """

    async def greet(
        self,
        request: pb.GreetRequest,
        ctx: Context,
    ) -> pb.GreetReply:
        if not request.name:
            raise BadRequest("name is required")
        message = f"Hello, {request.name}!"
        await ctx.publish(pb.Greeted(name=request.name, message=message))
        return pb.GreetReply(message=message)


svc = ${Camel}().service(version="0.1.0", description="Greets people by name")

if __name__ == "__main__":
    raise SystemExit(svc.run())
''',
    "test": '''\
"""The ${service} service on a real nats-server (eventmicro's pytest plugin starts it)."""

from __future__ import annotations

import asyncio

import pytest
from eventmicro import BadRequest, Client, Connection, Service

from ${module}.v1 import ${module}_pb2 as pb
from ${module}.v1.${module}_micro import ${Camel}Client
from ${module}_service import svc


async def test_greet_replies_and_publishes_greeted(nats_connection: Connection) -> None:
    greeted: asyncio.Queue[pb.Greeted] = asyncio.Queue()
    listener = Service("${service}-test-listener", version="0.0.0")

    @listener.subscribe
    async def on_greeted(event: pb.Greeted) -> None:
        await greeted.put(event)

    async with listener.serving(nats_connection), svc.serving(nats_connection):
        client = ${Camel}Client(Client(nats_connection))
        reply = await client.greet(pb.GreetRequest(name="Ada"), timeout=5)
        event = await asyncio.wait_for(greeted.get(), timeout=5)
        with pytest.raises(BadRequest, match="name is required"):
            await client.greet(pb.GreetRequest(), timeout=5)

    assert reply.message == "Hello, Ada!"
    assert (event.name, event.message) == ("Ada", "Hello, Ada!")
''',
    "regen": '''\
"""Regenerate the code of proto/: ``python regen.py`` (needs ``${install}``).

For each ``proto/**/*.proto`` it writes, under this directory: ``*_pb2.py`` (protobuf),
``*_pb2.pyi`` (type stubs, by mypy-protobuf) and ``*_micro.py`` (eventmicro's typed client
and service skeleton, for a file with a ``service``), plus the packages' ``__init__.py``.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
INSTALL = "${install}"


class RegenError(Exception):
    """Code generation could not run, or protoc failed."""


def plugin(name: str) -> str | None:
    """The executable ``protoc-gen-<name>``: next to this Python (a virtualenv), else on PATH."""
    program = f"protoc-gen-{name}"
    return shutil.which(program, path=str(Path(sys.executable).parent)) or shutil.which(program)


def generate(root: Path = ROOT) -> list[Path]:
    """Run protoc on every .proto under ``root / "proto"``; return the files it wrote."""
    try:
        import grpc_tools
        from grpc_tools import protoc
    except ImportError as exc:
        raise RegenError(f"grpcio-tools is not installed: {INSTALL}") from exc
    source = root / "proto"
    protos = sorted(source.rglob("*.proto"))
    if not protos:
        raise RegenError(f"no .proto file under {source}")
    micro = plugin("eventmicro")
    if micro is None:
        raise RegenError("protoc-gen-eventmicro is not found: install eventmicro with this Python")
    args = [
        "protoc",
        f"-I{source}",
        f"-I{Path(grpc_tools.__file__).parent / '_proto'}",
        f"--python_out={root}",
        f"--plugin=protoc-gen-eventmicro={micro}",
        f"--eventmicro_out={root}",
    ]
    mypy = plugin("mypy")
    if mypy is None:
        print(f"regen: no .pyi stubs, mypy-protobuf is not installed: {INSTALL}", file=sys.stderr)
    else:
        args += [f"--plugin=protoc-gen-mypy={mypy}", f"--mypy_out={root}"]
    if protoc.main([*args, *map(str, protos)]) != 0:
        raise RegenError("protoc failed (its message is above)")
    written = []
    for proto in protos:
        stem = proto.relative_to(source).with_suffix("")
        out = root / stem.parent
        parts = stem.parent.parts
        for depth in range(1, len(parts) + 1):  # each package from the top one down to out
            init = root.joinpath(*parts[:depth], "__init__.py")
            if not init.exists():
                init.write_text("", encoding="utf-8")
                written.append(init)
        module = stem.name.replace("-", "_")
        for suffix in ("_pb2.py", "_pb2.pyi", "_micro.py"):
            if (out / f"{module}{suffix}").exists():
                written.append(out / f"{module}{suffix}")
    return written


def main() -> int:
    try:
        files = generate()
    except RegenError as exc:
        print(f"regen: {exc}", file=sys.stderr)
        return 2
    for path in files:
        print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
''',
    "pyproject": """\
[build-system]
requires = ["setuptools>=69"]
build-backend = "setuptools.build_meta"

[project]
name = "${project}"
version = "0.1.0"
description = "The ${service} service, on eventmicro (NATS, CloudEvents)"
readme = "README.md"
requires-python = ">=3.11"
# eventmicro is on no package index: install it into the venv first (README.md, "Set up"), or
# name where pip finds it here, e.g. "eventmicro[server] @ git+https://..." or "@ file:///..."
dependencies = ["${eventmicro}"]

[project.optional-dependencies]
dev = ["eventmicro[testing,codegen]", "mypy>=1.15", "ruff>=0.9", "types-protobuf"]

[tool.setuptools]
py-modules = ["${module}_service"]

[tool.setuptools.packages.find]
include = ["${module}*"]

[tool.setuptools.package-data]
"*" = ["*.pyi"]

[tool.pytest.ini_options]
testpaths = ["tests"]
pythonpath = ["."]
addopts = ["-ra", "--strict-markers"]
asyncio_mode = "auto"
asyncio_default_fixture_loop_scope = "function"

[tool.ruff]
line-length = 120
target-version = "py311"
extend-exclude = ["*_pb2.py", "*_pb2.pyi", "*_micro.py"]  # generated by regen.py

[tool.ruff.lint]
select = ["E", "F", "W", "I", "B", "UP", "SIM", "RUF", "PT", "ASYNC", "C4"]

[tool.mypy]
strict = true
python_version = "3.11"
files = ["${module}", "${module}_service.py", "tests", "regen.py"]
exclude = ['_pb2\\.py$$']
warn_unreachable = true

[[tool.mypy.overrides]]
module = ["grpc_tools", "grpc_tools.*"]
ignore_missing_imports = true
""",
    "readme": """\
# ${project}

The `${service}` service, built on eventmicro: Python microservices over NATS, with
CloudEvents on the wire. Scaffolded by `eventmicro new ${project}`.

| file | what it is |
|---|---|
| `proto/${module}/v1/${module}.proto` | the API: `service ${Camel}`, its messages, the `Greeted` event |
| `${module}/v1/${module}_pb2.py`, `.pyi`, `_micro.py` | generated by `python regen.py` (do not edit) |
| `${module}_service.py` | the implementation: `${Camel}(${Camel}Base)` and `svc` |
| `tests/test_${module}.py` | serves `svc` on a real nats-server, calls it, checks the event |
| `regen.py` | regenerates the code after a change to a `.proto` |

## Set up

```sh
python -m venv .venv && . .venv/bin/activate
pip install ${eventmicro_install}
pip install -e '.[dev]'
```

eventmicro is not published on a package index, so `pip install -e '.[dev]'` uses the eventmicro
already in the venv: the first `pip install` puts it there, from where `eventmicro new` found it
installed. From elsewhere, use one of

```sh
pip install -e '/path/to/eventmicro[server]'                            # a checkout
pip install 'eventmicro[server] @ git+https://github.com/OWNER/eventmicro'  # a git URL
pip install './eventmicro-0.1.0-py3-none-any.whl[server]'               # a wheel
```

## Test

```sh
pytest                                # starts its own nats-server (eventmicro's pytest plugin)
mypy && ruff check . && ruff format --check .
```

## Run and call

```sh
eventmicro server --port 4222         # a local nats-server with JetStream (another terminal)
eventmicro run ${module}_service       # serve `svc` (NATS: --url, or NATS_URL; default 127.0.0.1:4222)
eventmicro call ${service}.greet '{"name": "Ada"}' --schemas ${module}
eventmicro tail 'events.${module}.>' --schemas ${module}   # the Greeted events, live
eventmicro services info ${service}
```

`python ${module}_service.py` serves it too; `eventmicro run ${module}_service --workers 4` runs four
instances sharing the load, `--reload` restarts them when the code changes. `--schemas ${module}`
lets the CLI find the protobuf types of this project (run it from this directory).

Other languages need only a NATS client: `${service}.greet` is a NATS request-reply endpoint
taking a CloudEvent (NATS protocol binding) whose data is a protobuf `GreetRequest`, and
`$$SRV.INFO.${service}` (the NATS Service API) describes it.

## Change the API

Edit `proto/${module}/v1/${module}.proto`, then

```sh
python regen.py                       # needs grpcio-tools and mypy-protobuf (the dev extra)
```

and implement any new rpc in `${module}_service.py`: `${Camel}Base` declares one abstract method
per rpc, so mypy and the first instantiation tell you what is missing.
""",
    "gitignore": """\
__pycache__/
*.egg-info/
.venv/
.mypy_cache/
.pytest_cache/
.ruff_cache/
""",
}
