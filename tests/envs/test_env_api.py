"""The gymnasium contract, the observation layout and determinism of the plain-MuJoCo tasks."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from policy_steer.envs import TASKS, VARIANTS, make
from policy_steer.envs.base import ROBOT_SLICES

from .conftest import PLAIN_TASKS


@pytest.mark.parametrize("task", PLAIN_TASKS)
def test_gymnasium_env_checker_passes(task):
    env = gym.make(TASKS[task], cameras=("front",), image_size=(32, 40), disable_env_checker=True).unwrapped
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any checker warning fails the test
        check_env(env, skip_render_check=False)
    env.close()


@pytest.mark.parametrize("task", PLAIN_TASKS)
def test_state_layout_names_every_slice(task):
    env = make(task)
    u = env.unwrapped
    obs, info = env.reset(seed=0)
    state = obs["observation.state"]
    assert tuple(u.state_layout)[:3] == ROBOT_SLICES
    covered = np.zeros(len(state), dtype=int)
    for sl in u.state_layout.values():
        covered[sl] += 1
    assert (covered == 1).all(), "slices must tile the state exactly once"
    assert u.robot_state_dim == 3 + 1 + 5
    assert np.array_equal(obs["observation.environment_state"], state[u.robot_state_dim:])
    assert state.dtype == np.float32
    np.testing.assert_allclose(state[u.state_layout["ee_pos"]], u.ee_position(), atol=1e-6)
    assert info == {"success": False, "is_success": False, "failure": None, "step": 0}
    assert u.control_hz == 10.0 and u.max_step == 0.03
    assert u.action_dim == (4 if task == "pick-place" else 3)


@pytest.mark.parametrize("task", PLAIN_TASKS)
def test_same_seed_same_episode_and_other_seed_another(task):
    rng = np.random.default_rng(0)
    env = make(task)
    actions = rng.uniform(-0.03, 0.03, size=(15, env.unwrapped.action_dim)).astype(np.float32)

    def run(seed):
        obs, _ = env.reset(seed=seed)
        out = [obs["observation.state"]]
        for a in actions:
            obs, *_ = env.step(a)
            out.append(obs["observation.state"])
        return np.array(out)

    a, b, c = run(3), run(3), run(4)
    assert np.array_equal(a, b)
    assert not np.allclose(a[0, 9:], c[0, 9:])  # another seed: another layout


@pytest.mark.parametrize("variant", VARIANTS)
def test_state_dims_do_not_depend_on_the_variant(variant):
    # Policies are blind to what the variants add: the state has the same layout everywhere.
    nominal = make("push")
    env = make("push", variant)
    assert env.unwrapped.state_layout == nominal.unwrapped.state_layout
    obs, _ = env.reset(seed=1)
    assert obs["observation.state"].shape == nominal.observation_space["observation.state"].shape


def test_time_limit_truncates():
    env = make("reach", max_episode_steps=5)
    env.reset(seed=0)
    for k in range(5):
        _, _, terminated, truncated, info = env.step(np.zeros(3, dtype=np.float32))
    assert not terminated and truncated and info["step"] == 5


def test_delta_actions_are_clipped_to_max_step():
    env = make("reach")
    obs, _ = env.reset(seed=0)
    ee0 = obs["observation.state"][:3].copy()
    obs, *_ = env.step(np.array([0.5, 0.0, 0.0], dtype=np.float32))  # asks for 50 cm, gets max_step
    moved = obs["observation.state"][:3] - ee0
    assert moved[0] == pytest.approx(0.03, abs=2e-3)
    assert abs(moved[1]) < 2e-3 and abs(moved[2]) < 2e-3


def test_absolute_mode_goes_to_the_target_and_the_gripper_closes():
    env = make("pick-place", action_mode="absolute")
    obs, _ = env.reset(seed=0)
    assert obs["observation.state"][3] == pytest.approx(1.0, abs=1e-3)  # starts open
    target = np.array([0.40, 0.05, 0.15], dtype=np.float32)
    for _ in range(10):
        obs, *_ = env.step(np.array([*target, 1.0], dtype=np.float32))
    np.testing.assert_allclose(obs["observation.state"][:3], target, atol=2e-3)
    assert obs["observation.state"][3] < 0.05  # closed (on nothing)


def test_camera_images_have_the_asked_shape_and_show_the_scene():
    env = make("push", cameras=("front", "wrist"), image_size=(48, 64))
    obs, _ = env.reset(seed=0)
    for cam in ("front", "wrist"):
        img = obs[f"observation.images.{cam}"]
        assert img.shape == (48, 64, 3) and img.dtype == np.uint8
        assert img.std() > 10  # not a blank frame
    assert env.render().shape == (240, 320, 3)
    env.close()
