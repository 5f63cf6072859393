"""robosuite's Panda on a table under our end-effector control: what the robosuite tasks (``lift``, ``stack``) share.

This module owns the one job both robosuite tasks do the same way: turn metre-unit end-effector actions
into robosuite's normalised OSC_POSE input, keep the hand top-down, move the table for
``shifted-surface``, latch robot contacts with named bodies at every physics step, snapshot and restore
the simulator for a model rollout, and render cameras offscreen. A task module (``robosuite_lift``,
``robosuite_stack``) adds its objects, layout, success and scene on top:

- :class:`PandaTableTask`, a mixin for the task's robosuite environment class (before robosuite's class
  in the bases): the table arena with the Panda at its edge, the table shift, contact watch.
- :class:`PandaTableEnv`, the :class:`~policy_steer.envs.base.TaskEnv` base: options, spaces, the control
  mapping, the settle at reset, rollout, rendering. A task declares its robosuite class, its state slices
  after the robot's (``task_slices``), and implements ``sample_layout``, ``reset``, ``step``,
  ``_task_state`` and ``scene``.

**Control.** 20 Hz (robosuite's default): one control step is 25 physics steps of 2 ms. An action
[dx, dy, dz, g] moves a *commanded target* ``r`` of the grip site (between the finger pads):
``r_k = r_{k-1} + clip(a[:3], +-max_step)`` (delta mode) or ``r_k = a[:3]`` (absolute mode), clipped to
the workspace box and kept within ``MAX_LAG`` of the measured end effector (so an arm that is blocked does
not wind up). robosuite's OSC_POSE gets, in its normalised input units,
``clip((r_k + LEAD * v_k - ee) / OSC_POS_SCALE, -1, 1)`` with ``OSC_POS_SCALE`` = 0.05 m (the
controller's ``output_max``: input 1 = 5 cm), ``v_k`` the target's velocity and ``LEAD`` =
2/sqrt(kp) - dt/2 s (velocity feed-forward, which OSC lacks: the steady lag of a critically damped servo
at constant speed, less the half step by which a stepwise target already leads), and for rotation the
axis-angle error to a fixed top-down grasp orientation divided by 0.5 rad (so the hand never tilts or
turns). The gain is ``OSC_KP`` = 2000 instead of robosuite's 150: with 150 the hand lags its target by
several centimetres at 0.2 m/s. Gripper: > 0 closes, <= 0 opens (robosuite's -1 / +1). So an action
chunk maps to ``ee_start + cumsum(actions[:, :3])`` (delta mode), within ``TRACKING_TOLERANCE`` in free
motion (the numbers are in :mod:`policy_steer.envs.robosuite_lift`).

**Robot state** (the first 11 entries of ``observation.state``): ``ee_pos`` [3] (grip site, world
metres), ``gripper`` [1] (finger opening, 0 closed .. 1 open), ``joint_pos`` [7]. World frame:
robosuite's (table top at z = 0.8, table centre at x = y = 0, robot base at x = -0.56, facing +x).

**Rollout.** :meth:`PandaTableEnv.rollout` snapshots the simulator (``mujoco.mj_copyData`` of MjData
into a spare buffer) plus the few Python-side states robosuite keeps (gripper ramp, OSC goals, robot
history buffers) and ours, steps the real simulator, and restores everything: stepping afterwards is
bit-identical to never having rolled out. Because it borrows the live simulator, do not call it from one
thread while another steps the env.

**Rendering.** Cameras ``front`` (robosuite's ``agentview``) and ``wrist`` (``robot0_eye_in_hand``)
through ``mujoco.Renderer`` with EGL (``MUJOCO_GL=egl``, set here when unset, before mujoco is imported),
reflections off (they double the cost and are invisible at these sizes).
"""

from __future__ import annotations

import copy
import logging
import os
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
from robosuite.environments.manipulation.manipulation_env import ManipulationEnv  # noqa: E402
from robosuite.models.arenas import TableArena  # noqa: E402

