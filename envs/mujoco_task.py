"""The shared machinery of the plain-MuJoCo tasks (reach, push, pick-place).

Control: 10 Hz (``control_hz``); each control step runs ``substeps`` = 50 physics steps of 2 ms.
An action's target is ``measured ee + clip(delta, +-max_step)`` (delta mode) or the action itself
(absolute mode), clipped to the episode's workspace box; :class:`~policy_steer.envs.controller.ArmIK`
turns it into joint targets, which the servos reach by a smooth ramp over the first
``ramp_fraction`` of the step (with velocity feed-forward) and hold for the rest. The gripper closes
when the command is > 0 and opens otherwise.

State (``observation.state``, float32): ``ee_pos`` [3], ``gripper`` [1] (opening: 0 closed .. 1 open;
always 0 for the pusher), ``joint_pos`` [5], then the task part (``observation.environment_state``).
The variant's additions (obstacle, distractors, table pose) are never in the state.

Failures: contact with the obstacle or a distractor is read from MuJoCo contact sensors after every
physics step (so a graze inside a control step counts), a displaced distractor after every control
step. ``terminated`` on success or failure, ``truncated`` at ``max_episode_steps``; reward 1 on success.

A task subclass provides the MJCF of its bodies, draws its base layout, and defines its state part,
success predicate and scene; the variants (:mod:`policy_steer.envs.variants`) are handled here, from the
env's ``variant_params`` (the task's ``default_variant_params`` with the constructor's overrides).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping

import gymnasium as gym
import mujoco
import numpy as np

from policy_steer.envs.arm import ARM_JOINTS, EE_SITE, FINGER_TRAVEL, GAINS, EndEffector, arm_description
from policy_steer.envs.base import ROBOT_SLICES, VARIANTS, TaskEnv
from policy_steer.envs.controller import ArmIK
from policy_steer.envs.rendering import CameraRenderer
from policy_steer.scene import Scene, SceneObject
from policy_steer.envs.variants import VariantParams, resolve_params, ring_positions, surface_offset
from policy_steer.envs.world import CAMERAS, PHYSICS_DT, TABLE_CENTER, TABLE_HALF, distractor_half_height, world_xml
from policy_steer.errors import ConfigError
from policy_steer.types import ArmDescription

ACTION_MODES = ("delta", "absolute")
# Absolute targets are clipped to the episode's workspace; this box bounds it for every variant.
ABSOLUTE_LOW = np.array([0.10, -0.40, -0.06])
ABSOLUTE_HIGH = np.array([0.65, 0.40, 0.40])
WORKSPACE_XY_LOW = np.array([0.12, -0.36])
WORKSPACE_XY_HIGH = np.array([0.62, 0.36])
WORKSPACE_Z = (0.012, 0.35)  # above the table top; 0.012 keeps the fingertips / tip just off the table
HOME_EE = np.array([0.28, 0.0, 0.16])  # nominal start of the ee site (world); each reset jitters it
HOME_JITTER = 0.02
STATE_BOUND = 10.0  # generous finite bounds of the state space (metres, radians, quaternion parts)
_IK_GUESS = np.array([0.0, 0.3, 1.8, 1.0, 0.0])


@dataclass
class Layout:
    """Everything a seeded reset draws. Positions are world-frame metres, quaternions wxyz."""

    table_offset: np.ndarray  # [3] table shift (zeros except in shifted-surface)
    ee_start: np.ndarray  # [3]
    goal: np.ndarray  # [3] reach: the goal point; push / pick-place: the target centre on the table top
    objects: dict[str, np.ndarray] = field(default_factory=dict)  # free body -> [7] pos + quat
    obstacle: np.ndarray | None = None  # [7] pos + quat of the obstacle body
    goal_jump_step: int | None = None  # moving-goal: control index at which the goal moves
    goal_after_jump: np.ndarray | None = None  # [3]
    mode: int = 0  # the demonstration's mode for this seed (push: +1 around the +y side, -1 the -y side)


def yaw_quat(yaw: float) -> np.ndarray:
    """[4] wxyz quaternion of a rotation by ``yaw`` about world z."""
    return np.array([np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2)])


def quat_yaw(q: np.ndarray) -> float:
    """Rotation about world z of a wxyz quaternion (its yaw)."""
    w, x, y, z = q
    return float(np.arctan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z)))


class MujocoTaskEnv(TaskEnv):
    """Base of the plain-MuJoCo tasks; see the module docstring."""

    end_effector: ClassVar[EndEffector]
    task_slices: ClassVar[tuple[tuple[str, int], ...]]  # the task part of the state: (name, size) in order
    default_max_episode_steps: ClassVar[int]
    # variant -> the defaults of its parameters (envs/variants.py); an env's own are ``variant_params``
    default_variant_params: ClassVar[dict[str, VariantParams]]
    control_hz: float = 10.0
    substeps: int = 50  # physics steps per control step (control_hz * substeps * PHYSICS_DT = 1)
    ramp_fraction: float = 0.5  # of the control period spent ramping the joint targets
    home_ee: ClassVar[np.ndarray] = HOME_EE  # nominal start of the ee site (world)
    robot_type: ClassVar[str] = "policy_steer_arm5"  # written into recorded datasets
    distractor_height_scale: ClassVar[float] = 1.0  # clutter: stretch the distractors (see world.DISTRACTORS)

    def __init__(
        self,
        variant: str = "nominal",
        action_mode: str = "delta",
        cameras: tuple[str, ...] | list[str] = (),
        image_size: tuple[int, int] = (96, 96),
        render_mode: str | None = "rgb_array",
        render_size: tuple[int, int] = (240, 320),
        max_step: float = 0.03,
        max_episode_steps: int | None = None,
        variant_params: Mapping[str, Any] | VariantParams | None = None,
    ) -> None:
        if variant not in VARIANTS:
            raise ConfigError(f"unknown variant {variant!r} for task {self.task!r}; use one of {list(VARIANTS)}")
        # the variant's parameters (None for nominal); the MJCF below is built from them
        self.variant_params = resolve_params(self.task, variant, self.default_variant_params, variant_params)
        if action_mode not in ACTION_MODES:
            raise ConfigError(f"unknown action_mode {action_mode!r}; use one of {list(ACTION_MODES)}")
        cameras = tuple(cameras)
        for cam in cameras:
            if cam not in CAMERAS:
                raise ConfigError(f"unknown camera {cam!r}; use one of {list(CAMERAS)}")
        if len(image_size) != 2 or min(image_size) < 8:
            raise ConfigError(f"image_size must be (height, width) >= 8, got {image_size}")
        if render_mode not in (None, "rgb_array"):
            raise ConfigError(f"unknown render_mode {render_mode!r}; use 'rgb_array' or None")
        if max_step <= 0:
            raise ConfigError(f"max_step must be > 0, got {max_step}")
        self.variant = variant
        self.action_mode = action_mode
        self.cameras = cameras
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.render_mode = render_mode
        self.render_size = (int(render_size[0]), int(render_size[1]))
        self.max_step = float(max_step)
        self.max_episode_steps = int(max_episode_steps or self.default_max_episode_steps)

        self.model = mujoco.MjModel.from_xml_string(world_xml(self.end_effector, self.bodies_xml(), self.sensors_xml(), self.task))
        self.data = mujoco.MjData(self.model)
        self._scratch = mujoco.MjData(self.model)
        self._ik = ArmIK()
        self._renderer = CameraRenderer(self.model)
        self._ids()

        n = len(ARM_JOINTS)
        self.state_layout: dict[str, slice] = {"ee_pos": slice(0, 3), "gripper": slice(3, 4), "joint_pos": slice(4, 4 + n)}
        self.robot_state_dim = 4 + n
        start = self.robot_state_dim
        for name, size in self.task_slices:
            self.state_layout[name] = slice(start, start + size)
            start += size
        self.state_dim = start
        assert tuple(self.state_layout)[:3] == ROBOT_SLICES

        spaces: dict[str, gym.Space] = {
            "observation.state": gym.spaces.Box(-STATE_BOUND, STATE_BOUND, (self.state_dim,), np.float32),
            "observation.environment_state": gym.spaces.Box(-STATE_BOUND, STATE_BOUND, (self.state_dim - self.robot_state_dim,), np.float32),
        }
        for cam in cameras:
            spaces[f"observation.images.{cam}"] = gym.spaces.Box(0, 255, (*self.image_size, 3), np.uint8)
        self.observation_space = gym.spaces.Dict(spaces)
        n_act = 4 if self.end_effector == "gripper" else 3
        if action_mode == "delta":
            low = np.full(n_act, -self.max_step, dtype=np.float32)
            high = np.full(n_act, self.max_step, dtype=np.float32)
        else:
            low = np.concatenate([ABSOLUTE_LOW, [-1.0]])[:n_act].astype(np.float32)
            high = np.concatenate([ABSOLUTE_HIGH, [1.0]])[:n_act].astype(np.float32)
        if n_act == 4:
            low[3], high[3] = -1.0, 1.0
        self.action_space = gym.spaces.Box(low, high, dtype=np.float32)

        self.layout: Layout | None = None
        self._steps = 0
        self._distractor_start: np.ndarray | None = None

    # ----------------------------------------------------------------- task hooks
    def bodies_xml(self) -> str:
        """MJCF bodies of the task (objects, goal marker) and of the variant (obstacle, distractors)."""
        raise NotImplementedError

    def sample_layout(self, base: np.random.Generator, shift: np.random.Generator) -> Layout:
        """Draw the base layout from ``base`` and the variant's extras from ``shift``."""
        raise NotImplementedError

    def task_state(self, d: mujoco.MjData) -> np.ndarray:
        """float64 [E] the task part of the state (object poses, goal), in ``task_slices`` order."""
        raise NotImplementedError

    def success_of(self, d: mujoco.MjData) -> bool:
        raise NotImplementedError

    def task_objects(self, d: mujoco.MjData) -> tuple[list[SceneObject], dict[str, list[float]]]:
        """The task's scene objects and keypoints (world frame) for :meth:`scene`."""
        raise NotImplementedError

    # ----------------------------------------------------------------- model bookkeeping
    def _ids(self) -> None:
        m = self.model
        self._site = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_SITE, EE_SITE)
        self._qadr = np.array([m.jnt_qposadr[m.joint(j).id] for j in ARM_JOINTS])
        self._kv_over_kp = np.array([GAINS[j][1] / GAINS[j][0] for j in ARM_JOINTS])
        self._fingers = [m.jnt_qposadr[m.joint(j).id] for j in ("finger_left", "finger_right")] if self.end_effector == "gripper" else []
        self._mocap = {m.body(b).name: int(m.body_mocapid[b]) for b in range(m.nbody) if m.body_mocapid[b] >= 0}
        self._free_bodies = [m.body(b).name for b in range(m.nbody) if m.body_jntnum[b] and m.jnt_type[m.body_jntadr[b]] == mujoco.mjtJoint.mjJNT_FREE]
        self._distractors = sorted(b for b in self._free_bodies if b.startswith("distractor_"))
        # Contact sensors (computed by MuJoCo every physics step): name -> failure reason.
        sensors = [(m.sensor_adr[i], m.sensor(i).name) for i in range(m.nsensor) if m.sensor(i).name.startswith("collision:")]
        self._contact_adr = np.array([a for a, _ in sensors], dtype=int)
        self._contact_reason = [n.split("/")[0] for _, n in sensors]
        self._check_contacts = bool(len(sensors))

    def sensors_xml(self) -> str:
        """Contact sensors named ``collision:<what>/<who>`` for the failures of the variant."""
        out = []
        if self.variant == "obstacle":
            out.append('<contact name="collision:obstacle/robot" subtree1="robot_base" body2="obstacle" data="found"/>')
            out += [f'<contact name="collision:obstacle/{b}" body1="{b}" body2="obstacle" data="found"/>' for b in self.manipulands()]
        if self.variant == "clutter":
            out += [
                f'<contact name="collision:distractor/{i}" subtree1="robot_base" body2="distractor_{i}" data="found"/>'
                for i in range(self.variant_params.count)
            ]
        return "\n    ".join(out)

    def manipulands(self) -> tuple[str, ...]:
        """Names of the free bodies the task manipulates (their contact with the obstacle is a failure)."""
        return ()

    def _free_qpos(self, name: str) -> slice:
        adr = self.model.jnt_qposadr[self.model.body_jntadr[self.model.body(name).id]]
        return slice(adr, adr + 7)

    def body_pose(self, d: mujoco.MjData, name: str) -> np.ndarray:
        """[7] world pos + wxyz quat of a free body."""
        return d.qpos[self._free_qpos(name)].copy()

    # ----------------------------------------------------------------- geometry of the episode
    @property
    def table_offset(self) -> np.ndarray:
        return np.zeros(3) if self.layout is None else self.layout.table_offset

    @property
    def surface_height(self) -> float:
        return float(self.table_offset[2])

    def workspace(self) -> tuple[np.ndarray, np.ndarray]:
        """([3], [3]) the box targets are clipped to: fixed in x/y, z follows the table top."""
        z0 = self.surface_height
        low = np.array([*WORKSPACE_XY_LOW, z0 + WORKSPACE_Z[0]])
        high = np.array([*WORKSPACE_XY_HIGH, z0 + WORKSPACE_Z[1]])
        return low, high

    @property
    def arm_description(self) -> ArmDescription:
        """The arm's published model and controller (the workspace box of the current episode)."""
        low, high = self.workspace()
        return arm_description(low, high, substeps=self.substeps, ramp_fraction=self.ramp_fraction)

    def goal_position(self, d: mujoco.MjData | None = None) -> np.ndarray:
        d = self.data if d is None else d
        return d.mocap_pos[self._mocap["goal"]].copy()

    # ----------------------------------------------------------------- gymnasium API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        # Two streams: the base layout is the same for a seed in every variant; the variant draws the rest.
        root = int(self.np_random.integers(2**62))
        base, shift = np.random.default_rng([root, 0]), np.random.default_rng([root, 1])
        self.layout = lay = self.sample_layout(base, shift)
        m, d = self.model, self.data
        mujoco.mj_resetData(m, d)
        d.mocap_pos[self._mocap["table"]] = np.array([*TABLE_CENTER, 0.0]) + lay.table_offset
        d.mocap_pos[self._mocap["goal"]] = lay.goal
        if lay.obstacle is not None:
            d.mocap_pos[self._mocap["obstacle"]] = lay.obstacle[:3]
            d.mocap_quat[self._mocap["obstacle"]] = lay.obstacle[3:]
        for name, pose in lay.objects.items():
            d.qpos[self._free_qpos(name)] = pose
        q = self._ik.solve(lay.ee_start, _IK_GUESS)
        d.qpos[self._qadr] = q
        d.ctrl[: len(ARM_JOINTS)] = q
        if self._fingers:
            d.qpos[self._fingers] = FINGER_TRAVEL
            d.ctrl[len(ARM_JOINTS)] = FINGER_TRAVEL
        mujoco.mj_forward(m, d)
        self._steps = 0
        self._distractor_start = np.array([d.xpos[m.body(b).id] for b in self._distractors]) if self._distractors else None
        info = self._info(success=False, failure=None)
        return self.observe(), info

    def step(self, action: np.ndarray):
        if self.layout is None:
            raise RuntimeError("call reset() before step()")
        action = np.asarray(action, dtype=np.float64).reshape(-1)
        if action.shape != self.action_space.shape:
            raise ValueError(f"action must have shape {self.action_space.shape}, got {action.shape}")
        collision = self._advance(self.data, action, self._check_contacts)
        self._steps += 1
        lay = self.layout
        if lay.goal_jump_step is not None and self._steps == lay.goal_jump_step:
            self.data.mocap_pos[self._mocap["goal"]] = lay.goal_after_jump
            mujoco.mj_kinematics(self.model, self.data)
        failure = collision or self._knocked()
        success = failure is None and self.success_of(self.data)
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
        now = np.array([self.data.xpos[self.model.body(b).id] for b in self._distractors])
        if np.any(np.linalg.norm(now - self._distractor_start, axis=1) > self.variant_params.knock_distance):
            return "collision:distractor"
        return None

    # ----------------------------------------------------------------- control
    def target_of(self, d: mujoco.MjData, action: np.ndarray) -> np.ndarray:
        """[3] the world target of ``action`` from the state in ``d`` (before clipping to the workspace)."""
        if self.action_mode == "delta":
            return d.site_xpos[self._site] + np.clip(action[:3], -self.max_step, self.max_step)
        return np.asarray(action[:3], dtype=np.float64)

    def _advance(self, d: mujoco.MjData, action: np.ndarray, check: bool) -> str | None:
        """One control step on ``d``; returns a collision failure reason (or None)."""
        m = self.model
        low, high = self.workspace()
        target = np.clip(self.target_of(d, action), low, high)
        n = len(ARM_JOINTS)
        q_from = d.ctrl[:n].copy()  # the previous joint target (the ramp ended there)
        q_to = self._ik.solve(target, q_from)
        if self._fingers:
            d.ctrl[n] = 0.0 if action[3] > 0 else FINGER_TRAVEL
        ramp = max(1, int(round(self.ramp_fraction * self.substeps)))
        u = np.arange(1, ramp + 1)[:, None] / ramp
        dq = q_to - q_from
        ff = self._kv_over_kp * dq / (ramp * PHYSICS_DT)
        # Smoothstep ramp of the joint targets; the velocity feed-forward cancels the servo damping's lag.
        path = q_from + dq * (u * u * (3 - 2 * u)) + ff * (6 * u * (1 - u))
        for k in range(self.substeps):
            if k < ramp:
                d.ctrl[:n] = path[k]
            elif k == ramp:
                d.ctrl[:n] = q_to
            mujoco.mj_step(m, d)
            if check:
                hit = np.flatnonzero(d.sensordata[self._contact_adr])
                if len(hit):
                    d.ctrl[:n] = q_to
                    mujoco.mj_kinematics(m, d)
                    return self._contact_reason[hit[0]]
        # mj_step leaves positions (site_xpos, xpos) one physics step behind qpos; observe them at qpos.
        mujoco.mj_kinematics(m, d)
        return None

    # ----------------------------------------------------------------- observation
    def state_of(self, d: mujoco.MjData) -> np.ndarray:
        """float32 [S] observation.state of ``d``."""
        gripper = d.qpos[self._fingers[0]] / FINGER_TRAVEL if self._fingers else 0.0
        robot = np.concatenate([d.site_xpos[self._site], [np.clip(gripper, 0.0, 1.0)], d.qpos[self._qadr]])
        return np.concatenate([robot, self.task_state(d)]).astype(np.float32)

    def observe(self) -> dict[str, np.ndarray]:
        state = self.state_of(self.data)
        obs = {"observation.state": state, "observation.environment_state": state[self.robot_state_dim:].copy()}
        for cam in self.cameras:
            obs[f"observation.images.{cam}"] = self._renderer.render(self.data, cam, self.image_size)
        return obs

    def ee_position(self) -> np.ndarray:
        return self.data.site_xpos[self._site].copy()

    def success(self) -> bool:
        return self.success_of(self.data)

    def rollout(self, actions: np.ndarray) -> np.ndarray:
        """float32 [K, S] the state after each of ``actions`` [K, A], simulated on a scratch copy.

        Physics and control are exactly those of :meth:`step` (a nominal episode's states are
        reproduced bit for bit); scheduled events (the moving-goal jump) and failure checks are not
        applied. The env is not changed."""
        actions = np.asarray(actions, dtype=np.float64)
        if actions.ndim != 2 or actions.shape[1] != self.action_dim:
            raise ValueError(f"actions must be [K, {self.action_dim}], got {actions.shape}")
        d = self._scratch
        mujoco.mj_copyData(d, self.model, self.data)
        out = np.empty((len(actions), self.state_dim), dtype=np.float32)
        for i, a in enumerate(actions):
            self._advance(d, a, check=False)
            out[i] = self.state_of(d)
        return out

    def render(self) -> np.ndarray | None:
        """uint8 [h, w, 3] the ``front`` camera at ``render_size`` (None when render_mode is None)."""
        if self.render_mode is None:
            return None
        return self.render_camera("front", self.render_size)

    def render_camera(self, camera: str = "front", size: tuple[int, int] | None = None) -> np.ndarray:
        """uint8 [h, w, 3] image of ``camera`` (``front`` or ``wrist``) at ``size`` (default render_size)."""
        if camera not in CAMERAS:
            raise ConfigError(f"unknown camera {camera!r}; use one of {list(CAMERAS)}")
        return self._renderer.render(self.data, camera, size or self.render_size)

    def close(self) -> None:
        self._renderer.close()

    # ----------------------------------------------------------------- scene
    def scene(self) -> Scene:
        d = self.data
        tx, ty = TABLE_CENTER
        off = self.table_offset
        hx, hy, hz = TABLE_HALF
        table = SceneObject("table", "table", "box", [tx + off[0], ty + off[1], off[2] - hz], [hx, hy, hz])
        objects, keypoints = self.task_objects(d)
        objects = [table, *objects]
        if self.layout is not None and self.layout.obstacle is not None:
            g = self.model.geom(self._obstacle_geom())
            pos = d.geom_xpos[g.id].copy()
            shape = "cylinder" if g.type[0] == mujoco.mjtGeom.mjGEOM_CYLINDER else "box"
            size = list(g.size) if shape == "box" else [g.size[0], g.size[0], g.size[1]]
            # Only the part above the table top is an obstacle (a pillar may stand sunk into the table).
            top, bottom = pos[2] + size[2], max(pos[2] - size[2], self.surface_height)
            pos[2], size[2] = 0.5 * (top + bottom), 0.5 * (top - bottom)
            objects.append(SceneObject("obstacle", "obstacle", shape, _floats(pos), _floats(size), quat_yaw(self.layout.obstacle[3:])))
        for name in self._distractors:
            g = self.model.geom(name)
            pos = d.geom_xpos[g.id]
            shape = "cylinder" if g.type[0] == mujoco.mjtGeom.mjGEOM_CYLINDER else "box"
            size = list(g.size) if shape == "box" else [g.size[0], g.size[0], g.size[1]]
            objects.append(SceneObject(name, "distractor", shape, _floats(pos), _floats(size), quat_yaw(self.body_pose(d, name)[3:])))
        ee = d.site_xpos[self._site]
        keypoints = {"ee": _floats(ee), **keypoints}
        low, high = self.workspace()
        gripper = float(self.state_of(d)[3])
        return Scene(
            task=self.task, variant=self.variant, instruction=self.instruction, objects=objects,
            keypoints=keypoints, surface_height=self.surface_height, workspace_low=_floats(low),
            workspace_high=_floats(high), ee_position=_floats(ee), gripper_opening=gripper,
        )

    def draw_start(self, base: np.random.Generator) -> np.ndarray:
        """[3] the ee start: the task's home position jittered by up to HOME_JITTER per axis (world frame)."""
        return self.home_ee + base.uniform(-HOME_JITTER, HOME_JITTER, 3)

    def draw_table_offset(self, shift: np.random.Generator) -> np.ndarray:
        """[3] the table shift of this episode (zeros unless the variant is shifted-surface)."""
        return surface_offset(shift, self.variant_params) if self.variant == "shifted-surface" else np.zeros(3)

    def _obstacle_geom(self) -> str:
        return "obstacle"

    def distractor_poses(
        self, rng: np.random.Generator, centre: np.ndarray, surface: float, first_angle: float | None = None,
        free_direction: np.ndarray | None = None, free_half_angle: float = 0.0,
    ) -> dict[str, np.ndarray]:
        """Poses [7] of the clutter distractors standing on the table around ``centre`` (xy).

        ``first_angle``: put distractor 0 in that direction from the centre (e.g. on the approach);
        ``free_direction`` / ``free_half_angle``: a sector the others keep clear."""
        n = len(self._distractors)
        p = self.variant_params
        existing: list[np.ndarray] = []
        if first_angle is not None and n:
            r = rng.uniform(p.ring_min, p.ring_max)
            existing.append(centre[:2] + r * np.array([np.cos(first_angle), np.sin(first_angle)]))
        rest = ring_positions(
            rng, centre, n - len(existing), (p.ring_min, p.ring_max), p.spacing,
            free_direction, free_half_angle, existing,
        )
        xy = existing + list(rest)
        return {
            f"distractor_{i}": np.concatenate([[*xy[i], surface + distractor_half_height(i, self.distractor_height_scale)], yaw_quat(rng.uniform(-np.pi, np.pi))])
            for i in range(n)
        }


def _floats(v) -> list[float]:
    return [float(x) for x in v]
