"""Scripted stacking (robosuite Panda): over to cube A at the start height, straight down, close, lift to
the carry height, carry to above cube B, lower until A's bottom is just above B's top, open, rise. Every
phase re-reads both cubes, so a cube B that moves (``moving-goal``) is followed.

``route="over"`` carries ``OVER_WALL`` above the ``obstacle`` variant's wall (privileged: it reads the
wall from the scene); the default route is the demonstrations' and collides there by design.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from policy_steer.envs.experts.motion import SmoothMover, to_action
from policy_steer.envs.robosuite_stack import CARRY_HEIGHT, CUBE_A_HALF, CUBE_B_HALF

OPEN, CLOSE = -1.0, 1.0
GRASP_UP = 0.003  # grip site above cube A's centre when the fingers close
CLOSE_STEPS = 6  # control steps (0.3 s) to close the fingers before lifting
RELEASE_STEPS = 6  # ... to open them before rising
PLACE_CLEARANCE = 0.004  # A's bottom above B's top when it is let go
RISE_BEFORE_CARRY = 0.07  # the grip site rises this high above the table before heading for cube B
OVER_WALL = 0.07  # route "over": the grip site this far above the wall's top while carrying


class StackExpert:
    """Observations -> actions [4] for :class:`~policy_steer.envs.robosuite_stack.StackEnv` (either action mode)."""

    def __init__(self, v_max: float = 0.012, accel: float = 0.002, route: str = "default") -> None:
        if route not in ("default", "over"):
            raise ValueError(f"route must be 'default' or 'over', got {route!r}")
        self.mover = SmoothMover(v_max, accel)
        self.route = route
        self.env: Any = None
        self.phase = "approach"
        self.wait = 0
        self.hover_z = 0.0
        self.carry_height, self.rise_height = CARRY_HEIGHT, RISE_BEFORE_CARRY

    def reset(self, env: Any, seed: int) -> None:
        self.env = env
        self.phase = "approach"
        self.wait = 0
        u = env.unwrapped
        self.hover_z = float(u.ee_position()[2])
        self.carry_height, self.rise_height = CARRY_HEIGHT, RISE_BEFORE_CARRY
        if self.route == "over" and u.variant == "obstacle":
            wall = u.scene().object("obstacle")
            self.carry_height = wall.position[2] + wall.half_size[2] - u.surface_height + OVER_WALL
            self.rise_height = self.carry_height - 0.01
        self.mover.reset()

    def _go(self, ee: np.ndarray, point: np.ndarray, grip: float, tol: float, nxt: str, v_max: float | None = None) -> np.ndarray:
        delta = self.mover.toward(ee, point, v_max=v_max)
        if np.linalg.norm(point - ee) < tol:
            self.phase = nxt
        return to_action(self.env, ee, delta, grip)

    def act(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        u = self.env.unwrapped
        state = obs["observation.state"].astype(np.float64)
        ee = state[u.state_layout["ee_pos"]]
        a = state[u.state_layout["cube_a_pos"]]
        b = state[u.state_layout["cube_b_pos"]]
        surface = u.surface_height
        carry_z = surface + self.carry_height
        p = self.phase
        if p == "approach":  # over to cube A at the start height, then straight down
            delta = self.mover.toward(ee, np.array([*a[:2], self.hover_z]), stop=False)
            if np.linalg.norm(a[:2] - ee[:2]) < 0.01:
                self.phase = "descend"
            return to_action(self.env, ee, delta, OPEN)
        if p == "descend":
            return self._go(ee, a + [0.0, 0.0, GRASP_UP], OPEN, 0.004, "grasp", v_max=0.01)
        if p == "grasp":
            self.wait += 1
            if self.wait >= CLOSE_STEPS:
                self.phase, self.wait = "lift", 0
            self.mover.reset()
            return to_action(self.env, ee, np.zeros(3), CLOSE)
        if p == "lift":  # rise first; head for cube B once A is well clear of the table
            if ee[2] < surface + self.rise_height:
                return to_action(self.env, ee, self.mover.toward(ee, np.array([*ee[:2], carry_z])), CLOSE)
            self.phase = p = "carry"
        if p == "carry":
            return self._go(ee, np.array([*b[:2], carry_z]), CLOSE, 0.006, "lower")
        if p == "lower":  # A's bottom just above B's top, B's centre under it
            hold = ee[2] - a[2]  # the grip site above A's centre, as grasped
            z = b[2] + CUBE_B_HALF + PLACE_CLEARANCE + CUBE_A_HALF + hold
            return self._go(ee, np.array([*b[:2], z]), CLOSE, 0.003, "release", v_max=0.008)
        if p == "release":
            self.wait += 1
            if self.wait >= RELEASE_STEPS:
                self.phase = "retreat"
            self.mover.reset()
            return to_action(self.env, ee, np.zeros(3), OPEN)
        return self._go(ee, np.array([*ee[:2], carry_z]), OPEN, 0.0, "retreat")
