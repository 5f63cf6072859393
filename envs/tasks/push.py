"""``push``: push a block into a target region with a pusher tip (no gripper).

State task part: ``block_pos`` [3], ``block_quat`` [4] (wxyz), ``target`` [3] (centre of the target
disc on the table top). Action: [dx, dy, dz] (A = 3). Success: the block's centre within
``TARGET_RADIUS`` (horizontally) of the target. Episode limit 150 control steps.

The block starts beyond the target as seen from the robot, so the tip has to get behind it: the
demonstration of a seed goes around the block on the +y side or on the -y side (``Layout.mode``,
drawn from the seed independently of the positions, so the data is bimodal given the state).

Variants (parameters and defaults: :class:`PushObstacle` and :mod:`policy_steer.envs.variants`): ``obstacle``
is a pillar beside the block on the side the demonstration of this seed goes around (a policy that picks
that mode hits it; the other side is free); ``clutter`` puts three distractors around the target, leaving
clear a 90-degree sector toward where the block comes from; ``moving-goal`` moves the target at a step in
[8, 20] to another place on the robot's side of the block.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import mujoco
import numpy as np

from policy_steer.envs.mujoco_task import Layout, MujocoTaskEnv, quat_yaw, yaw_quat
from policy_steer.scene import SceneObject
from policy_steer.envs.variants import Clutter, MovingGoal, SurfaceShift, VariantParams, param
from policy_steer.envs.world import distractors_xml, obstacle_xml

BLOCK_HALF = 0.025
TARGET_RADIUS = 0.03
TIP_RADIUS = 0.015
BLOCK_BOX = (np.array([0.42, -0.08]), np.array([0.48, 0.08]))  # table frame, xy
TARGET_BACK = (0.12, 0.16)  # target = block - (back, lateral) in x, y
TARGET_LATERAL = (-0.06, 0.06)
DETOUR = 0.075  # lateral distance of the demonstrations' detour from the block centre (the pillar's default place)


@dataclass(frozen=True)
class PushObstacle(VariantParams):
    """``obstacle`` on push: a pillar standing on the table beside the block, on the side the demonstration
    of this seed goes around. The tip pushes at 2 cm and goes round the block at that height; the hand and
    wrist pass 7.5-15 cm above the tip, so a pillar taller than about 8 cm is in their way too."""

    group: ClassVar[str] = "obstacle"
    height: float = param(0.12, 0.02, 0.30, "the pillar's height above the table top")
    radius: float = param(0.025, 0.01, 0.05, "the pillar's radius")
    lateral: float = param(DETOUR, 0.05, 0.15, "the pillar's distance from the block centre, sideways to the push")
    along: float = param(-0.02, -0.08, 0.08, "the pillar's offset along the push direction (block -> target)")


def push_frame(block_xy: np.ndarray, target_xy: np.ndarray, side: int) -> tuple[np.ndarray, np.ndarray]:
    """(u, n): unit push direction (block -> target) and the unit normal toward the detour ``side``
    (+1: the side with larger world y)."""
    u = target_xy - block_xy
    u = u / max(np.linalg.norm(u), 1e-9)
    n = np.array([-u[1], u[0]])
    if n[1] < 0:
        n = -n
    return u, side * n


class PushEnv(MujocoTaskEnv):
    task = "push"
    instruction = "push the block into the target region"
    end_effector = "pusher"
    task_slices = (("block_pos", 3), ("block_quat", 4), ("target", 3))
    default_max_episode_steps = 150
    default_variant_params: ClassVar[dict[str, VariantParams]] = {
        "obstacle": PushObstacle(), "shifted-surface": SurfaceShift(), "clutter": Clutter(),
        "moving-goal": MovingGoal(step_min=8, step_max=20),
    }

    def manipulands(self) -> tuple[str, ...]:
        return ("block",)

    def bodies_xml(self) -> str:
        parts = [
            f'<body name="block" pos="0.45 0 {BLOCK_HALF}"><freejoint name="block"/>'
            f'<geom name="block" class="object" type="box" size="{BLOCK_HALF} {BLOCK_HALF} {BLOCK_HALF}" density="800" rgba=".15 .45 .85 1"/></body>',
            f'<body name="goal" mocap="true" pos="0.3 0 0"><geom name="goal" class="marker" type="cylinder" '
            f'pos="0 0 0.0008" size="{TARGET_RADIUS} 0.0008" rgba=".1 .8 .2 .9"/></body>',
        ]
        p = self.variant_params
        if self.variant == "obstacle":
            half = p.height / 2
            parts.append(obstacle_xml(
                f'<geom name="obstacle" class="solid" type="cylinder" pos="0 0 {half}" '
                f'size="{p.radius} {half}" rgba=".75 .2 .2 1"/>'
            ))
        if self.variant == "clutter":
            parts.append(distractors_xml(p.count, self.distractor_height_scale))
        return "\n    ".join(parts)

    def _draw_target(self, rng: np.random.Generator, block_xy: np.ndarray) -> np.ndarray:
        return block_xy + np.array([-rng.uniform(*TARGET_BACK), rng.uniform(*TARGET_LATERAL)])

    def sample_layout(self, base: np.random.Generator, shift: np.random.Generator) -> Layout:
        start = self.draw_start(base)
        block_xy = base.uniform(*BLOCK_BOX)
        yaw = base.uniform(-0.3, 0.3)
        target_xy = self._draw_target(base, block_xy)
        side = int(base.choice([-1, 1]))
        offset = self.draw_table_offset(shift)
        surface = offset[2]
        block_xy, target_xy = block_xy + offset[:2], target_xy + offset[:2]
        lay = Layout(
            table_offset=offset, ee_start=start, goal=np.array([*target_xy, surface]),
            objects={"block": np.concatenate([[*block_xy, surface + BLOCK_HALF], yaw_quat(yaw)])}, mode=side,
        )
        if self.variant == "obstacle":
            u, n = push_frame(block_xy, target_xy, side)
            prm = self.variant_params
            p = block_xy + prm.lateral * n + prm.along * u
            lay.obstacle = np.array([p[0], p[1], surface, 1.0, 0.0, 0.0, 0.0])
        elif self.variant == "clutter":
            lay.objects.update(self.distractor_poses(
                shift, lay.goal, surface, free_direction=block_xy - target_xy, free_half_angle=np.radians(45),
            ))
        elif self.variant == "moving-goal":
            prm = self.variant_params
            lay.goal_jump_step = int(shift.integers(prm.step_min, prm.step_max + 1))
            for _ in range(1000):
                new = self._draw_target(shift, block_xy)
                if np.linalg.norm(new - target_xy) >= prm.jump_min:
                    break
            lay.goal_after_jump = np.array([*new, surface])
        return lay

    def task_state(self, d: mujoco.MjData) -> np.ndarray:
        return np.concatenate([self.body_pose(d, "block"), self.goal_position(d)])

    def success_of(self, d: mujoco.MjData) -> bool:
        block = self.body_pose(d, "block")
        return bool(np.linalg.norm(block[:2] - self.goal_position(d)[:2]) < TARGET_RADIUS)

    def task_objects(self, d: mujoco.MjData):
        block = self.body_pose(d, "block")
        target = self.goal_position(d)
        u, _ = push_frame(block[:2], target[:2], 1)
        face = np.array([*(block[:2] - BLOCK_HALF * u), block[2]])  # the face to push on (opposite the target)
        objects = [
            SceneObject("block", "manipuland", "box", _f(block[:3]), [BLOCK_HALF] * 3, quat_yaw(block[3:])),
            SceneObject("target", "target", "cylinder", _f(target), [TARGET_RADIUS, TARGET_RADIUS, 0.0008]),
        ]
        keypoints = {"block": _f(block[:3]), "block_push_face": _f(face), "target": _f(target), "pusher_tip": _f(d.site_xpos[self._site])}
        return objects, keypoints


def _f(v) -> list[float]:
    return [float(x) for x in v]
