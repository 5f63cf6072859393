"""``stack``: robosuite's Stack (Panda arm, OSC_POSE controller) behind the :class:`TaskEnv` contract.

Pick up the red cube A (4 cm) and set it down on the green cube B (5 cm), as robosuite's Stack. The
control, the robot state, the rollout and the rendering are those of every robosuite task here
(:mod:`policy_steer.envs.robosuite_panda`): 20 Hz, actions [dx, dy, dz, g] moving a commanded target of
the grip site, tracked by OSC_POSE with a fixed top-down hand (the fingers close along world y).

**State** (``observation.state``, float32 [25]): ``ee_pos`` [3], ``gripper`` [1], ``joint_pos`` [7], then
the task part (``observation.environment_state``, [14]): ``cube_a_pos`` [3], ``cube_a_quat`` [4] (wxyz),
``cube_b_pos`` [3], ``cube_b_quat`` [4]. World frame: robosuite's (table top at z = 0.8).

**Task.** Success: cube A rests on cube B and the robot lets go of it: A's centre within B's half width
(2.5 cm) of B's centre horizontally, A's bottom within ``STACK_TOLERANCE`` (4 mm) of B's top, A and B in
contact, and no finger touching A. A reset draws the arm's joints (robosuite's init pose + N(0, 0.02 rad))
and the cubes from the seed only: their midpoint within +-3 cm (x) / +-8 cm (y) of the table centre,
15-19 cm apart along a line within ``LINE_JITTER`` of the robot's facing direction (A nearer or farther
at random), each with a uniform yaw; then ``SETTLE_STEPS`` control steps turn the hand top-down and open
the fingers in place. The line runs along x because the hand is long along the fingers' closing axis
(world y, +-10 cm): across a wall between the cubes it is thin (+-3 cm). Episode limit 300 steps (the
scripted expert needs about 110). ``terminated`` on success or failure, ``truncated`` at the limit.

**Variants** (same seed -> same robot and cubes in every variant; the variant's extras come from a second
random stream; parameters: :class:`StackWall`, and :mod:`policy_steer.envs.variants`):

- ``shifted-surface``: the table (and both cubes on it) moved by (dx, dy, dz) (:class:`SurfaceShift`);
  the robot does not move.
- ``obstacle``: a wall standing on the table across the A -> B line, between the cubes (:class:`StackWall`:
  14 cm tall, 2 cm thick, 12 cm wide, at the middle): taller than the demonstrations carry the cube
  (the grip site 11 cm above the table, A's bottom about 8.5 cm). Contact of the robot or of cube A with it
  ends the episode, ``failure = "collision:obstacle"``. Carrying over it is free of it.
- ``clutter``: :class:`Clutter` distractors (``count`` boxes 5 cm tall, as tall as B) standing
  ``ring_min``-``ring_max`` from cube B, none within 60 degrees of the direction of A (where the cube comes
  from). Robot contact, or one moved by more than ``knock_distance``, ends the episode,
  ``failure = "collision:distractor"``.
- ``moving-goal``: at a seeded step in [``step_min``, ``step_max``] (20-45: while A is being grasped or
  lifted) cube B is moved to a new place at least ``jump_min`` (8 cm) from the old one and 12-22 cm from
  A's start (``info["goal_jump_step"]``); the state shows it there from that step on.

**Scene.** ``cube_a`` is the ``manipuland`` and ``cube_b`` the ``target`` (with the wall, the distractors and
the table): the offline VLS rules read the instruction ("pick up ... place it on ...") as a pick-and-place
onto the target's top, and carry over a wall on the way.
"""

from __future__ import annotations

# the shared Panda module first: it quiets robosuite's import-time warnings and sets MUJOCO_GL before mujoco loads
from policy_steer.envs.robosuite_panda import (  # noqa: I001
    CAMERAS,
    JOINT_NOISE,
    TABLE_FULL,
    TABLE_TOP,
    PandaTableEnv,
    PandaTableTask,
    body_geoms,
    floats,
    quat_yaw,
    robot_geoms,
    yaw_quat,
)

from dataclasses import dataclass  # noqa: E402
from typing import Any, ClassVar  # noqa: E402