from policy_steer.envs.base import ROBOT_SLICES, VARIANTS, TaskEnv  # noqa: E402
from policy_steer.envs.rendering import CameraRenderer  # noqa: E402
from policy_steer.envs.robosuite_arm import osc_arm_description  # noqa: E402
from policy_steer.envs.variants import SurfaceShift, VariantParams, resolve_params  # noqa: E402
from policy_steer.errors import ConfigError  # noqa: E402
from policy_steer.types import ArmDescription  # noqa: E402

ACTION_MODES = ("delta", "absolute")
CAMERAS: dict[str, str] = {"front": "agentview", "wrist": "robot0_eye_in_hand"}  # our name -> robosuite's
ARM_JOINTS: tuple[str, ...] = tuple(f"robot0_joint{i}" for i in range(1, 8))  # the order of joint_pos

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
JOINT_NOISE = 0.02  # rad, std of the Gaussian added to the init pose (robosuite's default)
FINGER_TRAVEL = 0.04  # metres of each Panda finger joint (0 closed .. 0.04 open)
WORKSPACE_LOW = np.array([-0.30, -0.30, 0.005])  # grip-site box; z relative to the table top
WORKSPACE_HIGH = np.array([0.25, 0.30, 0.35])
ROBOT_STATE_DIM = 11  # ee_pos [3] + gripper [1] + joint_pos [7]


def yaw_quat(yaw: float) -> np.ndarray:
    """[4] wxyz quaternion of a rotation by ``yaw`` about world z."""
    return np.array([np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2)])


def quat_yaw(q: np.ndarray) -> float:
    """The rotation about world z of a wxyz quaternion [4]."""
    w, x, y, z = q
    return float(np.arctan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z)))


def rotvec(R: np.ndarray) -> np.ndarray:
    """[3] axis-angle vector of a rotation matrix [3, 3]."""
    q = np.empty(4)
    mujoco.mju_mat2Quat(q, R.reshape(-1))
    v = np.empty(3)
    mujoco.mju_quat2Vel(v, q, 1.0)
    return v


def floats(v) -> list[float]:
    return [float(x) for x in v]


def controller_config() -> dict[str, Any]:
    """robosuite's composite BASIC controller for the Panda: OSC_POSE at ``OSC_KP``, world-frame deltas."""
    cfg = load_composite_controller_config(controller="BASIC", robot="Panda")
    arm = dict(cfg["body_parts"]["right"])
    arm.update(
        kp=OSC_KP, damping_ratio=1, input_type="delta", input_ref_frame="world", interpolation=None,
        output_max=[OSC_POS_SCALE] * 3 + [OSC_ROT_SCALE] * 3, output_min=[-OSC_POS_SCALE] * 3 + [-OSC_ROT_SCALE] * 3,
    )
    cfg["body_parts"] = {"right": arm}  # the Panda has one arm: no warnings about absent parts
    return cfg


def robosuite_kwargs() -> dict[str, Any]:
    """The robosuite environment options every task here uses: the Panda under :func:`controller_config`,
    no robosuite sensors, cameras, renderer, horizon or resets of its own (we drive all of these)."""
    return dict(
        robots="Panda", controller_configs=controller_config(), initialization_noise=None,
        table_full_size=TABLE_FULL, use_camera_obs=False, use_object_obs=True, has_renderer=False,
        has_offscreen_renderer=False, control_freq=int(CONTROL_HZ), horizon=10**9, ignore_done=True,
        hard_reset=False, reward_shaping=False,
    )


def descends(m: mujoco.MjModel, body: int, root: int) -> bool:
    """Whether ``body`` is ``root`` or below it in the kinematic tree."""
    while body > 0:
        if body == root:
            return True
        body = int(m.body_parentid[body])
    return False


def robot_geoms(m: mujoco.MjModel) -> list[int]:
    """Every geom of the Panda arm and its gripper."""
    robot_root = m.body("robot0_base").id
    return [g for g in range(m.ngeom) if descends(m, int(m.geom_bodyid[g]), robot_root) or m.body(m.geom_bodyid[g]).name.startswith("gripper0")]


