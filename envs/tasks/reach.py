"""``reach``: bring the end effector (a pusher tip, no gripper) to a goal point in the air.

State task part: ``goal`` [3] (world). Action: [dx, dy, dz] (A = 3). Success: the ee site within
``GOAL_TOLERANCE`` of the goal. Episode limit 80 control steps (the expert needs 25-45).

Variants (parameters and defaults: :class:`ReachObstacle` and :mod:`policy_steer.envs.variants`):
``obstacle`` is a pillar (radius 2.5 cm) standing on the table at the horizontal midpoint
of the straight line from the start to the goal, its top 3.5 cm above that line; ``clutter`` puts three
distractors around the goal's foot, the first one on the approach side; ``moving-goal`` jumps the goal
at a step in [6, 14].
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import mujoco
import numpy as np

from policy_steer.envs.mujoco_task import Layout, MujocoTaskEnv
from policy_steer.scene import SceneObject
from policy_steer.envs.variants import Clutter, MovingGoal, SurfaceShift, VariantParams, param
from policy_steer.envs.world import distractors_xml, obstacle_xml

GOAL_TOLERANCE = 0.02
GOAL_BOX = (np.array([0.34, -0.24, 0.04]), np.array([0.55, 0.24, 0.16]))  # table frame
GOAL_XY_DISTANCE = (0.22, 0.34)  # horizontal distance start -> goal
GOAL_MAX_RADIUS = 0.5  # horizontal distance from the arm's base (table frame): reachable when shifted too
PILLAR_HALF_HEIGHT = 0.12  # the pillar stands sunk into the table: only its top part shows


@dataclass(frozen=True)
class ReachObstacle(VariantParams):
    """``obstacle`` on reach: a pillar at the horizontal midpoint of the straight start -> goal line, its
    top ``above_path`` above that line there (negative: below it, no longer in the way)."""

    group: ClassVar[str] = "obstacle"
    above_path: float = param(0.035, -0.05, 0.12, "the pillar's top above the straight start -> goal line at its midpoint")
    radius: float = param(0.025, 0.01, 0.05, "the pillar's radius")


class ReachEnv(MujocoTaskEnv):
    task = "reach"
    instruction = "move the end effector to the goal"
    end_effector = "pusher"
    task_slices = (("goal", 3),)
    default_max_episode_steps = 80
    default_variant_params: ClassVar[dict[str, VariantParams]] = {
        "obstacle": ReachObstacle(), "shifted-surface": SurfaceShift(), "clutter": Clutter(),
        "moving-goal": MovingGoal(step_min=6, step_max=14),
    }

    def bodies_xml(self) -> str:
        parts = ['<body name="goal" mocap="true" pos="0.4 0 0.1"><geom name="goal" class="marker" type="sphere" size="0.02" rgba=".9 .1 .1 .8"/></body>']
        p = self.variant_params
        if self.variant == "obstacle":
            parts.append(obstacle_xml(
                f'<geom name="obstacle" class="solid" type="cylinder" pos="0 0 {PILLAR_HALF_HEIGHT}" '
                f'size="{p.radius} {PILLAR_HALF_HEIGHT}" rgba=".75 .2 .2 1"/>'
            ))
        if self.variant == "clutter":
            parts.append(distractors_xml(p.count, self.distractor_height_scale))
        return "\n    ".join(parts)

    def _draw_goal(self, rng: np.random.Generator, start: np.ndarray) -> np.ndarray:
        """A goal in table coordinates (the nominal frame)."""
        for _ in range(1000):
            g = rng.uniform(*GOAL_BOX)
            near = GOAL_XY_DISTANCE[0] <= np.linalg.norm(g[:2] - start[:2]) <= GOAL_XY_DISTANCE[1]
            if near and np.linalg.norm(g[:2]) <= GOAL_MAX_RADIUS:
                return g
        raise RuntimeError("could not draw a reach goal")

    def sample_layout(self, base: np.random.Generator, shift: np.random.Generator) -> Layout:
        start = self.draw_start(base)
        goal_table = self._draw_goal(base, start)
        offset = self.draw_table_offset(shift)
        goal = goal_table + offset
        lay = Layout(table_offset=offset, ee_start=start, goal=goal)
        surface = offset[2]
        if self.variant == "obstacle":
            # The pillar stands in the table (its foot hidden below the top) so that its top is just
            # above the straight path: tall enough to block it, low enough for the forearm to pass
            # over it on a detour.
            mid = 0.5 * (start + goal)
            bottom = mid[2] + self.variant_params.above_path - 2 * PILLAR_HALF_HEIGHT
            lay.obstacle = np.array([mid[0], mid[1], bottom, 1.0, 0.0, 0.0, 0.0])
        elif self.variant == "clutter":
            approach = start[:2] - goal[:2]
            angle = float(np.arctan2(approach[1], approach[0]) + shift.uniform(-0.35, 0.35))
            lay.objects.update(self.distractor_poses(shift, goal, surface, first_angle=angle))
        elif self.variant == "moving-goal":
            prm = self.variant_params
            lay.goal_jump_step = int(shift.integers(prm.step_min, prm.step_max + 1))
            for _ in range(1000):
                new = self._draw_goal(shift, start)
                if np.linalg.norm(new - goal_table) >= prm.jump_min:
                    break
            lay.goal_after_jump = new + offset
        return lay

    def task_state(self, d: mujoco.MjData) -> np.ndarray:
        return self.goal_position(d)

    def success_of(self, d: mujoco.MjData) -> bool:
        return bool(np.linalg.norm(d.site_xpos[self._site] - self.goal_position(d)) < GOAL_TOLERANCE)

    def task_objects(self, d: mujoco.MjData):
        goal = [float(v) for v in self.goal_position(d)]
        objects = [SceneObject("goal", "goal", "sphere", goal, [GOAL_TOLERANCE] * 3)]
        return objects, {"goal": goal}
