"""``lift``: robosuite's Lift (Panda arm, OSC_POSE controller) behind the :class:`TaskEnv` contract.

The control, the rollout and the rendering below are shared with ``stack`` and live in
:mod:`policy_steer.envs.robosuite_panda`; this module holds Lift's objects, layout, variants, success and scene.

robosuite is used for the model (arena, Panda, gripper, objects), the physics loop and the operational
space controller; this module adds what our tasks share: a gymnasium API (5-tuple ``step``, seeded
``reset``, spaces), our observation keys, metre-unit end-effector actions, the shift variants, a scene
description and a model rollout.

**Control.** 20 Hz (robosuite's Lift default): one control step is 25 physics steps of 2 ms. An
action [dx, dy, dz, g] moves a *commanded target* ``r`` of the grip site (between the finger pads):
``r_k = r_{k-1} + clip(a[:3], +-max_step)`` (delta mode) or ``r_k = a[:3]`` (absolute mode), clipped
to the workspace box and kept within ``MAX_LAG`` of the measured end effector (so an arm that is
blocked does not wind up). robosuite's OSC_POSE gets, in its normalised input units,
``clip((r_k + LEAD * v_k - ee) / OSC_POS_SCALE, -1, 1)`` with ``OSC_POS_SCALE`` = 0.05 m (the
controller's ``output_max``: input 1 = 5 cm), ``v_k`` the target's velocity and ``LEAD`` =
2/sqrt(kp) - dt/2 s (velocity feed-forward, which OSC lacks: the steady lag of a critically damped
servo at constant speed, less the half step by which a stepwise target already leads), and for
rotation the axis-angle error to a fixed top-down grasp orientation divided by 0.5 rad (so the
hand never tilts or turns: "no rotation change"). The gain is ``OSC_KP`` = 2000 instead of robosuite's
150: with 150 the hand lags its target by several centimetres at 0.2 m/s. Gripper: > 0 closes,
<= 0 opens (robosuite's -1 / +1).

So an action chunk maps to ``ee_start + cumsum(actions[:, :3])`` (delta mode;
:func:`policy_steer.envs.trajectory.ee_trajectory`). Measured over every 16-step window, in free
motion: within 2 mm on the scripted demonstrations; within ``TRACKING_TOLERANCE`` (2 cm) on jerky
random actions at the full ``max_step`` (max about 17 mm, mean about 7 mm: the Panda's 80 N m
shoulder torque limit bounds fast downward accelerations). Contact (the table, a held cube pressed
down, an obstacle) makes the arm fall short of the map; the workspace box clips targets.

**State** (``observation.state``, float32 [19]): ``ee_pos`` [3] (grip site, world metres),
``gripper`` [1] (finger opening, 0 closed .. 1 open), ``joint_pos`` [7], then the task part
(``observation.environment_state``, [8]): ``cube_pos`` [3], ``cube_quat`` [4] (wxyz), ``target_height``
[1] (world z the cube's centre must exceed). World frame: robosuite's (table top at z = 0.8, table
centre at x = y = 0, robot base at x = -0.56, facing +x).

**Task.** Success: the cube's centre above ``target_height`` = table top + ``LIFT_HEIGHT`` (4 cm, as
robosuite's Lift). A reset draws the arm's joints (robosuite's init pose + N(0, 0.02 rad)) and the cube
(x, y uniform in +-3 cm of the table centre, yaw uniform), from the seed only, then runs
``SETTLE_STEPS`` control steps that turn the hand top-down and open the fingers in place (so every
episode starts at rest in the same hand pose). Episode limit 200 steps (the scripted expert needs
about 50, 60 on ``moving-goal``). The green translucent plate marks the target height over the
cube's start. ``terminated`` on success or failure, ``truncated`` at the limit.

**Variants** (same seed -> same robot and cube in every variant; the variant's extras come from a
second random stream; ranges in :mod:`policy_steer.envs.variants` where shared):

- ``shifted-surface``: the table (and the cube on it) moved by (dx, dy, dz), |dx|, |dy| in 2-5 cm,
  |dz| in 2-4 cm, random signs; the robot does not move. Done by moving the table body in the compiled
  model (``MjModel.body_pos``), so no reload per episode.
- ``obstacle``: a fixed wall standing on the table behind the cube (between the robot and the cube),
  ``OBSTACLE_HALF`` = 1.2 x 5 x 4 cm half extents, its centre 8-9 cm behind the cube centre: exactly
  where the demonstrations come in low before sliding the open fingers around the cube. Robot contact
  with it (checked every physics step) ends the episode, ``failure = "collision:obstacle"``. Coming in
  from above is free of it.
- ``clutter``: three free boxes (2.4-3 cm wide, 3 cm tall) standing 9-11 cm from the cube, none within
  75 degrees of the robot side (where the open fingers come in). Robot contact, or one moved by more
  than 1 cm, ends the episode, ``failure = "collision:distractor"``.
- ``moving-goal``: at a step in [10, 25] ``target_height`` jumps from 4 cm to 12-16 cm above the table
  (``info["goal_jump_step"]``); the plate moves with it.

**Rollout.** :meth:`LiftEnv.rollout` snapshots the simulator (``mujoco.mj_copyData`` of MjData into a
spare buffer) plus the few Python-side states robosuite keeps (gripper ramp, OSC goals, robot history
buffers) and ours, steps the real simulator, and restores everything: stepping afterwards is
bit-identical to never having rolled out. Cost: the steps themselves (about 3.5 ms each on an idle
core here) plus about 0.1-0.3 ms for snapshot and restore; no second robosuite env is built. Because
it borrows the live simulator, do not call it from one thread while another steps the env.

**Rendering.** Cameras ``front`` (robosuite's ``agentview``) and ``wrist`` (``robot0_eye_in_hand``)
through ``mujoco.Renderer`` with EGL (``MUJOCO_GL=egl``, set here when unset, before mujoco is
imported), on Mesa's llvmpipe; ``MUJOCO_GL=osmesa`` also works here (``libosmesa6``). Reflections
are switched off (they double the cost and are invisible at these sizes): on an idle core about 12 ms
per 96x96 frame against about 3.5 ms for a control step of physics (a camera cuts 280 steps/s to
about 65); a renderer costs about 1 s to create (robosuite's textures), once per image size.
"""

