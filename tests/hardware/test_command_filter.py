"""Property tests of the command filter: no command that leaves it violates a limit, for any input.

Inputs include NaN, infinities, huge values, wrongly sized vectors and end-effector targets anywhere;
the arm is the virtual arm's kinematics and limits (realistic ranges, a workspace box), and arbitrary
limits without kinematics (a lerobot arm in degrees).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from policy_steer.hardware.arm import EeCommand, JointCommand
from policy_steer.hardware.command_filter import CommandFilter
from policy_steer.hardware.drivers.virtual import ArmKinematics, VirtualArm
from policy_steer.hardware.limits import ArmLimits

HZ = 10.0
KIN = ArmKinematics()
LIMITS = VirtualArm().limits  # builds the model once; limits are what the driver states
N = LIMITS.n_joints
HOME = np.array([0.0, 0.10576588, 2.06072658, 0.97509413, 0.0])  # the virtual arm's start pose (IK of the home ee)

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

nasty = st.one_of(
    st.floats(-4.0, 4.0),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([math.nan, math.inf, -math.inf, 1e308, -1e308, 0.0]),
)
vec = lambda n: st.lists(nasty, min_size=n, max_size=n)  # noqa: E731
joint_cmd = st.builds(lambda q, g: JointCommand(np.array(q), g),
                      st.one_of(vec(N), vec(N), st.lists(nasty, min_size=0, max_size=8)), nasty)
ee_cmd = st.builds(lambda p, g: EeCommand(np.array(p), g),
                   st.one_of(st.lists(st.floats(-1.0, 1.0), min_size=3, max_size=3), vec(3), vec(2)), nasty)
commands = st.lists(st.one_of(joint_cmd, ee_cmd), min_size=1, max_size=12)


def check(lim: ArmLimits, kin, prev: JointCommand, out: JointCommand, tol: float = 1e-9) -> None:
    q, q0 = np.asarray(out.joints), np.asarray(prev.joints)
    assert q.shape == (lim.n_joints,) and np.all(np.isfinite(q)) and math.isfinite(out.gripper)
    assert np.all(q >= lim.joint_low - tol) and np.all(q <= lim.joint_high + tol), q
    assert np.all(np.abs(q - q0) <= lim.joint_step(HZ) + tol), (q - q0) / lim.joint_step(HZ)
    assert lim.gripper_low - tol <= out.gripper <= lim.gripper_high + tol
    g_step = lim.gripper_step(HZ)
    if g_step is not None:
        assert abs(out.gripper - prev.gripper) <= g_step + tol
    if kin is not None and lim.has_workspace:
        assert lim.in_workspace(kin.fk(q), 1e-6), kin.fk(q)
    ee_step = lim.ee_step(HZ)
    if kin is not None and ee_step is not None:  # every command, joint targets included
        assert np.linalg.norm(kin.fk(q) - kin.fk(q0)) <= ee_step + 1e-6, np.linalg.norm(kin.fk(q) - kin.fk(q0))


@SETTINGS
@given(commands)
def test_no_command_leaves_the_limits_of_the_virtual_arm(cmds):
    f = CommandFilter(LIMITS, HZ, KIN)
    f.reset(HOME, 1.0)
    for cmd in cmds:
        prev = f.last
        res = f(cmd)
        check(LIMITS, KIN, prev, res.command)
        if res.held:  # a rejected proposal repeats the previous command exactly
            assert np.array_equal(res.command.joints, prev.joints) and res.command.gripper == prev.gripper
            assert any(k.startswith("reject:") for k, _ in res.notes)


@SETTINGS
@given(start=st.lists(st.floats(0.0, 1.0), min_size=3, max_size=3), roll=st.floats(-3.0, 3.0), cmds=commands)
def test_from_any_start_inside_the_limits(start, roll, cmds):
    p0 = LIMITS.workspace_low + np.array(start) * (LIMITS.workspace_high - LIMITS.workspace_low)
    q0 = KIN.ik(p0, HOME)
    q0[4] = roll
    assume(np.all(q0 >= LIMITS.joint_low) and np.all(q0 <= LIMITS.joint_high) and LIMITS.in_workspace(KIN.fk(q0)))
    f = CommandFilter(LIMITS, HZ, KIN)
    f.reset(q0, 0.0)
    for cmd in cmds:
        prev = f.last
        check(LIMITS, KIN, prev, f(cmd).command)


@SETTINGS
@given(cmds=commands)
def test_outside_the_workspace_commands_never_go_farther_out(cmds):
    q0 = HOME.copy()
    q0[1] = 1.9  # shoulder far forward: the hand ends up below the table, outside the box
    assert not LIMITS.in_workspace(KIN.fk(q0))
    f = CommandFilter(LIMITS, HZ, KIN)
    f.reset(q0, 1.0)
    dist = LIMITS.workspace_distance(KIN.fk(q0))
    for cmd in cmds:
        out = f(cmd).command
        d = LIMITS.workspace_distance(KIN.fk(out.joints))
        assert d <= dist + 1e-9
        dist = d


@st.composite
def joint_limits(draw):
    n = draw(st.integers(1, 7))
    lo = np.array(draw(st.lists(st.floats(-180, 170), min_size=n, max_size=n)))
    width = np.array(draw(st.lists(st.floats(1.0, 200), min_size=n, max_size=n)))
    vel = np.array(draw(st.lists(st.floats(1.0, 500), min_size=n, max_size=n)))
    g_lo = draw(st.floats(-10, 10))
    return ArmLimits(joint_low=lo, joint_high=lo + width, max_joint_velocity=vel, gripper_low=g_lo,
                     gripper_high=g_lo + draw(st.floats(1, 100)),
                     max_gripper_velocity=draw(st.one_of(st.none(), st.floats(1, 500))))


@SETTINGS
@given(lim=joint_limits(), data=st.data())
def test_arbitrary_joint_limits_without_kinematics(lim, data):
    n = lim.n_joints
    f = CommandFilter(lim, HZ, None)
    f.reset((lim.joint_low + lim.joint_high) / 2, lim.gripper_low)
    cmds = data.draw(st.lists(st.one_of(
        st.builds(lambda q, g: JointCommand(np.array(q), g),
                  st.lists(st.one_of(st.floats(-1e4, 1e4), nasty), min_size=n, max_size=n), nasty),
        ee_cmd,  # no kinematics: refused, held
    ), min_size=1, max_size=10))
    for cmd in cmds:
        prev = f.last
        res = f(cmd)
        check(lim, None, prev, res.command)
        if isinstance(cmd, EeCommand):
            assert res.held


def test_notes_name_each_intervention():
    f = CommandFilter(LIMITS, HZ, KIN)
    f.reset(HOME, 1.0)
    res = f(JointCommand(HOME + np.array([5.0, 0, 0, 0, 0]), 1.0))  # yaw far past its range and its step
    keys = [k for k, _ in res.notes]
    assert "clamp:joint" in keys and "limit:step" in keys and not res.held
    res = f(JointCommand(np.full(N, np.nan), 1.0))
    assert res.held and [k for k, _ in res.notes] == ["reject:nonfinite"]
    res = f(EeCommand(np.array([2.0, 0.0, -1.0]), 0.0))
    assert {"clamp:workspace", "limit:ee_step"} <= {k for k, _ in res.notes}
    assert f(EeCommand(np.array([0.3, 0.0]), 0.0)).held


def test_reset_refuses_a_non_finite_pose():
    f = CommandFilter(LIMITS, HZ, KIN)
    with pytest.raises(ValueError):
        f.reset(np.full(N, np.nan), 1.0)
    with pytest.raises(RuntimeError):
        _ = f.last