import numpy as np  # noqa: E402
from robosuite.environments.manipulation.stack import Stack  # noqa: E402
from robosuite.models.objects import BoxObject  # noqa: E402
from robosuite.models.tasks import ManipulationTask  # noqa: E402
from robosuite.utils.mjcf_utils import CustomMaterial  # noqa: E402

from policy_steer.envs.variants import Clutter, MovingGoal, SurfaceShift, VariantParams, param, ring_positions, surface_offset  # noqa: E402
from policy_steer.errors import ConfigError  # noqa: E402
from policy_steer.scene import Scene, SceneObject  # noqa: E402

CUBE_A_HALF = 0.02  # robosuite's Stack: cube A (red, picked) is 4 cm
CUBE_B_HALF = 0.025  # cube B (green, the base) is 5 cm
MID_X, MID_Y = 0.03, 0.08  # midpoint of the two cubes within +-MID_X, +-MID_Y of the table centre
SEPARATION = (0.15, 0.19)  # distance between the cube centres
LINE_JITTER = 0.15  # rad: the A -> B line within this of the x axis (either way)
STACK_TOLERANCE = 0.004  # A's bottom within this of B's top
CARRY_HEIGHT = 0.11  # grip site above the table top while the demonstrations carry the cube (experts.stack)
DISTRACTOR_HALVES = ((0.012, 0.012, 0.025), (0.015, 0.012, 0.025), (0.013, 0.015, 0.025))
DISTRACTOR_RGBA = ((0.15, 0.35, 0.85, 1.0), (0.9, 0.75, 0.1, 1.0), (0.55, 0.25, 0.7, 1.0))
DISTRACTOR_FREE_HALF_ANGLE = np.pi / 3  # none within 60 degrees of the direction of A, seen from B
GOAL_XY = (0.12, 0.15)  # moving-goal: B's new place within +-x, +-y of the table centre
GOAL_FROM_A = (0.12, 0.22)  # ... this far from A's start


@dataclass(frozen=True)
class StackWall(VariantParams):
    """``obstacle`` on stack: a wall across the cube A -> cube B line, at a point of [at_min, at_max] of
    the way. The demonstrations carry the cube with the grip site ``CARRY_HEIGHT`` (11 cm) above the table,
    the cube's bottom about 8.5 cm above it: a wall lower than that is no obstacle to them."""

    group: ClassVar[str] = "obstacle"
    height: float = param(0.14, 0.02, 0.26, "the wall's height above the table top")
    thickness: float = param(0.02, 0.01, 0.04, "the wall's thickness along the A -> B line")
    width: float = param(0.12, 0.02, 0.30, "the wall's width across the A -> B line")
    at_min: float = param(0.45, 0.4, 0.6, "nearest place of the wall on the A -> B line (fraction)", unit="")
    at_max: float = param(0.55, 0.4, 0.6, "farthest place of the wall on the A -> B line (fraction)", unit="")

    def check(self) -> None:
        if self.at_min > self.at_max:
            raise ConfigError(f"obstacle.at_min ({self.at_min:g}) must be <= obstacle.at_max ({self.at_max:g})")


@dataclass
class StackLayout:
    """Everything a seeded reset draws. World-frame metres; quaternions wxyz."""

    table_offset: np.ndarray  # [3]
    joint_pos: np.ndarray  # [7] initial arm joints
    cube_a: np.ndarray  # [7] pos + quat of the cube to pick
    cube_b: np.ndarray  # [7] pos + quat of the cube to stack on
    wall: np.ndarray | None = None  # [4] centre xyz + yaw of the wall
    distractors: np.ndarray | None = None  # [n, 7] pos + quat
    goal_jump_step: int | None = None
    cube_b_after_jump: np.ndarray | None = None  # [7]


