"""The MuJoCo virtual arm: start pose, realistic limits, tracking on its clock, safe stop, cameras."""

from __future__ import annotations

import numpy as np
import pytest

from policy_steer.envs.arm import JOINT_RANGE
from policy_steer.hardware.arm import JointCommand
from policy_steer.hardware.drivers.virtual import VirtualArm, VirtualArmConfig
from policy_steer.hardware.errors import ArmStopped
from tests.hardware.helpers import ManualClock


@pytest.fixture
def arm():
    clock = ManualClock()
    a = VirtualArm(VirtualArmConfig(), clock=clock)
    a.connect()
    yield a, clock
    a.disconnect()


def test_starts_at_rest_at_the_home_pose_inside_its_limits(arm):
    a, clock = arm
    obs = a.observe()
    lim = a.limits
    assert np.allclose(obs.ee_pos, [0.28, 0.0, 0.16], atol=1e-3)
    assert np.all(obs.joints > lim.joint_low) and np.all(obs.joints < lim.joint_high)
    assert lim.in_workspace(obs.ee_pos) and obs.gripper > 0.95
    assert obs.state_names == ("yaw", "shoulder", "elbow", "wrist_pitch", "wrist_roll", "gripper")
    # realistic limits: inside the model's hard ranges, finite velocities, a workspace above the table
    for i, j in enumerate(a.joint_names):
        assert JOINT_RANGE[j][0] < lim.joint_low[i] < lim.joint_high[i] < JOINT_RANGE[j][1]
    assert np.all(lim.max_joint_velocity == 2.0) and lim.workspace_low[2] > 0
    assert np.allclose(a.kinematics.fk(obs.joints), obs.ee_pos, atol=1e-6)


def test_tracks_a_command_over_time_at_the_servo_speed(arm):
    a, clock = arm
    q0 = a.observe().joints
    target = q0 + np.array([0.6, 0, 0, 0, 0])
    a.command(JointCommand(target, 1.0))
    clock.advance(0.1)  # 0.1 s at 3 rad/s: the setpoint moved 0.3 rad at most
    q = a.observe().joints
    assert 0.1 < q[0] - q0[0] < 0.31
    clock.advance(0.4)
    assert np.allclose(a.observe().joints, target, atol=5e-3)
    assert a.lost_s == 0.0


def test_safe_stop_brakes_and_refuses_commands(arm):
    a, clock = arm
    q0 = a.observe().joints
    a.command(JointCommand(q0 + np.array([1.5, 0, 0, 0, 0]), 1.0))
    clock.advance(0.2)
    moving = a.observe()
    assert abs(moving.joint_vel[0]) > 1.0
    a.safe_stop()
    assert a.stopped
    with pytest.raises(ArmStopped):
        a.command(JointCommand(q0, 1.0))
    clock.advance(0.1)  # one control period at 10 Hz later the arm is at rest near where it was stopped
    after = a.observe()
    assert np.all(np.abs(after.joint_vel) < 0.05)
    assert abs(after.joints[0] - moving.joints[0]) < 0.1


def test_long_gaps_are_skipped_and_counted(arm):
    a, clock = arm
    clock.advance(3.0)
    a.observe()
    assert a.lost_s == pytest.approx(2.5, abs=0.01)


def test_cameras_come_with_stamps():
    clock = ManualClock()
    a = VirtualArm(VirtualArmConfig(cameras=["front", "wrist"], image_size="32x40"), clock=clock)
    a.connect()
    try:
        obs = a.observe()
        assert set(obs.images) == {"front", "wrist"}
        for frame in obs.images.values():
            assert frame.image.shape == (32, 40, 3) and frame.image.dtype == np.uint8 and frame.stamp == clock()
            assert frame.image.std() > 0  # a real picture, not a blank buffer
    finally:
        a.disconnect()
