"""What an arm may be commanded to do: joint ranges, gripper range, velocities, a workspace box.

A driver states its own limits (:attr:`~policy_steer.hardware.arm.Arm.limits`); a user may only
*narrow* them (:func:`narrow`, from a YAML file or flags): a limits file can never widen what the
driver allows. Per control step, a joint may move at most ``max_joint_velocity / rate`` and the end
effector ``max_ee_speed / rate`` (:meth:`ArmLimits.joint_step`, :meth:`ArmLimits.ee_step`).

A limits file (every key optional; names are the arm's joint names)::

    joints: {shoulder_pan.pos: [-60, 60], elbow_flex.pos: [-90, 45]}
    gripper: [0, 60]
    max_joint_velocity: 60          # or per joint: {shoulder_pan.pos: 45, ...}
    max_gripper_velocity: 200
    workspace: {low: [0.1, -0.3, 0.02], high: [0.5, 0.3, 0.4]}   # needs the arm's kinematics
    max_ee_speed: 0.2
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from policy_steer.errors import ConfigError


def _vec(x: Any, n: int | None, what: str) -> np.ndarray:
    a = np.array(x, dtype=np.float64, copy=True).reshape(-1)
    if n is not None and a.shape != (n,):
        raise ConfigError(f"{what} must have {n} values, got {a.shape[0]}")
    if not np.all(np.isfinite(a)):
        raise ConfigError(f"{what} must be finite, got {a.tolist()}")
    a.setflags(write=False)
    return a


@dataclass(frozen=True)
class ArmLimits:
    """Limits in the arm's units (joint values as in its commands; workspace in metres, world frame)."""

    joint_low: np.ndarray  # [n]
    joint_high: np.ndarray  # [n]
    max_joint_velocity: np.ndarray  # [n] joint units per second
    gripper_low: float
    gripper_high: float
    max_gripper_velocity: float | None = None  # gripper units per second (None: any step)
    workspace_low: np.ndarray | None = None  # [3]; enforced only for arms with kinematics
    workspace_high: np.ndarray | None = None
    max_ee_speed: float | None = None  # metres per second of the end effector (every command; needs kinematics)

    def __post_init__(self) -> None:
        lo = _vec(self.joint_low, None, "joint_low")
        n = lo.shape[0]
        hi = _vec(self.joint_high, n, "joint_high")
        vel = _vec(np.broadcast_to(self.max_joint_velocity, (n,)), n, "max_joint_velocity")
        if np.any(lo >= hi):
            raise ConfigError(f"joint ranges must have low < high, got {list(zip(lo.tolist(), hi.tolist()))}")
        if np.any(vel <= 0):
            raise ConfigError("max_joint_velocity must be > 0")
        object.__setattr__(self, "joint_low", lo)
        object.__setattr__(self, "joint_high", hi)
        object.__setattr__(self, "max_joint_velocity", vel)
        if not (np.isfinite(self.gripper_low) and np.isfinite(self.gripper_high) and self.gripper_low < self.gripper_high):
            raise ConfigError(f"gripper range must be finite with low < high, got [{self.gripper_low}, {self.gripper_high}]")
        if (self.workspace_low is None) != (self.workspace_high is None):
            raise ConfigError("give both workspace_low and workspace_high, or neither")
        if self.workspace_low is not None:
            wl, wh = _vec(self.workspace_low, 3, "workspace_low"), _vec(self.workspace_high, 3, "workspace_high")
            if np.any(wl >= wh):
                raise ConfigError(f"workspace box must have low < high, got {wl.tolist()} .. {wh.tolist()}")
            object.__setattr__(self, "workspace_low", wl)
            object.__setattr__(self, "workspace_high", wh)
        for name in ("max_gripper_velocity", "max_ee_speed"):
            v = getattr(self, name)
            if v is not None and not (np.isfinite(v) and v > 0):
                raise ConfigError(f"{name} must be > 0 (or None), got {v}")

    @property
    def n_joints(self) -> int:
        return int(self.joint_low.shape[0])

    @property
    def has_workspace(self) -> bool:
        return self.workspace_low is not None

    def joint_step(self, hz: float) -> np.ndarray:
        """[n] the largest change of a joint target between consecutive commands at ``hz``."""
        return self.max_joint_velocity / hz

    def gripper_step(self, hz: float) -> float | None:
        return None if self.max_gripper_velocity is None else self.max_gripper_velocity / hz

    def ee_step(self, hz: float) -> float | None:
        return None if self.max_ee_speed is None else self.max_ee_speed / hz

    def in_workspace(self, ee_pos: np.ndarray, tol: float = 0.0) -> bool:
        if self.workspace_low is None:
            return True
        p = np.asarray(ee_pos, dtype=np.float64)
        return bool(np.all(p >= self.workspace_low - tol) and np.all(p <= self.workspace_high + tol))

    def workspace_distance(self, ee_pos: np.ndarray) -> float:
        """Euclidean distance from ``ee_pos`` to the workspace box (0 inside)."""
        if self.workspace_low is None:
            return 0.0
        p = np.asarray(ee_pos, dtype=np.float64)
        return float(np.linalg.norm(np.maximum(self.workspace_low - p, 0) + np.maximum(p - self.workspace_high, 0)))

    def describe(self, names: tuple[str, ...] = ()) -> dict[str, Any]:
        """A plain dict (for reports and logs)."""
        names = names or tuple(f"j{i}" for i in range(self.n_joints))
        d: dict[str, Any] = {
            "joints": {k: [float(lo), float(hi)] for k, lo, hi in zip(names, self.joint_low, self.joint_high)},
            "max_joint_velocity": {k: float(v) for k, v in zip(names, self.max_joint_velocity)},
            "gripper": [float(self.gripper_low), float(self.gripper_high)],
            "max_gripper_velocity": self.max_gripper_velocity,
            "max_ee_speed": self.max_ee_speed,
        }
        if self.workspace_low is not None:
            d["workspace"] = {"low": self.workspace_low.tolist(), "high": self.workspace_high.tolist()}
        return d


