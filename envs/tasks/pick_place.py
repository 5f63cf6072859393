"""``pick-place``: grasp a cube with the parallel gripper and put it on a target.

State task part: ``cube_pos`` [3], ``cube_quat`` [4] (wxyz), ``target`` [3] (centre of the target
disc on the table top). Action: [dx, dy, dz, gripper] (A = 4; gripper > 0 closes, <= 0 opens).
Success: the cube's centre within ``TARGET_RADIUS`` of the target horizontally, resting on the table
(centre below ``CUBE_HALF + 0.005`` above the top) and released (gripper opening > 0.5).
Episode limit 150 control steps.

The cube and the target lie on opposite sides of the robot's centre line, at least 22 cm apart.

Variants: ``obstacle`` is a wall (3 cm thick, 10 cm wide, 17 cm tall: taller than the
demonstrations' carry height of 12 cm) across the middle of the cube -> target line
(40-60% of the way, where it is farthest from the approach to the cube); ``clutter``
puts three distractors around the target; ``moving-goal`` moves the target at a step in [12, 28].
"""

from __future__ import annotations

import mujoco
import numpy as np

from policy_steer.envs.mujoco_task import Layout, MujocoTaskEnv, quat_yaw, yaw_quat
from policy_steer.scene import SceneObject
from policy_steer.envs.variants import SHIFTS
from policy_steer.envs.world import distractors_xml, obstacle_xml

CUBE_HALF = 0.02
TARGET_RADIUS = 0.03
# Table frame. The cube and the target lie on opposite sides of the robot's centre line (y = 0), so the
# carry path crosses in front of the robot, away from the start, where the obstacle variant's wall goes.
CUBE_X, CUBE_ABS_Y = (0.38, 0.46), (0.12, 0.17)
TARGET_X, TARGET_ABS_Y = (0.36, 0.48), (0.10, 0.16)
TARGET_DISTANCE = 0.22  # minimum horizontal cube -> target distance
WALL_AT = (0.4, 0.6)  # the wall's place on the cube -> target line (fraction): the farthest from the approach
CARRY_HEIGHT = 0.12  # of the ee site above the table while the expert carries the cube
WALL_HALF = (0.015, 0.05, 0.085)


class PickPlaceEnv(MujocoTaskEnv):
    task = "pick-place"
    instruction = "pick up the cube and place it on the target"
    end_effector = "gripper"
    task_slices = (("cube_pos", 3), ("cube_quat", 4), ("target", 3))
    default_max_episode_steps = 150
    goal_jump_steps = (12, 28)
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
        if self.variant == "obstacle":
            hx, hy, hz = WALL_HALF
            parts.append(obstacle_xml(
                f'<geom name="obstacle" class="solid" type="box" pos="0 0 {hz}" size="{hx} {hy} {hz}" rgba=".75 .2 .2 1"/>'
            ))
        if self.variant == "clutter":
            parts.append(distractors_xml(SHIFTS.n_distractors, self.distractor_height_scale))
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
            fractions = np.linspace(*WALL_AT, 9)
            clear = [_segment_distance(cube_xy + f * path, start[:2] - offset[:2], cube_xy) for f in fractions]
            mid = cube_xy + fractions[int(np.argmax(clear))] * path + offset[:2]
            lay.obstacle = np.concatenate([[mid[0], mid[1], surface], yaw_quat(float(np.arctan2(path[1], path[0])))])
        elif self.variant == "clutter":
            lay.objects.update(self.distractor_poses(shift, lay.goal, surface))
        elif self.variant == "moving-goal":
            lay.goal_jump_step = int(shift.integers(self.goal_jump_steps[0], self.goal_jump_steps[1] + 1))
            for _ in range(1000):
                new = self._draw_target(shift, cube_xy)
                if np.linalg.norm(new - target_xy) >= SHIFTS.goal_jump_min:
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