class _RobosuiteStack(PandaTableTask, Stack):
    """robosuite's Stack with our layouts, the variant's extra bodies, and contact watch."""

    def __init__(self, variant: str, variant_params: VariantParams | None = None, **kwargs: Any) -> None:
        self.variant = variant
        self.variant_params = variant_params
        self.layout: StackLayout | None = None
        self.contact_failure: str | None = None
        self._pair_code = None
        super().__init__(**kwargs)

    # ------------------------------------------------------------------ model
    def _load_model(self) -> None:
        arena = self.table_arena()  # Stack's own version draws a placement sampler we do not use
        wood = {"tex_attrib": {"type": "cube"}, "mat_attrib": {"texrepeat": "1 1", "specular": "0.4", "shininess": "0.1"}}
        red = CustomMaterial(texture="WoodRed", tex_name="redwood", mat_name="redwood_mat", **wood)
        green = CustomMaterial(texture="WoodGreen", tex_name="greenwood", mat_name="greenwood_mat", **wood)
        self.cubeA = BoxObject(name="cubeA", size=[CUBE_A_HALF] * 3, rgba=[1, 0, 0, 1], material=red)
        self.cubeB = BoxObject(name="cubeB", size=[CUBE_B_HALF] * 3, rgba=[0, 1, 0, 1], material=green)
        objects = [self.cubeA, self.cubeB]
        self.wall = None
        self.distractors: list[BoxObject] = []
        p = self.variant_params
        if self.variant == "obstacle":
            self.wall = BoxObject(name="obstacle", size=[p.thickness / 2, p.width / 2, p.height / 2], rgba=[0.45, 0.45, 0.5, 1], joints=None)
            objects.append(self.wall)
        if self.variant == "clutter":
            self.distractors = [
                BoxObject(name=f"distractor_{i}", size=list(DISTRACTOR_HALVES[i % 3]), rgba=list(DISTRACTOR_RGBA[i % 3]))
                for i in range(p.count)
            ]
            objects += self.distractors
        self.model = ManipulationTask(mujoco_arena=arena, mujoco_robots=[r.robot_model for r in self.robots], mujoco_objects=objects)

    def _setup_references(self) -> None:
        super()._setup_references()
        if hasattr(self, "table_body_pos0"):  # robosuite calls this on every reset; the model never changes
            return
        m = self.sim.model._model
        self.table_references(m)
        self.wall_body_id = m.body(self.wall.root_body).id if self.wall is not None else None
        self.distractor_body_ids = [m.body(d.root_body).id for d in self.distractors]
        robot = robot_geoms(m)
        self.finger_geoms = [g for g in robot if m.body(m.geom_bodyid[g]).name.startswith("gripper0")]
        self.cube_a_geoms = body_geoms(m, self.cubeA_body_id)
        self.cube_b_geoms = body_geoms(m, self.cubeB_body_id)
        pairs = []
        if self.wall_body_id is not None:
            pairs.append((robot + self.cube_a_geoms, body_geoms(m, self.wall_body_id), "collision:obstacle"))
        for bid in self.distractor_body_ids:
            pairs.append((robot, body_geoms(m, bid), "collision:distractor"))
        self.watch_contacts(m, pairs)

    # ------------------------------------------------------------------ reset (PandaTableTask._reset_internal calls place)
    def place(self, lay: StackLayout) -> None:
        """Apply a layout to the model and data (table pose, cubes, wall, distractors)."""
        m, d = self.sim.model._model, self.sim.data._data
        self.shift_table(lay.table_offset)
        self.sim.data.set_joint_qpos(self.cubeA.joints[0], lay.cube_a)
        self.sim.data.set_joint_qpos(self.cubeB.joints[0], lay.cube_b)
        if self.wall_body_id is not None and lay.wall is not None:
            m.body_pos[self.wall_body_id] = lay.wall[:3]
            m.body_quat[self.wall_body_id] = yaw_quat(float(lay.wall[3]))
        if lay.distractors is not None:
            for obj, pose in zip(self.distractors, lay.distractors):
                self.sim.data.set_joint_qpos(obj.joints[0], pose)
        d.qvel[:] = 0.0

    def move_cube_b(self, pose: np.ndarray) -> None:
        """Put cube B at ``pose`` [7] (pos + quat) at rest: the moving-goal jump."""
        self.sim.data.set_joint_qpos(self.cubeB.joints[0], pose)
        adr = self.sim.model._model.jnt_dofadr[self.sim.model._model.joint(self.cubeB.joints[0]).id]
        self.sim.data._data.qvel[adr : adr + 6] = 0.0



