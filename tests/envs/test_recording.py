"""Recording demonstrations as a LeRobotDataset, and the record command's refusals."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from policy_steer.cli.main import main
from policy_steer.config import IntList, StrList
from policy_steer.envs import make
from policy_steer.envs.experts import make_expert
from policy_steer.envs.recording import Config, record, run_expert_episode

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    out = tmp_path_factory.mktemp("rec") / "push"
    cfg = Config(
        task="push", episodes=2, out=str(out), seed_start=10, cameras=StrList(["front"]),
        image_size=IntList([32, 40]), progress=False,
    )
    return cfg, record(cfg)


def test_recorded_dataset_loads_back_with_the_recorded_frames(recorded):
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    cfg, summary = recorded
    assert summary.episodes == 2 and summary.seeds_kept == [10, 11] and summary.attempts == 2
    ds = LeRobotDataset(summary.repo_id, root=cfg.out)
    assert ds.num_episodes == 2 and len(ds) == summary.frames
    assert ds.fps == 10
    assert list(ds.meta.features["observation.images.front"]["shape"]) == [32, 40, 3]

    # Re-run the same seeds: the dataset holds exactly these frames, in order.
    env = make("push", cameras=("front",), image_size=(32, 40))
    expert = make_expert("push")
    expected = []
    for seed in summary.seeds_kept:
        frames, info = run_expert_episode(env, expert, seed)
        assert info["success"]
        expected += frames
    env.close()
    assert len(expected) == len(ds)
    for i in (0, 1, len(ds) // 2, len(ds) - 1):
        item, want = ds[i], expected[i]
        for key in ("observation.state", "observation.environment_state", "action"):
            np.testing.assert_array_equal(item[key].numpy(), want[key], err_msg=key)
        img = (item["observation.images.front"].numpy().transpose(1, 2, 0) * 255).round().astype(np.uint8)
        np.testing.assert_array_equal(img, want["observation.images.front"])
        assert item["task"] == "push the block into the target region"
    last = ds[len(ds) - 1]
    assert bool(last["next.success"].item()) and bool(last["next.done"].item())
    assert not bool(ds[0]["next.done"].item())
    meta = json.loads((Path(cfg.out) / "meta" / "recording.json").read_text())
    assert meta["variant"] == "nominal" and meta["state_layout"]["target"] == [16, 19]


def _cli(args, capsys):
    code = main(args)
    err = capsys.readouterr().err.strip().splitlines()
    return code, err


def test_refuses_an_output_folder_that_holds_a_dataset(recorded, capsys):
    cfg, _ = recorded
    info = Path(cfg.out, "meta", "info.json")
    before = info.read_text()
    code, err = _cli(["record", "--task", "push", "--episodes", "1", "--out", cfg.out], capsys)
    assert code == 2 and len(err) == 1
    assert "already holds a dataset" in err[0] and cfg.out in err[0]
    assert info.read_text() == before  # untouched


@pytest.mark.parametrize(
    "args,message",
    [
        (["--task", "juggle"], "unknown task 'juggle'"),
        (["--task", "push", "--variant", "stormy"], "unknown variant 'stormy'"),
        (["--task", "push", "--episodes", "0"], "--episodes must be >= 1, got 0"),
        (["--task", "push", "--episodes", "-3"], "--episodes must be >= 1, got -3"),
        (["--task", "push"], "--out is required"),
    ],
)
def test_bad_input_gives_one_clear_line(args, message, tmp_path, capsys):
    out = [] if args == ["--task", "push"] else ["--out", str(tmp_path / "ds")]
    code, err = _cli(["record", *args, *out], capsys)
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("policy-steer: error:") and message in err[0]
    assert not (tmp_path / "ds").exists()


def test_refuses_a_folder_with_other_files(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    code, err = _cli(["record", "--task", "reach", "--episodes", "1", "--out", str(tmp_path)], capsys)
    assert code == 2 and "not empty" in err[0]
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_console_script_reports_bad_input_and_exits_nonzero(tmp_path):
    exe = REPO / ".venv" / "bin" / "policy-steer"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "policy_steer.cli.main"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    res = subprocess.run([*cmd, "record", "--task", "fly", "--out", str(tmp_path / "x")], capture_output=True, text=True, env=env)
    assert res.returncode == 2
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("policy-steer:")]
    assert lines == [lines[0]] and "unknown task 'fly'" in lines[0]
