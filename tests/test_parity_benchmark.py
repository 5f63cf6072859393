"""benchmarks/parity.py, short: the same seeded episodes through `bench` (one process) and through
`serve` + `sim-robot --clock virtual` (two processes, protocol v2 over loopback) end identically,
episode by episode (success and completion steps), with VLS steering the served robot.

The full run (50 episodes per cell, none / vls / taco on push obstacle and pick-place nominal) is in
README and docs/results/parity/."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_served_episodes_match_the_benchmark_one_by_one(tmp_path):
    out = tmp_path / "parity"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "parity.py"), "--episodes", "2", "--seed_start", "7",
         "--cells", "push:obstacle", "--steer", "vls", "--workers", "1", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    rows = json.loads((out / "parity.json").read_text())["rows"]
    assert len(rows) == 1 and rows[0]["steer"] == "vls"
    r = rows[0]
    assert r["episodes"] == 2 and r["same_outcome"] == 2, r
    assert r["bench"] == r["served"] and all(steps > 0 for _, steps in r["served"])
    assert (out / "parity.png").stat().st_size > 0 and "| push | obstacle | vls | 2 |" in (out / "parity.md").read_text()
