"""Scripted reach: a straight, smoothly accelerated move to the goal (re-aimed every step, so it
follows a goal that moves).

On the ``obstacle`` variant the expert knows the pillar (privileged) and goes round it through a via
point beside it; on ``clutter`` it goes over to the goal above the distractors and comes down onto it:
an oracle of what steering should achieve. Everywhere else it goes straight.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from policy_steer.envs.experts.motion import SmoothMover, to_action

DETOUR = 0.12  # obstacle variant: the via point's distance from the pillar's axis
VIA_TOLERANCE = 0.02  # how close the via point is passed before heading for the goal


class ReachExpert:
    def __init__(self, v_max: float = 0.008, accel: float = 0.0015) -> None:
        self.mover = SmoothMover(v_max, accel)
        self.env: Any = None
        self.via: np.ndarray | None = None

    def reset(self, env: Any, seed: int) -> None:
        self.env = env
        self.mover.reset()
        self.via = None
        u = env.unwrapped
        if u.variant == "obstacle":
            start, goal = u.ee_position(), u.goal_position()
            pillar = np.array(u.scene().object("obstacle").position)
            t = (goal - start)[:2] / np.linalg.norm((goal - start)[:2])
            side = np.array([-t[1], t[0]])
            self.via = np.array([*(pillar[:2] + DETOUR * side), max(start[2], goal[2])])
        if u.variant == "clutter":
            start, goal = u.ee_position(), u.goal_position()
            tops = [o.position[2] + o.half_size[2] for o in u.scene().objects if o.kind == "distractor"]
            self.via = np.array([*goal[:2], max(start[2], goal[2], max(tops) + 0.05)])

    def act(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        u = self.env.unwrapped
        state = obs["observation.state"]
        ee = state[u.state_layout["ee_pos"]].astype(np.float64)
        goal = state[u.state_layout["goal"]].astype(np.float64)
        if self.via is not None:
            if np.linalg.norm(ee - self.via) < VIA_TOLERANCE:
                self.via = None
            else:
                return to_action(self.env, ee, self.mover.toward(ee, self.via, stop=False))
        return to_action(self.env, ee, self.mover.toward(ee, goal))
