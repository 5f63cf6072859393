"""What the scripted experts share: the ``Expert`` interface and smooth, teleoperator-like motion.

A :class:`SmoothMover` turns "go to this point" into per-step displacements with bounded speed and
acceleration (it speeds up, cruises and slows down before the point, and rounds corners between
waypoints), which is what a human driving a spacemouse gives; :func:`to_action` writes a displacement
in the env's action mode.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np


class Expert(Protocol):
    def reset(self, env: Any, seed: int) -> None:
        """Prepare for an episode of ``env`` that was (or is about to be) reset with ``seed``."""

    def act(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        """float32 [A] the next action, in the env's action mode."""


class SmoothMover:
    """Per-step displacements [3] toward a point, with speed <= ``v_max`` and speed change <= ``accel``."""

    def __init__(self, v_max: float, accel: float) -> None:
        self.v_max, self.accel = v_max, accel
        self.v = np.zeros(3)

    def reset(self) -> None:
        self.v = np.zeros(3)

    def toward(self, ee: np.ndarray, point: np.ndarray, v_max: float | None = None, stop: bool = True) -> np.ndarray:
        """The displacement for this step. ``stop``: slow down to arrive at rest (else pass through)."""
        v_max = self.v_max if v_max is None else v_max
        err = point - ee
        dist = float(np.linalg.norm(err))
        speed = min(v_max, dist)
        if stop:
            speed = min(speed, np.sqrt(2.0 * self.accel * dist))
        want = err / dist * speed if dist > 1e-9 else np.zeros(3)
        dv = want - self.v
        n = float(np.linalg.norm(dv))
        if n > self.accel:
            dv *= self.accel / n
        self.v = self.v + dv
        return self.v.copy()


def to_action(env: Any, ee: np.ndarray, delta: np.ndarray, gripper: float | None = None) -> np.ndarray:
    """float32 [A] a displacement ``delta`` [3] from ``ee`` written in ``env``'s action mode (+ gripper)."""
    u = env.unwrapped
    xyz = delta if u.action_mode == "delta" else ee + delta
    if u.has_gripper:
        return np.array([*xyz, 1.0 if gripper is None else gripper], dtype=np.float32)
    return np.asarray(xyz, dtype=np.float32)
