"""The chunk -> end-effector trajectory map and how well the executed trajectory follows it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from policy_steer.envs import make
from policy_steer.envs.trajectory import ee_trajectory

from .conftest import PLAIN_TASKS, expert_episode

H = 16
# Largest distance between predicted and executed ee over a 16-step expert chunk (metres). Free motion
# and grasping track within millimetres; pushing loses a little to contact.
TOLERANCE = {"reach": 0.003, "pick-place": 0.006, "push": 0.015}


def test_delta_and_absolute_maps():
    actions = torch.tensor([[[0.01, 0.0, 0.0, 1.0], [0.05, -0.01, 0.02, -1.0]]])
    start = torch.tensor([[0.3, 0.0, 0.1]])
    out = ee_trajectory(actions, start, "delta")
    assert out.shape == (1, 2, 3)
    torch.testing.assert_close(out[0, 1], torch.tensor([0.36, -0.01, 0.12]))
    clipped = ee_trajectory(actions, start, "delta", max_step=0.03)
    torch.testing.assert_close(clipped[0, 1], torch.tensor([0.34, -0.01, 0.12]))
    torch.testing.assert_close(ee_trajectory(actions, start, "absolute"), actions[..., :3])
    with pytest.raises(ValueError, match="unknown action mode"):
        ee_trajectory(actions, start, "velocity")


def test_gradients_flow_to_every_action():
    actions = torch.zeros(2, 5, 3, requires_grad=True)
    traj = ee_trajectory(actions, torch.zeros(2, 3))
    traj[:, -1].sum().backward()
    assert torch.all(actions.grad == 1.0)  # the last position depends on every displacement


@pytest.mark.parametrize("task", PLAIN_TASKS)
def test_expert_chunks_follow_the_predicted_trajectory(task, nominal_envs):
    env = nominal_envs[task]
    errors = []
    for seed in (0, 1, 2):
        actions, ee, _, _ = expert_episode(env, seed)
        for k in range(0, len(actions) - H, 4):
            pred = ee_trajectory(
                torch.tensor(actions[None, k : k + H]), torch.tensor(ee[None, k]), "delta", env.unwrapped.max_step
            )[0].numpy()
            errors.append(np.linalg.norm(pred - ee[k + 1 : k + H + 1], axis=1).max())
    assert len(errors) > 10
    assert max(errors) < TOLERANCE[task]


def test_absolute_mode_trajectory_is_the_targets():
    from policy_steer.envs.experts import make_expert

    env = make("pick-place", action_mode="absolute")
    expert = make_expert("pick-place")
    obs, _ = env.reset(seed=0)
    expert.reset(env, 0)
    actions, ees = [], []
    for _ in range(H):
        a = expert.act(obs)
        obs, *_ = env.step(a)
        actions.append(a)
        ees.append(obs["observation.state"][:3])
    pred = ee_trajectory(torch.tensor(np.array(actions))[None], torch.zeros(1, 3), "absolute")[0].numpy()
    assert np.linalg.norm(pred - np.array(ees), axis=1).max() < TOLERANCE["pick-place"]