class StackEnv(PandaTableEnv):
    """robosuite Stack behind the :class:`TaskEnv` contract; see the module docstring."""

    task: ClassVar[str] = "stack"
    instruction = "pick up the red cube and place it on the green cube"
    default_max_episode_steps: ClassVar[int] = 300
    default_variant_params: ClassVar[dict[str, VariantParams]] = {
        "obstacle": StackWall(), "shifted-surface": SurfaceShift(), "clutter": Clutter(),
        "moving-goal": MovingGoal(step_min=20, step_max=45),
    }
    robosuite_class: ClassVar[type] = _RobosuiteStack
    task_slices: ClassVar[tuple[tuple[str, int], ...]] = (("cube_a_pos", 3), ("cube_a_quat", 4), ("cube_b_pos", 3), ("cube_b_quat", 4))

    def __init__(self, variant: str = "nominal", **kwargs: Any) -> None:
        super().__init__(variant, **kwargs)
        self.layout: StackLayout | None = None
        self._cube_a = self._rs.cubeA_body_id
        self._cube_b = self._rs.cubeB_body_id

    def _robosuite_options(self) -> dict[str, Any]:
        return {"variant_params": self.variant_params}

    # ----------------------------------------------------------------- layout
    def sample_layout(self, base: np.random.Generator, shift: np.random.Generator) -> StackLayout:
        """The base problem (robot, cubes) from ``base``; the variant's extras from ``shift``."""
        joints = self._init_qpos + base.normal(0.0, JOINT_NOISE, size=7)
        mid = np.array([base.uniform(-MID_X, MID_X), base.uniform(-MID_Y, MID_Y)])
        sep = float(base.uniform(*SEPARATION))
        angle = float(base.uniform(-LINE_JITTER, LINE_JITTER)) + (np.pi if base.uniform() < 0.5 else 0.0)
        u = np.array([np.cos(angle), np.sin(angle)])  # A -> B
        yaw_a, yaw_b = base.uniform(0.0, 2 * np.pi, size=2)
        p = self.variant_params
        off = surface_offset(shift, p) if self.variant == "shifted-surface" else np.zeros(3)
        top = TABLE_TOP + off[2]
        a_xy, b_xy = off[:2] + mid - sep / 2 * u, off[:2] + mid + sep / 2 * u
        lay = StackLayout(
            table_offset=off, joint_pos=joints,
            cube_a=np.array([*a_xy, top + CUBE_A_HALF, *yaw_quat(yaw_a)]),
            cube_b=np.array([*b_xy, top + CUBE_B_HALF, *yaw_quat(yaw_b)]),
        )
        if self.variant == "obstacle":
            at = float(shift.uniform(p.at_min, p.at_max))
            xy = a_xy + at * (b_xy - a_xy)
            lay.wall = np.array([*xy, top + p.height / 2, angle])
        elif self.variant == "clutter":
            xy = ring_positions(shift, lay.cube_b[:3], p.count, (p.ring_min, p.ring_max), p.spacing, a_xy - b_xy, DISTRACTOR_FREE_HALF_ANGLE)
            yaws = shift.uniform(-np.pi, np.pi, size=p.count)
            halves = [DISTRACTOR_HALVES[i % 3] for i in range(p.count)]
            lay.distractors = np.array([[*q, top + h[2], *yaw_quat(a)] for q, h, a in zip(xy, halves, yaws)])
        elif self.variant == "moving-goal":
            lay.goal_jump_step = int(shift.integers(p.step_min, p.step_max + 1))
            for _ in range(1000):
                q = off[:2] + shift.uniform(-1.0, 1.0, size=2) * GOAL_XY
                if GOAL_FROM_A[0] <= np.linalg.norm(q - a_xy) <= GOAL_FROM_A[1] and np.linalg.norm(q - b_xy) >= p.jump_min:
                    break
            else:
                raise ConfigError(f"goal.jump_min = {p.jump_min:g} leaves no place for cube B on the table")
            lay.cube_b_after_jump = np.array([*q, top + CUBE_B_HALF, *lay.cube_b[3:]])
        return lay

    # ----------------------------------------------------------------- the episode's task parts
    def _jump_goal(self, lay: StackLayout) -> None:
        self._rs.move_cube_b(lay.cube_b_after_jump)

    def _knock_distance(self) -> float:
        return self.variant_params.knock_distance  # only clutter has distractors: its parameters

    # ----------------------------------------------------------------- state, success
    def _task_state(self) -> list[np.ndarray]:
        d = self.data
        return [d.xpos[self._cube_a], d.xquat[self._cube_a], d.xpos[self._cube_b], d.xquat[self._cube_b]]

    def cube_positions(self) -> tuple[np.ndarray, np.ndarray]:
        """float64 ([3], [3]) the centres of cube A and cube B."""
        return self.data.xpos[self._cube_a].copy(), self.data.xpos[self._cube_b].copy()

    def _touching(self, geoms_a: list[int], geoms_b: list[int]) -> bool:
        d = self.data
        if not d.ncon:
            return False
        g = d.contact.geom[: d.ncon]
        a, b = np.isin(g[:, 0], geoms_a), np.isin(g[:, 1], geoms_b)
        a2, b2 = np.isin(g[:, 1], geoms_a), np.isin(g[:, 0], geoms_b)
        return bool(np.any((a & b) | (a2 & b2)))

    def stacked(self) -> bool:
        """Cube A rests on cube B (centred within B's half width, bottom on B's top, in contact)."""
        a, b = self.cube_positions()
        on_top = abs((a[2] - CUBE_A_HALF) - (b[2] + CUBE_B_HALF)) < STACK_TOLERANCE
        centred = np.linalg.norm(a[:2] - b[:2]) < CUBE_B_HALF
        return bool(on_top and centred and self._touching(self._rs.cube_a_geoms, self._rs.cube_b_geoms))

    def success(self) -> bool:
        return self.stacked() and not self._touching(self._rs.finger_geoms, self._rs.cube_a_geoms)

    # ----------------------------------------------------------------- scene
    def scene(self) -> Scene:
        d = self.data
        off = self.table_offset
        hx, hy, hz = (s / 2 for s in TABLE_FULL)
        top = self.surface_height
        objects = [SceneObject("table", "table", "box", floats([off[0], off[1], top - hz]), [hx, hy, hz])]
        a, b = self.cube_positions()
        objects.append(SceneObject("cube_a", "manipuland", "box", floats(a), [CUBE_A_HALF] * 3, quat_yaw(d.xquat[self._cube_a])))
        objects.append(SceneObject("cube_b", "target", "box", floats(b), [CUBE_B_HALF] * 3, quat_yaw(d.xquat[self._cube_b])))
        if self._rs.wall_body_id is not None:
            p = self.variant_params
            wall = d.xpos[self._rs.wall_body_id]
            objects.append(SceneObject("obstacle", "obstacle", "box", floats(wall), [p.thickness / 2, p.width / 2, p.height / 2], quat_yaw(d.xquat[self._rs.wall_body_id])))
        for i, bid in enumerate(self._rs.distractor_body_ids):
            objects.append(SceneObject(f"distractor_{i}", "distractor", "box", floats(d.xpos[bid]), list(DISTRACTOR_HALVES[i % 3]), quat_yaw(d.xquat[bid])))
        ee = d.site_xpos[self._site]
        keypoints = {
            "ee": floats(ee),
            "cube_a": floats(a),
            "cube_b": floats(b),
            "cube_b_top": floats(b + [0, 0, CUBE_B_HALF]),
            "stack_point": floats(b + [0, 0, CUBE_B_HALF + CUBE_A_HALF]),  # where A's centre ends
        }
        low, high = self.workspace()
        return Scene(
            task=self.task, variant=self.variant, instruction=self.instruction, objects=objects, keypoints=keypoints,
            surface_height=top, workspace_low=floats(low), workspace_high=floats(high), ee_position=floats(ee),
            gripper_opening=float(self._state()[3]),
        )


# CAMERAS: our camera names -> robosuite's (the synthesize command reads it from the env's module)
__all__ = ["CAMERAS", "CARRY_HEIGHT", "CUBE_A_HALF", "CUBE_B_HALF", "STACK_TOLERANCE", "StackEnv", "StackLayout", "StackWall"]