def body_geoms(m: mujoco.MjModel, body: int) -> list[int]:
    return [g for g in range(m.ngeom) if m.geom_bodyid[g] == body]


class PandaTableTask:
    """Mixin for a robosuite manipulation environment (put it before robosuite's class): the table arena
    with the Panda at its edge, the table shift of ``shifted-surface``, and robot contact watch.

    Contact watch: :meth:`watch_contacts` takes pairs of geom sets with a failure name each; robosuite
    calls ``_pre_action`` once per physics step, after ``mj_step1`` has found the contacts, and the first
    watched contact is latched in ``contact_failure`` (the highest-numbered pair wins within one step).
    """

    layout: Any  # the episode's layout, applied by place() on every reset (None at construction)
    contact_failure: str | None
    _pair_code: np.ndarray | None
    _pair_failures: list[str]

    def table_arena(self) -> TableArena:
        """Loads the robot (robosuite's ManipulationEnv) and returns the table arena at its nominal pose."""
        ManipulationEnv._load_model(self)  # the robot; robosuite's task classes would also draw objects
        xpos = self.robots[0].robot_model.base_xpos_offset["table"](self.table_full_size[0])
        self.robots[0].robot_model.set_base_xpos(xpos)
        arena = TableArena(table_full_size=self.table_full_size, table_friction=self.table_friction, table_offset=self.table_offset)
        arena.set_origin([0, 0, 0])
        return arena

    def table_references(self, m: mujoco.MjModel) -> None:
        """Ids of the table and its legs and their nominal poses (before any shift)."""
        self.table_body_id = m.body("table").id
        self.leg_geom_ids = [m.geom(f"table_leg{i}_visual").id for i in range(1, 5)]
        self.table_body_pos0 = m.body_pos[self.table_body_id].copy()  # the nominal pose, before any shift
        self.leg_size0 = m.geom_size[self.leg_geom_ids].copy()

    def shift_table(self, off: np.ndarray) -> None:
        """Move the table body by ``off`` [3] in the compiled model (no reload), legs still on the floor."""
        m = self.sim.model._model
        m.body_pos[self.table_body_id] = self.table_body_pos0 + off
        # robosuite's own bookkeeping (its success check, samplers) reads these
        self.table_offset = np.array([0.0, 0.0, TABLE_TOP]) + off
        self.model.mujoco_arena.table_offset = self.table_offset
        # Keep the (visual) legs standing on the floor when the table moves up or down.
        legs_half = self.leg_size0[:, 1] + off[2] / 2
        m.geom_size[self.leg_geom_ids, 1] = legs_half
        m.geom_pos[self.leg_geom_ids, 2] = -legs_half

    def watch_contacts(self, m: mujoco.MjModel, pairs: list[tuple[list[int], list[int], str]]) -> None:
        """Latch a failure when a geom of one set touches a geom of the other: ``(geoms, geoms, failure)``."""
        code = np.zeros((m.ngeom, m.ngeom), dtype=np.int8)
        self._pair_failures = []
        for a_geoms, b_geoms, failure in pairs:
            if failure not in self._pair_failures:
                self._pair_failures.append(failure)
            k = self._pair_failures.index(failure) + 1
            for a in a_geoms:
                code[a, b_geoms] = code[b_geoms, a] = k
        self._pair_code = code if code.any() else None

    def place(self, lay: Any) -> None:
        """Apply the task's layout to the model and data (table pose, objects, the variant's bodies)."""
        raise NotImplementedError

    def _reset_internal(self) -> None:
        ManipulationEnv._reset_internal(self)  # robots and controllers; the task classes' own draws from np.random
        self.contact_failure = None
        if self.layout is not None:
            self.place(self.layout)

    def _pre_action(self, action: np.ndarray, policy_step: bool = False) -> None:
        super()._pre_action(action, policy_step)
        self.latch_contacts()

    def latch_contacts(self) -> None:
        """Called from ``_pre_action`` at every physics step."""
        if self._pair_code is None or self.contact_failure is not None:
            return
        d = self.sim.data._data
        if d.ncon:
            code = int(self._pair_code[d.contact.geom[: d.ncon, 0], d.contact.geom[: d.ncon, 1]].max())
            if code:
                self.contact_failure = self._pair_failures[code - 1]

    def reward(self, action: Any = None) -> float:
        return 0.0  # the TaskEnv computes its own success; skip robosuite's per-step reward bookkeeping


