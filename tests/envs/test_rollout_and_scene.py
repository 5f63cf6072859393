"""rollout() predicts without touching the env; scene() says where things are."""

from __future__ import annotations

import json

import numpy as np
import pytest

from policy_steer.envs import make
from policy_steer.scene import Scene

from .conftest import PLAIN_TASKS, expert_episode


@pytest.mark.parametrize("task", PLAIN_TASKS)
def test_rollout_predicts_the_states_and_leaves_the_env_alone(task, nominal_envs):
    env = nominal_envs[task]
    actions, _, states, _ = expert_episode(env, 4)
    env.reset(seed=4)
    for a in actions[:10]:
        env.step(a)
    u = env.unwrapped
    before = {k: np.copy(getattr(u.data, k)) for k in ("qpos", "qvel", "ctrl", "act", "mocap_pos", "time")}
    obs_before = env.observe()["observation.state"]
    pred = u.rollout(actions[10:25])
    for k, v in before.items():
        assert np.array_equal(getattr(u.data, k), v), k
    assert np.array_equal(env.observe()["observation.state"], obs_before)
    assert pred.shape == (15, u.state_dim) and pred.dtype == np.float32
    np.testing.assert_array_equal(pred, states[11:26])  # bit for bit what step() gives
    # and stepping afterwards reproduces the rest of the episode
    for a, s in zip(actions[10:25], states[11:26]):
        obs, *_ = env.step(a)
        np.testing.assert_array_equal(obs["observation.state"], s)


def test_rollout_rejects_wrong_shapes():
    env = make("reach")
    env.reset(seed=0)
    with pytest.raises(ValueError, match="actions must be"):
        env.unwrapped.rollout(np.zeros((3, 4)))


@pytest.mark.parametrize("task,variant", [("push", "obstacle"), ("pick-place", "clutter"), ("reach", "nominal")])
def test_scene_reads_the_simulator_and_round_trips_json(task, variant):
    env = make(task, variant)
    obs, _ = env.reset(seed=1)
    u = env.unwrapped
    scene = u.scene()
    assert (scene.task, scene.variant, scene.instruction) == (task, variant, u.instruction)
    back = Scene.from_dict(json.loads(scene.to_json()))
    assert back == scene
    state = obs["observation.state"]
    np.testing.assert_allclose(scene.ee_position, state[:3], atol=1e-6)
    names = {o.name for o in scene.objects}
    assert "table" in names
    if task == "push":
        assert {"block", "target", "obstacle"} <= names
        np.testing.assert_allclose(scene.object("block").position, state[u.state_layout["block_pos"]], atol=1e-6)
        face = np.array(scene.keypoints["block_push_face"])
        block = np.array(scene.object("block").position)
        target = np.array(scene.keypoints["target"])
        # the push face is on the far side of the block from the target, half a block from its centre
        assert np.linalg.norm(face - block) == pytest.approx(0.025, abs=1e-6)
        assert np.linalg.norm(face[:2] - target[:2]) > np.linalg.norm(block[:2] - target[:2])
    if task == "pick-place":
        assert {"cube", "target", "distractor_0", "distractor_1", "distractor_2"} <= names
        assert scene.keypoints["gripper"] == pytest.approx(scene.ee_position)
        assert scene.gripper_opening == pytest.approx(1.0, abs=1e-3)
    if task == "reach":
        np.testing.assert_allclose(scene.keypoints["goal"], state[u.state_layout["goal"]], atol=1e-6)
    low, high = np.array(scene.workspace_low), np.array(scene.workspace_high)
    assert np.all(low < high) and low[2] > scene.surface_height
