"""Issue 19 on the robot side: a driver publishes its arm's model (the virtual arm by default or from a
model file, a lerobot robot from ``model=FILE``), the host sends it in the robot description of its
episode context and its VLASH estimator uses it (``auto`` -> ``kinematic``); a model that does not fit
the arm is refused before anything moves."""

from __future__ import annotations

import numpy as np
import pytest

from policy_steer.envs.arm import arm_only_xml
from policy_steer.errors import ConfigError
from policy_steer.hardware.drivers import make_arm
from policy_steer.hardware.errors import SafetyError
from policy_steer.runtime.arm_model import ArmModel
from policy_steer.types import EpisodeContext


def test_the_virtual_arm_publishes_the_model_it_moves_by():
    arm = make_arm("virtual")
    desc = arm.arm_description()
    assert desc is not None and desc.joints == arm.joint_names and desc.ee_site == "ee"
    assert desc.max_joint_step == pytest.approx(arm.cfg.servo_speed / arm.control_hz)
    arm.connect()
    try:
        obs = arm.observe()
        np.testing.assert_allclose(ArmModel(desc).fk(obs.joints), obs.ee_pos, atol=1e-6)  # its FK is the arm's
    finally:
        arm.disconnect()
    assert make_arm("virtual", ["model=none"]).arm_description() is None


def test_a_model_file_that_does_not_fit_the_arm_is_refused_when_the_driver_is_made(tmp_path):
    good = tmp_path / "arm.xml"
    good.write_text(arm_only_xml())
    published = make_arm("virtual", [f"model={good}"]).arm_description()
    assert published.mjcf == good.read_text() and published.control_substeps == 0  # no servos in it: kinematics only
    four = tmp_path / "four.xml"  # the wrist roll joint missing: a 4-joint model of a 5-joint arm
    four.write_text(arm_only_xml().replace('<joint name="wrist_roll"', '<!-- no roll --><site name="roll_was_here"', 1)
                    .replace('axis="0 0 1" range="-3.14 3.14" armature="0.02" damping="0.5"/>', 'size="0.001"/>', 1))
    with pytest.raises(ConfigError, match="no joint 'wrist_roll'"):
        make_arm("virtual", [f"model={four}"])
    meshes = tmp_path / "meshes.xml"
    meshes.write_text(arm_only_xml().replace("<worldbody>", '<asset><mesh name="m" file="link.stl"/></asset><worldbody>', 1))
    with pytest.raises(ConfigError, match="self-contained MJCF"):
        make_arm("virtual", [f"model={meshes}"])
    with pytest.raises(ConfigError, match="cannot read the model file"):
        make_arm("virtual", [f"model={tmp_path / 'missing.xml'}"])


def test_a_lerobot_model_file_is_checked_against_the_commanded_joints(tmp_path):
    from policy_steer.hardware.drivers.lerobot_arm import arm_model_from_args

    args = {"model": "arm.xml", "model_joints": "a, b", "port": "/dev/x"}
    assert arm_model_from_args(args) == ("arm.xml", ("a", "b"), "ee") and args == {"port": "/dev/x"}
    with pytest.raises(SafetyError, match="need model=FILE"):
        arm_model_from_args({"model_ee_site": "tool"})
    model = tmp_path / "arm.xml"
    model.write_text(arm_only_xml())
    try:
        arm = make_arm("lerobot:policy_steer_virtual_follower", [f"model={model}", "model_joints=yaw,shoulder,elbow"])
    except SafetyError as e:
        assert "do not match the robot's commanded joints" in str(e) and "(3)" in str(e)
    else:  # pragma: no cover - the virtual follower commands 5 joints
        pytest.fail(f"a 3-joint model was accepted for {arm.joint_names}")
    # By default the model's joints are the commanded ones without ".pos" (shoulder_pan, ...): not in this model.
    with pytest.raises(ConfigError, match="no joint 'shoulder_pan'"):
        make_arm("lerobot:policy_steer_virtual_follower", [f"model={model}"])
    joints = "yaw,shoulder,elbow,wrist_pitch,wrist_roll"
    arm = make_arm("lerobot:policy_steer_virtual_follower", [f"model={model}", f"model_joints={joints}"])
    assert arm.arm_description().joints == tuple(joints.split(","))


def test_the_host_sends_the_arm_model_and_its_estimator_uses_it(policy_server):
    from tests.hardware.test_end_to_end import session_for

    _, endpoint = policy_server(policy="circle")
    session = session_for(endpoint, max_steps=6)
    try:
        assert session.loop.planner.estimator_name == "kinematic"
        ctx = session._episode_context(0)
        assert ctx.robot.arm == session.arm.arm_description()
        assert EpisodeContext.from_dict(ctx.to_dict()).robot.arm == ctx.robot.arm  # on the wire, as data
        result = session.run()
    finally:
        session.close()
    assert result.results[0].steps == 6
