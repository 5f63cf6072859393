"""A robosuite arm as a robot integrator publishes it: the :class:`~policy_steer.types.ArmDescription`
of the arm alone, read from the compiled robosuite model.

What the VLASH ``kinematic`` estimator (:mod:`policy_steer.runtime.arm_model`) needs is the kinematic
chain from the world to the end-effector site: every body's pose in its parent, every arm joint's axis,
anchor and limits. robosuite's own MJCF of the Panda cannot travel as it is (it reads meshes from
files, which the estimator refuses), so :func:`arm_only_mjcf` writes that chain out again with the
compiled model's numbers: bodies with their inertias (MuJoCo needs a mass on a moving body), hinge
joints with their ranges, the site; no geoms, no fingers (they are not on the chain to the site).
That is what a real Panda's integrator publishes too: the same URDF numbers, without the meshes.

The controller described is the one :class:`~policy_steer.envs.robosuite_lift.LiftEnv` runs around
OSC_POSE: a world target of the grip site clipped to the workspace box, the hand held at a fixed
top-down orientation. The estimator's damped-least-squares IK stands for OSC (an operational-space
torque controller whose end effector tracks the target within millimetres in free motion, see
:mod:`policy_steer.envs.robosuite_lift`); the redundant seventh degree of freedom is resolved by the
IK's minimum-norm step from the measured joints, not by OSC's null-space posture term, a difference
of a few milliradians over the few steps of a delay. No dynamic rollout (``control_substeps`` = 0):
the arm-alone model has no servos, because OSC commands torques, not joint positions.
"""

from __future__ import annotations

import mujoco
import numpy as np

from policy_steer.types import ArmDescription


def _vec(v) -> str:
    return " ".join(f"{float(x):.10g}" for x in v)


def arm_only_mjcf(model: mujoco.MjModel, site: int, joints: tuple[str, ...], name: str = "robosuite_arm") -> str:
    """Self-contained MJCF [str] of the chain of bodies from the world to ``site`` in ``model``.

    Every body keeps its name, pose in its parent and inertia; the joints on the chain must be exactly
    ``joints`` (hinges, in chain order: base to hand), with their axes, anchors and ranges; the site
    keeps its name and pose. ValueError when the chain holds other joints or misses one of ``joints``."""
    chain = []
    b = int(model.site_bodyid[site])
    while b > 0:
        chain.append(b)
        b = int(model.body_parentid[b])
    chain.reverse()
    found: list[str] = []
    opened: list[str] = []
    indent = "    "
    for depth, b in enumerate(chain):
        pad = indent * (depth + 2)
        opened.append(f'{pad}<body name="{model.body(b).name}" pos="{_vec(model.body_pos[b])}" quat="{_vec(model.body_quat[b])}">')
        mass = float(model.body_mass[b])
        if mass > 0:
            opened.append(
                f'{pad}{indent}<inertial pos="{_vec(model.body_ipos[b])}" quat="{_vec(model.body_iquat[b])}" '
                f'mass="{mass:.10g}" diaginertia="{_vec(model.body_inertia[b])}"/>'
            )
        for j in range(model.njnt):
            if int(model.jnt_bodyid[j]) != b:
                continue
            if model.jnt_type[j] != mujoco.mjtJoint.mjJNT_HINGE:
                raise ValueError(f"joint {model.joint(j).name!r} on the chain to the site is not a hinge")
            lo, hi = model.jnt_range[j]
            limit = f' range="{lo:.10g} {hi:.10g}"' if model.jnt_limited[j] else ' limited="false"'
            opened.append(
                f'{pad}{indent}<joint name="{model.joint(j).name}" type="hinge" pos="{_vec(model.jnt_pos[j])}" '
                f'axis="{_vec(model.jnt_axis[j])}"{limit}/>'
            )
            found.append(model.joint(j).name)
    if tuple(found) != tuple(joints):
        raise ValueError(f"the chain to site {model.site(site).name!r} holds joints {found}, not {list(joints)}")
    pad = indent * (len(chain) + 2)
    opened.append(f'{pad}<site name="{model.site(site).name}" pos="{_vec(model.site_pos[site])}" quat="{_vec(model.site_quat[site])}"/>')
    closing = [f"{indent * (depth + 2)}</body>" for depth in reversed(range(len(chain)))]
    body = "\n".join(opened + closing)
    return f"""<mujoco model="{name}">
  <compiler angle="radian" inertiafromgeom="false"/>
  <worldbody>
{body}
  </worldbody>
</mujoco>
"""


def osc_arm_description(model: mujoco.MjModel, site: int, joints: tuple[str, ...], orientation: np.ndarray,
                        workspace_low: np.ndarray, workspace_high: np.ndarray) -> ArmDescription:
    """The arm of ``model`` (:func:`arm_only_mjcf`) with the controller of the robosuite tasks: grip-site
    targets clipped to the workspace box, the hand held at ``orientation`` [3, 3] (world rotation of
    the site), no joint-step limit, no servo rollout (module docstring)."""
    return ArmDescription(
        mjcf=arm_only_mjcf(model, site, joints), joints=tuple(joints), ee_site=model.site(site).name,
        workspace_low=tuple(float(v) for v in workspace_low), workspace_high=tuple(float(v) for v in workspace_high),
        ee_orientation=tuple(float(v) for v in np.asarray(orientation, dtype=np.float64).reshape(-1)),
        control_substeps=0,
    )
