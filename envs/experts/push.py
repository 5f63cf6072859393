"""Scripted push: go around the block on the seed's side (``layout.mode``: +1 the +y side, -1 the
-y side), come in behind it and push it to the target, steering the contact point every step.

On the ``obstacle`` variant the expert takes the free side instead (the pillar stands on the seed's
side), and on ``clutter`` it stays above the distractors until it is beside the block: privileged
knowledge, an oracle of what steering should achieve. Everywhere else it follows the seed, so the
recorded data holds both modes in about equal numbers.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from policy_steer.envs.experts.motion import SmoothMover, to_action
from policy_steer.envs.tasks.push import BLOCK_HALF, DETOUR, TIP_RADIUS, push_frame

PUSH_HEIGHT = 0.02  # tip centre above the table top while pushing (block centre is at 0.025)
BEHIND = BLOCK_HALF + TIP_RADIUS + 0.015  # where the tip stops behind the block before the push
PUSH_SPEED = 0.008  # metres per control step while pushing
REALIGN = 0.065  # radius of the circle the tip takes round the block to get behind it again
CLEAR_ABOVE = 0.04  # clutter: travel height of the tip above the tallest distractor


class PushExpert:
    def __init__(self, v_max: float = 0.012, accel: float = 0.003) -> None:
        self.mover = SmoothMover(v_max, accel)
        self.env: Any = None
        self.side = 1
        self.phase = 0
        self.travel_z: float | None = None

    def reset(self, env: Any, seed: int) -> None:
        self.env = env
        u = env.unwrapped
        self.side = int(u.layout.mode)
        if u.variant == "obstacle":
            self.side = -self.side
        self.travel_z = None
        if u.variant == "clutter":
            tops = [o.position[2] + o.half_size[2] for o in u.scene().objects if o.kind == "distractor"]
            self.travel_z = max(tops) + CLEAR_ABOVE
        self.phase = 0
        self.mover.reset()

    def act(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        u = self.env.unwrapped
        state = obs["observation.state"].astype(np.float64)
        ee = state[u.state_layout["ee_pos"]]
        block = state[u.state_layout["block_pos"]]
        target = state[u.state_layout["target"]]
        z = block[2] - BLOCK_HALF + PUSH_HEIGHT
        d, n = push_frame(block[:2], target[:2], self.side)
        waypoints = [
            (block[:2] + DETOUR * n + 0.03 * d, 0.02, False),  # beside the block, on the chosen side
            (block[:2] + DETOUR * n - 0.07 * d, 0.02, False),  # beside and behind
            (block[:2] - BEHIND * d, 0.006, True),  # behind, ready to push
        ]
        if self.travel_z is not None:  # clutter: over to the first waypoint above the distractors
            waypoints.insert(0, (waypoints[0][0], 0.02, False))
        if self.phase < len(waypoints):
            xy, tol, stop = waypoints[self.phase]
            point = np.array([*xy, self.travel_z if self.travel_z is not None and self.phase == 0 else z])
            delta = self.mover.toward(ee, point, stop=stop)
            if np.linalg.norm(ee - point) < tol:
                self.phase += 1
            return to_action(self.env, ee, delta)
        rel = ee[:2] - block[:2]
        off_line = _angle(rel, -d)
        if self.phase == len(waypoints) and off_line > np.radians(40):
            self.phase += 1  # the block turned away from the tip (or the target moved): circle round it
        if self.phase > len(waypoints):
            if off_line < np.radians(12):
                self.phase = len(waypoints) - 1  # behind it again: come in and push
            # Step along a circle of radius REALIGN around the block toward the side opposite the target.
            now = np.arctan2(rel[1], rel[0])
            want = np.arctan2(-d[1], -d[0])
            turn = (want - now + np.pi) % (2 * np.pi) - np.pi
            a = now + np.clip(turn, -0.35, 0.35)
            point = np.array([*(block[:2] + REALIGN * np.array([np.cos(a), np.sin(a)])), z])
            return to_action(self.env, ee, self.mover.toward(ee, point, stop=False))
        # Push: keep the tip on the block -> target line, just behind the block, and move along it,
        # slowing down as the block nears the target.
        contact = block[:2] - (BLOCK_HALF + TIP_RADIUS - 0.002) * d
        correction = contact - ee[:2]
        n_corr = np.linalg.norm(correction)
        if n_corr > 0.006:
            correction *= 0.006 / n_corr
        remaining = np.linalg.norm(target[:2] - block[:2])
        xy = correction + min(PUSH_SPEED, 0.5 * remaining + 0.002) * d
        delta = np.array([*xy, z - ee[2]])
        self.mover.v = delta
        return to_action(self.env, ee, delta)


def _angle(a: np.ndarray, b: np.ndarray) -> float:
    """Angle (radians) between two 2-D vectors."""
    c = np.dot(a, b) / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12)
    return float(np.arccos(np.clip(c, -1.0, 1.0)))
