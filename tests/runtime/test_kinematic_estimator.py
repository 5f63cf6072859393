"""The ``kinematic`` and arm-model ``model-robot`` future-state estimators (issue 19): what a robot can
compute from its arm's own model, checked against the simulator's rollout of the arm; ``auto`` by
description; arm models that do not fit the robot refused before anything moves."""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import pytest

from policy_steer.errors import ConfigError, ValidationError
from policy_steer.runtime.arm_model import ArmMismatch, ArmModel, perturbed
from policy_steer.runtime.future_state import auto_estimator, make_estimator
from policy_steer.types import EpisodeContext, RobotDescription
from tests.runtime.conftest import make_env

# Stated tolerances of the arm model against the simulator's own rollout of the arm after a pending chunk
# of 6 actions: the servos settle within the control step, so what is left is their tracking error.
EE_TOL = 1.5e-3  # metres
JOINT_TOL = 0.01  # radians
MISMATCH = ArmMismatch(link=0.01, gain=0.2, joint_offset=0.02)


def _moved(task: str, mode: str, seed: int):
    """An env a few random steps into a seeded episode, its observation and a pending chunk [6, A]."""
    env = make_env(task, "nominal", action_mode=mode)
    u = env.unwrapped
    rng = np.random.default_rng(seed)
    obs, _ = env.reset(seed=seed)

    def chunk(k: int) -> np.ndarray:
        a = np.zeros((k, u.action_dim), np.float32)
        steps = rng.uniform(-0.02, 0.02, (k, 3))
        a[:, :3] = steps if mode == "delta" else obs["observation.state"][:3] + steps.cumsum(axis=0)
        if u.action_dim == 4:
            a[:, 3] = 1.0 if seed % 2 else -1.0  # closing (on nothing) or open
        return a

    for a in chunk(3):
        obs, *_ = env.step(a)
    return env, obs, chunk(6)


def _rolled(env, pending: np.ndarray) -> np.ndarray:
    return env.unwrapped.rollout(pending)[-1]


@pytest.mark.parametrize("task,mode,seed", [("push", "delta", 1), ("pick-place", "delta", 2), ("pick-place", "absolute", 3)])
def test_kinematic_lands_on_the_simulators_rollout_of_the_arm(task, mode, seed):
    env, obs, pending = _moved(task, mode, seed)
    robot = RobotDescription.from_env(env)
    lay = robot.state_layout
    state = obs["observation.state"]
    true = _rolled(env, pending)
    for name in ("kinematic", "model-robot"):
        est = make_estimator(name, robot)
        out = est.estimate(state, pending, robot)
        assert float(np.linalg.norm(out[lay["ee_pos"]] - true[lay["ee_pos"]])) < EE_TOL, name
        assert float(np.abs(out[lay["joint_pos"]] - true[lay["joint_pos"]]).max()) < JOINT_TOL, name
        np.testing.assert_array_equal(out[robot.robot_state_dim:], state[robot.robot_state_dim:])  # objects as measured
        if env.unwrapped.action_dim == 4:  # closing on nothing, or opening: the arm model says the same
            np.testing.assert_allclose(out[lay["gripper"]], true[lay["gripper"]], atol=0.05)
    # The end effector alone is not enough: delta keeps the joints where they are measured.
    if mode == "delta":
        delta = make_estimator("delta", robot).estimate(state, pending, robot)
        assert float(np.abs(delta[lay["joint_pos"]] - true[lay["joint_pos"]]).max()) > 5 * JOINT_TOL


def test_a_mismatched_arm_model_stays_close_where_the_arm_is_measured():
    env, obs, pending = _moved("push", "delta", 4)
    robot = RobotDescription.from_env(env)
    lay = robot.state_layout
    state = obs["observation.state"]
    wrong = dataclasses.replace(robot, arm=perturbed(robot.arm, MISMATCH, seed=7))
    q = state[lay["joint_pos"]].astype(np.float64)
    # The perturbed model really is wrong: centimetres off at the measured joints.
    assert np.linalg.norm(ArmModel(wrong.arm).fk(q) - ArmModel(robot.arm).fk(q)) > 0.01
    assert perturbed(robot.arm, MISMATCH, seed=7) == wrong.arm  # drawn from the seed: reproducible
    assert perturbed(robot.arm, MISMATCH, seed=8) != wrong.arm
    true = _rolled(env, pending)
    for name in ("kinematic", "model-robot"):
        out = make_estimator(name, wrong).estimate(state, pending, wrong)
        assert float(np.linalg.norm(out[lay["ee_pos"]] - true[lay["ee_pos"]])) < 2 * EE_TOL, name
        assert float(np.abs(out[lay["joint_pos"]] - true[lay["joint_pos"]]).max()) < 2 * JOINT_TOL, name


def test_auto_picks_the_best_the_description_allows_and_says_which(caplog):
    env = make_env("push", "nominal")
    robot = RobotDescription.from_env(env)
    absolute = RobotDescription.from_env(make_env("push", "nominal", action_mode="absolute"))
    cases = [
        (robot, "kinematic"),  # an arm model: the arm's own kinematics, never the whole-scene oracle
        (dataclasses.replace(robot, arm=None), "model"),  # a rollout and no arm model
        (dataclasses.replace(robot, arm=None, rollout=None), "delta"),
        (dataclasses.replace(absolute, arm=None, rollout=None), "target"),
    ]
    for desc, expected in cases:
        assert auto_estimator(desc) == expected
        with caplog.at_level(logging.INFO, logger="policy_steer.runtime.future_state"):
            caplog.clear()
            assert make_estimator("auto", desc).name == expected
        assert f"auto -> {expected}" in caplog.text
    assert make_estimator("model", robot).name == "model"  # the oracle only by name


