"""benchmarks/vls_cost.py runs end to end on the shipped push policy (slow: it loads the policy and the task)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _bench():
    spec = importlib.util.spec_from_file_location("vls_cost", REPO / "benchmarks" / "vls_cost.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["vls_cost"] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.slow
def test_every_configuration_runs_and_counts_its_denoiser_calls(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)  # the shipped checkpoints/<task>-diffusion
    bench = _bench()
    out = tmp_path / "vls_cost"
    assert bench.main(["--task", "push", "--chunks", "2", "--rounds", "1", "--out", str(out)]) == 0
    (result,) = json.loads((out / "vls_cost.json").read_text())
    rows = {r["config"]: r for r in result["rows"]}
    assert set(rows) == set(bench.CONFIGS) and rows["none"]["ratio"] == 1.0
    assert (rows["none"]["denoiser_calls"], rows["none"]["calls_with_grad"]) == (10, 0)
    assert (rows["vls (today's default)"]["denoiser_calls"], rows["vls (today's default)"]["calls_with_grad"]) == (10, 10)
    assert rows["vls through=x0_hat"]["calls_with_grad"] == 0 and rows["vls through=x0_hat"]["guided_steps"] == 10
    assert rows["vls guide [0.7, 1)"]["calls_with_grad"] == 3 and rows["vls guide [0.2, 0.8)"]["calls_with_grad"] == 6
    assert rows["vls x0_hat_scaled, guide [0.2, 0.8)"]["calls_with_grad"] == 0
    assert rows["warm(0.5)+vls"]["denoiser_calls"] == 5 and rows["warm(0.5)+vls"]["steps_run"] == 5
    assert (out / "vls_cost.md").read_text().count("\n| ") == len(rows) + 1
