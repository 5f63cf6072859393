"""``policy-steer bench``: a short end-to-end run of the shipped reference policy, and the errors a
user gets for the usual mistakes (before any worker starts, and without writing results)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from policy_steer.cli.main import main
from tests.fixtures.tiny_policies import build_tiny_diffusion

REPO = Path(__file__).resolve().parents[2]


def test_short_baseline_bench_of_the_shipped_policy(tmp_path, capsys):
    out = tmp_path / "res"
    code = main(["bench", "--task", "reach", "--variant", "nominal,obstacle", "--episodes", "3",
                 "--workers", "1", "--out", str(out), "--quiet", "true"])
    assert code == 0
    table = capsys.readouterr().out
    assert "reach" in table and "obstacle" in table
    runs = json.loads((out / "results.json").read_text())["runs"]
    assert [(r["task"], r["variant"]) for r in runs] == [("reach", "nominal"), ("reach", "obstacle")]
    for r in runs:
        assert r["episodes"] == 3 and r["seeds"] == [0, 1, 2] and r["steer"] == "none"
        assert r["policy"].endswith("checkpoints/reach-diffusion")
        lo, hi = r["ci95"]
        assert 0.0 <= lo <= r["success_rate"] <= hi <= 1.0
        assert r["successes"] == sum(r["per_episode_success"])
        assert r["chunk_latency_ms"]["p50"] > 0
    assert (out / "results.md").read_text().count("reach") >= 2
    assert list(out.glob("*.png")), "no plot written"


def test_bench_renders_the_camera_an_image_policy_reads(tmp_path):
    """The workers' envs render ``observation.images.front`` for checkpoints/reach-image-diffusion."""
    out = tmp_path / "res"
    code = main(["bench", "--task", "reach", "--policy", str(REPO / "checkpoints" / "reach-image-diffusion"),
                 "--episodes", "1", "--workers", "1", "--out", str(out), "--quiet", "true", "--plots", "false"])
    assert code == 0
    (run,) = json.loads((out / "results.json").read_text())["runs"]
    assert run["episodes"] == 1 and run["policy"].endswith("checkpoints/reach-image-diffusion")
    assert run["chunk_latency_ms"]["p50"] > 0


def test_same_seeds_give_the_same_episodes(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for out in (a, b):
        assert main(["bench", "--task", "reach", "--episodes", "2", "--workers", "1", "--out", str(out),
                     "--quiet", "true", "--plots", "false"]) == 0
    ra, rb = (json.loads((o / "results.json").read_text())["runs"][0] for o in (a, b))
    assert ra["per_episode_success"] == rb["per_episode_success"]
    assert ra["mean_episode_steps"] == rb["mean_episode_steps"]


@pytest.fixture(scope="module")
def tiny_push_sized(tmp_path_factory) -> Path:
    """A real (random-weight) DiffusionPolicy with push's observation split but 3-D actions."""
    return build_tiny_diffusion(tmp_path_factory.mktemp("tiny3"), state_dim=9, env_state_dim=10, action_dim=3)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--task", "push", "--policy", "{tmp}/nothing-here"], "nothing-here"),
        (["--task", "push", "--policy", "{tmp}"], "config.json"),
        (["--task", "pick-place", "--policy", "{tiny}"], "outputs 3-D actions but task 'pick-place' takes 4-D"),
        (["--task", "push", "--variant", "windy"], "unknown variant 'windy'"),
        (["--task", "juggle"], "juggle"),
        (["--task", "push", "--episodes", "0"], "--episodes must be >= 1"),
    ],
)
def test_bad_bench_input_is_named_and_writes_nothing(tmp_path, capsys, tiny_push_sized, args, message):
    out = tmp_path / "res"
    args = [a.replace("{tmp}", str(tmp_path)).replace("{tiny}", str(tiny_push_sized)) for a in args]
    code = main(["bench", *args, "--episodes", "1", "--workers", "1", "--out", str(out)]
                if "--episodes" not in args else ["bench", *args, "--workers", "1", "--out", str(out)])
    assert code == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err
    assert not out.exists()
