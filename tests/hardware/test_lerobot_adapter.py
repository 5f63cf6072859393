"""The lerobot adapter against a real lerobot ``Robot`` subclass whose motors are the MuJoCo virtual arm.

``VirtualFollower`` subclasses ``lerobot.robots.Robot``, registers its config with
``RobotConfig.register_subclass``, and is built by lerobot's ``make_robot_from_config``; the adapter
only uses lerobot's API on it (features, connect, get_observation, send_action).
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from lerobot.motors import MotorNormMode
from lerobot.robots import Robot, RobotConfig, make_robot_from_config

from policy_steer.envs.arm import ARM_JOINTS, JOINT_RANGE
from policy_steer.hardware.arm import JointCommand
from policy_steer.hardware.drivers import make_arm
from policy_steer.hardware.drivers.lerobot_arm import LerobotArm, limits_from_bus, motor_range
from policy_steer.hardware.drivers.virtual_follower import SimulatedMotorBus, VirtualFollower, VirtualFollowerConfig
from policy_steer.hardware.errors import ArmStopped, DriverUnavailable, SafetyError
from policy_steer.hardware.observation import ObservationMap
from policy_steer.hardware.safety import EXEC, SafetyLayer
from policy_steer.hardware.spaces import make_space
from policy_steer.hardware.watchdog import WatchdogConfig
from policy_steer.types import Chunk

NAMES = ("shoulder_pan.pos", "shoulder_lift.pos", "elbow_flex.pos", "wrist_flex.pos", "wrist_roll.pos")


@pytest.fixture
def follower_arm(tmp_path):
    cfg = VirtualFollowerConfig(id="test_arm", calibration_dir=tmp_path, sim_cameras=["front"], image_size="24x32")
    arm = LerobotArm(make_robot_from_config(cfg), control_hz=20.0)
    arm.connect()
    yield arm
    arm.disconnect()


def test_the_config_is_registered_and_make_robot_from_config_builds_it(tmp_path):
    assert "policy_steer_virtual_follower" in RobotConfig.get_known_choices()
    cfg = RobotConfig.get_choice_class("policy_steer_virtual_follower")(id="a", calibration_dir=tmp_path)
    robot = make_robot_from_config(cfg)
    assert isinstance(robot, VirtualFollower) and isinstance(robot, Robot)
    assert list(robot.action_features) == [*NAMES, "gripper.pos"]
    assert robot.observation_features == robot.action_features  # no cameras asked for
    assert not robot.is_connected and robot.is_calibrated


def test_features_map_to_ours(follower_arm):
    arm = follower_arm
    assert arm.name == "lerobot:policy_steer_virtual_follower"
    assert arm.joint_names == NAMES and arm.gripper_name == "gripper.pos"
    assert arm.state_names == (*NAMES, "gripper.pos") and arm.cameras == ("front",)
    assert arm.kinematics is None  # no kinematic model: joint-space actions only
    obs = arm.observe()
    assert obs.state.shape == (6,) and np.allclose(obs.state[:5], obs.joints)
    assert obs.images["front"].image.shape == (24, 32, 3)
    with pytest.raises(SafetyError, match="kinematics"):
        make_space("ee_delta", arm, 20.0, 4)
    assert make_space("auto", arm, 20.0, 6).name == "joint"


def test_limits_come_from_the_calibrated_motor_bus(follower_arm):
    lim = follower_arm.limits
    for i, j in enumerate(ARM_JOINTS):  # degrees mode: the calibrated range, centred as lerobot normalises it
        half = np.degrees(JOINT_RANGE[j][1] - JOINT_RANGE[j][0]) / 2
        assert lim.joint_low[i] == pytest.approx(-half, abs=0.1) and lim.joint_high[i] == pytest.approx(half, abs=0.1)
    assert (lim.gripper_low, lim.gripper_high) == (0.0, 100.0)
    assert np.all(lim.max_joint_velocity == 90.0) and lim.max_gripper_velocity == 200.0
    assert not lim.has_workspace


def test_normalisation_matches_the_limits_arithmetic():
    bus = SimulatedMotorBus([n.removesuffix(".pos") for n in NAMES], use_degrees=True)
    found = limits_from_bus(bus, (*NAMES, "gripper.pos"))
    for name, joint in zip(NAMES, ARM_JOINTS):
        motor = name.removesuffix(".pos")
        lo, hi, mode = found[name]
        assert mode == MotorNormMode.DEGREES.value
        assert bus.normalize(motor, JOINT_RANGE[joint][0]) == pytest.approx(lo, abs=0.1)
        assert bus.normalize(motor, JOINT_RANGE[joint][1]) == pytest.approx(hi, abs=0.1)
        for v in (-0.4, 0.0, 0.7):
            assert bus.unnormalize(motor, bus.normalize(motor, v)) == pytest.approx(v)
    assert motor_range("range_m100_100", 100, 3000, 4096) == (-100.0, 100.0)
    ranged = SimulatedMotorBus([n.removesuffix(".pos") for n in NAMES], use_degrees=False)
    assert ranged.normalize("shoulder_pan", JOINT_RANGE["yaw"][1]) == pytest.approx(100.0, abs=0.01)  # whole ticks


def test_commands_in_lerobot_units_move_the_simulated_motors(follower_arm):
    arm = follower_arm
    q0 = arm.observe().joints
    target = q0 + np.array([10.0, 0, 0, 0, 0])
    arm.command(JointCommand(target, 50.0))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        obs = arm.observe()
        if abs(obs.joints[0] - target[0]) < 0.5 and 45 < obs.gripper < 55:
            break
        time.sleep(0.05)
    obs = arm.observe()
    assert abs(obs.joints[0] - target[0]) < 0.5 and 45 < obs.gripper < 55
    assert arm.sent[-1][1]["shoulder_pan.pos"] == pytest.approx(target[0])


def test_safe_stop_freezes_and_refuses(follower_arm):
    arm = follower_arm
    arm.safe_stop()
    assert arm.stopped
    with pytest.raises(ArmStopped):
        arm.command(JointCommand(arm.observe().joints, 0.0))


def test_lerobot_max_relative_target_still_applies(tmp_path):
    cfg = VirtualFollowerConfig(id="b", calibration_dir=tmp_path, max_relative_target=2.0)
    arm = LerobotArm(make_robot_from_config(cfg))
    arm.connect()
    try:
        q0 = arm.observe().joints
        arm.command(JointCommand(q0 + 30.0, 50.0))
        assert arm.sent[-1][1]["shoulder_pan.pos"] == pytest.approx(q0[0] + 2.0, abs=0.3)
    finally:
        arm.disconnect()


def test_the_safety_layer_drives_it_in_joint_space(follower_arm):
    arm = follower_arm
    hz = 20.0
    s = SafetyLayer(arm, make_space("joint", arm, hz, 6), ObservationMap(arm, "native"),
                    WatchdogConfig(stop_after_s=60, first_chunk_s=60, loop_stall_s=None), control_hz=hz)
    s.reset()
    q0 = s.filter.last.joints  # the measured pose at reset: the reference of the first step limit
    rows = np.tile(np.concatenate([q0 + [400.0, 0, 0, 0, 0], [150.0]]), (3, 1)).astype(np.float32)
    chunk = s.guard_.admit(Chunk(rows, 0), time.monotonic(), time.monotonic())
    assert s.log.counts["clamp:chunk"] == 1 and chunk.actions[0, 0] == pytest.approx(arm.limits.joint_high[0], abs=1e-3)
    for row in chunk.actions:
        s.observe()
        s.act(row)
    assert [r.decision for r in s.records] == [EXEC] * 3
    sent = [c["shoulder_pan.pos"] for _, c in arm.sent[-3:]]
    steps = np.diff([q0[0], *sent])
    assert np.all(steps <= 90.0 / hz + 1e-6) and steps[0] == pytest.approx(4.5, abs=1e-3)  # 90 deg/s at 20 Hz
    assert s.log.counts["limit:step"] == 3 and all(0.0 <= c["gripper.pos"] <= 100.0 for _, c in arm.sent)


def test_a_missing_sdk_or_bad_argument_is_one_line():
    with pytest.raises(DriverUnavailable) as e:
        make_arm("lerobot:so101_follower", [])
    assert "port" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(DriverUnavailable) as e:
        make_arm("lerobot:no_such_robot", [])
    assert "unknown lerobot robot type" in str(e.value) and "so101_follower" in str(e.value)
    try:
        arm = make_arm("lerobot:so101_follower", ["port=/dev/ttyNOPE0", "id=t"])
    except DriverUnavailable as e:  # the feetech SDK is not installed here
        assert "feetech" in str(e) and "\n" not in str(e)
    else:  # with the SDK installed, the missing device is the one-line error
        with pytest.raises(DriverUnavailable, match="ttyNOPE0"):
            arm.connect()


def test_a_limits_file_narrows_by_feature_name(tmp_path):
    cfg = VirtualFollowerConfig(id="c", calibration_dir=tmp_path)
    spec = {"joints": {"shoulder_pan.pos": [-30, 30], "gripper.pos": [10, 60]}, "max_joint_velocity": 45}
    arm = LerobotArm(make_robot_from_config(cfg), limits_spec=spec)
    lim = arm.limits
    assert (lim.joint_low[0], lim.joint_high[0]) == (-30.0, 30.0) and (lim.gripper_low, lim.gripper_high) == (10.0, 60.0)
    assert np.all(lim.max_joint_velocity == 45.0)
    wide = LerobotArm(make_robot_from_config(cfg), limits_spec={"joints": {"shoulder_pan.pos": [-999, 999]}})
    assert wide.limits.joint_high[0] < 150  # never wider than the calibration
