"""VLASH offset data: robot state and targets from t + delta, the scene from t, as a real LeRobotDataset."""

from __future__ import annotations

import json

import numpy as np
import pytest

from policy_steer.errors import DatasetError
from policy_steer.training.offsets import PROVENANCE, make_offset_dataset, offset_episode, offset_plan

S, E, A = 7, 3, 2  # robot part = S - E = 4


def _record(root, lengths=(12, 14, 9)):
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    feats = {
        "observation.state": {"dtype": "float32", "shape": (S,), "names": None},
        "observation.environment_state": {"dtype": "float32", "shape": (E,), "names": None},
        "action": {"dtype": "float32", "shape": (A,), "names": None},
        "next.done": {"dtype": "bool", "shape": (1,), "names": None},
    }
    ds = LeRobotDataset.create(repo_id="local/push", fps=10, features=feats, root=root, use_videos=False)
    for e, n in enumerate(lengths):
        for t in range(n):
            state = np.full(S, 100 * e + t, np.float32)
            state[S - E:] += 0.5  # the task part, told apart from the robot part by the .5
            ds.add_frame({"observation.state": state, "observation.environment_state": state[S - E:].copy(),
                          "action": np.array([100 * e + t, -t], np.float32),
                          "next.done": np.array([t == n - 1]), "task": "push the block"})
        ds.save_episode()
    ds.finalize()
    return root


def test_offset_episode_and_plan():
    state = np.arange(10 * 5, dtype=np.float32).reshape(10, 5)
    action = np.arange(10, dtype=np.float32)[:, None]
    ep = offset_episode(state, action, 3, robot_state_dim=2, env_state=state[:, 2:])
    assert len(ep["action"]) == 7
    np.testing.assert_array_equal(ep["observation.state"][:, :2], state[3:, :2])  # robot part from t + 3
    np.testing.assert_array_equal(ep["observation.state"][:, 2:], state[:7, 2:])  # task part from t
    np.testing.assert_array_equal(ep["observation.environment_state"], state[:7, 2:])
    np.testing.assert_array_equal(ep["action"][:, 0], np.arange(3, 10))  # targets shifted by delta
    plan = offset_plan([50, 50, 3], max_offset=8, copies=4, seed=0)
    assert all(len(set(p)) == len(p) for p in plan) and [len(p) for p in plan] == [4, 4, 3]
    assert all(0 <= d <= 8 for p in plan for d in p) and plan[2] == [0, 1, 2]  # clamped to the episode
    assert plan == offset_plan([50, 50, 3], max_offset=8, copies=4, seed=0)  # seeded


def test_make_offset_dataset(tmp_path):
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    src = _record(tmp_path / "push")
    out = make_offset_dataset(src, max_offset=3, seed=1, copies=2)
    assert out == tmp_path / "push-offsets3"
    made = json.loads((out / PROVENANCE).read_text())
    assert made["params"]["robot_state_dim"] == 4 and made["derived_episodes"] == 6
    ds = LeRobotDataset("local/push-offsets3", root=out)
    assert list(ds.meta.tasks.index) == ["push the block"]
    hf = ds.hf_dataset.with_format("numpy")
    ep, fi = np.asarray(hf["episode_index"]), np.asarray(hf["frame_index"])
    state, action, done = (np.asarray(hf[k]) for k in ("observation.state", "action", "next.done"))
    env = np.asarray(hf["observation.environment_state"])
    for e in range(6):
        rows = np.flatnonzero(ep == e)
        src_ep, n_src = e // 2, (12, 14, 9)[e // 2]
        delta = n_src - len(rows)
        assert 0 <= delta <= 3
        t = fi[rows]
        np.testing.assert_array_equal(state[rows, 0], 100 * src_ep + t + delta)  # robot part at t + delta
        np.testing.assert_array_equal(state[rows, 4], 100 * src_ep + t + 0.5)  # task part at t
        np.testing.assert_array_equal(env[rows, 0], 100 * src_ep + t + 0.5)
        np.testing.assert_array_equal(action[rows, 1], -(t + delta))  # the actions from t + delta on
        assert done[rows].ravel().tolist() == [False] * (len(rows) - 1) + [True]  # next.* moves with the action
    assert make_offset_dataset(src, max_offset=3, seed=1, copies=2) == out  # made the same way: reused
    with pytest.raises(DatasetError, match="not made from"):
        make_offset_dataset(src, max_offset=3, seed=2, copies=2)
    with pytest.raises(DatasetError, match="not a LeRobotDataset"):
        make_offset_dataset(tmp_path / "nothing", max_offset=3)
