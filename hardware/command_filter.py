"""The last check before a driver: turn any proposed command into one that respects the arm's limits.

Given the previous safe command (or, after ``reset``, the measured pose), a proposal goes through:

1. **non-finite or misshapen values** are rejected: the result is the previous command (a hold);
2. an end-effector target is clamped to the workspace box, moved at most ``max_ee_speed / rate``
   from the previous command's end-effector position, and solved to joint targets by the arm's
   inverse kinematics (a non-finite solution is rejected);
3. joint targets are clamped to the joint ranges, the gripper to its range;
4. each joint moves at most ``max_joint_velocity / rate`` from the previous command (the gripper
   likewise, when it has a velocity limit);
5. with kinematics, the end-effector position of the result must lie in the workspace box and be
   at most ``max_ee_speed / rate`` from the previous command's, whatever the kind of command (joint
   targets too, and an inverse-kinematics solution that lands farther than its target): otherwise
   the command is pulled back along the segment from the previous command (bisection) to the
   farthest point that satisfies both.

A driver that takes end-effector targets natively (``Arm.ee_native``: a simulated task, whose own
controller solves the inverse kinematics) is filtered by :meth:`CommandFilter.native` instead: the
target must be finite, is clamped to the workspace box and moved at most ``max_ee_speed / rate`` from
the *measured* end effector (the point the driver's controller starts from), the gripper is clamped to
its range; joint ranges and steps are the controller's to keep. A rejected target becomes "stay where
measured" (a zero step, or the measured position as target). A step that needs no change is passed on
as the same object, numbers untouched.

Invariant (what the property tests check): if the previous command was within the limits, so is
every result, for any input, NaN and infinities included: joint ranges, joint step, gripper range
and step, workspace box and end-effector step. If the arm starts outside them (a joint past its
range, the hand outside the box) results only move back towards them, never farther out.
Every change is reported as a note ``(key, detail)`` for the intervention log.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from policy_steer.hardware.arm import ArmCommand, EeCommand, EeStep, JointCommand, Kinematics
from policy_steer.hardware.limits import ArmLimits


def _fmt(v: np.ndarray) -> str:
    return "[" + ", ".join(f"{float(x):.4g}" for x in np.ravel(v)) + "]"


def _changed(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """Which values a clamp really moved (float32 rows round by ~1e-7 relative: not an intervention)."""
    before, after = np.asarray(before, dtype=np.float64), np.asarray(after, dtype=np.float64)
    return np.abs(after - before) > 1e-6 * np.maximum(1.0, np.abs(before))


def _exact_step(origin: float, target: float) -> float:
    """d with origin + d == target in float64 (target - origin may round off by an ulp)."""
    d = target - origin
    for _ in range(8):
        total = origin + d
        if total == target:
            return d
        d = float(np.nextafter(d, np.inf if total < target else -np.inf))
    return target - origin


@dataclass
class FilterResult:
    command: ArmCommand  # JointCommand (``__call__``), or what an ee_native driver takes (``native``)
    held: bool  # the proposal was rejected; ``command`` is the previous one (native: stay where measured)
    notes: list[tuple[str, str]] = field(default_factory=list)  # (intervention key, detail)


class CommandFilter:
    """Stateful: remembers the last command it let through. Control thread only."""

    def __init__(
        self,
        limits: ArmLimits,
        control_hz: float,
        kinematics: Kinematics | None = None,
        workspace_tol: float = 1e-6,
        bisect_iters: int = 16,
    ) -> None:
        if not control_hz > 0:
            raise ValueError(f"control_hz must be > 0, got {control_hz}")
        self.limits = limits
        self.hz = float(control_hz)
        self.kin = kinematics
        self.tol = workspace_tol
        self.bisect_iters = bisect_iters
        self._step = limits.joint_step(self.hz)
        self._g_step = limits.gripper_step(self.hz)
        self._ee_step = limits.ee_step(self.hz)
        self._q: np.ndarray | None = None
        self._g = 0.0

    # --- state -----------------------------------------------------------------------------------
    def reset(self, joints: np.ndarray, gripper: float) -> None:
        """Start from the measured pose (the reference of the first step limit)."""
        q = np.asarray(joints, dtype=np.float64).reshape(-1)
        if q.shape != (self.limits.n_joints,) or not np.all(np.isfinite(q)) or not np.isfinite(gripper):
            raise ValueError(f"reset needs {self.limits.n_joints} finite joint values and a finite gripper, got {q}, {gripper}")
        self._q, self._g = q.copy(), float(gripper)

    @property
    def last(self) -> JointCommand:
        if self._q is None:
            raise RuntimeError("call reset() with the measured pose first")
        return JointCommand(self._q.copy(), self._g)

    def hold(self) -> JointCommand:
        """The previous command again (stay where the arm was told to be)."""
        return self.last

    # --- filtering -------------------------------------------------------------------------------
    def __call__(self, cmd: ArmCommand) -> FilterResult:
        q_prev = self.last.joints
        notes: list[tuple[str, str]] = []
        if isinstance(cmd, EeStep):
            cmd = EeCommand(cmd.target, cmd.gripper)
        if isinstance(cmd, EeCommand):
            target = self._ee_to_joints(cmd, q_prev, notes)
            if target is None:
                return FilterResult(self.hold(), True, notes)
            q_want, g_want = target, cmd.gripper
        else:
            q_want = np.asarray(cmd.joints, dtype=np.float64).reshape(-1)
            g_want = cmd.gripper
            if q_want.shape != q_prev.shape:
                notes.append(("reject:shape", f"{q_want.shape[0]} joint values for {q_prev.shape[0]} joints"))
                return FilterResult(self.hold(), True, notes)
        if not (np.all(np.isfinite(q_want)) and np.isfinite(g_want)):
            notes.append(("reject:nonfinite", f"joints {_fmt(q_want)}, gripper {g_want}"))
            return FilterResult(self.hold(), True, notes)

        lim = self.limits
        q = np.clip(q_want, lim.joint_low, lim.joint_high)
        if np.any(_changed(q_want, q)):
            bad = np.flatnonzero(_changed(q_want, q)).tolist()
            notes.append(("clamp:joint", f"joints {bad} clamped to their ranges"))
        dq = q - q_prev
        dq_c = np.clip(dq, -self._step, self._step)
        if np.any(_changed(q_prev + dq, q_prev + dq_c)):
            notes.append(("limit:step", f"largest step {float(np.max(np.abs(dq / self._step))):.2f}x the limit"))
        q = q_prev + dq_c

        g = self._gripper(g_want, notes)

        if self.kin is not None and (lim.has_workspace or self._ee_step is not None):
            q = self._keep_cartesian_limits(q_prev, q, notes)
        self._q, self._g = q.copy(), g
        return FilterResult(JointCommand(q, g), False, notes)

    def native(self, cmd: EeStep | EeCommand, ee_measured: np.ndarray) -> FilterResult:
        """The checks of an end-effector target for a driver that takes it natively (module docstring)."""
        origin = np.asarray(ee_measured, dtype=np.float64).reshape(-1)
        g_last = self._g
        notes: list[tuple[str, str]] = []
        is_step = isinstance(cmd, EeStep)
        if is_step:
            origin = np.asarray(cmd.origin, dtype=np.float64).reshape(-1)
        hold: ArmCommand = EeStep(origin, np.zeros(3), g_last) if is_step else EeCommand(origin, g_last)
        if not isinstance(cmd, (EeStep, EeCommand)):
            notes.append(("reject:shape", f"{type(cmd).__name__} for a driver that takes end-effector targets only"))
            return FilterResult(hold, True, notes)
        given = np.asarray(cmd.delta if is_step else cmd.ee_pos, dtype=np.float64).reshape(-1)
        if given.shape != (3,) or origin.shape != (3,):
            notes.append(("reject:shape", f"end-effector target has {given.shape[0]} values, not 3"))
            return FilterResult(EeStep(np.zeros(3), np.zeros(3), g_last) if is_step else hold, True, notes)
        p_want = origin + given if is_step else given
        if not (np.all(np.isfinite(p_want)) and np.isfinite(cmd.gripper)):
            notes.append(("reject:nonfinite", f"end-effector target {_fmt(p_want)}, gripper {cmd.gripper}"))
            return FilterResult(hold, True, notes)
        lim = self.limits
        p, changed = p_want, False
        if lim.has_workspace:
            p = np.clip(p_want, lim.workspace_low, lim.workspace_high)
            if np.any(_changed(p_want, p)):
                notes.append(("clamp:workspace", f"target {_fmt(p_want)} -> {_fmt(p)}"))
                changed = True
            else:
                p = p_want
        if self._ee_step is not None:
            d = p - origin
            n = float(np.linalg.norm(d))
            if n > self._ee_step + self.tol:
                p = origin + d * (self._ee_step / n)
                notes.append(("limit:ee_step", f"end-effector step {n:.5f} m limited to {self._ee_step:.5f} m"))
                changed = True
        g_want = float(cmd.gripper)
        g = self._gripper(g_want, notes)
        self._g = g
        if not changed and g == g_want:
            return FilterResult(cmd, False, notes)  # the very numbers the policy's row gave
        if not is_step:
            return FilterResult(EeCommand(p, g), False, notes)
        # A displacement: axes the filter did not move keep the row's own value; a moved axis gets the one
        # whose sum with the origin is the filtered target exactly (as the driver will add them).
        delta = given.copy()
        for k in np.flatnonzero(p != p_want):
            delta[k] = _exact_step(float(origin[k]), float(p[k]))
        return FilterResult(EeStep(origin, delta, g), False, notes)

    def _gripper(self, g_want: float, notes: list[tuple[str, str]]) -> float:
        """The gripper command inside its range and its step limit from the last one sent."""
        lim = self.limits
        g = float(np.clip(g_want, lim.gripper_low, lim.gripper_high))
        if _changed(g_want, g):
            notes.append(("clamp:gripper", f"{g_want:g} -> {g:g}"))
        if self._g_step is not None and abs(g - self._g) > self._g_step:
            g = self._g + float(np.sign(g - self._g)) * self._g_step
            notes.append(("limit:gripper_step", f"gripper step limited to {self._g_step:g}"))
        return g

    def _ee_to_joints(self, cmd: EeCommand, q_prev: np.ndarray, notes: list[tuple[str, str]]) -> np.ndarray | None:
        p_want = np.asarray(cmd.ee_pos, dtype=np.float64).reshape(-1)
        if p_want.shape != (3,):
            notes.append(("reject:shape", f"end-effector target has {p_want.shape[0]} values, not 3"))
            return None
        if not (np.all(np.isfinite(p_want)) and np.isfinite(cmd.gripper)):
            notes.append(("reject:nonfinite", f"end-effector target {_fmt(p_want)}, gripper {cmd.gripper}"))
            return None
        if self.kin is None:
            notes.append(("reject:no_kinematics", "this arm takes joint targets only"))
            return None
        lim = self.limits
        p = p_want
        if lim.has_workspace:
            p = np.clip(p_want, lim.workspace_low, lim.workspace_high)
            if np.any(_changed(p_want, p)):
                notes.append(("clamp:workspace", f"target {_fmt(p_want)} -> {_fmt(p)}"))
        if self._ee_step is not None:
            p_prev = self.kin.fk(q_prev)
            d = p - p_prev
            n = float(np.linalg.norm(d))
            if n > self._ee_step + self.tol:
                p = p_prev + d * (self._ee_step / n)
                notes.append(("limit:ee_step", f"end-effector step {n:.5f} m limited to {self._ee_step:.5f} m"))
        q = np.asarray(self.kin.ik(p, q_prev), dtype=np.float64)
        if q.shape != q_prev.shape or not np.all(np.isfinite(q)):
            notes.append(("reject:ik", f"no finite joint solution for {_fmt(p)}"))
            return None
        return q

    def _keep_cartesian_limits(self, q_prev: np.ndarray, q: np.ndarray, notes: list[tuple[str, str]]) -> np.ndarray:
        """``q``, or the farthest point towards it from ``q_prev`` whose end effector is in the workspace
        box (outside it already: no farther out) and within one end-effector step of ``q_prev``'s."""
        lim, kin, ee_step = self.limits, self.kin, self._ee_step
        p_prev = kin.fk(q_prev)
        prev_dist = lim.workspace_distance(p_prev)
        recovering = prev_dist > self.tol

        def in_box(p: np.ndarray) -> bool:
            if not lim.has_workspace:
                return True
            if recovering:  # outside already: only moves that do not go farther out
                return lim.workspace_distance(p) <= prev_dist + 1e-12
            return lim.in_workspace(p, self.tol)

        def short(p: np.ndarray) -> bool:
            return ee_step is None or float(np.linalg.norm(p - p_prev)) <= ee_step + self.tol

        p = kin.fk(q)
        box_ok, step_ok = in_box(p), short(p)
        if box_ok and step_ok:
            return q
        lo, hi = 0.0, 1.0  # t = 0 (the previous command) satisfies both by induction
        for _ in range(self.bisect_iters):
            mid = 0.5 * (lo + hi)
            pm = kin.fk(q_prev + mid * (q - q_prev))
            if in_box(pm) and short(pm):
                lo = mid
            else:
                hi = mid
        if not box_ok:
            notes.append(("limit:workspace", f"command pulled back to {lo:.3f} of its step to stay in the workspace"))
        if not step_ok and all(k != "limit:ee_step" for k, _ in notes):
            n = float(np.linalg.norm(p - p_prev))
            notes.append(("limit:ee_step", f"end-effector step {n:.5f} m of the joint targets cut to {ee_step:.5f} m"))
        return q_prev + lo * (q - q_prev)
