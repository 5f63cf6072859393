"""``lift``: robosuite's Lift (Panda arm, OSC_POSE controller) behind the :class:`TaskEnv` contract.

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

import atexit
import copy
import logging
import os
import weakref
from dataclasses import dataclass
from typing import Any, ClassVar

os.environ.setdefault("MUJOCO_GL", "egl")  # before mujoco is imported anywhere: headless rendering


def _quiet_robosuite(record: logging.LogRecord) -> bool:
    # robosuite warns at import (no private macro file, optional robot packages) and on every model build.
    return record.levelno >= logging.ERROR


_rs_logger = logging.getLogger("robosuite_logs")
if _quiet_robosuite not in _rs_logger.filters:
    _rs_logger.addFilter(_quiet_robosuite)
# robosuite imports PyOpenGL at import time, which logs an INFO line about its optional accelerator
logging.getLogger("OpenGL.acceleratesupport").setLevel(logging.WARNING)

import gymnasium as gym  # noqa: E402
import mujoco  # noqa: E402
import numpy as np  # noqa: E402
from robosuite.controllers import load_composite_controller_config  # noqa: E402
from robosuite.environments.manipulation.lift import Lift  # noqa: E402
from robosuite.environments.manipulation.manipulation_env import ManipulationEnv  # noqa: E402
from robosuite.models.arenas import TableArena  # noqa: E402
from robosuite.models.objects import BoxObject  # noqa: E402
from robosuite.models.tasks import ManipulationTask  # noqa: E402
from robosuite.utils.mjcf_utils import CustomMaterial  # noqa: E402

from policy_steer.envs.base import ROBOT_SLICES, VARIANTS, TaskEnv  # noqa: E402
from policy_steer.scene import Scene, SceneObject  # noqa: E402
from policy_steer.envs.variants import Clutter, SurfaceShift, VariantParams, resolve_params, ring_positions, surface_offset  # noqa: E402
from policy_steer.errors import ConfigError  # noqa: E402

ACTION_MODES = ("delta", "absolute")
_CLUTTER = Clutter()  # clutter's spacing and knock distance (lift's distractors are its own, not parameters)
CAMERAS: dict[str, str] = {"front": "agentview", "wrist": "robot0_eye_in_hand"}  # our name -> robosuite's

CONTROL_HZ = 20.0
OSC_KP = 2000.0  # position and orientation stiffness of OSC_POSE (robosuite's default 150 lags by cm)
OSC_POS_SCALE = 0.05  # metres per unit of OSC's normalised position input (its output_max)
OSC_ROT_SCALE = 0.5  # radians per unit of OSC's normalised rotation input
LEAD = max(0.0, 2.0 / np.sqrt(OSC_KP) - 0.5 / CONTROL_HZ)  # seconds of velocity feed-forward
SETTLE_STEPS = 15  # control steps a reset runs to bring the hand to rest, top-down, fingers open
MAX_LAG = 0.03  # metres the commanded target may run ahead of the measured end effector
TRACKING_TOLERANCE = 0.02  # metres: executed vs ee_start + cumsum(deltas) over a 16-step chunk, any actions

TABLE_FULL = (0.8, 0.8, 0.05)
TABLE_TOP = 0.8  # nominal world z of the table top
CUBE_HALF = 0.021  # robosuite draws 0.020-0.022 per model build; fixed so that every instance agrees
CUBE_XY_RANGE = 0.03  # cube centre within +-3 cm of the table centre (robosuite's Lift)
JOINT_NOISE = 0.02  # rad, std of the Gaussian added to the init pose (robosuite's default)
LIFT_HEIGHT = 0.04  # success: cube centre more than this above the table top (robosuite's Lift)
FINGER_TRAVEL = 0.04  # metres of each Panda finger joint (0 closed .. 0.04 open)
WORKSPACE_LOW = np.array([-0.30, -0.30, 0.005])  # grip-site box; z relative to the table top
WORKSPACE_HIGH = np.array([0.25, 0.30, 0.35])

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


def _yaw_quat(yaw: float) -> np.ndarray:
    return np.array([np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2)])


def _quat_yaw(q: np.ndarray) -> float:
    w, x, y, z = q
    return float(np.arctan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z)))


def _rotvec(R: np.ndarray) -> np.ndarray:
    """[3] axis-angle vector of a rotation matrix [3, 3]."""
    q = np.empty(4)
    mujoco.mju_mat2Quat(q, R.reshape(-1))
    v = np.empty(3)
    mujoco.mju_quat2Vel(v, q, 1.0)
    return v


def _floats(v) -> list[float]:
    return [float(x) for x in v]


class _RobosuiteLift(Lift):
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
        ManipulationEnv._load_model(self)  # the robot; Lift's own version draws a random cube size
        xpos = self.robots[0].robot_model.base_xpos_offset["table"](self.table_full_size[0])
        self.robots[0].robot_model.set_base_xpos(xpos)
        arena = TableArena(table_full_size=self.table_full_size, table_friction=self.table_friction, table_offset=self.table_offset)
        arena.set_origin([0, 0, 0])
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
        self.table_body_id = m.body("table").id
        self.leg_geom_ids = [m.geom(f"table_leg{i}_visual").id for i in range(1, 5)]
        self.table_body_pos0 = m.body_pos[self.table_body_id].copy()  # the nominal pose, before any shift
        self.leg_size0 = m.geom_size[self.leg_geom_ids].copy()
        self.marker_body_id = m.body(self.marker.root_body).id
        self.obstacle_body_id = m.body(self.obstacle.root_body).id if self.obstacle is not None else None
        self.distractor_body_ids = [m.body(d.root_body).id for d in self.distractors]
        self._watch_contacts(m)

    def _watch_contacts(self, m: mujoco.MjModel) -> None:
        robot_root = m.body("robot0_base").id
        robot = [g for g in range(m.ngeom) if self._descends(m, int(m.geom_bodyid[g]), robot_root) or m.body(m.geom_bodyid[g]).name.startswith("gripper0")]
        code = np.zeros((m.ngeom, m.ngeom), dtype=np.int8)
        if self.obstacle is not None:
            obst = [g for g in range(m.ngeom) if m.geom_bodyid[g] == self.obstacle_body_id]
            for a in robot:
                code[a, obst] = code[obst, a] = 1
        for bid in self.distractor_body_ids:
            dg = [g for g in range(m.ngeom) if m.geom_bodyid[g] == bid]
            for a in robot:
                code[a, dg] = code[dg, a] = 2
        self._pair_code = code if code.any() else None

    @staticmethod
    def _descends(m: mujoco.MjModel, body: int, root: int) -> bool:
        while body > 0:
            if body == root:
                return True
            body = int(m.body_parentid[body])
        return False

    # ------------------------------------------------------------------ reset
    def _reset_internal(self) -> None:
        ManipulationEnv._reset_internal(self)  # robots and controllers; Lift's draws from np.random
        self.contact_failure = None
        if self.layout is not None:
            self.place(self.layout)

    def place(self, lay: LiftLayout) -> None:
        """Apply a layout to the model and data (table pose, objects, obstacle, marker)."""
        m, d = self.sim.model._model, self.sim.data._data
        off = lay.table_offset
        m.body_pos[self.table_body_id] = self.table_body_pos0 + off
        # robosuite's own bookkeeping (its success check, samplers) reads these
        self.table_offset = np.array([0.0, 0.0, TABLE_TOP]) + off
        self.model.mujoco_arena.table_offset = self.table_offset
        # Keep the (visual) legs standing on the floor when the table moves up or down.
        legs_half = self.leg_size0[:, 1] + off[2] / 2
        m.geom_size[self.leg_geom_ids, 1] = legs_half
        m.geom_pos[self.leg_geom_ids, 2] = -legs_half
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

    # ------------------------------------------------------------------ stepping
    def _pre_action(self, action: np.ndarray, policy_step: bool = False) -> None:
        super()._pre_action(action, policy_step)
        if self._pair_code is None or self.contact_failure is not None:
            return
        d = self.sim.data._data
        if d.ncon:
            code = int(self._pair_code[d.contact.geom[: d.ncon, 0], d.contact.geom[: d.ncon, 1]].max())
            if code:
                self.contact_failure = "collision:obstacle" if code == 1 else "collision:distractor"

    def reward(self, action: Any = None) -> float:
        return 0.0  # LiftEnv computes its own success; skip robosuite's per-step reward bookkeeping


_LIVE_ENVS: "weakref.WeakSet[LiftEnv]" = weakref.WeakSet()
_ATEXIT_REGISTERED = False


def _close_renderers() -> None:
    # GL contexts freed by the garbage collector at interpreter teardown, after mujoco's EGL module has
    # terminated its display, raise noisy errors: free them first. Registered after the first renderer
    # exists, so that it runs before mujoco's own exit handler (atexit runs handlers last-in first-out).
    for env in list(_LIVE_ENVS):
        env.close()


def _controller_config() -> dict[str, Any]:
    cfg = load_composite_controller_config(controller="BASIC", robot="Panda")
    arm = dict(cfg["body_parts"]["right"])
    arm.update(
        kp=OSC_KP, damping_ratio=1, input_type="delta", input_ref_frame="world", interpolation=None,
        output_max=[OSC_POS_SCALE] * 3 + [OSC_ROT_SCALE] * 3, output_min=[-OSC_POS_SCALE] * 3 + [-OSC_ROT_SCALE] * 3,
    )
    cfg["body_parts"] = {"right": arm}  # the Panda has one arm: no warnings about absent parts
    return cfg


class LiftEnv(TaskEnv):
    """robosuite Lift behind the :class:`TaskEnv` contract; see the module docstring."""

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["rgb_array"], "render_fps": int(CONTROL_HZ)}
    task: ClassVar[str] = "lift"
    robot_type: ClassVar[str] = "panda"  # written into recorded datasets
    instruction = "lift the red cube above the green marker"
    control_hz = CONTROL_HZ
    default_max_episode_steps: ClassVar[int] = 200
    # Only the table shift is a parameter here; lift's obstacle, distractors and marker jump keep their
    # own constants (above), and a parameter for them is refused by name.
    default_variant_params: ClassVar[dict[str, VariantParams]] = {"shifted-surface": SurfaceShift()}

    def __init__(
        self,
        variant: str = "nominal",
        action_mode: str = "delta",
        cameras: tuple[str, ...] | list[str] = (),
        image_size: tuple[int, int] = (96, 96),
        render_mode: str | None = "rgb_array",
        render_size: tuple[int, int] = (240, 320),
        max_step: float = 0.015,
        max_episode_steps: int | None = None,
        variant_params: dict[str, Any] | VariantParams | None = None,
    ) -> None:
        if variant not in VARIANTS:
            raise ConfigError(f"unknown variant {variant!r} for task 'lift'; use one of {list(VARIANTS)}")
        self.variant_params = resolve_params("lift", variant, self.default_variant_params, variant_params)
        if action_mode not in ACTION_MODES:
            raise ConfigError(f"unknown action_mode {action_mode!r}; use one of {list(ACTION_MODES)}")
        cameras = tuple(cameras)
        for cam in cameras:
            if cam not in CAMERAS:
                raise ConfigError(f"unknown camera {cam!r} for task 'lift'; use one of {list(CAMERAS)}")
        if len(image_size) != 2 or min(image_size) < 8:
            raise ConfigError(f"image_size must be (height, width) >= 8, got {image_size}")
        if render_mode not in (None, "rgb_array"):
            raise ConfigError(f"unknown render_mode {render_mode!r}; use 'rgb_array' or None")
        if not 0 < max_step <= OSC_POS_SCALE:
            raise ConfigError(f"max_step must be in (0, {OSC_POS_SCALE}] metres, got {max_step}")
        if max_episode_steps is not None and max_episode_steps < 1:
            raise ConfigError(f"max_episode_steps must be >= 1, got {max_episode_steps}")
        self.variant = variant
        self.action_mode = action_mode
        self.cameras = cameras
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.render_mode = render_mode
        self.render_size = (int(render_size[0]), int(render_size[1]))
        self.max_step = float(max_step)
        self.max_episode_steps = int(max_episode_steps or self.default_max_episode_steps)

        self._rs = _RobosuiteLift(
            variant,
            robots="Panda", controller_configs=_controller_config(), initialization_noise=None,
            table_full_size=TABLE_FULL, use_camera_obs=False, use_object_obs=True, has_renderer=False,
            has_offscreen_renderer=False, control_freq=int(CONTROL_HZ), horizon=10**9, ignore_done=True,
            hard_reset=False, reward_shaping=False,
        )
        for name in list(self._rs._observables):  # we read MjData directly; robosuite's sensors are dead weight
            self._rs.modify_observable(name, "enabled", False)
        self.model: mujoco.MjModel = self._rs.sim.model._model
        self.data: mujoco.MjData = self._rs.sim.data._data
        self._robot = self._rs.robots[0]
        self._init_qpos = np.array(self._robot.init_qpos, dtype=np.float64)
        m = self.model
        self._site = m.site(self._robot.gripper["right"].important_sites["grip_site"]).id
        self._arm_qadr = np.array([m.jnt_qposadr[m.joint(f"robot0_joint{i}").id] for i in range(1, 8)])
        self._finger_qadr = np.array([m.jnt_qposadr[m.joint(f"gripper0_right_finger_joint{i}").id] for i in (1, 2)])
        self._cube_body = m.body(self._rs.cube.root_body).id
        self._scratch = mujoco.MjData(m)  # rollout snapshots (and scratch kinematics)
        self._R_grasp = self._grasp_orientation()
        self._renderers: dict[tuple[int, int], mujoco.Renderer] = {}
        self._vopt = mujoco.MjvOption()
        self._vopt.geomgroup[0] = 0  # robosuite's collision meshes are group 0; visuals are group 1
        _LIVE_ENVS.add(self)

        self.state_layout: dict[str, slice] = {
            "ee_pos": slice(0, 3), "gripper": slice(3, 4), "joint_pos": slice(4, 11),
            "cube_pos": slice(11, 14), "cube_quat": slice(14, 18), "target_height": slice(18, 19),
        }
        assert tuple(self.state_layout)[:3] == ROBOT_SLICES
        self.robot_state_dim = 11
        self.state_dim = 19
        spaces: dict[str, gym.Space] = {
            "observation.state": gym.spaces.Box(-np.inf, np.inf, (self.state_dim,), np.float32),
            "observation.environment_state": gym.spaces.Box(-np.inf, np.inf, (self.state_dim - self.robot_state_dim,), np.float32),
        }
        for cam in cameras:
            spaces[f"observation.images.{cam}"] = gym.spaces.Box(0, 255, (*self.image_size, 3), np.uint8)
        self.observation_space = gym.spaces.Dict(spaces)
        if action_mode == "delta":
            low = np.array([-self.max_step] * 3 + [-1.0], dtype=np.float32)
            high = np.array([self.max_step] * 3 + [1.0], dtype=np.float32)
        else:  # absolute targets: the workspace box over every table shift
            shift = self.default_variant_params["shifted-surface"].largest if variant != "shifted-surface" else self.variant_params.largest
            low = np.array([*WORKSPACE_LOW[:2], TABLE_TOP - shift[1] + WORKSPACE_LOW[2], -1.0], dtype=np.float32)
            high = np.array([*WORKSPACE_HIGH[:2], TABLE_TOP + shift[1] + WORKSPACE_HIGH[2], 1.0], dtype=np.float32)
        self.action_space = gym.spaces.Box(low, high, dtype=np.float32)

        self.layout: LiftLayout | None = None
        self._target_height = TABLE_TOP + LIFT_HEIGHT
        self._ref = np.zeros(3)  # the commanded target r_k
        self._steps = 0
        self._distractor_start: np.ndarray | None = None

    # ----------------------------------------------------------------- geometry
    def _grasp_orientation(self) -> np.ndarray:
        """[3, 3] the hand's orientation at robosuite's noise-free init pose, squared to exactly top-down."""
        d = self._scratch
        d.qpos[:] = self.model.qpos0
        d.qpos[self._arm_qadr] = self._init_qpos
        mujoco.mj_kinematics(self.model, d)
        R = d.site_xmat[self._site].reshape(3, 3)
        # Keep the fingers' closing axis (site x) horizontal and the approach axis (site z) pointing down.
        z = np.array([0.0, 0.0, -1.0])
        x = R[:, 0] - R[:, 0] @ z * z
        x /= np.linalg.norm(x)
        return np.stack([x, np.cross(z, x), z], axis=1)

    @property
    def table_offset(self) -> np.ndarray:
        return np.zeros(3) if self.layout is None else self.layout.table_offset

    @property
    def surface_height(self) -> float:
        """World z of the table top."""
        return TABLE_TOP + float(self.table_offset[2])

    def workspace(self) -> tuple[np.ndarray, np.ndarray]:
        """([3], [3]) the box targets are clipped to: fixed in x/y, z follows the table top."""
        z0 = self.surface_height
        return np.array([*WORKSPACE_LOW[:2], z0 + WORKSPACE_LOW[2]]), np.array([*WORKSPACE_HIGH[:2], z0 + WORKSPACE_HIGH[2]])

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

    # ----------------------------------------------------------------- gymnasium API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        # Two streams: the base layout is the same for a seed in every variant; the variant draws the rest.
        root = int(self.np_random.integers(2**62))
        lay = self.sample_layout(np.random.default_rng([root, 0]), np.random.default_rng([root, 1]))
        self.layout = self._rs.layout = lay
        self._robot.init_qpos = lay.joint_pos  # robosuite's robot reset puts the arm here
        state = np.random.get_state()  # robosuite draws (zero-magnitude) noise from the global generator
        try:
            self._rs.reset()
        finally:
            np.random.set_state(state)
            self._robot.init_qpos = self._init_qpos
        mujoco.mj_forward(self.model, self.data)
        self._target_height = lay.target_height
        # Settle: turn the hand to the top-down grasp orientation and open the fingers, holding the
        # start position, so that every episode starts at rest in the same hand pose.
        self._ref = self.data.site_xpos[self._site].copy()
        for _ in range(SETTLE_STEPS):
            self._control(np.array([0.0, 0.0, 0.0, -1.0]) if self.action_mode == "delta" else np.array([*self._ref, -1.0]))
        self._rs.contact_failure = None
        self._ref = self.data.site_xpos[self._site].copy()
        self._steps = 0
        ids = self._rs.distractor_body_ids
        self._distractor_start = self.data.xpos[ids].copy() if ids else None
        return self.observe(), self._info(False, None)

    def step(self, action: np.ndarray):
        if self.layout is None:
            raise RuntimeError("call reset() before step()")
        action = np.asarray(action, dtype=np.float64).reshape(-1)
        if action.shape != self.action_space.shape:
            raise ValueError(f"action must have shape {self.action_space.shape}, got {action.shape}")
        if not np.all(np.isfinite(action)):
            raise ValueError(f"action must be finite, got {action}")
        self._control(action)
        self._steps += 1
        lay = self.layout
        if lay.goal_jump_step is not None and self._steps == lay.goal_jump_step:
            self._target_height = float(lay.target_after_jump)
            self._rs.set_marker_height(self._target_height)
            mujoco.mj_kinematics(self.model, self.data)
        failure = self._rs.contact_failure or self._knocked()
        success = failure is None and self.success()
        terminated = success or failure is not None
        truncated = not terminated and self._steps >= self.max_episode_steps
        return self.observe(), float(success), terminated, truncated, self._info(success, failure)

    def suppress_goal_jump(self) -> bool:
        if self.layout is None:
            raise RuntimeError("call reset() before suppress_goal_jump()")
        self.layout.goal_jump_step = None
        return True

    def _info(self, success: bool, failure: str | None) -> dict[str, Any]:
        info: dict[str, Any] = {"success": bool(success), "is_success": bool(success), "failure": failure, "step": self._steps}
        if self.variant == "moving-goal":
            j = self.layout.goal_jump_step if self.layout is not None else None
            info["goal_jump_step"] = j if j is not None and self._steps >= j else None
        return info

    def _knocked(self) -> str | None:
        if self._distractor_start is None:
            return None
        moved = np.linalg.norm(self.data.xpos[self._rs.distractor_body_ids] - self._distractor_start, axis=1)
        return "collision:distractor" if np.any(moved > _CLUTTER.knock_distance) else None

    # ----------------------------------------------------------------- control
    def osc_action(self, action: np.ndarray) -> np.ndarray:
        """float64 [7] robosuite's normalised OSC_POSE + gripper action for ``action`` [4]; advances the target.

        Position: (target + LEAD * target velocity - ee) / OSC_POS_SCALE; rotation: the axis-angle error
        to the top-down grasp orientation / OSC_ROT_SCALE; both clipped to [-1, 1]. Gripper: +1 close, -1 open.
        """
        ee = self.data.site_xpos[self._site].copy()
        if self.action_mode == "delta":
            ref = self._ref + np.clip(action[:3], -self.max_step, self.max_step)
        else:
            ref = np.asarray(action[:3], dtype=np.float64)
        low, high = self.workspace()
        ref = np.clip(ref, low, high)
        ref = ee + np.clip(ref - ee, -MAX_LAG, MAX_LAG)  # anti-windup: a blocked arm does not store up force
        vel = (ref - self._ref) * self.control_hz
        speed, vmax = float(np.linalg.norm(vel)), self.max_step * self.control_hz
        if speed > vmax:  # absolute-mode jumps: feed forward at most the delta-mode top speed
            vel *= vmax / speed
        self._ref = ref
        pos = np.clip((ref + LEAD * vel - ee) / OSC_POS_SCALE, -1.0, 1.0)
        R = self.data.site_xmat[self._site].reshape(3, 3)
        rot = np.clip(_rotvec(self._R_grasp @ R.T) / OSC_ROT_SCALE, -1.0, 1.0)
        return np.concatenate([pos, rot, [1.0 if action[3] > 0 else -1.0]])

    def _control(self, action: np.ndarray) -> None:
        self._rs.step(self.osc_action(action))
        # robosuite's lite physics leaves body and site poses one physics step behind qpos; refresh them
        mujoco.mj_kinematics(self.model, self.data)

    # ----------------------------------------------------------------- observation
    def _state(self) -> np.ndarray:
        d = self.data
        fingers = d.qpos[self._finger_qadr]
        opening = np.clip((fingers[0] - fingers[1]) / (2 * FINGER_TRAVEL), 0.0, 1.0)
        return np.concatenate([
            d.site_xpos[self._site], [opening], d.qpos[self._arm_qadr],
            d.xpos[self._cube_body], d.xquat[self._cube_body], [self._target_height],
        ]).astype(np.float32)

    def observe(self) -> dict[str, np.ndarray]:
        state = self._state()
        obs = {"observation.state": state, "observation.environment_state": state[self.robot_state_dim:].copy()}
        for cam in self.cameras:
            obs[f"observation.images.{cam}"] = self._render(cam, self.image_size)
        return obs

    def ee_position(self) -> np.ndarray:
        return self.data.site_xpos[self._site].copy()

    def cube_position(self) -> np.ndarray:
        return self.data.xpos[self._cube_body].copy()

    def success(self) -> bool:
        return bool(self.data.xpos[self._cube_body][2] > self._target_height)

    # ----------------------------------------------------------------- rollout
    def _snapshot(self) -> dict[str, Any]:
        """Everything a control step changes: MjData, robosuite's Python-side state, ours."""
        mujoco.mj_copyData(self._scratch, self.model, self.data)
        robot = self._robot
        ctrl = {
            name: {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in c.__dict__.items()
                   if isinstance(v, (np.ndarray, float, int, bool, str, type(None)))}
            for name, c in robot.part_controllers.items()
        }
        buffers = {k: copy.deepcopy(v) for k, v in robot.__dict__.items() if k.startswith("recent_")}
        return {
            "ctrl": ctrl, "buffers": buffers,
            "grip": robot.gripper["right"].current_action.copy(),
            "rs": (self._rs.timestep, self._rs.cur_time, self._rs.done, self._rs.contact_failure),
            "ours": (self._ref.copy(), self._steps, self._target_height),
        }

    def _restore(self, snap: dict[str, Any]) -> None:
        mujoco.mj_copyData(self.data, self.model, self._scratch)
        robot = self._robot
        for name, saved in snap["ctrl"].items():
            robot.part_controllers[name].__dict__.update(saved)
        robot.__dict__.update(snap["buffers"])
        robot.gripper["right"].current_action = snap["grip"]
        self._rs.timestep, self._rs.cur_time, self._rs.done, self._rs.contact_failure = snap["rs"]
        self._ref, self._steps, self._target_height = snap["ours"]

    def rollout(self, actions: np.ndarray) -> np.ndarray:
        """float32 [K, 19] observation.state after each of ``actions`` [K, 4], on the simulator itself.

        The simulator and controller state are snapshotted first and restored afterwards (bit-identical),
        so the env is unchanged. Physics and control are those of :meth:`step`; the moving-goal jump and
        the failure checks are not applied."""
        if self.layout is None:
            raise RuntimeError("call reset() before rollout()")
        actions = np.asarray(actions, dtype=np.float64)
        if actions.ndim != 2 or actions.shape[1] != self.action_dim:
            raise ValueError(f"actions must be [K, {self.action_dim}], got {actions.shape}")
        snap = self._snapshot()
        out = np.empty((len(actions), self.state_dim), dtype=np.float32)
        try:
            for i, a in enumerate(actions):
                self._control(a)
                out[i] = self._state()
        finally:
            self._restore(snap)
        return out

    # ----------------------------------------------------------------- rendering
    def _render(self, camera: str, size: tuple[int, int]) -> np.ndarray:
        h, w = size
        vis = self.model.vis.global_
        if h > vis.offheight or w > vis.offwidth:
            raise ConfigError(f"image size {h}x{w} exceeds the offscreen buffer {vis.offheight}x{vis.offwidth}")
        r = self._renderers.get((h, w))
        if r is None:
            try:
                r = self._renderers[(h, w)] = mujoco.Renderer(self.model, height=h, width=w)
            except Exception as e:  # no GL at all: say what to install / set
                raise RuntimeError(
                    f"offscreen rendering failed ({e}); set MUJOCO_GL=egl or osmesa before importing mujoco and "
                    "install Mesa (libegl-mesa0 libgl1-mesa-dri, or libosmesa6)"
                ) from e
            r.scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0  # halves the cost; invisible at these sizes
            global _ATEXIT_REGISTERED
            if not _ATEXIT_REGISTERED:
                atexit.register(_close_renderers)
                _ATEXIT_REGISTERED = True
        r.update_scene(self.data, camera=CAMERAS[camera], scene_option=self._vopt)
        return r.render()

    def render(self) -> np.ndarray | None:
        """uint8 [h, w, 3] the ``front`` camera at ``render_size`` (None when render_mode is None)."""
        if self.render_mode is None:
            return None
        return self._render("front", self.render_size)

    def render_camera(self, camera: str = "front", size: tuple[int, int] | None = None) -> np.ndarray:
        """uint8 [h, w, 3] image of ``camera`` (``front`` or ``wrist``) at ``size`` (default render_size)."""
        if camera not in CAMERAS:
            raise ConfigError(f"unknown camera {camera!r} for task 'lift'; use one of {list(CAMERAS)}")
        return self._render(camera, tuple(size or self.render_size))

    def close(self) -> None:
        for r in self._renderers.values():
            r.close()
        self._renderers.clear()

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
