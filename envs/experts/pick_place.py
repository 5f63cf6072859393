"""Scripted pick-and-place: over to the cube at the start height, down, close, lift, carry at
``CARRY_HEIGHT``, lower onto the target, open. Every phase re-reads the cube and the target, so a
target that moves is followed.

On the ``obstacle`` variant the expert knows the wall (privileged) and carries the cube over it,
rising straight up first; on ``clutter`` it carries the cube above the distractors and lets it drop
onto the target from there (opening the fingers low would knock them): an oracle of what steering
should achieve. Everywhere else it behaves as in the demonstrations.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from policy_steer.envs.experts.motion import SmoothMover, to_action
from policy_steer.envs.tasks.pick_place import CARRY_HEIGHT, CUBE_HALF

OPEN, CLOSE = -1.0, 1.0
PLACE_CLEARANCE = 0.006  # cube bottom above the table when it is let go
RISE_BEFORE_CARRY = 0.06  # the ee rises this high above the table before heading for the target
OVER_WALL = 0.08  # obstacle variant: carry height of the ee site above the wall's top


class PickPlaceExpert:
    def __init__(self, v_max: float = 0.02, accel: float = 0.005) -> None:
        self.mover = SmoothMover(v_max, accel)
        self.env: Any = None
        self.phase = "approach"
        self.wait = 0
        self.hover_z = 0.0
        self.carry_height, self.rise_height = CARRY_HEIGHT, RISE_BEFORE_CARRY
        self.release_clearance = PLACE_CLEARANCE

    def reset(self, env: Any, seed: int) -> None:
        self.env = env
        self.phase = "approach"
        self.wait = 0
        u = env.unwrapped
        self.hover_z = float(u.ee_position()[2])
        self.carry_height, self.rise_height = CARRY_HEIGHT, RISE_BEFORE_CARRY
        if u.variant == "obstacle":
            wall = u.scene().object("obstacle")
            self.carry_height = wall.position[2] + wall.half_size[2] - u.surface_height + OVER_WALL
            self.rise_height = self.carry_height - 0.01
        self.release_clearance = PLACE_CLEARANCE
        if u.variant == "clutter":
            top = max(o.position[2] + o.half_size[2] for o in u.scene().objects if o.kind == "distractor")
            self.release_clearance = top - u.surface_height + 0.01
            self.carry_height = max(CARRY_HEIGHT, self.release_clearance + 2 * CUBE_HALF + 0.03)
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
        cube = state[u.state_layout["cube_pos"]]
        target = state[u.state_layout["target"]]
        surface = u.surface_height
        carry_z = surface + self.carry_height
        p = self.phase
        if p == "approach":  # over to the cube at the start height, then straight down
            delta = self.mover.toward(ee, np.array([*cube[:2], self.hover_z]), stop=False)
            if np.linalg.norm(cube[:2] - ee[:2]) < 0.02:
                self.phase = "descend"
            return to_action(self.env, ee, delta, OPEN)
        if p == "descend":
            return self._go(ee, cube, OPEN, 0.005, "grasp", v_max=0.015)
        if p == "grasp":
            self.wait += 1
            if self.wait >= 3:
                self.phase, self.wait = "lift", 0
            self.mover.reset()
            return to_action(self.env, ee, np.zeros(3), CLOSE)
        if p == "lift":  # rise first; head for the target once the cube is well clear of the table
            if ee[2] < surface + self.rise_height:
                return to_action(self.env, ee, self.mover.toward(ee, np.array([*ee[:2], carry_z])), CLOSE)
            self.phase = p = "carry"
        if p == "carry":
            return self._go(ee, np.array([*target[:2], carry_z]), CLOSE, 0.008, "lower")
        if p == "lower":
            place = np.array([*target[:2], surface + CUBE_HALF + self.release_clearance])
            return self._go(ee, place, CLOSE, 0.004, "release", v_max=0.012)
        if p == "release":
            self.wait += 1
            if self.wait >= 3:
                self.phase = "retreat"
            self.mover.reset()
            return to_action(self.env, ee, np.zeros(3), OPEN)
        return self._go(ee, ee + [0, 0, 0.05], OPEN, 0.0, "retreat")
