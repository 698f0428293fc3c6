"""Regenerate the Python code and .pyi stubs of every .proto under schemas/ (or check them).

python scripts/gen_schemas.py           # write schemas/**/*_pb2.py and *_pb2.pyi
python scripts/gen_schemas.py --check   # exit 1 if the checked-in files are stale
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


def generate(out: Path) -> list[Path]:
    protos = sorted(p.relative_to(ROOT) for p in (ROOT / "schemas").rglob("*.proto"))
    include = Path(grpc_tools.__file__).parent / "_proto"
    plugin = Path(sys.executable).parent / "protoc-gen-mypy"
    args = [
        "protoc",
        f"-I{ROOT}",
        f"-I{include}",
        f"--plugin=protoc-gen-mypy={plugin}",
        f"--python_out={out}",
        f"--mypy_out={out}",
        *map(str, protos),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    return list(out.rglob("*_pb2.py*"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="only check that generated files are current")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        stale = []
        for generated in generate(out):
            relative = generated.relative_to(out)
            target = ROOT / relative
            if args.check:
                if not target.exists() or not filecmp.cmp(generated, target, shallow=False):
                    stale.append(str(relative))
            else:
                shutil.copyfile(generated, target)
                print(f"wrote {relative}")
        if stale:
            print("stale generated schema files (run `make schemas`):", *stale, sep="\n  ")
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