class PandaTableEnv(TaskEnv):
    """A robosuite Panda task behind the :class:`TaskEnv` contract; see the module docstring.

    A subclass sets ``task``, ``instruction``, ``default_max_episode_steps``, ``default_variant_params``,
    ``robosuite_class`` (its :class:`PandaTableTask` environment, built with ``(variant, **robosuite_kwargs())``)
    and ``task_slices`` (the state after the robot's: ``(name, size)`` in order), and implements
    ``sample_layout``, ``_task_state``, ``success``, ``scene`` and, where its variants need them, ``_begin_layout``,
    ``_jump_goal`` and ``_knock_distance`` (reset and step are shared: two seeded streams per episode, the goal
    jump, contact and knocked-distractor failures). ``_task_snapshot`` / ``_task_restore``
    carry task state a control step changes that MjData does not hold (the rollout restores it)."""

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["rgb_array"], "render_fps": int(CONTROL_HZ)}
    robot_type: ClassVar[str] = "panda"  # written into recorded datasets
    control_hz = CONTROL_HZ
    substeps: ClassVar[int] = 25  # physics steps of 2 ms per control step (robosuite's control_freq 20)
    default_max_episode_steps: ClassVar[int]
    default_variant_params: ClassVar[dict[str, VariantParams]]
    robosuite_class: ClassVar[type]
    task_slices: ClassVar[tuple[tuple[str, int], ...]]

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
        task = self.task
        if variant not in VARIANTS:
            raise ConfigError(f"unknown variant {variant!r} for task '{task}'; use one of {list(VARIANTS)}")
        self.variant_params = resolve_params(task, variant, self.default_variant_params, variant_params)
        if action_mode not in ACTION_MODES:
            raise ConfigError(f"unknown action_mode {action_mode!r}; use one of {list(ACTION_MODES)}")
        cameras = tuple(cameras)
        for cam in cameras:
            if cam not in CAMERAS:
                raise ConfigError(f"unknown camera {cam!r} for task '{task}'; use one of {list(CAMERAS)}")
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

        self.layout: Any = None  # the task's layout of the current episode (None before the first reset)
        self._distractor_start: np.ndarray | None = None  # [n, 3] distractors' positions at the episode's start
        self._rs = self.robosuite_class(variant, **self._robosuite_options(), **robosuite_kwargs())
        for name in list(self._rs._observables):  # we read MjData directly; robosuite's sensors are dead weight
            self._rs.modify_observable(name, "enabled", False)
        self.model: mujoco.MjModel = self._rs.sim.model._model
        self.data: mujoco.MjData = self._rs.sim.data._data
        self._robot = self._rs.robots[0]
        self._init_qpos = np.array(self._robot.init_qpos, dtype=np.float64)
        m = self.model
        self._site = m.site(self._robot.gripper["right"].important_sites["grip_site"]).id
        self._arm_qadr = np.array([m.jnt_qposadr[m.joint(j).id] for j in ARM_JOINTS])
        self._finger_qadr = np.array([m.jnt_qposadr[m.joint(f"gripper0_right_finger_joint{i}").id] for i in (1, 2)])
        self._scratch = mujoco.MjData(m)  # rollout snapshots (and scratch kinematics)
        self._R_grasp = self._grasp_orientation()
        visuals = mujoco.MjvOption()
        visuals.geomgroup[0] = 0  # robosuite's collision meshes are group 0; visuals are group 1
        self._camera = CameraRenderer(self.model, scene_option=visuals, reflections=False)

        self.state_layout: dict[str, slice] = {"ee_pos": slice(0, 3), "gripper": slice(3, 4), "joint_pos": slice(4, 11)}
        at = ROBOT_STATE_DIM
        for name, n in self.task_slices:
            self.state_layout[name] = slice(at, at + n)
            at += n
        assert tuple(self.state_layout)[:3] == ROBOT_SLICES
        self.robot_state_dim = ROBOT_STATE_DIM
        self.state_dim = at
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

        self._ref = np.zeros(3)  # the commanded target r_k
        self._steps = 0

    def _robosuite_options(self) -> dict[str, Any]:
        """Extra keyword arguments of the task's robosuite class (after the variant)."""
        return {}

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
    def arm_description(self) -> ArmDescription:
        """The Panda as its integrator publishes it (:mod:`policy_steer.envs.robosuite_arm`: the chain to the
        grip site, OSC's top-down hand), with this episode's workspace box: VLASH's ``kinematic`` estimator."""
        low, high = self.workspace()
        return osc_arm_description(self.model, self._site, ARM_JOINTS, self._R_grasp, low, high)

    # ----------------------------------------------------------------- the episode (shared by the tasks)
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        # Two streams: the base layout is the same for a seed in every variant; the variant draws the rest.
        root = int(self.np_random.integers(2**62))
        lay = self.sample_layout(np.random.default_rng([root, 0]), np.random.default_rng([root, 1]))
        self.layout = self._rs.layout = lay
        self._reset_simulator(lay.joint_pos)
        self._begin_layout(lay)
        self._settle()
        ids = self._rs.distractor_body_ids
        self._distractor_start = self.data.xpos[ids].copy() if ids else None
        return self.observe(), self._info(False, None)

    def step(self, action: np.ndarray):
        action = self._check_action(action)
        self._control(action)
        self._steps += 1
        lay = self.layout
        if lay.goal_jump_step is not None and self._steps == lay.goal_jump_step:
            self._jump_goal(lay)
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

    def _begin_layout(self, lay: Any) -> None:
        """Task state set from the layout once the simulator is reset, before the settle (default: none)."""

    def _jump_goal(self, lay: Any) -> None:
        """``moving-goal``: move the goal at ``lay.goal_jump_step`` (the task's own goal)."""
        raise NotImplementedError

    def _knock_distance(self) -> float:
        """How far (m) a distractor may be moved before the episode fails ``collision:distractor``."""
        raise NotImplementedError

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
        return "collision:distractor" if np.any(moved > self._knock_distance()) else None

    # ----------------------------------------------------------------- reset helpers
    def _reset_simulator(self, joint_pos: np.ndarray) -> None:
        """robosuite's reset with the arm at ``joint_pos`` [7] (its ``_reset_internal`` places the layout)."""
        self._robot.init_qpos = joint_pos  # robosuite's robot reset puts the arm here
        state = np.random.get_state()  # robosuite draws (zero-magnitude) noise from the global generator
        try:
            self._rs.reset()
        finally:
            np.random.set_state(state)
            self._robot.init_qpos = self._init_qpos
        mujoco.mj_forward(self.model, self.data)

    def _settle(self) -> None:
        """Turn the hand to the top-down grasp orientation and open the fingers, holding the start
        position, so that every episode starts at rest in the same hand pose."""
        self._ref = self.data.site_xpos[self._site].copy()
        for _ in range(SETTLE_STEPS):
            self._control(np.array([0.0, 0.0, 0.0, -1.0]) if self.action_mode == "delta" else np.array([*self._ref, -1.0]))
        self._rs.contact_failure = None
        self._ref = self.data.site_xpos[self._site].copy()
        self._steps = 0

    def _check_action(self, action: np.ndarray) -> np.ndarray:
        if self.layout is None:
            raise RuntimeError("call reset() before step()")
        action = np.asarray(action, dtype=np.float64).reshape(-1)
        if action.shape != self.action_space.shape:
            raise ValueError(f"action must have shape {self.action_space.shape}, got {action.shape}")
        if not np.all(np.isfinite(action)):
            raise ValueError(f"action must be finite, got {action}")
        return action

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
        rot = np.clip(rotvec(self._R_grasp @ R.T) / OSC_ROT_SCALE, -1.0, 1.0)
        return np.concatenate([pos, rot, [1.0 if action[3] > 0 else -1.0]])

    def _control(self, action: np.ndarray) -> None:
        self._rs.step(self.osc_action(action))
        # robosuite's lite physics leaves body and site poses one physics step behind qpos; refresh them
        mujoco.mj_kinematics(self.model, self.data)

    # ----------------------------------------------------------------- observation
    def _robot_state(self) -> list[np.ndarray]:
        d = self.data
        fingers = d.qpos[self._finger_qadr]
        opening = np.clip((fingers[0] - fingers[1]) / (2 * FINGER_TRAVEL), 0.0, 1.0)
        return [d.site_xpos[self._site], [opening], d.qpos[self._arm_qadr]]

    def _task_state(self) -> list[np.ndarray]:
        """The task part of the state, in ``task_slices`` order (float64 pieces)."""
        raise NotImplementedError

    def _state(self) -> np.ndarray:
        return np.concatenate([*self._robot_state(), *self._task_state()]).astype(np.float32)

    def observe(self) -> dict[str, np.ndarray]:
        state = self._state()
        obs = {"observation.state": state, "observation.environment_state": state[self.robot_state_dim:].copy()}
        for cam in self.cameras:
            obs[f"observation.images.{cam}"] = self._render(cam, self.image_size)
        return obs

    def ee_position(self) -> np.ndarray:
        return self.data.site_xpos[self._site].copy()

    # ----------------------------------------------------------------- rollout
    def _task_snapshot(self) -> Any:
        """Task state beyond MjData that a control step changes (restored by :meth:`_task_restore`)."""
        return None

    def _task_restore(self, saved: Any) -> None:
        """Restore what :meth:`_task_snapshot` returned."""

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
            "ours": (self._ref.copy(), self._steps), "task": self._task_snapshot(),
        }

    def _restore(self, snap: dict[str, Any]) -> None:
        mujoco.mj_copyData(self.data, self.model, self._scratch)
        robot = self._robot
        for name, saved in snap["ctrl"].items():
            robot.part_controllers[name].__dict__.update(saved)
        robot.__dict__.update(snap["buffers"])
        robot.gripper["right"].current_action = snap["grip"]
        self._rs.timestep, self._rs.cur_time, self._rs.done, self._rs.contact_failure = snap["rs"]
        self._ref, self._steps = snap["ours"]
        self._task_restore(snap["task"])

    def rollout(self, actions: np.ndarray) -> np.ndarray:
        """float32 [K, S] observation.state after each of ``actions`` [K, 4], on the simulator itself.

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
        return self._camera.render(self.data, CAMERAS[camera], size)

    def render(self) -> np.ndarray | None:
        """uint8 [h, w, 3] the ``front`` camera at ``render_size`` (None when render_mode is None)."""
        if self.render_mode is None:
            return None
        return self._render("front", self.render_size)

    def render_camera(self, camera: str = "front", size: tuple[int, int] | None = None) -> np.ndarray:
        """uint8 [h, w, 3] image of ``camera`` (``front`` or ``wrist``) at ``size`` (default render_size)."""
        if camera not in CAMERAS:
            raise ConfigError(f"unknown camera {camera!r} for task '{self.task}'; use one of {list(CAMERAS)}")
        return self._render(camera, tuple(size or self.render_size))

    def close(self) -> None:
        self._camera.close()


__all__ = [
    "ACTION_MODES", "ARM_JOINTS", "CAMERAS", "CONTROL_HZ", "FINGER_TRAVEL", "JOINT_NOISE", "LEAD", "MAX_LAG", "OSC_KP",
    "OSC_POS_SCALE", "OSC_ROT_SCALE", "SETTLE_STEPS", "SurfaceShift", "TABLE_FULL", "TABLE_TOP",
    "TRACKING_TOLERANCE", "WORKSPACE_HIGH", "WORKSPACE_LOW", "PandaTableEnv", "PandaTableTask",
]
