"""An arm's own model, built from its :class:`~policy_steer.types.ArmDescription`: forward kinematics
of the end-effector site, the controller's inverse kinematics, and a dynamic rollout of the arm alone.

This is what the ``kinematic`` and ``model-robot`` future-state estimators
(:mod:`policy_steer.runtime.future_state`) run, and everything they know about the arm: the MJCF of the
arm alone and its controller's settings, received as data in the robot description. The core never
imports the simulator: the tasks' arm publishes its description like any other robot would
(``policy_steer.envs.arm.arm_description``).

The controller mirrored here is the tasks' (``policy_steer.envs.controller`` and
``MujocoTaskEnv._advance``): a world end-effector target, clipped to the workspace box, becomes joint
targets by damped least squares on the site Jacobian from the previous joint target, holding the site's
orientation; the joint targets are clipped to the joint ranges and to ``max_joint_step`` per control step.
:meth:`ArmModel.rollout` also mirrors the servo ramp (smoothstep with velocity feed-forward over
``ramp_fraction`` of the control step's physics steps) on the model's own position actuators.

Model mismatch (:class:`ArmMismatch`, :func:`perturbed`): the same description with every link offset
lengthened or shortened, every servo's gains scaled and every joint's zero shifted, written back into
the MJCF, so an estimator can be measured against an imperfect model as it would run on a real arm.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from functools import lru_cache

import mujoco
import numpy as np

from policy_steer.errors import ConfigError
from policy_steer.types import ArmDescription, RobotDescription

# The MJCF arrives over the wire or from a file someone else wrote: MuJoCo must not be asked to read other
# files (include, meshes, textures) or load plugins because of it. Kinematics and servos need none.
_FORBIDDEN = re.compile(r"<\s*include\b|\bfile\s*=|<\s*extension\b|<\s*plugin\b|\b(mesh|texture|asset)dir\s*=", re.I)


def _compile(mjcf: str) -> mujoco.MjModel:
    bad = _FORBIDDEN.search(mjcf)
    if bad is not None:
        raise ConfigError(
            f"the arm model must be self-contained MJCF (no include, file=, plugins or asset folders); found "
            f"{bad.group(0)!r}: kinematics need no meshes, replace them with primitive geoms"
        )
    try:
        return mujoco.MjModel.from_xml_string(mjcf)
    except ValueError as e:
        raise ConfigError(f"the arm model does not compile: {str(e).strip()[:300]}") from None


@lru_cache(maxsize=8)
def _compiled(mjcf: str) -> mujoco.MjModel:
    return _compile(mjcf)


class ArmModel:
    """FK [3], IK and a rollout of the arm of ``arm``; one instance per control thread (it owns MjData).

    ``check_robot`` raises ConfigError when the model does not fit the robot's state (its ``joint_pos``
    slice must hold exactly ``arm.joints``, in that order)."""

    def __init__(self, arm: ArmDescription) -> None:
        self.arm = arm
        self.model = m = _compiled(arm.mjcf)
        self.data = mujoco.MjData(m)
        self.site = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_SITE, arm.ee_site)
        if self.site < 0:
            raise ConfigError(f"the arm model has no site {arm.ee_site!r} (the end-effector site of its description)")
        ids = []
        for name in arm.joints:
            j = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_JOINT, name)
            if j < 0:
                have = [m.joint(i).name for i in range(m.njnt)]
                raise ConfigError(f"the arm model has no joint {name!r} (its joints: {have})")
            if m.jnt_type[j] not in (mujoco.mjtJoint.mjJNT_HINGE, mujoco.mjtJoint.mjJNT_SLIDE):
                raise ConfigError(f"arm joint {name!r} is not a hinge or slide joint")
            ids.append(j)
        ids = np.array(ids)
        self.n = len(ids)
        self.qadr = m.jnt_qposadr[ids].copy()
        self.dofadr = m.jnt_dofadr[ids].copy()
        limited = m.jnt_limited[ids].astype(bool)
        self.lo = np.where(limited, m.jnt_range[ids, 0], -np.inf)
        self.hi = np.where(limited, m.jnt_range[ids, 1], np.inf)
        self.ws_low = None if arm.workspace_low is None else np.asarray(arm.workspace_low, dtype=np.float64)
        self.ws_high = None if arm.workspace_high is None else np.asarray(arm.workspace_high, dtype=np.float64)
        self.orient = None if arm.ee_orientation is None else np.asarray(arm.ee_orientation, dtype=np.float64).reshape(3, 3)
        self._jacp = np.zeros((3, m.nv))
        self._jacr = np.zeros((3, m.nv))
        # A servo per arm joint (a position actuator: gain kp, bias -kp q - kv qdot) for rollouts.
        act, missing = [], []
        for j, name in zip(ids, arm.joints):
            found = [a for a in range(m.nu) if m.actuator_trntype[a] == mujoco.mjtTrn.mjTRN_JOINT and m.actuator_trnid[a, 0] == j]
            (act.append(found[0]) if found else missing.append(name))
        self.has_servos = not missing  # the model could be rolled forward (a description may still say not to)
        self.actuators: np.ndarray | None = None
        if arm.control_substeps > 0:
            if missing:
                raise ConfigError(f"the arm model has no actuator on joint {missing[0]!r} (control_substeps > 0 needs a servo per joint)")
            self.actuators = np.array(act)
            kp = m.actuator_gainprm[self.actuators, 0]
            kv = -m.actuator_biasprm[self.actuators, 2]
            self.kv_over_kp = np.where(kp > 0, kv / np.where(kp > 0, kp, 1.0), 0.0)

    # --- checks ------------------------------------------------------------------------------------
    def check_robot(self, robot: RobotDescription) -> None:
        sl = robot.state_layout.get("joint_pos")
        if sl is None:
            raise ConfigError(
                f"the robot's state has no 'joint_pos' slice for the arm model's joints {list(self.arm.joints)}; "
                f"its state names {sorted(robot.state_layout)}"
            )
        width = (sl.stop or 0) - (sl.start or 0)
        if width != self.n:
            raise ConfigError(
                f"the arm model's joints {list(self.arm.joints)} ({self.n}) do not match the robot's state: its "
                f"'joint_pos' slice holds {width} values"
            )
        if "ee_pos" not in robot.state_layout:
            raise ConfigError("the robot's state has no 'ee_pos' slice for the arm model's end-effector site")

    # --- kinematics --------------------------------------------------------------------------------
    def fk(self, q: np.ndarray) -> np.ndarray:
        """[3] world position of the ee site for joints ``q`` [n]."""
        self.data.qpos[self.qadr] = q
        mujoco.mj_kinematics(self.model, self.data)
        return self.data.site_xpos[self.site].copy()

    def site_rotation(self, q: np.ndarray) -> np.ndarray:
        """[3, 3] world orientation of the ee site for joints ``q`` [n]."""
        self.data.qpos[self.qadr] = q
        mujoco.mj_kinematics(self.model, self.data)
        return self.data.site_xmat[self.site].reshape(3, 3).copy()

    def held_orientation(self, q: np.ndarray) -> np.ndarray | None:
        """The orientation the IK should hold from measured joints ``q``: the model's own orientation there
        (the controller holds ``ee_orientation`` and the arm is measured at it, so a mis-modelled arm's
        zero is where the model puts it now), None for a position-only controller."""
        return None if self.orient is None else self.site_rotation(q)

    def clip_target(self, target: np.ndarray) -> np.ndarray:
        if self.ws_low is not None:
            target = np.maximum(target, self.ws_low)
        if self.ws_high is not None:
            target = np.minimum(target, self.ws_high)
        return target

    def limit_step(self, q_from: np.ndarray, q_to: np.ndarray) -> np.ndarray:
        """Joint targets within range and at most ``max_joint_step`` from ``q_from``."""
        mjs = self.arm.max_joint_step
        if mjs is not None:
            q_to = q_from + np.clip(q_to - q_from, -mjs, mjs)
        return np.clip(q_to, self.lo, self.hi)

    def ik(self, target: np.ndarray, q_init: np.ndarray, orientation: np.ndarray | None = None) -> np.ndarray:
        """Joint targets [n] that put the ee site at ``target`` [3] (the controller's damped least squares),
        holding ``orientation`` [3, 3] (None: the description's ``ee_orientation``)."""
        arm, m, d = self.arm, self.model, self.data
        orient = self.orient if orientation is None else orientation
        q = np.clip(np.asarray(q_init, dtype=np.float64).copy(), self.lo, self.hi)
        w = arm.orientation_weight if self.orient is not None else 0.0
        rows = 6 if self.orient is not None else 3
        err = np.zeros(rows)
        for _ in range(arm.ik_iterations):
            d.qpos[self.qadr] = q
            mujoco.mj_kinematics(m, d)
            mujoco.mj_comPos(m, d)
            err[:3] = target - d.site_xpos[self.site]
            if self.orient is not None:
                rot = d.site_xmat[self.site].reshape(3, 3)
                # Rotation error as a world-frame axis-angle (small-angle form): 0.5 * sum_i r_i x r*_i.
                err[3:] = w * 0.5 * np.cross(rot.T, orient.T).sum(axis=0)
            if np.linalg.norm(err[:3]) < arm.ik_tolerance and np.linalg.norm(err[3:]) < arm.ik_tolerance:
                break
            mujoco.mj_jacSite(m, d, self._jacp, self._jacr, self.site)
            jac = self._jacp[:, self.dofadr]
            if self.orient is not None:
                jac = np.vstack([jac, w * self._jacr[:, self.dofadr]])
            dq = jac.T @ np.linalg.solve(jac @ jac.T + arm.ik_damping * np.eye(rows), err)
            q = np.clip(q + dq, self.lo, self.hi)
        return q

    # --- dynamics ----------------------------------------------------------------------------------
    def rollout(self, q0: np.ndarray, targets, offset: np.ndarray,
                orientation: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Simulate the arm alone from rest at ``q0`` [n] through one control step per call of
        ``targets(ee_now) -> (ee target [3] | None, joint target [n] | None)``, ``len`` of it times
        (``targets`` is a list of such functions). ``offset`` [3] is added to the model's ee site
        (measured minus modelled: a mis-modelled arm is corrected where it is now); ``orientation`` the
        one the IK holds (:meth:`held_orientation`).

        Returns (joints [K, n], ee [K, 3]) after each control step."""
        if self.actuators is None:
            raise ConfigError("this arm model has no dynamic rollout (its description sets control_substeps = 0)")
        arm, m = self.arm, self.model
        d = mujoco.MjData(m)
        d.qpos[self.qadr] = q0
        d.ctrl[self.actuators] = q0
        mujoco.mj_forward(m, d)
        n_sub = int(arm.control_substeps)
        ramp = max(1, int(round(arm.ramp_fraction * n_sub)))
        u = np.arange(1, ramp + 1)[:, None] / ramp
        dt = float(m.opt.timestep)
        qs, ees = np.empty((len(targets), self.n)), np.empty((len(targets), 3))
        for i, target_of in enumerate(targets):
            q_from = d.ctrl[self.actuators].copy()  # the previous joint target (the ramp ended there)
            ee_target, q_target = target_of(d.site_xpos[self.site] + offset)
            q_to = self.ik(self.clip_target(ee_target) - offset, q_from, orientation) if q_target is None else q_target
            q_to = self.limit_step(q_from, q_to)
            dq = q_to - q_from
            ff = self.kv_over_kp * dq / (ramp * dt)
            path = q_from + dq * (u * u * (3 - 2 * u)) + ff * (6 * u * (1 - u))
            for k in range(n_sub):
                if k < ramp:
                    d.ctrl[self.actuators] = path[k]
                elif k == ramp:
                    d.ctrl[self.actuators] = q_to
                mujoco.mj_step(m, d)
            mujoco.mj_kinematics(m, d)
            qs[i] = d.qpos[self.qadr]
            ees[i] = d.site_xpos[self.site] + offset
        return qs, ees


# --- model mismatch ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class ArmMismatch:
    """How wrong the estimator's arm model is: every non-zero body offset on the chain to the ee site is
    longer or shorter by ``link`` metres (the tasks' arm: shoulder height, upper arm, forearm; the site's
    own offset in its body is kept), every servo's kp and kv scaled by 1 +- ``gain``, every arm joint's
    zero shifted by +- ``joint_offset`` rad; each sign drawn per episode (``seed``)."""

    link: float = 0.0
    gain: float = 0.0
    joint_offset: float = 0.0

    @property
    def active(self) -> bool:
        return bool(self.link or self.gain or self.joint_offset)

    @classmethod
    def parse(cls, text: str) -> "ArmMismatch":
        """``none`` or ``link=0.01,gain=0.2,joint_offset=0.02`` (any subset)."""
        text = str(text).strip()
        if text in ("", "none", "0"):
            return cls()
        values: dict[str, float] = {}
        names = [f.name for f in dataclasses.fields(cls)]
        for part in text.split(","):
            key, sep, val = part.partition("=")
            key = key.strip()
            if not sep or key not in names:
                raise ConfigError(f"arm mismatch {text!r}: use none or key=value pairs of {names}, e.g. link=0.01,gain=0.2,joint_offset=0.02")
            try:
                values[key] = float(val)
            except ValueError:
                raise ConfigError(f"arm mismatch {text!r}: {key} must be a number, got {val!r}") from None
            if not (values[key] >= 0 and np.isfinite(values[key])):
                raise ConfigError(f"arm mismatch {text!r}: {key} must be >= 0")
        if values.get("gain", 0.0) >= 1:
            raise ConfigError(f"arm mismatch {text!r}: gain must be < 1 (a fraction of the gains)")
        return cls(**values)


def perturbed(arm: ArmDescription, mismatch: ArmMismatch, seed: int) -> ArmDescription:
    """``arm`` with its MJCF rewritten by ``mismatch`` (signs drawn from ``seed``): link offsets along
    their direction, servo kp/kv, joint zeros (MJCF ``ref``: the joint reads ``ref`` where the original
    read 0, so the model's forward kinematics become FK(q - ref))."""
    if not mismatch.active:
        return arm
    bad = _FORBIDDEN.search(arm.mjcf)
    if bad is not None:
        _compile(arm.mjcf)  # raises the clear error
    rng = np.random.default_rng([int(seed), 19])
    spec = mujoco.MjSpec.from_string(arm.mjcf)
    model = _compiled(arm.mjcf)
    site = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_SITE, arm.ee_site)
    chain = []
    b = int(model.site_bodyid[site])
    while b > 0:
        chain.append(model.body(b).name)
        b = int(model.body_parentid[b])
    for name in chain:
        body = spec.body(name)
        pos = np.asarray(body.pos, dtype=np.float64)
        length = float(np.linalg.norm(pos))
        if length > 1e-9 and mismatch.link:
            body.pos = pos * (length + rng.choice([-1.0, 1.0]) * mismatch.link) / length
    if mismatch.joint_offset:
        for name in arm.joints:
            spec.joint(name).ref = float(rng.choice([-1.0, 1.0]) * mismatch.joint_offset)
    if mismatch.gain:
        for act in spec.actuators:
            s = 1.0 + rng.choice([-1.0, 1.0]) * mismatch.gain
            gain, bias = np.array(act.gainprm), np.array(act.biasprm)
            gain[0] *= s
            bias[1:3] *= s
            act.gainprm, act.biasprm = gain, bias
    return dataclasses.replace(arm, mjcf=spec.to_xml())
