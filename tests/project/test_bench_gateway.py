"""``python -m bench --suite gateway``, tiny: runs end to end and reports every variant (no timing checks)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VARIANTS = ("raw", "client", "gateway_httpx", "gateway_minimal", "healthz_minimal")


def test_gateway_suite_reports_every_variant(tmp_path: Path) -> None:
    out = tmp_path / "gateway.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = ["-m", "bench", "--suite", "gateway", "--repeat", "1", "--calls", "20", "--json", str(out)]
    result = subprocess.run(
        [sys.executable, *command],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    rows = [line.split() for line in result.stdout.splitlines()]
    for variant in VARIANTS:
        assert any(row[:1] == [variant] and len(row) >= 6 for row in rows), result.stdout
    medians = json.loads(out.read_text())["gateway"]["medians"]
    for variant in VARIANTS:
        for key in ("seq_p50_us", "seq_p99_us", "c64_per_s", "c64_cpu_us_gateway"):
            assert medians[f"{key}_{variant}"] >= 0
        assert medians[f"seq_calls_{variant}"] > 0
