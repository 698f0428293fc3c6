"""`python -m bench --suite hotpath` and `--suite overload`, tiny: end to end, every request counted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def _bench(tmp_path: Path, *args: str) -> dict[str, Any]:
    out = tmp_path / "bench.json"
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--repeat", "1", "--json", str(out), *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    loaded: dict[str, Any] = json.loads(out.read_text())
    return loaded


def test_hotpath_suite_reports_cpu_and_python_calls_per_message(tmp_path: Path) -> None:
    medians = _bench(tmp_path, "--suite", "hotpath", "--calls", "50", "--events", "100")["hotpath"]["medians"]
    for key in ("seq_cpu_us", "c64_cpu_us", "event_cpu_us", "py_calls_per_rpc", "py_calls_per_event"):
        assert medians[key] > 0, medians


def test_overload_suite_accounts_for_every_request(tmp_path: Path) -> None:
    args = ("--suite", "overload", "--rate", "40", "--seconds", "1", "--callers", "1")
    (summary,) = _bench(tmp_path, *args)["overload"]["rounds"]
    assert summary["offered"] == 40
    others = sum(summary["other_in_time"].values())
    assert summary["ok"] + summary["overloaded_503"] + summary["timeouts"] + others == 40, summary
