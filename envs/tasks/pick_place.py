"""``pick-place``: grasp a cube with the parallel gripper and put it on a target.

State task part: ``cube_pos`` [3], ``cube_quat`` [4] (wxyz), ``target`` [3] (centre of the target
disc on the table top). Action: [dx, dy, dz, gripper] (A = 4; gripper > 0 closes, <= 0 opens).
Success: the cube's centre within ``TARGET_RADIUS`` of the target horizontally, resting on the table
(centre below ``CUBE_HALF + 0.005`` above the top) and released (gripper opening > 0.5).
Episode limit 150 control steps.

The cube and the target lie on opposite sides of the robot's centre line, at least 22 cm apart.

Variants (parameters and defaults: :class:`WallObstacle` and :mod:`policy_steer.envs.variants`):
``obstacle`` is a wall (by default 3 cm thick, 10 cm wide, 17 cm tall: taller than the demonstrations'
carry height of 12 cm) across the middle of the cube -> target line (40-60% of the way, where it is
farthest from the approach to the cube); ``clutter`` puts three distractors around the target;
``moving-goal`` moves the target at a step in [12, 28].
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
from policy_steer.errors import ConfigError

CUBE_HALF = 0.02
TARGET_RADIUS = 0.03
# Table frame. The cube and the target lie on opposite sides of the robot's centre line (y = 0), so the
# carry path crosses in front of the robot, away from the start, where the obstacle variant's wall goes.
CUBE_X, CUBE_ABS_Y = (0.38, 0.46), (0.12, 0.17)
TARGET_X, TARGET_ABS_Y = (0.36, 0.48), (0.10, 0.16)
TARGET_DISTANCE = 0.22  # minimum horizontal cube -> target distance
CARRY_HEIGHT = 0.12  # of the ee site above the table while the expert carries the cube


@dataclass(frozen=True)
class WallObstacle(VariantParams):
    """``obstacle`` on pick-place: a wall across the cube -> target line, at the point of
    [at_min, at_max] of the way that is farthest from the approach to the cube. The expert carries the
    cube with the ee site 12 cm above the table, the cube's bottom about 8 cm above it: a wall lower than
    that is no obstacle to the demonstrations, a taller one needs a carry they never made."""

    group: ClassVar[str] = "obstacle"
    height: float = param(0.17, 0.02, 0.26, "the wall's height above the table top")
    thickness: float = param(0.03, 0.01, 0.08, "the wall's thickness along the carry path")
    width: float = param(0.10, 0.02, 0.30, "the wall's width across the carry path")
    at_min: float = param(0.4, 0.1, 0.9, "nearest place of the wall on the cube -> target line (fraction)", unit="")
    at_max: float = param(0.6, 0.1, 0.9, "farthest place of the wall on the cube -> target line (fraction)", unit="")

    def check(self) -> None:
        if self.at_min > self.at_max:
            raise ConfigError(f"obstacle.at_min ({self.at_min:g}) must be <= obstacle.at_max ({self.at_max:g})")


class PickPlaceEnv(MujocoTaskEnv):
    task = "pick-place"
    instruction = "pick up the cube and place it on the target"
    end_effector = "gripper"
    task_slices = (("cube_pos", 3), ("cube_quat", 4), ("target", 3))
    default_max_episode_steps = 150
    default_variant_params: ClassVar[dict[str, VariantParams]] = {
        "obstacle": WallObstacle(), "shifted-surface": SurfaceShift(), "clutter": Clutter(),
        "moving-goal": MovingGoal(step_min=12, step_max=28),
    }
    home_ee = np.array([0.28, 0.0, 0.22])  # the gripper starts above the obstacle wall's height

    def manipulands(self) -> tuple[str, ...]:
        return ("cube",)

    def bodies_xml(self) -> str:
        parts = [
            f'<body name="cube" pos="0.45 0 {CUBE_HALF}"><freejoint name="cube"/>'
            f'<geom name="cube" class="object" type="box" size="{CUBE_HALF} {CUBE_HALF} {CUBE_HALF}" rgba=".85 .2 .15 1"/></body>',
            f'<body name="goal" mocap="true" pos="0.3 0 0"><geom name="goal" class="marker" type="cylinder" '
            f'pos="0 0 0.0008" size="{TARGET_RADIUS} 0.0008" rgba=".1 .8 .2 .9"/></body>',
        ]
        p = self.variant_params
        if self.variant == "obstacle":
            hx, hy, hz = p.thickness / 2, p.width / 2, p.height / 2
            parts.append(obstacle_xml(
                f'<geom name="obstacle" class="solid" type="box" pos="0 0 {hz}" size="{hx} {hy} {hz}" rgba=".75 .2 .2 1"/>'
            ))
        if self.variant == "clutter":
            parts.append(distractors_xml(p.count, self.distractor_height_scale))
        return "\n    ".join(parts)

    def _draw_target(self, rng: np.random.Generator, cube_xy: np.ndarray) -> np.ndarray:
        side = -np.sign(cube_xy[1])
        for _ in range(1000):
            t = np.array([rng.uniform(*TARGET_X), side * rng.uniform(*TARGET_ABS_Y)])
            if np.linalg.norm(t - cube_xy) >= TARGET_DISTANCE:
                return t
        raise RuntimeError("could not draw a pick-place target")

    def sample_layout(self, base: np.random.Generator, shift: np.random.Generator) -> Layout:
        start = self.draw_start(base)
        cube_xy = np.array([base.uniform(*CUBE_X), base.choice([-1.0, 1.0]) * base.uniform(*CUBE_ABS_Y)])
        yaw = base.uniform(-0.25, 0.25)
        target_xy = self._draw_target(base, cube_xy)
        offset = self.draw_table_offset(shift)
        surface = offset[2]
        lay = Layout(
            table_offset=offset, ee_start=start, goal=np.array([*(target_xy + offset[:2]), surface]),
            objects={"cube": np.concatenate([[*(cube_xy + offset[:2]), surface + CUBE_HALF], yaw_quat(yaw)])},
        )
        if self.variant == "obstacle":
            path = target_xy - cube_xy
            # Of the middle of the carry path, the point farthest from the approach (start -> cube).
            fractions = np.linspace(self.variant_params.at_min, self.variant_params.at_max, 9)
            clear = [_segment_distance(cube_xy + f * path, start[:2] - offset[:2], cube_xy) for f in fractions]
            mid = cube_xy + fractions[int(np.argmax(clear))] * path + offset[:2]
            lay.obstacle = np.concatenate([[mid[0], mid[1], surface], yaw_quat(float(np.arctan2(path[1], path[0])))])
        elif self.variant == "clutter":
            lay.objects.update(self.distractor_poses(shift, lay.goal, surface))
        elif self.variant == "moving-goal":
            prm = self.variant_params
            lay.goal_jump_step = int(shift.integers(prm.step_min, prm.step_max + 1))
            for _ in range(1000):
                new = self._draw_target(shift, cube_xy)
                if np.linalg.norm(new - target_xy) >= prm.jump_min:
                    break
            lay.goal_after_jump = np.array([*new, surface])
        return lay

    def task_state(self, d: mujoco.MjData) -> np.ndarray:
        return np.concatenate([self.body_pose(d, "cube"), self.goal_position(d)])

    def gripper_opening(self, d: mujoco.MjData) -> float:
        return float(self.state_of(d)[3])

    def success_of(self, d: mujoco.MjData) -> bool:
        cube = self.body_pose(d, "cube")
        target = self.goal_position(d)
        on_target = np.linalg.norm(cube[:2] - target[:2]) < TARGET_RADIUS
        resting = cube[2] < self.surface_height + CUBE_HALF + 0.005
        return bool(on_target and resting and self.gripper_opening(d) > 0.5)

    def task_objects(self, d: mujoco.MjData):
        cube = self.body_pose(d, "cube")
        target = self.goal_position(d)
        objects = [
            SceneObject("cube", "manipuland", "box", _f(cube[:3]), [CUBE_HALF] * 3, quat_yaw(cube[3:])),
            SceneObject("target", "target", "cylinder", _f(target), [TARGET_RADIUS, TARGET_RADIUS, 0.0008]),
        ]
        keypoints = {
            "cube": _f(cube[:3]), "cube_top": _f(cube[:3] + [0, 0, CUBE_HALF]), "target": _f(target),
            "place_point": _f(target + [0, 0, CUBE_HALF]), "gripper": _f(d.site_xpos[self._site]),
        }
        return objects, keypoints


def _segment_distance(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    t = np.clip(np.dot(p - a, b - a) / max(np.dot(b - a, b - a), 1e-12), 0.0, 1.0)
    return float(np.linalg.norm(p - (a + t * (b - a))))


def _f(v) -> list[float]:
    return [float(x) for x in v]
