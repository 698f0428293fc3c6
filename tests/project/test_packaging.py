"""What a user installs: the wheel ships only ``eventmicro``, the demo finds its shop wherever it
runs, and a project from ``eventmicro new`` installs in a fresh venv as its README says."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
IGNORED = shutil.ignore_patterns(
    ".venv", ".git", "node_modules", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis"
)


def run(*command: str | Path, cwd: Path, env: dict[str, str] | None = None, timeout: float = 300) -> str:
    result = subprocess.run(
        [str(part) for part in command],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, f"{command}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def user_env(**extra: str) -> dict[str, str]:
    """The environment of a user's shell: none of this test run's NATS or pytest settings."""
    kept = {k: v for k, v in os.environ.items() if not k.startswith(("EVENTMICRO_", "NATS_", "PYTEST_"))}
    kept.pop("PYTHONPATH", None)
    return {**kept, **extra}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel built from a copy of this checkout (no build artefacts left in the tree)."""
    work = tmp_path_factory.mktemp("wheel")
    shutil.copytree(ROOT, work / "src", ignore=IGNORED)
    run(
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "-q",
        "--no-deps",
        "--no-build-isolation",
        "-w",
        work / "dist",
        work / "src",
        cwd=work,
    )
    (built,) = (work / "dist").glob("eventmicro-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel unpacked by pip into a directory put first on PYTHONPATH (its dependencies: this venv's)."""
    site = tmp_path_factory.mktemp("site")
    run(sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", site, wheel, cwd=site)
    return site


@pytest.fixture
def users_project(tmp_path: Path) -> Path:
    """A user's directory with packages of its own named like the shop's."""
    for name in ("schemas", "subscribers"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text(f'"""The user\'s own {name}."""\n')
    return tmp_path


def test_the_wheel_installs_only_the_eventmicro_package(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/")[0] for name in names}
    assert top == {"eventmicro", "eventmicro-0.1.0.dist-info"}
    # the demo's copy of the shop, with its .proto files and stubs, inside the package
    shop = "eventmicro/_demo_shop/"
    for path in (
        "subscribers/orders.py",
        "schemas/shop/orders/v1/orders_pb2.py",
        "schemas/shop/orders/v1/orders.proto",
    ):
        assert shop + path in names
    assert not [name for name in names if "__pycache__" in name or name.endswith(".pyc")]


def test_the_demo_finds_its_shop_beside_a_users_own_schemas(installed: Path, users_project: Path) -> None:
    env = user_env(PYTHONPATH=str(installed))
    code = (
        "from eventmicro.cli import demo\n"
        "root = demo.shop_root()\n"
        "demo.use_shop(root)\n"
        "import schemas.shop.orders.v1.orders_pb2 as orders, subscribers.orders as service\n"
        "print(root, orders.__file__, service.__file__, sep='\\n')\n"
    )
    root, orders, service = run(sys.executable, "-c", code, cwd=users_project, env=env).split()
    assert Path(root) == installed / "eventmicro" / "_demo_shop"
    assert Path(orders).is_relative_to(root)
    assert Path(service).is_relative_to(root)
    assert "--orders" in run(sys.executable, "-m", "eventmicro", "demo", "--help", cwd=users_project, env=env)
    # and outside the demo the user's own package is the one imported
    mine = run(sys.executable, "-c", "import schemas; print(schemas.__doc__)", cwd=users_project, env=env)
    assert mine.strip() == "The user's own schemas."


def test_an_editable_install_runs_the_checkouts_shop(tmp_path: Path) -> None:
    code = "from eventmicro.cli.demo import shop_root; print(shop_root())"
    assert Path(run(sys.executable, "-c", code, cwd=tmp_path, env=user_env()).strip()) == ROOT


@pytest.mark.slow
def test_the_demo_from_the_wheel_settles_every_order_beside_a_users_own_schemas(
    installed: Path, users_project: Path
) -> None:
    env = user_env(PYTHONPATH=str(installed))
    out = run(sys.executable, "-m", "eventmicro", "demo", "--orders", "20", cwd=users_project, env=env)
    assert re.search(r"orders placed +20 ", out)
    assert re.search(r"orders unsettled +0$", out, re.MULTILINE)
    assert re.search(r"result +OK$", out, re.MULTILINE)


def _set_up_lines(readme: str) -> list[list[str]]:
    """The commands of the README's "Set up" block, each split as a shell would."""
    section = readme.split("## Set up", 1)[1]
    block = section.split("```sh\n", 1)[1].split("```", 1)[0]
    return [shlex.split(line, comments=True) for line in block.splitlines() if line.strip()]


@pytest.mark.slow
def test_a_new_project_installs_in_a_fresh_venv_as_its_readme_says(wheel: Path, tmp_path: Path) -> None:
    # the user's eventmicro: the wheel, with what `eventmicro new` needs, in a venv of its own
    run(sys.executable, "-m", "venv", "user", cwd=tmp_path)
    user = tmp_path / "user" / "bin"
    run(user / "pip", "install", "-q", f"{wheel}[codegen]", cwd=tmp_path, env=user_env())
    run(user / "eventmicro", "new", "greeter", cwd=tmp_path, env=user_env())
    project = tmp_path / "greeter"
    readme = (project / "README.md").read_text()
    assert "pypi.org" not in readme
    for target in re.findall(r"\]\(([^)]+)\)", readme):  # every link points at a file of the project
        assert (project / target).exists(), target
    lines = _set_up_lines(readme)
    assert lines[0][:3] == ["python", "-m", "venv"]
    assert lines[1] == ["pip", "install", f"{wheel}[server]"]  # where the user's eventmicro came from
    # a fresh venv, then the README's pip lines as written, then the project's own test
    run(sys.executable, "-m", "venv", ".venv", cwd=project)
    fresh = project / ".venv" / "bin"
    for command in lines[1:]:
        assert command[0] == "pip"
        run(fresh / "pip", *command[1:], "-q", cwd=project, env=user_env())
    assert "1 passed" in run(fresh / "pytest", "-q", "-p", "no:cacheprovider", cwd=project, env=user_env())
