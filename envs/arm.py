"""The arm: a 5-joint articulated arm of primitive geoms, written as MJCF.

Kinematics (all joints revolute, base at the world origin, every link along +z at q = 0)::

    yaw (z) -> 0.15 up -> shoulder (y) -> 0.30 -> elbow (y) -> 0.30 -> wrist_pitch (y)
            -> wrist_roll (z, along the hand) -> 0.12 -> site "ee"

The hand ends either in a two-finger parallel gripper (fingers on slide joints, one position actuator,
the second finger coupled by an equality constraint) or in a round pusher tip (``end_effector``).
The site ``ee`` is the grasp centre between the fingertips (gripper) or the centre of the tip sphere
(pusher); both sit 0.12 m from the wrist pitch axis, so the forward kinematics of the five arm joints
is the same for every task (:mod:`policy_steer.envs.kinematics`).

Links carry ``gravcomp="1"`` (MuJoCo cancels their weight), so the joint position servos hold a pose
without steady-state sag: the controller's target is "measured + delta", and a sag would otherwise
accumulate step after step. Robot geoms have contype 2 / conaffinity 0: they touch the world and the
objects (contype 1, conaffinity 3) but never each other.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

EndEffector = Literal["gripper", "pusher"]

ARM_JOINTS: tuple[str, ...] = ("yaw", "shoulder", "elbow", "wrist_pitch", "wrist_roll")
FINGER_JOINTS: tuple[str, ...] = ("finger_left", "finger_right")
EE_SITE = "ee"

SHOULDER_HEIGHT = 0.15
UPPER_ARM = 0.30
FOREARM = 0.30
HAND = 0.12  # wrist pitch axis -> ee site
FINGER_TRAVEL = 0.045  # each finger slides this far from closed (contact) to fully open
FINGER_GAP_CLOSED = 0.0  # fingers touch when closed

# Joint limits (radians) and position-servo gains: kp = wn^2 * I and kv = 2 * wn * I (critical damping)
# for wn = 100 rad/s, with I the joint-space inertia (armature included) at the home pose.
JOINT_RANGE = {
    "yaw": (-2.6, 2.6),
    "shoulder": (-1.2, 2.0),
    "elbow": (-0.3, 2.8),
    "wrist_pitch": (-1.0, 2.8),
    "wrist_roll": (-3.14, 3.14),
}
GAINS = {  # joint: (kp N m/rad, kv N m s/rad, armature kg m^2)
    "yaw": (1500.0, 30.0, 0.10),
    "shoulder": (2100.0, 42.0, 0.10),
    "elbow": (1200.0, 24.0, 0.08),
    "wrist_pitch": (400.0, 8.0, 0.04),
    "wrist_roll": (200.0, 4.0, 0.02),
}

# The orientation the controller holds: the hand points straight down and the fingers open along world y.
EE_DOWN_MATRIX = np.array([[-1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, -1.0]])


def _range(j: str) -> str:
    lo, hi = JOINT_RANGE[j]
    return f"{lo} {hi}"


def _hand(end_effector: EndEffector) -> str:
    if end_effector == "pusher":
        return f"""
          <geom name="pusher_rod" class="robot" type="capsule" fromto="0 0 0.045 0 0 {HAND - 0.012}" size="0.011" rgba=".3 .3 .35 1"/>
          <geom name="pusher_tip" class="robot" type="sphere" pos="0 0 {HAND}" size="0.015" rgba=".9 .5 .1 1" friction="0.4 0.005 0.0001"/>
          <site name="{EE_SITE}" pos="0 0 {HAND}" size="0.005" rgba="1 0 0 0"/>"""
    # Fingers: boxes 1.2 cm thick (y) and 6 cm long (z), pads reaching 1 cm below the ee site.
    fl = f"""
          <geom name="palm" class="robot" type="box" pos="0 0 0.055" size="0.022 0.06 0.012" rgba=".3 .3 .35 1"/>
          <body name="finger_left" pos="0 0 0">
            <joint name="finger_left" type="slide" axis="0 1 0" range="0 {FINGER_TRAVEL}" damping="2" armature="0.01"/>
            <geom name="finger_left" class="finger" pos="0 0.007 {HAND - 0.02}" size="0.012 0.006 0.03"/>
          </body>
          <body name="finger_right" pos="0 0 0">
            <joint name="finger_right" type="slide" axis="0 -1 0" range="0 {FINGER_TRAVEL}" damping="2" armature="0.01"/>
            <geom name="finger_right" class="finger" pos="0 -0.007 {HAND - 0.02}" size="0.012 0.006 0.03"/>
          </body>
          <site name="{EE_SITE}" pos="0 0 {HAND}" size="0.005" rgba="1 0 0 0"/>"""
    return fl


def arm_defaults() -> str:
    """``<default>`` classes the arm uses (robot, finger)."""
    return """
    <default class="robot">
      <geom contype="2" conaffinity="0" density="600" friction="0.6 0.005 0.0001"/>
    </default>
    <default class="finger">
      <geom type="box" contype="2" conaffinity="0" condim="4" friction="1.5 0.02 0.001" density="800"
            solref="0.004 1" solimp="0.95 0.99 0.001" rgba=".2 .2 .25 1"/>
    </default>"""


def arm_body(end_effector: EndEffector = "gripper") -> str:
    """The arm's ``<body>`` tree, to put inside ``<worldbody>``."""
    j = {name: (GAINS[name], _range(name)) for name in ARM_JOINTS}

    def joint(name: str, axis: str) -> str:
        (_, _, arm), rng = j[name]
        return f'<joint name="{name}" axis="{axis}" range="{rng}" armature="{arm}" damping="0.5"/>'

    return f"""
    <body name="robot_base" pos="0 0 0">
      <geom name="pedestal" class="robot" contype="0" type="cylinder" pos="0 0 -0.2" size="0.07 0.2" rgba=".25 .25 .3 1"/>
      <body name="link_yaw" pos="0 0 0" gravcomp="1">
        {joint("yaw", "0 0 1")}
        <geom name="link_yaw" class="robot" contype="0" type="cylinder" pos="0 0 0.07" size="0.05 0.07" rgba=".85 .85 .88 1"/>
        <body name="link_upper" pos="0 0 {SHOULDER_HEIGHT}" gravcomp="1">
          {joint("shoulder", "0 1 0")}
          <geom name="shoulder" class="robot" type="cylinder" fromto="0 -0.045 0 0 0.045 0" size="0.045" rgba=".3 .3 .35 1"/>
          <geom name="link_upper" class="robot" type="capsule" fromto="0 0 0 0 0 {UPPER_ARM}" size="0.035" rgba=".85 .85 .88 1"/>
          <body name="link_fore" pos="0 0 {UPPER_ARM}" gravcomp="1">
            {joint("elbow", "0 1 0")}
            <geom name="elbow" class="robot" type="cylinder" fromto="0 -0.038 0 0 0.038 0" size="0.038" rgba=".3 .3 .35 1"/>
            <geom name="link_fore" class="robot" type="capsule" fromto="0 0 0 0 0 {FOREARM}" size="0.028" rgba=".85 .85 .88 1"/>
            <body name="link_wrist" pos="0 0 {FOREARM}" gravcomp="1">
              {joint("wrist_pitch", "0 1 0")}
              <geom name="wrist" class="robot" type="cylinder" fromto="0 -0.03 0 0 0.03 0" size="0.03" rgba=".3 .3 .35 1"/>
              <body name="hand" pos="0 0 0" gravcomp="1">
                {joint("wrist_roll", "0 0 1")}
                <geom name="hand" class="robot" type="cylinder" fromto="0 0 0 0 0 0.045" size="0.025" rgba=".85 .85 .88 1"/>
                <camera name="wrist" pos="0.06 0 0.02" xyaxes="0 -1 0 -0.866 0 -0.5" fovy="75"/>
                {_hand(end_effector)}
              </body>
            </body>
          </body>
        </body>
      </body>
    </body>"""


