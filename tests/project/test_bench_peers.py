"""`python -m bench --suite peers`, tiny, with FastStream hidden: the other peers measured, FastStream
skipped with its reason (the bench extra is optional; no timing checks)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MEASURED = ("raw", "raw_ce", "micro", "eventmicro")
EVENTS = 300


def test_peers_suite_runs_without_faststream(tmp_path: Path) -> None:
    # a faststream package that fails to import: absent, whether or not this venv has the bench extra
    hidden = tmp_path / "hidden" / "faststream"
    hidden.mkdir(parents=True)
    (hidden / "__init__.py").write_text('raise ImportError("hidden by the test")\n')
    out = tmp_path / "peers.json"
    command = ["--suite", "peers", "--repeat", "1", "--calls", "20", "--peer-events", str(EVENTS)]
    result = subprocess.run(
        [sys.executable, "-m", "bench", *command, "--json", str(out)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": os.pathsep.join((str(tmp_path / "hidden"), str(ROOT)))},
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "faststream: skipped: FastStream is not installed" in result.stdout, result.stdout
    peers = json.loads(out.read_text())["peers"]
    assert peers["peers"] == list(MEASURED)
    assert list(peers["skipped"]) == ["faststream"]
    medians = peers["medians"]
    for name in MEASURED:
        for key in ("rpc_p50_us", "rpc_p99_us", "rpc_cpu_us", "rpc64_per_s", "rpc64_cpu_us"):
            assert medians[f"{key}_{name}"] > 0, (key, name)
    for name in ("raw", "raw_ce", "eventmicro"):  # nats.micro has no subscriber
        assert medians[f"ev{EVENTS}_per_s_{name}"] > 0
        assert medians[f"ev{EVENTS}_cpu_us_{name}"] > 0
        assert peers["lost_worst"][f"ev{EVENTS}_lost_{name}"] == 0
    assert f"ev{EVENTS}_per_s_micro" not in medians
    assert set(peers["ratios"]["RPC p50"]) == {"raw", "raw_ce", "micro"}
    assert set(peers["ratios"][f"events {EVENTS} msgs/s"]) == {"raw", "raw_ce"}
    rows = [line.split("  ")[1].strip() for line in result.stdout.splitlines() if line.startswith("  ")]
    for label in ("raw nats-py", "raw nats-py + hand-built CE", "nats.micro", "eventmicro"):
        assert label in rows, result.stdout
    assert "FastStream" not in rows
