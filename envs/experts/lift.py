"""Scripted lift (robosuite Panda): in low from the robot's side to just behind the cube, slide the open
fingers around it (the hand clear of its top), lower, close, lift past the target height. Every phase
re-reads the cube and the target, so a target height that jumps (``moving-goal``) is followed.

Measured on seeds 0-49 (delta actions): 50/50 on ``nominal``, ``shifted-surface``, ``clutter`` and
``moving-goal``; ``route="over"`` 50/50 on ``obstacle`` (the default route collides there by design).
About 50 control steps per episode (60 on ``moving-goal``)."""

from __future__ import annotations

from typing import Any

import numpy as np

from policy_steer.envs.experts.motion import SmoothMover, to_action
from policy_steer.envs.robosuite_lift import APPROACH_BACK, APPROACH_UP

OPEN, CLOSE = -1.0, 1.0
GRASP_UP = 0.003  # grip site above the cube centre when the fingers close
CLOSE_STEPS = 6  # control steps (0.3 s) to close the fingers before lifting
LIFT_MARGIN = 0.025  # the cube is lifted this far past the target height


class LiftExpert:
    """Observations -> actions [4] for :class:`~policy_steer.envs.robosuite_lift.LiftEnv` (either action mode).

    ``route="low"`` (the demonstrations): diagonally down to ``APPROACH_BACK`` behind the cube, then
    slide forward. ``route="over"``: across at the start height to above the cube, then straight down;
    it clears the ``obstacle`` variant's wall (which stands where the low route goes).
    """

    def __init__(self, v_max: float = 0.011, accel: float = 0.0015, route: str = "low") -> None:
        if route not in ("low", "over"):
            raise ValueError(f"route must be 'low' or 'over', got {route!r}")
        self.mover = SmoothMover(v_max, accel)
        self.route = route
        self.env: Any = None
        self.phase = "approach"
        self.wait = 0
        self.hover_z = 0.0

    def reset(self, env: Any, seed: int) -> None:
        self.env = env
        self.phase = "approach" if self.route == "low" else "over"
        self.wait = 0
        self.hover_z = float(env.unwrapped.ee_position()[2])
        self.mover.reset()

    def act(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        u = self.env.unwrapped
        state = obs["observation.state"].astype(np.float64)
        ee = state[u.state_layout["ee_pos"]]
        cube = state[u.state_layout["cube_pos"]]
        target = float(state[u.state_layout["target_height"]][0])
        grasp = cube + np.array([0.0, 0.0, GRASP_UP])
        p = self.phase
        if p == "over":  # across at the start height, then straight down to just above the grasp
            point = np.array([cube[0], cube[1], self.hover_z])
            delta = self.mover.toward(ee, point)
            if np.linalg.norm(point - ee) < 0.006:
                self.phase = "descend"
            return to_action(self.env, ee, delta, OPEN)
        if p == "descend":
            point = cube + np.array([0.0, 0.0, APPROACH_UP])
            delta = self.mover.toward(ee, point)
            if np.linalg.norm(point - ee) < 0.005:
                self.phase = "lower"
            return to_action(self.env, ee, delta, OPEN)
        if p == "approach":  # diagonally down to just behind the cube, fingers open, arriving at rest
            point = cube + np.array([-APPROACH_BACK, 0.0, APPROACH_UP])
            delta = self.mover.toward(ee, point)
            if np.linalg.norm(point - ee) < 0.006:
                self.phase = "slide"
            return to_action(self.env, ee, delta, OPEN)
        if p == "slide":  # forward, the hand above the cube's top and the fingers on either side of it
            point = cube + np.array([0.0, 0.0, APPROACH_UP])
            delta = self.mover.toward(ee, point, v_max=0.007)
            if np.linalg.norm(point - ee) < 0.005:
                self.phase = "lower"
            return to_action(self.env, ee, delta, OPEN)
        if p == "lower":
            delta = self.mover.toward(ee, grasp, v_max=0.005)
            if np.linalg.norm(grasp - ee) < 0.003:
                self.phase = "close"
            return to_action(self.env, ee, delta, OPEN)
        if p == "close":
            self.wait += 1
            if self.wait >= CLOSE_STEPS:
                self.phase = "lift"
            self.mover.reset()
            return to_action(self.env, ee, np.zeros(3), CLOSE)
        # lift (and hold): the hand rises until the cube's centre is LIFT_MARGIN above the target
        hold = ee[2] - cube[2]
        point = np.array([ee[0], ee[1], target + LIFT_MARGIN + hold])
        return to_action(self.env, ee, self.mover.toward(ee, point, v_max=0.01), CLOSE)
