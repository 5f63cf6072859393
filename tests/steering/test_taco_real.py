"""TACO on a real task: the shipped reference policy, demonstrations recorded in the test.

The verifier is fitted on some recorded episodes (high-fidelity search with a small K) and must rank
the recorded chunks of *other* episodes above perturbed copies of them (AUC > 0.9).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from policy_steer.steering.taco.fit import Config, fit_verifier

REPO = Path(__file__).resolve().parents[2]


def _checkpoint(task: str) -> Path:
    folder = REPO / "checkpoints" / f"{task}-diffusion"
    assert (folder / "model.safetensors").is_file(), f"no shipped policy {folder}: run train-reference"
    return folder


def _record(task: str, out: Path, episodes: int, seed_start: int = 0) -> Path:
    from policy_steer.envs.recording import Config as RecordConfig
    from policy_steer.envs.recording import record

    record(RecordConfig(task=task, episodes=episodes, out=str(out), seed_start=seed_start, progress=False))
    return out


def _fit(task: str, tmp_path: Path, episodes: int, **kw) -> dict:
    ckpt = _checkpoint(task)
    data = _record(task, tmp_path / f"{task}-demos", episodes)
    opts = dict(policy=str(ckpt), dataset=str(data), out=str(tmp_path / "verifier"), samples=8, max_frames=300,
                held_out=0.25, eval_frames=90, steps=800, width=32, depth=1, batch_rows=256, progress=False)
    opts.update(kw)
    return fit_verifier(Config(**opts))


def test_fitted_count_ranks_held_out_recorded_chunks_above_perturbed_ones(tmp_path):
    info = _fit("push", tmp_path, episodes=8)
    held = info["held_out"]
    assert held["episodes"] == 2
    assert held["cfn"]["perturbed"] > 0.9, held
    assert (tmp_path / "verifier" / "cfn.safetensors").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("task", ["push", "pick-place"])
def test_fitted_count_at_full_size(tmp_path, task):
    info = _fit(task, tmp_path, episodes=40, samples=16, max_frames=1500, eval_frames=300, steps=3000, width=64,
                depth=2)
    held = info["held_out"]
    assert held["cfn"]["perturbed"] > 0.9, held
    assert held["cfn"]["off_support"] is None or held["cfn"]["off_support"] > 0.75, held