def arm_actuators(end_effector: EndEffector = "gripper") -> str:
    """``<actuator>`` entries: one position servo per arm joint (+ the gripper)."""
    lines = []
    for name in ARM_JOINTS:
        kp, kv, _ = GAINS[name]
        lines.append(
            f'<position name="{name}" joint="{name}" kp="{kp}" kv="{kv}" ctrlrange="{_range(name)}" '
            f'forcerange="-150 150"/>'
        )
    if end_effector == "gripper":
        # ctrl is the finger travel (0 closed .. FINGER_TRAVEL open); force-limited so a grasp squeezes ~15 N.
        lines.append(
            f'<position name="gripper" joint="finger_left" kp="400" kv="8" ctrlrange="0 {FINGER_TRAVEL}" '
            f'forcerange="-15 15"/>'
        )
    return "\n    ".join(lines)


def arm_equality(end_effector: EndEffector = "gripper") -> str:
    """``<equality>`` that couples the right finger to the left one (gripper only)."""
    if end_effector != "gripper":
        return ""
    return '<joint name="finger_coupling" joint1="finger_right" joint2="finger_left" polycoef="0 1 0 0 0" solref="0.005 1"/>'


def arm_only_xml(actuators: bool = False) -> str:
    """A model of the arm alone (no table, no objects): used for IK and for the torch kinematics;
    with ``actuators`` also its position servos and gripper (what a dynamic rollout of the arm needs:
    the model file the arm publishes, :func:`arm_description`)."""
    act = f"""
  <actuator>
    {arm_actuators("gripper")}
  </actuator>
  <equality>{arm_equality("gripper")}</equality>""" if actuators else ""
    return f"""
<mujoco model="policy_steer_arm">
  <compiler angle="radian"/>
  <option timestep="0.002" integrator="implicitfast"/>
  <default>{arm_defaults()}
  </default>
  <worldbody>{arm_body("gripper")}
  </worldbody>{act}
</mujoco>"""


def arm_description(workspace_low=None, workspace_high=None, substeps: int = 50, ramp_fraction: float = 0.5,
                    max_joint_step: float | None = None):
    """The arm as a robot integrator publishes it (:class:`~policy_steer.types.ArmDescription`): the
    arm-alone MJCF with its servos, the joint order of ``joint_pos``, the ee site, and the controller of
    :mod:`policy_steer.envs.controller` (its IK settings, the hand-down orientation, the workspace box
    targets are clipped to, the servo ramp of :mod:`policy_steer.envs.mujoco_task`)."""
    from policy_steer.envs.controller import IKConfig
    from policy_steer.types import ArmDescription

    ik = IKConfig()
    vec = lambda v: None if v is None else tuple(float(x) for x in v)  # noqa: E731
    return ArmDescription(
        mjcf=arm_only_xml(actuators=True), joints=ARM_JOINTS, ee_site=EE_SITE,
        workspace_low=vec(workspace_low), workspace_high=vec(workspace_high),
        ee_orientation=tuple(float(v) for v in EE_DOWN_MATRIX.reshape(-1)), orientation_weight=ik.orientation_weight,
        ik_damping=ik.damping, ik_iterations=ik.iterations, ik_tolerance=ik.tolerance,
        max_joint_step=max_joint_step, control_substeps=int(substeps), ramp_fraction=float(ramp_fraction),
    )