from __future__ import annotations

# the shared Panda control, rollout and rendering first: it quiets robosuite's import-time warnings and sets
# MUJOCO_GL before mujoco is imported. Its constants stay importable from here.
from policy_steer.envs.robosuite_panda import (  # noqa: I001
    ACTION_MODES,
    ARM_JOINTS,
    CAMERAS,
    CONTROL_HZ,
    FINGER_TRAVEL,
    JOINT_NOISE,
    LEAD,
    MAX_LAG,
    OSC_KP,
    OSC_POS_SCALE,
    OSC_ROT_SCALE,
    SETTLE_STEPS,
    TABLE_FULL,
    TABLE_TOP,
    TRACKING_TOLERANCE,
    WORKSPACE_HIGH,
    WORKSPACE_LOW,
    PandaTableEnv,
    PandaTableTask,
    body_geoms,
    robot_geoms,
)
from policy_steer.envs.robosuite_panda import floats as _floats, quat_yaw as _quat_yaw, yaw_quat as _yaw_quat

from dataclasses import dataclass  # noqa: E402
from typing import Any, ClassVar  # noqa: E402

import numpy as np  # noqa: E402
from robosuite.environments.manipulation.lift import Lift  # noqa: E402
from robosuite.models.objects import BoxObject  # noqa: E402
from robosuite.models.tasks import ManipulationTask  # noqa: E402
from robosuite.utils.mjcf_utils import CustomMaterial  # noqa: E402

from policy_steer.scene import Scene, SceneObject  # noqa: E402
from policy_steer.envs.variants import Clutter, SurfaceShift, VariantParams, ring_positions, surface_offset  # noqa: E402

_CLUTTER = Clutter()  # clutter's spacing and knock distance (lift's distractors are its own, not parameters)

CUBE_HALF = 0.021  # robosuite draws 0.020-0.022 per model build; fixed so that every instance agrees
CUBE_XY_RANGE = 0.03  # cube centre within +-3 cm of the table centre (robosuite's Lift)
LIFT_HEIGHT = 0.04  # success: cube centre more than this above the table top (robosuite's Lift)