def test_an_arm_model_that_does_not_match_the_state_is_refused_before_the_episode(push_policy):
    from policy_steer.runtime.chunk_source import LocalChunkSource
    from policy_steer.runtime.loop import ControlLoop, LoopConfig, VirtualClock
    from policy_steer.runtime.robot import SimRobot
    from policy_steer.steered_policy import SteeredPolicy

    env = make_env("push", "nominal")
    robot = RobotDescription.from_env(env)
    four = dataclasses.replace(robot, arm=dataclasses.replace(robot.arm, joints=robot.arm.joints[:4]))
    with pytest.raises(ConfigError, match=r"joints \['yaw', 'shoulder', 'elbow', 'wrist_pitch'\] \(4\) do not match the robot's state.*holds 5"):
        make_estimator("kinematic", four)
    with pytest.raises(ConfigError, match="do not match the robot's state"):
        make_estimator("auto", four)  # auto does not fall back silently on a broken description
    renamed = dataclasses.replace(robot, arm=dataclasses.replace(robot.arm, joints=("yaw", "shoulder", "elbow", "wrist", "roll")))
    with pytest.raises(ConfigError, match="no joint 'wrist'"):
        make_estimator("model-robot", renamed)
    no_site = dataclasses.replace(robot, arm=dataclasses.replace(robot.arm, ee_site="tool"))
    with pytest.raises(ConfigError, match="no site 'tool'"):
        make_estimator("kinematic", no_site)
    with pytest.raises(ConfigError, match="needs the arm's model"):
        make_estimator("kinematic", dataclasses.replace(robot, arm=None))
    # Through the loop: refused when it is built, before a reset or an inference.
    sim = SimRobot(env)
    sim.description = four
    source = LocalChunkSource(SteeredPolicy(push_policy), inline=True)
    with pytest.raises(ConfigError, match="do not match the robot's state"):
        ControlLoop(sim, source, VirtualClock("2"), LoopConfig(mode="vlash", estimator="auto"))
    assert env.unwrapped.layout is None  # never reset


def test_the_arm_model_must_be_self_contained():
    robot = RobotDescription.from_env(make_env("push", "nominal"))
    for bad in ('<include file="other.xml"/>', '<asset><mesh name="m" file="/etc/passwd"/></asset>'):
        mjcf = robot.arm.mjcf.replace("<worldbody>", bad + "<worldbody>", 1)
        desc = dataclasses.replace(robot, arm=dataclasses.replace(robot.arm, mjcf=mjcf))
        with pytest.raises(ConfigError, match="self-contained MJCF"):
            make_estimator("kinematic", desc)
    broken = dataclasses.replace(robot, arm=dataclasses.replace(robot.arm, mjcf="<mujoco><worldbody><body>"))
    with pytest.raises(ConfigError, match="does not compile"):
        make_estimator("kinematic", broken)


def test_the_arm_description_crosses_the_wire_as_data():
    env, obs, pending = _moved("pick-place", "delta", 5)
    robot = RobotDescription.from_env(env)
    wire = EpisodeContext(robot=robot).to_dict()
    back = EpisodeContext.from_dict(wire).robot
    assert back.arm == robot.arm and back.rollout is None
    state = obs["observation.state"]
    np.testing.assert_array_equal(make_estimator("kinematic", back).estimate(state, pending, back),
                                  make_estimator("kinematic", robot).estimate(state, pending, robot))
    wire["robot"]["arm"]["python"] = "import os"
    with pytest.raises(ValidationError, match="arm"):
        EpisodeContext.from_dict(wire)


def test_mismatch_option():
    assert ArmMismatch.parse("none") == ArmMismatch()
    assert ArmMismatch.parse("link=0.01,gain=0.2,joint_offset=0.02") == MISMATCH
    for bad, why in [("links=0.01", "key=value pairs"), ("gain=x", "must be a number"), ("gain=1.5", "gain must be < 1"),
                     ("link=-1", ">= 0")]:
        with pytest.raises(ConfigError, match=why):
            ArmMismatch.parse(bad)


def test_every_episode_records_the_estimator_that_ran(push_policy):
    from policy_steer.runtime.sim_loop import RuntimeConfig, run_episode
    from policy_steer.steered_policy import SteeredPolicy

    env = make_env("push", "nominal", max_episode_steps=24)
    policy = SteeredPolicy(push_policy)
    r = run_episode(env, policy, RuntimeConfig(mode="vlash", latency="3"), seed=1)
    assert r.summary()["estimator"] == "kinematic" and r.summary()["arm_mismatch"] is None
    errs = [c.estimate_error for c in r.chunks[1:] if c.estimate_error is not None]
    assert errs and max(errs) < 5e-3
    mm = "link=0.01,gain=0.2,joint_offset=0.02"
    r = run_episode(env, policy, RuntimeConfig(mode="vlash", latency="3", estimator="model-robot", arm_mismatch=mm), seed=1)
    assert r.summary()["estimator"] == "model-robot" and r.summary()["arm_mismatch"] == mm
    assert run_episode(env, policy, RuntimeConfig(mode="sync", latency="3"), seed=1).summary()["estimator"] is None
