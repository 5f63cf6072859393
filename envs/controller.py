"""End-effector position control: damped-least-squares differential IK onto joint position servos.

Each control step the controller receives a world position target for the site ``ee``. It solves for
joint targets with damped least squares on the site Jacobian (``mujoco.mj_jacSite``), iterated on a
kinematics-only model of the arm (:func:`policy_steer.envs.arm.arm_only_xml`), with a second task
that keeps the hand pointing straight down with the fingers along world y
(:data:`~policy_steer.envs.arm.EE_DOWN_MATRIX`). The servos then move to those joint targets:
the command is ramped linearly over the first ``ramp_fraction`` of the control period and held for
the rest, so the arm moves smoothly and has settled when the next action arrives.
"""

from __future__ import annotations

from dataclasses import dataclass

import mujoco
import numpy as np

from policy_steer.envs.arm import ARM_JOINTS, EE_DOWN_MATRIX, EE_SITE, JOINT_RANGE, arm_only_xml


@dataclass(frozen=True)
class IKConfig:
    damping: float = 1e-3  # lambda^2 of damped least squares
    orientation_weight: float = 0.3  # metres of position error worth one radian of orientation error
    iterations: int = 12
    tolerance: float = 2e-5  # metres: stop iterating below this position error


class ArmIK:
    """Joint targets [5] for an ee-site position target [3], hand pointing down."""

    def __init__(self, cfg: IKConfig = IKConfig()) -> None:
        self.cfg = cfg
        self.model = mujoco.MjModel.from_xml_string(arm_only_xml())
        self.data = mujoco.MjData(self.model)
        self.site = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_SITE, EE_SITE)
        self.qadr = np.array([self.model.jnt_qposadr[self.model.joint(j).id] for j in ARM_JOINTS])
        self.dofadr = np.array([self.model.jnt_dofadr[self.model.joint(j).id] for j in ARM_JOINTS])
        self.lo = np.array([JOINT_RANGE[j][0] for j in ARM_JOINTS])
        self.hi = np.array([JOINT_RANGE[j][1] for j in ARM_JOINTS])
        self._jacp = np.zeros((3, self.model.nv))
        self._jacr = np.zeros((3, self.model.nv))

    def site_position(self, q: np.ndarray) -> np.ndarray:
        """Forward kinematics [3] of the ee site for arm joints ``q`` [5]."""
        self.data.qpos[self.qadr] = q
        mujoco.mj_kinematics(self.model, self.data)
        return self.data.site_xpos[self.site].copy()

    def solve(self, target: np.ndarray, q_init: np.ndarray) -> np.ndarray:
        """Joint targets [5] that put the ee site at ``target`` [3] with the hand pointing down."""
        cfg = self.cfg
        m, d = self.model, self.data
        q = np.clip(np.asarray(q_init, dtype=np.float64).copy(), self.lo, self.hi)
        w = cfg.orientation_weight
        err = np.zeros(6)
        for _ in range(cfg.iterations):
            d.qpos[self.qadr] = q
            mujoco.mj_kinematics(m, d)
            mujoco.mj_comPos(m, d)
            err[:3] = target - d.site_xpos[self.site]
            rot = d.site_xmat[self.site].reshape(3, 3)
            # Rotation error as a world-frame axis-angle (small-angle form): 0.5 * sum_i r_i x r*_i.
            err[3:] = w * 0.5 * np.cross(rot.T, EE_DOWN_MATRIX.T).sum(axis=0)
            if np.linalg.norm(err[:3]) < cfg.tolerance and np.linalg.norm(err[3:]) < cfg.tolerance:
                break
            mujoco.mj_jacSite(m, d, self._jacp, self._jacr, self.site)
            jac = np.vstack([self._jacp[:, self.dofadr], w * self._jacr[:, self.dofadr]])
            dq = jac.T @ np.linalg.solve(jac @ jac.T + cfg.damping * np.eye(6), err)
            q = np.clip(q + dq, self.lo, self.hi)
        return q
