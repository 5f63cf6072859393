"""Future-state estimators: the ``model`` one predicts the simulator; a misfit one is refused clearly."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from policy_steer.errors import ConfigError
from policy_steer.runtime.future_state import RobotDescription, make_estimator
from policy_steer.runtime.planner import ChunkPlanner
from tests.runtime.conftest import make_env


def _pending(env, obs, rng, k: int = 6) -> np.ndarray:
    u = env.unwrapped
    if u.action_mode == "absolute":
        a = np.zeros((k, u.action_dim), np.float32)
        a[:, :3] = obs["observation.state"][:3] + rng.uniform(-0.03, 0.03, (k, 3)).cumsum(axis=0)
        if u.action_dim == 4:
            a[:, 3] = rng.choice([-1.0, 1.0], k)
        return a
    return rng.uniform(env.action_space.low, env.action_space.high, (k, u.action_dim)).astype(np.float32)


@pytest.mark.parametrize("task,mode", [("push", "delta"), ("pick-place", "absolute")])
def test_model_estimator_predicts_the_simulator(task, mode):
    env = make_env(task, "nominal", action_mode=mode)
    robot = RobotDescription.from_env(env)
    rng = np.random.default_rng(0)
    obs, _ = env.reset(seed=3)
    for a in _pending(env, obs, rng, 3):
        obs, *_ = env.step(a)
    pending = _pending(env, obs, rng)
    fitted = "delta" if mode == "delta" else "target"
    model = make_estimator("model", robot).estimate(obs["observation.state"], pending, robot)
    # model-robot on the simulator (no arm model described): the robot part of the same rollout
    no_arm = dataclasses.replace(robot, arm=None)
    robot_only = make_estimator("model-robot", no_arm).estimate(obs["observation.state"], pending, no_arm)
    rsd = robot.robot_state_dim
    np.testing.assert_array_equal(robot_only[:rsd], model[:rsd])
    np.testing.assert_array_equal(robot_only[rsd:], obs["observation.state"][rsd:])  # the scene stays measured
    simple = make_estimator(fitted, robot).estimate(obs["observation.state"], pending, robot)
    for a in pending:
        obs, *_ = env.step(a)
    true = obs["observation.state"]
    ee = robot.state_layout["ee_pos"]
    np.testing.assert_allclose(model, true, atol=1e-5)  # the whole state, objects and joints included
    assert np.linalg.norm(simple[ee] - true[ee]) < 2e-3  # the kinematic estimators: the end effector only
    assert make_estimator("auto", robot).name == "kinematic"  # the env describes its arm: never the oracle
    assert make_estimator("auto", no_arm).name == "model"


def test_vlash_chunks_are_conditioned_on_the_state_where_they_start(push_policy):
    from policy_steer.runtime.sim_loop import RuntimeConfig, run_episode
    from policy_steer.steered_policy import SteeredPolicy

    env = make_env("push", "nominal", max_episode_steps=40)
    r = run_episode(env, SteeredPolicy(push_policy), RuntimeConfig(mode="vlash", latency="4", estimator="model"), seed=0)
    errs = [c.estimate_error for c in r.chunks[1:] if c.estimate_error is not None]
    assert errs and max(errs) < 1e-4  # model rollout == the simulator (nominal: no scheduled events)
    assert r.estimator == "model" and r.summary()["estimator"] == "model"
    naive = run_episode(env, SteeredPolicy(push_policy), RuntimeConfig(mode="async", latency="4"), seed=0)
    assert naive.state_estimate_error > 100 * r.state_estimate_error  # async conditions on a state already left


def test_an_estimator_that_does_not_fit_the_action_space_is_refused():
    delta = RobotDescription.from_env(make_env("push", "nominal"))
    absolute = RobotDescription.from_env(make_env("push", "nominal", action_mode="absolute"))
    with pytest.raises(ConfigError, match="'target'.*absolute position actions.*'delta' actions"):
        make_estimator("target", delta)
    with pytest.raises(ConfigError, match="'delta'.*integrates delta actions.*'absolute' actions"):
        make_estimator("delta", absolute)
    no_sim = RobotDescription(action_mode="delta", state_layout=delta.state_layout, robot_state_dim=9)
    with pytest.raises(ConfigError, match="'model'.*needs a simulator rollout"):
        make_estimator("model", no_sim)
    with pytest.raises(ConfigError, match="unknown future-state estimator 'kalman'"):
        make_estimator("kalman", delta)
    # Refused when the loop is built, before anything moves; only vlash uses an estimator.
    with pytest.raises(ConfigError, match="'target'"):
        ChunkPlanner(mode="vlash", robot=delta, action_dim=3, n_execute=8, estimator="target")
    ChunkPlanner(mode="async", robot=delta, action_dim=3, n_execute=8, estimator="target")


def test_run_episode_refuses_a_misfit_estimator_before_the_episode(push_policy):
    from policy_steer.runtime.sim_loop import RuntimeConfig, run_episode
    from policy_steer.steered_policy import SteeredPolicy

    env = make_env("push", "nominal")
    with pytest.raises(ConfigError, match="absolute position actions"):
        run_episode(env, SteeredPolicy(push_policy), RuntimeConfig(mode="vlash", latency="2", estimator="target"), seed=0)
