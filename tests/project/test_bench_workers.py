"""`python -m bench --suite workers`, tiny: both worker counts measured and reported (no timing checks)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_workers_suite_measures_one_and_two_workers(tmp_path: Path) -> None:
    out = tmp_path / "workers.json"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--suite",
            "workers",
            "--repeat",
            "1",
            "--calls",
            "200",
            "--json",
            str(out),
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    medians = json.loads(out.read_text())["workers"]["medians"]
    for workers in (1, 2):
        assert medians[f"c64_per_s_{workers}w"] > 0
        assert medians[f"c64_cpu_us_{workers}w"] > 0
    assert medians["ratio_2w_1w"] > 0
    assert "1 worker(s)" in result.stdout, result.stdout
    assert "2 worker(s)" in result.stdout, result.stdout