# The demonstrations come in low from the robot's side: to APPROACH_BACK behind the cube at
# APPROACH_UP above its centre, then slide the open fingers around it (experts.lift reads these).
APPROACH_BACK = 0.06
APPROACH_UP = 0.015  # the hand's underside is about 2 cm above the grip site: clear of the cube's top
OBSTACLE_HALF = (0.012, 0.05, 0.04)
OBSTACLE_BACK = (0.08, 0.09)  # wall centre behind the cube centre (x), metres
DISTRACTOR_RING = (0.09, 0.11)  # horizontal distance of the distractors from the cube centre
DISTRACTOR_FREE_HALF_ANGLE = 5 * np.pi / 12  # none within 75 degrees of the robot side (-x): the fingers come in there
DISTRACTOR_HALVES = ((0.012, 0.012, 0.015), (0.015, 0.012, 0.015), (0.013, 0.015, 0.015))
DISTRACTOR_RGBA = ((0.15, 0.35, 0.85, 1.0), (0.9, 0.75, 0.1, 1.0), (0.55, 0.25, 0.7, 1.0))
GOAL_JUMP_STEPS = (10, 25)
GOAL_JUMP_HEIGHT = (0.12, 0.16)  # new target height above the table top (>= 8 cm above the old one)
MARKER_HALF = (0.035, 0.035, 0.001)


@dataclass
class LiftLayout:
    """Everything a seeded reset draws. World-frame metres; quaternions wxyz."""

    table_offset: np.ndarray  # [3]
    joint_pos: np.ndarray  # [7] initial arm joints
    cube_pos: np.ndarray  # [3]
    cube_quat: np.ndarray  # [4]
    target_height: float  # world z the cube centre must exceed
    obstacle: np.ndarray | None = None  # [3] centre of the wall
    distractors: np.ndarray | None = None  # [n, 7] pos + quat
    goal_jump_step: int | None = None
    target_after_jump: float | None = None


class _RobosuiteLift(PandaTableTask, Lift):
    """robosuite's Lift with a fixed cube size, our extra objects, layouts we place, and contact watch.

    ``variant`` decides which extra bodies the model has; :meth:`place` is called on every reset with
    the layout to apply (None at construction). Robot contact with the obstacle or a distractor is
    latched in ``contact_failure`` at every physics step (robosuite calls ``_pre_action`` once per
    physics step, after ``mj_step1`` has found the contacts).
    """

    def __init__(self, variant: str, **kwargs: Any) -> None:
        self.variant = variant
        self.layout: LiftLayout | None = None
        self.contact_failure: str | None = None
        self._pair_code: np.ndarray | None = None
        super().__init__(**kwargs)

    # ------------------------------------------------------------------ model
    def _load_model(self) -> None:
        arena = self.table_arena()  # the robot and the table; Lift's own version draws a random cube size
        redwood = CustomMaterial(
            texture="WoodRed", tex_name="redwood", mat_name="redwood_mat",
            tex_attrib={"type": "cube"}, mat_attrib={"texrepeat": "1 1", "specular": "0.4", "shininess": "0.1"},
        )
        self.cube = BoxObject(name="cube", size=[CUBE_HALF] * 3, rgba=[1, 0, 0, 1], material=redwood)
        self.marker = BoxObject(name="lift_target", size=list(MARKER_HALF), rgba=[0.1, 0.85, 0.2, 0.35], obj_type="visual", joints=None)
        objects = [self.cube, self.marker]
        self.obstacle = None
        self.distractors: list[BoxObject] = []
        if self.variant == "obstacle":
            self.obstacle = BoxObject(name="obstacle", size=list(OBSTACLE_HALF), rgba=[0.45, 0.45, 0.5, 1], joints=None)
            objects.append(self.obstacle)
        if self.variant == "clutter":
            self.distractors = [
                BoxObject(name=f"distractor_{i}", size=list(h), rgba=list(c))
                for i, (h, c) in enumerate(zip(DISTRACTOR_HALVES, DISTRACTOR_RGBA))
            ]
            objects += self.distractors
        self.model = ManipulationTask(mujoco_arena=arena, mujoco_robots=[r.robot_model for r in self.robots], mujoco_objects=objects)

    def _setup_references(self) -> None:
        super()._setup_references()
        if hasattr(self, "table_body_pos0"):  # robosuite calls this on every reset; the model never changes
            return
        m = self.sim.model._model
        self.table_references(m)
        self.marker_body_id = m.body(self.marker.root_body).id
        self.obstacle_body_id = m.body(self.obstacle.root_body).id if self.obstacle is not None else None
        self.distractor_body_ids = [m.body(d.root_body).id for d in self.distractors]
        robot = robot_geoms(m)
        pairs = [(robot, body_geoms(m, self.obstacle_body_id), "collision:obstacle")] if self.obstacle_body_id is not None else []
        pairs += [(robot, body_geoms(m, bid), "collision:distractor") for bid in self.distractor_body_ids]
        self.watch_contacts(m, pairs)

    # ------------------------------------------------------------------ reset (PandaTableTask._reset_internal calls place)
    def place(self, lay: LiftLayout) -> None:
        """Apply a layout to the model and data (table pose, objects, obstacle, marker)."""
        m, d = self.sim.model._model, self.sim.data._data
        self.shift_table(lay.table_offset)
        self.sim.data.set_joint_qpos(self.cube.joints[0], np.concatenate([lay.cube_pos, lay.cube_quat]))
        m.body_pos[self.marker_body_id] = [*lay.cube_pos[:2], lay.target_height]
        if self.obstacle_body_id is not None and lay.obstacle is not None:
            m.body_pos[self.obstacle_body_id] = lay.obstacle
        if lay.distractors is not None:
            for obj, pose in zip(self.distractors, lay.distractors):
                self.sim.data.set_joint_qpos(obj.joints[0], pose)
        d.qvel[:] = 0.0

    def set_marker_height(self, z: float) -> None:
        self.sim.model._model.body_pos[self.marker_body_id, 2] = z


