"""A MuJoCo-backed virtual arm on the wall clock: the tasks' arm, commanded like a real one.

The model is the plain-MuJoCo tasks' world without task objects (:mod:`policy_steer.envs.arm`: five
revolute joints, position servos with gravity compensation, a parallel gripper; a table; the
``front`` and ``wrist`` cameras). Unlike the task envs, which step when told to, this arm's physics
follows the wall clock: every call (``observe``, ``command``, ``safe_stop``) first advances the
simulation to the current monotonic time (2 ms physics steps; a gap of more than ``max_catch_up_s`` is
skipped and counted in ``lost_s``), so a command takes effect over real time like a real arm's.

Commands are joint position targets (radians) and a gripper opening (0 closed .. 1 open). Each servo
tracks its target through a speed-limited profile (``servo_speed`` rad/s, like a hobby servo's
goal-speed register), the gripper through ``gripper_speed`` openings per second.

Limits (what the safety layer enforces): joint ranges ``joint_margin`` inside the model's hard
ranges, ``max_joint_velocity`` rad/s, the tasks' workspace box (x 0.12..0.62 m, y -0.36..0.36 m,
z 0.012..0.35 m above the table top), ``max_ee_speed`` m/s. Kinematics: the tasks' FK and
damped-least-squares IK (hand pointing down), so end-effector action spaces work.

Safe stop: the servo targets are set to the measured joint positions (torque on, the arm brakes
where it stands, critically damped), and every later ``command`` raises ``ArmStopped``.

Arm model (``arm_description``, for the ``kinematic`` and ``model-robot`` future-state estimators): the
tasks' arm MJCF with its controller's settings (workspace box, hand-down IK, at most ``servo_speed /
control_hz`` rad per control step), or ``model=FILE``: an MJCF of the arm alone with the same joints and
``ee`` site (checked when the arm is made), or ``model=none``.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import mujoco
import numpy as np

from policy_steer.config import StrList
from policy_steer.envs.arm import ARM_JOINTS, EE_SITE, FINGER_TRAVEL, JOINT_RANGE, arm_description
from policy_steer.envs.controller import ArmIK
from policy_steer.envs.mujoco_task import HOME_EE, WORKSPACE_XY_HIGH, WORKSPACE_XY_LOW, WORKSPACE_Z
from policy_steer.envs.rendering import CameraRenderer
from policy_steer.envs.world import CAMERAS, PHYSICS_DT, world_xml
from policy_steer.errors import ConfigError
from policy_steer.hardware.arm import Arm, ArmObservation, CameraFrame, JointCommand
from policy_steer.hardware.errors import ArmStopped
from policy_steer.hardware.limits import ArmLimits, narrow
from policy_steer.runtime.arm_model import ArmModel
from policy_steer.types import ArmDescription

_IK_GUESS = np.array([0.0, 0.3, 1.8, 1.0, 0.0])


@dataclass
class VirtualArmConfig:
    """Options of the virtual arm (``--driver virtual --driver_arg key=value``)."""

    control_hz: float = 10.0  # the rate it is meant to be commanded at (the tasks' rate)
    cameras: StrList = field(default_factory=StrList)  # front, wrist
    image_size: str = "96x96"  # HxW of every camera
    start_ee: tuple[float, float, float] = tuple(HOME_EE)  # where the hand starts (IK, hand down)
    joint_margin: float = 0.05  # rad inside the model's hard joint ranges
    max_joint_velocity: float = 2.0  # rad/s, the limit stated to the safety layer
    servo_speed: float = 3.0  # rad/s, the servos' own profile speed
    gripper_speed: float = 4.0  # openings per second
    max_ee_speed: float = 0.3  # m/s (0.03 m per step at 10 Hz: the tasks' max_step)
    max_catch_up_s: float = 0.5  # longer gaps between calls are skipped, not simulated
    # The arm model it publishes for the future-state estimators: builtin (its own arm), none, or an MJCF file
    # of the arm alone with the same joints (e.g. a deliberately wrong one, to measure an estimator against it)
    model: str = "builtin"

    def __post_init__(self) -> None:
        for cam in self.cameras:
            if cam not in CAMERAS:
                raise ConfigError(f"unknown camera {cam!r}; the virtual arm has {list(CAMERAS)}")
        self.size = _parse_size(self.image_size)
        if not (self.control_hz > 0 and self.max_joint_velocity > 0 and self.servo_speed > 0):
            raise ConfigError("control_hz, max_joint_velocity and servo_speed must be > 0")


def _parse_size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in str(text).lower().split("x"))
    except ValueError:
        raise ConfigError(f"image size must be HxW, e.g. 96x96, got {text!r}") from None
    if not (8 <= h <= 480 and 8 <= w <= 640):
        raise ConfigError(f"image size {h}x{w} must be within 8x8 .. 480x640")
    return h, w


def _model_text(model: str) -> str | None:
    """The MJCF text of ``--driver_arg model=...`` (None: builtin or none)."""
    if model in ("builtin", "none"):
        return None
    try:
        return Path(model).read_text()
    except OSError as e:
        raise ConfigError(f"virtual arm: cannot read the model file {model!r}: {e.strerror or e}") from None


class ArmKinematics:
    """FK and IK of the ee site (the tasks' controller: hand pointing down). Control thread only."""

    def __init__(self) -> None:
        self._ik = ArmIK()

    def fk(self, joints: np.ndarray) -> np.ndarray:
        return self._ik.site_position(np.asarray(joints, dtype=np.float64))

    def ik(self, ee_pos: np.ndarray, joints_ref: np.ndarray) -> np.ndarray:
        return self._ik.solve(np.asarray(ee_pos, dtype=np.float64), np.asarray(joints_ref, dtype=np.float64))


class VirtualArm(Arm):
    name = "virtual"
    joint_names = ARM_JOINTS
    gripper_name = "gripper"
    gripper_open, gripper_closed = 1.0, 0.0

    def __init__(self, cfg: VirtualArmConfig | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.cfg = cfg = cfg or VirtualArmConfig()
        self.clock = clock
        self.control_hz = float(cfg.control_hz)
        self.cameras = tuple(cfg.cameras)
        self.camera_sizes: dict[str, tuple[int, int]] = dict.fromkeys(self.cameras, cfg.size)
        self.kinematics = ArmKinematics()
        self.state_names = (*ARM_JOINTS, "gripper")
        m = self.model = mujoco.MjModel.from_xml_string(world_xml("gripper", "", name="policy_steer_virtual_arm"))
        self.data = mujoco.MjData(m)
        self._render_data = mujoco.MjData(m)
        self._renderer: CameraRenderer | None = None
        self._site = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_SITE, EE_SITE)
        self._qadr = np.array([m.jnt_qposadr[m.joint(j).id] for j in ARM_JOINTS])
        self._dadr = np.array([m.jnt_dofadr[m.joint(j).id] for j in ARM_JOINTS])
        self._finger = int(m.jnt_qposadr[m.joint("finger_left").id])
        n = len(ARM_JOINTS)
        hard_lo = np.array([JOINT_RANGE[j][0] for j in ARM_JOINTS])
        hard_hi = np.array([JOINT_RANGE[j][1] for j in ARM_JOINTS])
        self._limits = ArmLimits(
            joint_low=hard_lo + cfg.joint_margin, joint_high=hard_hi - cfg.joint_margin,
            max_joint_velocity=np.full(n, cfg.max_joint_velocity), gripper_low=0.0, gripper_high=1.0,
            workspace_low=np.array([*WORKSPACE_XY_LOW, WORKSPACE_Z[0]]),
            workspace_high=np.array([*WORKSPACE_XY_HIGH, WORKSPACE_Z[1]]),
            max_ee_speed=cfg.max_ee_speed,
        )
        self._arm_model = self._describe_arm()  # a model that does not fit this arm fails here, before connect
        self._lock = threading.Lock()
        self._goal = np.zeros(n)
        self._goal_gripper = 1.0
        self._t_sim = 0.0
        self._stopped = False
        self._connected = False
        self.lost_s = 0.0  # simulated time skipped because calls came too far apart
        self.sent: deque[tuple[float, np.ndarray, float]] = deque(maxlen=100_000)  # (stamp, joints, gripper)
        self.stop_stamp: float | None = None

    def _describe_arm(self) -> ArmDescription | None:
        """The tasks' arm as it is driven here: servos at most ``servo_speed / control_hz`` rad per control
        step, targets in the limits' workspace box; the MJCF of ``model`` in place of the builtin one."""
        cfg = self.cfg
        if cfg.model == "none":
            return None
        lim = self._limits
        desc = arm_description(lim.workspace_low, lim.workspace_high,
                               substeps=max(1, int(round(1.0 / (cfg.control_hz * PHYSICS_DT)))),
                               max_joint_step=cfg.servo_speed / cfg.control_hz)
        text = _model_text(cfg.model)
        if text is not None:
            # compiles, and names the joints and site the file lacks; without servos: kinematics only
            servos = ArmModel(dataclasses.replace(desc, mjcf=text, control_substeps=0)).has_servos
            desc = dataclasses.replace(desc, mjcf=text, control_substeps=desc.control_substeps if servos else 0)
        model = ArmModel(desc)
        if model.n != len(self.joint_names):
            raise ConfigError(f"virtual arm: the model's joints {list(desc.joints)} do not match the arm's {list(self.joint_names)}")
        return desc

    # --- Arm ---------------------------------------------------------------------------------------
    def arm_description(self) -> ArmDescription | None:
        if self._arm_model is None:
            return None
        lim = self._limits  # narrowed by a limits file since: the controller clips to the narrowed box
        vec = lambda v: None if v is None else tuple(float(x) for x in v)  # noqa: E731
        return dataclasses.replace(self._arm_model, workspace_low=vec(lim.workspace_low), workspace_high=vec(lim.workspace_high))

    @property
    def limits(self) -> ArmLimits:
        return self._limits

    @property
    def stopped(self) -> bool:
        return self._stopped

    def connect(self) -> None:
        """Put the arm at its start pose (hand at ``start_ee``, pointing down, gripper open), at rest."""
        with self._lock:
            m, d = self.model, self.data
            mujoco.mj_resetData(m, d)
            q = self.kinematics.ik(np.asarray(self.cfg.start_ee, dtype=np.float64), _IK_GUESS)
            d.qpos[self._qadr] = q
            d.ctrl[: len(q)] = q
            d.qpos[self._finger] = FINGER_TRAVEL
            d.ctrl[len(q)] = FINGER_TRAVEL
            mujoco.mj_forward(m, d)
            self._goal, self._goal_gripper = q.copy(), 1.0
            self._t_sim = self.clock()
            self._stopped = False
            self.stop_stamp = None
            self._connected = True

    def disconnect(self) -> None:
        with self._lock:
            self._connected = False
            if self._renderer is not None:
                self._renderer.close()
                self._renderer = None

    def observe(self) -> ArmObservation:
        with self._lock:
            self._require_connected()
            self._sync()
            d = self.data
            mujoco.mj_kinematics(self.model, d)
            stamp = self.clock()
            q = d.qpos[self._qadr].copy()
            grip = float(np.clip(d.qpos[self._finger] / FINGER_TRAVEL, 0.0, 1.0))
            quat = np.zeros(4)
            mujoco.mju_mat2Quat(quat, d.site_xmat[self._site])
            obs = ArmObservation(
                stamp=stamp, joints=q, gripper=grip, state=np.concatenate([q, [grip]]), state_names=self.state_names,
                ee_pos=d.site_xpos[self._site].copy(), ee_quat=quat, joint_vel=d.qvel[self._dadr].copy(),
            )
            if self.cameras:
                mujoco.mj_copyData(self._render_data, self.model, d)
        # Render outside the lock: a safe stop must not wait for the software rasteriser.
        for cam in self.cameras:
            if self._renderer is None:
                self._renderer = CameraRenderer(self.model)
            img = self._renderer.render(self._render_data, cam, self.camera_sizes[cam])
            obs.images[cam] = CameraFrame(img, self.clock())
        return obs

    def command(self, cmd: JointCommand) -> None:
        q = np.asarray(cmd.joints, dtype=np.float64)
        with self._lock:
            self._require_connected()
            if self._stopped:
                raise ArmStopped("the virtual arm is stopped; it takes no more commands")
            self._sync()
            self._goal = q.copy()
            self._goal_gripper = float(cmd.gripper)
            self.sent.append((self.clock(), q.copy(), float(cmd.gripper)))

    def safe_stop(self) -> None:
        with self._lock:
            if not self._connected:
                self._stopped = True
                return
            self._sync()
            d = self.data
            n = len(self._qadr)
            self._goal = d.qpos[self._qadr].copy()
            d.ctrl[:n] = self._goal
            self._goal_gripper = float(np.clip(d.qpos[self._finger] / FINGER_TRAVEL, 0.0, 1.0))
            d.ctrl[n] = self._goal_gripper * FINGER_TRAVEL
            self._stopped = True
            self.stop_stamp = self.clock()

    def narrow_limits(self, spec: dict) -> None:
        self._limits = narrow(self._limits, self.joint_names, spec)

    # --- simulation --------------------------------------------------------------------------------
    def set_camera_size(self, camera: str, size: tuple[int, int]) -> None:
        """Render ``camera`` at ``size`` (HxW), e.g. what the policy server's welcome asks for."""
        if camera not in CAMERAS:
            raise ConfigError(f"unknown camera {camera!r}; the virtual arm has {list(CAMERAS)}")
        if camera not in self.cameras:
            self.cameras = (*self.cameras, camera)
        self.camera_sizes[camera] = (int(size[0]), int(size[1]))

    def _require_connected(self) -> None:
        if not self._connected:
            raise RuntimeError("the virtual arm is not connected: call connect() first")

    def _sync(self) -> None:
        """Advance the physics to now (lock held)."""
        now = self.clock()
        n = int((now - self._t_sim) / PHYSICS_DT)
        if n <= 0:
            return
        max_n = int(self.cfg.max_catch_up_s / PHYSICS_DT)
        if n > max_n:
            self.lost_s += (n - max_n) * PHYSICS_DT
            self._t_sim += (n - max_n) * PHYSICS_DT
            n = max_n
        m, d = self.model, self.data
        k = len(self._qadr)
        dq = self.cfg.servo_speed * PHYSICS_DT
        dg = self.cfg.gripper_speed * FINGER_TRAVEL * PHYSICS_DT
        g_goal = self._goal_gripper * FINGER_TRAVEL
        for _ in range(n):
            # the servos' profile generator: move the position setpoint towards the goal at a bounded speed
            d.ctrl[:k] += np.clip(self._goal - d.ctrl[:k], -dq, dq)
            d.ctrl[k] += float(np.clip(g_goal - d.ctrl[k], -dg, dg))
            mujoco.mj_step(m, d)
        self._t_sim += n * PHYSICS_DT
