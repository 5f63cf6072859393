"""A simulated task as a driver: a ``policy_steer.envs`` task env behind the same safety layer as an arm.

``policy-steer sim-robot`` is the robot host with this driver: the real-robot process end to end on one
machine, connection, safety layer, watchdog, telemetry and report included. The env steps once per
command (``command_ee``); the host's clock keeps the pace (the wall clock at ``--rate``, or the virtual
clock, where simulated time waits for each chunk).

Why end-effector targets (``ee_native``): the task envs take ``[dx, dy, dz(, g)]`` displacements (or
``[x, y, z(, g)]`` targets in absolute mode) and their own controller turns them into joint motion
inside the step (the plain-MuJoCo tasks: inverse kinematics and a smooth joint ramp; ``lift``:
robosuite's operational-space controller). They have no way to take joint targets, and joint targets
would bypass the controller the policy was trained against. So the safety layer checks what applies
to a target (:meth:`~policy_steer.hardware.command_filter.CommandFilter.native`: finite values, the
episode's workspace box, the end-effector step from the measured position, the gripper range) and
hands the target over; a row it leaves unchanged reaches ``env.step`` as the very numbers of the row,
so an episode steps exactly as the benchmark's simulator steps it.

Limits: the workspace box is the episode's own (``env.workspace()``: it follows the table in
``shifted-surface``), read at every episode start; the end-effector step is ``sqrt(3) * max_step``
per control step in delta mode (a row at the full per-axis step on all three axes, the largest move the
task itself makes) and unlimited in absolute mode (the task moves to any target in the box within one
step, as in the benchmark). Joint ranges are stated for the report only: the task's controller commands
the joints. Safe stop: the env is not stepped again; the episode ends.

Holds: "stay where measured", a zero displacement (delta mode) or the measured position as target
(absolute mode), gripper unchanged, exactly the loop's own hold.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

import numpy as np

from policy_steer.errors import ConfigError
from policy_steer.hardware.arm import Arm, ArmObservation, CameraFrame, EeCommand, EeStep, JointCommand
from policy_steer.hardware.errors import ArmStopped, SafetyError
from policy_steer.hardware.limits import ArmLimits, narrow
from policy_steer.types import OBS_ENV_STATE, OBS_STATE, EpisodeContext, PolicySpec, RobotDescription, image_key

JOINT_BOUND = 10.0  # radians: the stated (not enforced) joint range of a task's arm
TASK_CAMERAS = ("front", "wrist")  # what every task renders on request (policy_steer.envs.base)


class SimTaskArm(Arm):
    """``task``/``variant`` of :mod:`policy_steer.envs` as an :class:`~policy_steer.hardware.arm.Arm`.

    The env is built at once (a bad task fails before anything connects) and again at ``connect()``
    when the policy asked for cameras (``set_camera_size``).
    """

    ee_native = True
    dynamic_scene = True  # objects move; the host sends the scene again before every chunk request
    gripper_open, gripper_closed = 1.0, 0.0

    def __init__(self, task: str, variant: str = "nominal", action_mode: str = "delta",
                 max_episode_steps: int | None = None, variant_params: dict[str, Any] | None = None) -> None:
        from policy_steer import envs

        self.task, self.variant = task, variant
        # variant_params: overrides of the variant's parameters (envs/variants.py), checked by the env
        self._env_kwargs: dict[str, Any] = {"action_mode": action_mode, "render_mode": None,
                                            "variant_params": variant_params}
        if max_episode_steps is not None:
            if max_episode_steps < 1:
                raise ConfigError(f"max_steps must be >= 1, got {max_episode_steps}")
            self._env_kwargs["max_episode_steps"] = int(max_episode_steps)
        self._make = envs.make
        self.env = envs.make(task, variant, **self._env_kwargs)
        u = self.env.unwrapped
        self.name = f"sim:{task}/{variant}"
        self.control_hz = float(u.control_hz)
        self.command_period_s = 1.0 / self.control_hz  # one env.step, whatever the host's rate
        self.native_space = "ee_delta" if u.action_mode == "delta" else "ee_absolute"
        self.max_step = float(u.max_step)
        self.max_episode_steps = int(u.max_episode_steps)
        self.action_dim = int(u.action_dim)
        n_joints = u.state_layout["joint_pos"].stop - u.state_layout["joint_pos"].start
        self.joint_names = tuple(f"joint_{i}" for i in range(n_joints))
        self.gripper_name = "gripper" if u.has_gripper else None
        self.state_layout = dict(u.state_layout)
        self.state_names = tuple(
            f"{name}[{i}]" if sl.stop - sl.start > 1 else name
            for name, sl in u.state_layout.items() for i in range(sl.stop - sl.start)
        )
        self.instruction = u.instruction
        self.cameras = TASK_CAMERAS
        self.feature_shapes = {OBS_ENV_STATE: (int(u.state_dim - u.robot_state_dim),)}
        self._camera_sizes: dict[str, tuple[int, int]] = {}
        self._limits_spec: dict[str, Any] = {}
        self._limits = self._make_limits()
        self._obs: dict[str, Any] | None = None
        self._info: dict[str, Any] = {}
        self._over = False
        self._stopped = False
        self.steps = 0
        self.sent: deque[np.ndarray] = deque(maxlen=100_000)  # the action vectors handed to env.step

    # --- Arm ---------------------------------------------------------------------------------------
    @property
    def limits(self) -> ArmLimits:
        return self._limits

    @property
    def stopped(self) -> bool:
        return self._stopped

    @property
    def episode_over(self) -> bool:
        return self._over

    @property
    def info(self) -> dict[str, Any]:
        return self._info

    def set_camera_size(self, camera: str, size: tuple[int, int]) -> None:
        if camera not in self.cameras:
            raise SafetyError(f"the policy wants camera {camera!r}; task {self.task!r} renders {list(self.cameras)}")
        self._camera_sizes[camera] = (int(size[0]), int(size[1]))

    def connect(self) -> None:
        if self._camera_sizes:
            sizes = set(self._camera_sizes.values())
            if len(sizes) > 1:
                raise ConfigError(f"the policy wants cameras of different sizes {sorted(sizes)}; the task renders one size")
            self.env.close()
            self.env = self._make(self.task, self.variant, **self._env_kwargs, cameras=tuple(self._camera_sizes),
                                  image_size=sizes.pop())
        self._stopped = False

    def disconnect(self) -> None:
        self.env.close()

    def start_episode(self, seed: int | None = None) -> None:
        if self._stopped:
            raise ArmStopped(f"{self.name} was safe-stopped; it runs no more episodes")
        self._obs, self._info = self.env.reset(seed=seed)
        self._over = False
        self.steps = 0
        self._limits = self._make_limits()  # the episode's workspace (it follows the table)

    def observe(self) -> ArmObservation:
        if self._obs is None:
            raise RuntimeError(f"{self.name}: start an episode before observing")
        u = self.env.unwrapped
        state = np.asarray(self._obs[OBS_STATE])
        lay = u.state_layout
        images = {cam: CameraFrame(np.asarray(self._obs[image_key(cam)]), 0.0) for cam in self._camera_sizes}
        return ArmObservation(
            stamp=0.0, joints=state[lay["joint_pos"]].astype(np.float64), gripper=float(state[lay["gripper"]][0]),
            state=state, state_names=self.state_names, ee_pos=np.asarray(u.ee_position(), dtype=np.float64),
            images=images, features={OBS_ENV_STATE: np.asarray(self._obs[OBS_ENV_STATE])},
        )

    def command(self, cmd: JointCommand) -> None:
        raise SafetyError(f"{self.name} takes end-effector targets only (its controller solves the joints)")

    def command_ee(self, cmd: EeCommand | EeStep) -> None:
        if self._stopped:
            raise ArmStopped(f"{self.name} is stopped; it takes no more commands")
        if self.native_space == "ee_delta":
            if not isinstance(cmd, EeStep):
                raise SafetyError(f"{self.name} takes displacements (EeStep), got {type(cmd).__name__}")
            xyz = cmd.delta
        else:
            if not isinstance(cmd, EeCommand):
                raise SafetyError(f"{self.name} takes end-effector targets (EeCommand), got {type(cmd).__name__}")
            xyz = cmd.ee_pos
        # float64, as env.step reads it: a row's float32 values pass exactly, and a displacement the filter
        # moved keeps the float64 value that puts the target exactly on the filtered point
        action = np.zeros(self.action_dim, dtype=np.float64)
        action[:3] = xyz
        if self.action_dim > 3:
            action[3] = 1.0 if cmd.gripper < 0.5 * (self.gripper_open + self.gripper_closed) else -1.0
        if self._over:
            return  # the episode ended: further commands are ignored, as a stopped arm would
        self.sent.append(action)
        self._obs, _, terminated, truncated, self._info = self.env.step(action)
        self.steps += 1
        self._over = bool(terminated or truncated)

    def safe_stop(self) -> None:
        self._stopped = True
        self._over = True  # the simulator is not stepped again

    # --- what the task knows -----------------------------------------------------------------------
    def episode_context(self, seed: int | None = None) -> EpisodeContext:
        return self.env.unwrapped.episode_context(seed)

    def robot_description(self) -> RobotDescription:
        return RobotDescription.from_env(self.env)

    def check_policy(self, spec: PolicySpec) -> None:
        """The old sim-robot's check: the policy's inputs and action size against this task's."""
        u = self.env.unwrapped
        space = self.env.observation_space
        problems = []
        for key, feat in spec.observation.items():
            if key.startswith("observation.images."):
                continue  # rendered at the size the policy asks for (set_camera_size)
            if key not in space.spaces:
                problems.append(f"the policy wants {key!r}, which task {self.task!r} does not provide")
            elif tuple(space.spaces[key].shape) != tuple(feat.shape):
                problems.append(f"{key!r} is {list(feat.shape)} for the policy, {list(space.spaces[key].shape)} in task {self.task!r}")
        if spec.action_dim != u.action_dim:
            problems.append(f"the policy's actions have {spec.action_dim} dims, task {self.task!r} takes {u.action_dim}")
        if problems:
            raise SafetyError(f"the policy served by the server does not fit {self.task}/{self.variant}: " + "; ".join(problems))

    def narrow_limits(self, spec: dict[str, Any]) -> None:
        self._limits_spec = dict(spec)
        self._limits = self._make_limits()

    def _make_limits(self) -> ArmLimits:
        u = self.env.unwrapped
        low, high = u.workspace()
        n = len(self.joint_names)
        delta = self.native_space == "ee_delta"
        base = ArmLimits(
            joint_low=np.full(n, -JOINT_BOUND), joint_high=np.full(n, JOINT_BOUND), max_joint_velocity=np.full(n, 1e3),
            gripper_low=0.0, gripper_high=1.0, workspace_low=np.asarray(low, dtype=np.float64),
            workspace_high=np.asarray(high, dtype=np.float64),
            max_ee_speed=math.sqrt(3.0) * self.max_step * self.control_hz if delta else None,
        )
        return narrow(base, self.joint_names, self._limits_spec) if self._limits_spec else base