def _per_joint(value: Any, names: tuple[str, ...], what: str) -> dict[str, Any]:
    if isinstance(value, dict):
        unknown = sorted(set(value) - set(names))
        if unknown:
            raise ConfigError(f"{what}: unknown joints {unknown}; the arm's joints are {list(names)}")
        return value
    return dict.fromkeys(names, value)


def narrow(limits: ArmLimits, names: tuple[str, ...], spec: dict[str, Any]) -> ArmLimits:
    """``limits`` intersected with ``spec`` (the format of a limits file); never wider than ``limits``."""
    known = {"joints", "gripper", "max_joint_velocity", "max_gripper_velocity", "workspace", "max_ee_speed"}
    unknown = sorted(set(spec) - known)
    if unknown:
        raise ConfigError(f"limits: unknown keys {unknown}; use {sorted(known)}")
    lo, hi = limits.joint_low.copy(), limits.joint_high.copy()
    vel = limits.max_joint_velocity.copy()
    for name, rng in _per_joint(spec.get("joints", {}), names, "limits.joints").items():
        i = names.index(name)
        a, b = (float(v) for v in rng)
        lo[i], hi[i] = max(lo[i], a), min(hi[i], b)
    if "max_joint_velocity" in spec:
        for name, v in _per_joint(spec["max_joint_velocity"], names, "limits.max_joint_velocity").items():
            i = names.index(name)
            vel[i] = min(vel[i], float(v))
    g_lo, g_hi = limits.gripper_low, limits.gripper_high
    if "gripper" in spec:
        a, b = (float(v) for v in spec["gripper"])
        g_lo, g_hi = max(g_lo, a), min(g_hi, b)
    g_vel = limits.max_gripper_velocity
    if spec.get("max_gripper_velocity") is not None:
        v = float(spec["max_gripper_velocity"])
        g_vel = v if g_vel is None else min(g_vel, v)
    w_lo, w_hi = limits.workspace_low, limits.workspace_high
    if "workspace" in spec:
        ws = spec["workspace"]
        a, b = np.asarray(ws["low"], dtype=np.float64), np.asarray(ws["high"], dtype=np.float64)
        w_lo = a if w_lo is None else np.maximum(w_lo, a)
        w_hi = b if w_hi is None else np.minimum(w_hi, b)
    ee = limits.max_ee_speed
    if spec.get("max_ee_speed") is not None:
        v = float(spec["max_ee_speed"])
        ee = v if ee is None else min(ee, v)
    return replace(
        limits, joint_low=lo, joint_high=hi, max_joint_velocity=vel, gripper_low=g_lo, gripper_high=g_hi,
        max_gripper_velocity=g_vel, workspace_low=w_lo, workspace_high=w_hi, max_ee_speed=ee,
    )


def load_limits_file(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"limits file not found: {p}")
    data = yaml.safe_load(p.read_text()) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"limits file {p} must hold a mapping")
    return data
