"""Regenerate the Python code, .pyi stubs and eventmicro clients of every .proto under schemas/.

python scripts/gen_schemas.py           # write schemas/**/*_pb2.py, *_pb2.pyi and *_micro.py
python scripts/gen_schemas.py --check   # exit 1 if the checked-in files are stale

``*_micro.py`` (typed clients and service skeletons, for files with a ``service``) come from
eventmicro's own protoc plugin, ``protoc-gen-eventmicro`` (`eventmicro.codegen`). A generated
file whose .proto or ``service`` block is gone is removed (or, with --check, reported).
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import tempfile
from pathlib import Path

import grpc_tools
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
GENERATED = ("*_pb2.py", "*_pb2.pyi", "*_micro.py")


def generate(out: Path) -> list[Path]:
    protos = sorted(p.relative_to(ROOT) for p in (ROOT / "schemas").rglob("*.proto"))
    include = Path(grpc_tools.__file__).parent / "_proto"
    bin_dir = Path(sys.executable).parent
    plugins = {name: bin_dir / f"protoc-gen-{name}" for name in ("mypy", "eventmicro")}
    for plugin in plugins.values():
        if not plugin.exists():
            raise SystemExit(f"{plugin} is missing: install the project (pip install -e '.[dev]')")
    args = [
        "protoc",
        f"-I{ROOT}",
        f"-I{include}",
        *(f"--plugin=protoc-gen-{name}={path}" for name, path in plugins.items()),
        f"--python_out={out}",
        f"--mypy_out={out}",
        f"--eventmicro_out={out}",
        *map(str, protos),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    return generated_files(out)


def generated_files(directory: Path) -> list[Path]:
    return sorted(p for pattern in GENERATED for p in directory.rglob(pattern))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="only check that generated files are current")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        stale = []
        generated = generate(out)
        for path in generated:
            relative = path.relative_to(out)
            target = ROOT / relative
            if args.check:
                if not target.exists() or not filecmp.cmp(path, target, shallow=False):
                    stale.append(str(relative))
            else:
                shutil.copyfile(path, target)
                print(f"wrote {relative}")
        current = {out / p.relative_to(ROOT) for p in generated_files(ROOT / "schemas")}
        for orphan in sorted(current - set(generated)):
            relative = orphan.relative_to(out)
            if args.check:
                stale.append(f"{relative} (no longer generated)")
            else:
                (ROOT / relative).unlink()
                print(f"removed {relative}")
        if stale:
            print("stale generated schema files (run `make schemas`):", *stale, sep="\n  ")
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
