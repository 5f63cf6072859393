"""Limits: a limits file may only narrow what a driver allows, never widen it."""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from policy_steer.errors import ConfigError
from policy_steer.hardware.limits import ArmLimits, load_limits_file, narrow

NAMES = ("a", "b", "c")
BASE = ArmLimits(joint_low=[-1.0, -2.0, 0.0], joint_high=[1.0, 2.0, 3.0], max_joint_velocity=[1.0, 2.0, 3.0],
                 gripper_low=0.0, gripper_high=1.0, workspace_low=[0.0, -0.5, 0.0], workspace_high=[0.6, 0.5, 0.4],
                 max_ee_speed=0.3)
bound = st.floats(-5, 5)


@settings(max_examples=200, deadline=None)
@given(joints=st.dictionaries(st.sampled_from(NAMES), st.tuples(bound, bound)), vel=st.floats(0.01, 10),
       ws=st.tuples(st.lists(bound, min_size=3, max_size=3), st.lists(bound, min_size=3, max_size=3)))
def test_narrowing_never_widens(joints, vel, ws):
    spec = {"joints": {k: sorted(v) for k, v in joints.items()}, "max_joint_velocity": vel,
            "workspace": {"low": ws[0], "high": ws[1]}, "max_ee_speed": 5.0, "gripper": [-3, 0.5]}
    try:
        out = narrow(BASE, NAMES, spec)
    except ConfigError:
        return  # an empty range is refused, not silently widened
    assert np.all(out.joint_low >= BASE.joint_low) and np.all(out.joint_high <= BASE.joint_high)
    assert np.all(out.max_joint_velocity <= BASE.max_joint_velocity)
    assert np.all(out.workspace_low >= BASE.workspace_low) and np.all(out.workspace_high <= BASE.workspace_high)
    assert out.max_ee_speed == 0.3 and (out.gripper_low, out.gripper_high) == (0.0, 0.5)


def test_a_limits_file(tmp_path):
    p = tmp_path / "limits.yaml"
    p.write_text(yaml.safe_dump({"joints": {"b": [-1, 1]}, "max_joint_velocity": {"c": 0.5}}))
    out = narrow(BASE, NAMES, load_limits_file(p))
    assert out.joint_low.tolist() == [-1.0, -1.0, 0.0] and out.max_joint_velocity.tolist() == [1.0, 2.0, 0.5]
    with pytest.raises(ConfigError, match="unknown joints"):
        narrow(BASE, NAMES, {"joints": {"z": [0, 1]}})
    with pytest.raises(ConfigError, match="unknown keys"):
        narrow(BASE, NAMES, {"speed": 1})
    with pytest.raises(ConfigError, match="not found"):
        load_limits_file(tmp_path / "nope.yaml")


def test_limits_refuse_nonsense():
    with pytest.raises(ConfigError):
        ArmLimits(joint_low=[0.0], joint_high=[0.0], max_joint_velocity=[1.0], gripper_low=0, gripper_high=1)
    with pytest.raises(ConfigError):
        ArmLimits(joint_low=[0.0], joint_high=[1.0], max_joint_velocity=[np.nan], gripper_low=0, gripper_high=1)
    with pytest.raises(ConfigError):
        ArmLimits(joint_low=[0.0], joint_high=[1.0], max_joint_velocity=[1.0], gripper_low=0, gripper_high=1,
                  workspace_low=[0, 0, 0])
