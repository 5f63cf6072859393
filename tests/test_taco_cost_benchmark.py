"""benchmarks/taco_cost.py runs end to end on a shipped policy: timing rows for every setting it was asked
for, and fidelity figures where the sigmoid activations keep TACO's choice (the full run is in
docs/results/taco_cost/)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _bench():
    spec = importlib.util.spec_from_file_location("taco_cost", REPO / "benchmarks" / "taco_cost.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["taco_cost"] = mod
    spec.loader.exec_module(mod)
    return mod


def test_taco_cost_measures_the_settings_asked_for(tmp_path):
    out = tmp_path / "taco_cost"
    assert _bench().main(["--policy", str(REPO / "checkpoints" / "push-diffusion"), "--candidates", "4", "--rounds", "1",
                          "--chunks", "2", "--settings", "sigmoid", "--out", str(out)]) == 0
    data = json.loads((out / "taco_cost.json").read_text())
    (res,) = data["results"]
    assert {(r["setting"], r["candidates"]) for r in res["rows"]} == {(s, m) for s in ("fp32", "sigmoid") for m in (1, 4)}
    base = next(r for r in res["rows"] if r["setting"] == "fp32" and r["candidates"] == 1)
    assert base["ratio_to_fp32_m1"] == 1.0
    fid = res["fidelity"]["sigmoid"]
    assert fid["chunks"] == 2 and fid["same_winner"] == 1.0 and fid["max_abs_m1"] < 1e-6
    assert "| push-diffusion | sigmoid | 4 |" in (out / "taco_cost.md").read_text()
