"""``train-reference`` end to end at toy size (a few lerobot training steps on a few recorded
episodes), and the column cache that makes lerobot's data loading fast enough to train here."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from policy_steer.errors import ConfigError, DatasetError
from policy_steer.training.reference import Config, train_reference


@pytest.fixture(scope="module")
def reach_demos(tmp_path_factory) -> Path:
    from policy_steer.envs.recording import Config as RecordConfig
    from policy_steer.envs.recording import record

    out = tmp_path_factory.mktemp("demos") / "reach"
    record(RecordConfig(task="reach", episodes=3, out=str(out), seed_start=7, progress=False))
    return out


def test_column_cache_returns_what_lerobot_returns(reach_demos):
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    from policy_steer.training.column_cache import cached_columns

    windows = {"observation.state": [0.0], "action": [i / 10 for i in range(16)]}
    ds = LeRobotDataset("local/reach", root=reach_demos, delta_timestamps=windows)
    idx = [0, 5, len(ds) // 2, len(ds) - 1]  # includes the padded end of an episode
    ref = [ds[i] for i in idx]
    with cached_columns():
        new = [ds[i] for i in idx]
    for a, b in zip(ref, new):
        assert a.keys() == b.keys()
        for k, v in a.items():
            if isinstance(v, torch.Tensor):
                assert v.dtype == b[k].dtype and torch.equal(v, b[k]), k
            else:
                assert v == b[k], k


def test_train_reference_writes_a_loadable_self_describing_checkpoint(tmp_path, reach_demos):
    from safetensors import safe_open

    from policy_steer.policies.loading import load_policy
    from policy_steer.steered_policy import SteeredPolicy

    out = tmp_path / "reach-diffusion"
    cfg = Config(task="reach", family="diffusion", dataset=str(reach_demos), steps=4, batch_size=8, out=str(out),
                 work_dir=str(tmp_path / "work"))
    assert train_reference(cfg) == out
    meta = json.loads((out / "policy_steer.json").read_text())
    assert meta["task"] == "reach" and meta["control_hz"] == 10.0
    assert meta["trained_with"] == "lerobot.scripts.lerobot_train.train" and meta["steps"] == 4
    with safe_open(str(out / "model.safetensors"), "pt") as f:  # shipped in float16
        assert {f.get_tensor(k).dtype for k in f.keys() if f.get_tensor(k).is_floating_point()} == {torch.float16}

    policy = load_policy(str(out))
    assert policy.spec.action_dim == 3
    from policy_steer.envs import make

    env = make("reach")
    obs, _ = env.reset(seed=0)
    chunk = SteeredPolicy(policy, seed=0).predict_chunk({**obs, "task": env.unwrapped.instruction, "step": 0})
    assert chunk.actions.shape[1] == 3 and np.isfinite(chunk.actions).all()
    env.close()

    with pytest.raises(ConfigError, match="already holds a checkpoint"):
        train_reference(cfg)


def test_train_reference_refuses_a_dataset_of_another_task(tmp_path, reach_demos):
    cfg = Config(task="push", family="diffusion", dataset=str(reach_demos), steps=2, batch_size=4,
                 out=str(tmp_path / "x"), work_dir=str(tmp_path / "work"))
    with pytest.raises(DatasetError, match="not of 'push'"):
        train_reference(cfg)
    assert not (tmp_path / "x").exists()
