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


@pytest.fixture(scope="module")
def reach_camera_demos(tmp_path_factory) -> Path:
    from policy_steer.config import IntList, StrList
    from policy_steer.envs.recording import Config as RecordConfig
    from policy_steer.envs.recording import record

    out = tmp_path_factory.mktemp("demos") / "reach-front"
    record(RecordConfig(task="reach", episodes=2, out=str(out), seed_start=7, progress=False,
                        cameras=StrList(["front"]), image_size=IntList([32, 32])))
    return out


def _rendered_chunk(policy):
    """A chunk from an observation the task env renders with the cameras the policy reads."""
    from policy_steer.envs import make
    from policy_steer.policies.observation import camera_env_kwargs
    from policy_steer.steered_policy import SteeredPolicy

    env = make("reach", **camera_env_kwargs(policy.spec.observation))
    try:
        obs, _ = env.reset(seed=0)
        return SteeredPolicy(policy, seed=0).predict_chunk({**obs, "task": env.unwrapped.instruction, "step": 0})
    finally:
        env.close()


def test_image_diffusion_family_trains_multi_task_dit_on_a_camera(tmp_path, reach_camera_demos):
    """``--family image-diffusion``: lerobot's multi_task_dit, diffusion objective, tiny CLIP vision tower."""
    from policy_steer.policies.loading import load_policy
    from policy_steer.policies.multi_task_dit import MultiTaskDiTAdapter

    out = tmp_path / "reach-image-diffusion"
    cfg = Config(task="reach", family="image-diffusion", dataset=str(reach_camera_demos), steps=3, batch_size=8,
                 out=str(out), work_dir=str(tmp_path / "work"))
    assert train_reference(cfg) == out
    conf = json.loads((out / "config.json").read_text())
    assert conf["type"] == "multi_task_dit" and conf["objective"] == "diffusion"
    assert conf["vision_encoder_name"] == "tiny_clip" and (out / "tiny_clip" / "config.json").is_file()
    assert conf["image_crop_shape"] == [24, 24] and conf["vision_encoder_lr_multiplier"] == 1.0
    clip = json.loads((out / "tiny_clip" / "config.json").read_text())
    assert clip["vision_config"]["image_size"] == 24 and clip["vision_config"]["patch_size"] == 8
    meta = json.loads((out / "policy_steer.json").read_text())
    assert meta["family"] == "image-diffusion" and meta["camera"] == "front" and meta["image_size"] == [32, 32]

    policy = load_policy(str(out))
    assert isinstance(policy, MultiTaskDiTAdapter) and policy.spec.family == "diffusion"
    assert policy.spec.observation["observation.images.front"].shape == (32, 32, 3)
    chunk = _rendered_chunk(policy)
    assert chunk.actions.shape == (policy.spec.horizon, 3) and np.isfinite(chunk.actions).all()


def test_image_family_needs_the_camera_in_the_dataset(tmp_path, reach_demos):
    cfg = Config(task="reach", family="image-diffusion", dataset=str(reach_demos), steps=2, batch_size=4,
                 out=str(tmp_path / "x"), work_dir=str(tmp_path / "work"))
    with pytest.raises(ConfigError, match="observation.images.front"):
        train_reference(cfg)


def test_shipped_image_policy_acts_on_a_rendered_camera():
    """checkpoints/reach-image-diffusion: loads from the repository and denoises a rendered observation."""
    from policy_steer.policies.loading import load_policy

    folder = Path(__file__).resolve().parents[2] / "checkpoints" / "reach-image-diffusion"
    policy = load_policy(str(folder))
    assert policy.spec.family == "diffusion" and policy.spec.action_dim == 3
    assert set(policy.spec.observation) == {"observation.state", "observation.images.front"}
    chunk = _rendered_chunk(policy)
    assert chunk.actions.shape == (16, 3) and np.isfinite(chunk.actions).all()


def test_fine_tuning_starts_from_the_given_checkpoint(tmp_path, reach_demos):
    """--init_from loads the checkpoint's weights: with lr 0 the fine-tuned weights are the initial ones,
    and the offset data (VLASH) is accepted on top; a folder that is not a checkpoint is refused."""
    from safetensors.torch import load_file

    base = train_reference(Config(task="reach", dataset=str(reach_demos), steps=2, batch_size=8,
                                  out=str(tmp_path / "base"), work_dir=str(tmp_path / "work")))
    tuned = train_reference(Config(task="reach", dataset=str(reach_demos), steps=2, batch_size=8, lr=0.0,
                                   init_from=str(base), future_state_offsets=2,
                                   out=str(tmp_path / "tuned"), work_dir=str(tmp_path / "work")))
    a, b = load_file(base / "model.safetensors"), load_file(tuned / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    meta = json.loads((tuned / "policy_steer.json").read_text())
    assert meta["init_from"] == str(base) and f"--init_from {base}" in meta["command"]
    # --episodes names the demonstrations to record, not the offset copies derived from them
    assert meta["dataset_episodes"] > 3 and " --episodes 3 " in meta["command"]
    with pytest.raises(ConfigError, match="no lerobot checkpoint"):
        train_reference(Config(task="reach", dataset=str(reach_demos), steps=1, init_from=str(tmp_path / "nothing"),
                               out=str(tmp_path / "x"), work_dir=str(tmp_path / "work")))