class LiftEnv(PandaTableEnv):
    """robosuite Lift behind the :class:`TaskEnv` contract; see the module docstring."""

    task: ClassVar[str] = "lift"
    instruction = "lift the red cube above the green marker"
    default_max_episode_steps: ClassVar[int] = 200
    # Only the table shift is a parameter here; lift's obstacle, distractors and marker jump keep their
    # own constants (above), and a parameter for them is refused by name.
    default_variant_params: ClassVar[dict[str, VariantParams]] = {"shifted-surface": SurfaceShift()}
    robosuite_class: ClassVar[type] = _RobosuiteLift
    task_slices: ClassVar[tuple[tuple[str, int], ...]] = (("cube_pos", 3), ("cube_quat", 4), ("target_height", 1))

    def __init__(self, variant: str = "nominal", **kwargs: Any) -> None:
        super().__init__(variant, **kwargs)
        self._cube_body = self.model.body(self._rs.cube.root_body).id
        self.layout: LiftLayout | None = None
        self._target_height = TABLE_TOP + LIFT_HEIGHT

    @property
    def target_height(self) -> float:
        return self._target_height

    # ----------------------------------------------------------------- layout
    def sample_layout(self, base: np.random.Generator, shift: np.random.Generator) -> LiftLayout:
        """The base problem (robot, cube) from ``base``; the variant's extras from ``shift``."""
        joints = self._init_qpos + base.normal(0.0, JOINT_NOISE, size=7)
        cube_xy = base.uniform(-CUBE_XY_RANGE, CUBE_XY_RANGE, size=2)
        yaw = float(base.uniform(0.0, 2 * np.pi))
        off = surface_offset(shift, self.variant_params) if self.variant == "shifted-surface" else np.zeros(3)
        top = TABLE_TOP + off[2]
        cube = np.array([off[0] + cube_xy[0], off[1] + cube_xy[1], top + CUBE_HALF])
        lay = LiftLayout(table_offset=off, joint_pos=joints, cube_pos=cube, cube_quat=_yaw_quat(yaw), target_height=top + LIFT_HEIGHT)
        if self.variant == "obstacle":
            back = shift.uniform(*OBSTACLE_BACK)
            lay.obstacle = np.array([cube[0] - back, cube[1] + shift.uniform(-0.01, 0.01), top + OBSTACLE_HALF[2]])
        elif self.variant == "clutter":
            n = len(DISTRACTOR_HALVES)
            xy = ring_positions(shift, cube, n, DISTRACTOR_RING, _CLUTTER.spacing, np.array([-1.0, 0.0]), DISTRACTOR_FREE_HALF_ANGLE)
            yaws = shift.uniform(-np.pi, np.pi, size=n)
            lay.distractors = np.array([[*p, top + h[2], *_yaw_quat(a)] for p, h, a in zip(xy, DISTRACTOR_HALVES, yaws)])
        elif self.variant == "moving-goal":
            lay.goal_jump_step = int(shift.integers(GOAL_JUMP_STEPS[0], GOAL_JUMP_STEPS[1] + 1))
            lay.target_after_jump = top + float(shift.uniform(*GOAL_JUMP_HEIGHT))
        return lay

    # ----------------------------------------------------------------- the episode's task parts
    def _begin_layout(self, lay: LiftLayout) -> None:
        self._target_height = lay.target_height

    def _jump_goal(self, lay: LiftLayout) -> None:
        self._target_height = float(lay.target_after_jump)
        self._rs.set_marker_height(self._target_height)

    def _knock_distance(self) -> float:
        return _CLUTTER.knock_distance

    # ----------------------------------------------------------------- observation
    def _task_state(self) -> list[np.ndarray]:
        d = self.data
        return [d.xpos[self._cube_body], d.xquat[self._cube_body], [self._target_height]]

    def cube_position(self) -> np.ndarray:
        return self.data.xpos[self._cube_body].copy()

    def success(self) -> bool:
        return bool(self.data.xpos[self._cube_body][2] > self._target_height)

    # ----------------------------------------------------------------- rollout
    def _task_snapshot(self) -> float:
        return self._target_height  # the moving-goal jump changes it; the rollout does not apply the jump

    def _task_restore(self, saved: float) -> None:
        self._target_height = saved

    # ----------------------------------------------------------------- scene
    def scene(self) -> Scene:
        d, m = self.data, self.model
        off = self.table_offset
        hx, hy, hz = (s / 2 for s in TABLE_FULL)
        top = self.surface_height
        objects = [SceneObject("table", "table", "box", _floats([off[0], off[1], top - hz]), [hx, hy, hz])]
        cube = d.xpos[self._cube_body]
        objects.append(SceneObject("cube", "manipuland", "box", _floats(cube), [CUBE_HALF] * 3, _quat_yaw(d.xquat[self._cube_body])))
        marker = m.body_pos[self._rs.marker_body_id]
        objects.append(SceneObject("lift_target", "goal", "box", _floats(marker), list(MARKER_HALF)))
        if self._rs.obstacle_body_id is not None:
            objects.append(SceneObject("obstacle", "obstacle", "box", _floats(d.xpos[self._rs.obstacle_body_id]), list(OBSTACLE_HALF)))
        for i, bid in enumerate(self._rs.distractor_body_ids):
            objects.append(SceneObject(f"distractor_{i}", "distractor", "box", _floats(d.xpos[bid]), list(DISTRACTOR_HALVES[i]), _quat_yaw(d.xquat[bid])))
        ee = d.site_xpos[self._site]
        keypoints = {
            "ee": _floats(ee),
            "cube": _floats(cube),
            "cube_top": _floats(cube + [0, 0, CUBE_HALF]),
            "lift_target": _floats([*marker[:2], self._target_height]),
        }
        low, high = self.workspace()
        return Scene(
            task=self.task, variant=self.variant, instruction=self.instruction, objects=objects, keypoints=keypoints,
            surface_height=top, workspace_low=_floats(low), workspace_high=_floats(high), ee_position=_floats(ee),
            gripper_opening=float(self._state()[3]),
        )


# Lift's own names and the shared constants it has always exported (tests and experts import them from here).
__all__ = [
    "ACTION_MODES", "APPROACH_BACK", "APPROACH_UP", "ARM_JOINTS", "CAMERAS", "CONTROL_HZ", "CUBE_HALF", "CUBE_XY_RANGE",
    "DISTRACTOR_FREE_HALF_ANGLE", "DISTRACTOR_HALVES", "DISTRACTOR_RGBA", "DISTRACTOR_RING", "FINGER_TRAVEL",
    "GOAL_JUMP_HEIGHT", "GOAL_JUMP_STEPS", "JOINT_NOISE", "LEAD", "LIFT_HEIGHT", "MARKER_HALF", "MAX_LAG",
    "OBSTACLE_BACK", "OBSTACLE_HALF", "OSC_KP", "OSC_POS_SCALE", "OSC_ROT_SCALE", "SETTLE_STEPS", "TABLE_FULL",
    "TABLE_TOP", "TRACKING_TOLERANCE", "WORKSPACE_HIGH", "WORKSPACE_LOW", "LiftEnv", "LiftLayout",
]
