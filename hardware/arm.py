"""The ``Arm`` interface every driver implements, and what goes in and out of it.

An arm is observed (:class:`ArmObservation`: joint positions, the end-effector pose when the driver
knows its kinematics, the gripper, camera frames, each with a monotonic stamp) and commanded with
**joint targets** (:class:`JointCommand`, already checked by the safety layer). End-effector targets
(:class:`EeCommand`, or :class:`EeStep` for a displacement from the measured position) are turned into
joint targets by the safety layer through the arm's :class:`Kinematics`, so that every command that
reaches a driver is one whose joint values, step and end-effector position have been checked. An arm
without kinematics takes joint targets only.

**Drivers that take end-effector targets natively** (``ee_native = True``): a simulated task
(:mod:`~policy_steer.hardware.drivers.sim_task`) cannot take joint targets, because its own controller
solves the inverse kinematics inside its step (the plain-MuJoCo tasks' IK with a smooth joint ramp,
robosuite's operational-space controller); sending it joint targets would bypass the very controller the
policy was trained against. Such a driver gets :class:`EeStep`/:class:`EeCommand` through
:meth:`Arm.command_ee`, after the command filter's checks that apply to a target (finite values,
the workspace box, the end-effector step; :meth:`~policy_steer.hardware.command_filter.CommandFilter.native`).
Joint ranges and joint steps are then its controller's to keep. A step the filter lets through
unchanged reaches the driver as the same numbers, so a simulated task steps exactly as the benchmark's
simulator does.

Every member the host or the safety layer uses is declared here with a default that fits a real arm
(no ``getattr`` probes): a simulated task also ends episodes (``episode_over``, ``info``), resets its
world (``start_episode``), knows its instruction and scene (``episode_context``, ``dynamic_scene``), its
state layout and its robot description (with a model rollout for the VLASH estimator).

Drivers also say what they can do safely: :attr:`Arm.limits` (joint ranges, workspace box, maximum
velocities; see :mod:`~policy_steer.hardware.limits`), a default control rate, and a
driver-defined :meth:`Arm.safe_stop` (brake where it stands, keep torque on, refuse further commands).
``command`` and ``safe_stop`` may be called from different threads; drivers serialise them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from policy_steer.hardware.errors import SafetyError
from policy_steer.hardware.limits import ArmLimits
from policy_steer.types import ArmDescription, EpisodeContext, PolicySpec, RobotDescription


@dataclass(frozen=True)
class CameraFrame:
    """uint8 [H, W, 3] image and the monotonic time it was captured (or read from the camera)."""

    image: np.ndarray
    stamp: float


@dataclass
class ArmObservation:
    """One reading of the arm. Units are the driver's (radians or degrees; see its docstring).

    ``state`` is the driver's native proprioceptive vector with ``state_names`` (for a lerobot robot:
    its float observation features in order, which is what lerobot datasets record as
    ``observation.state``); ``joints`` and ``gripper`` are the commanded quantities in the units of
    :class:`JointCommand`.
    """

    stamp: float
    joints: np.ndarray  # [n] float64
    gripper: float
    state: np.ndarray  # [S] float64, native layout
    state_names: tuple[str, ...]
    ee_pos: np.ndarray | None = None  # [3] metres, world frame (None: no kinematics)
    ee_quat: np.ndarray | None = None  # [4] wxyz
    joint_vel: np.ndarray | None = None  # [n] per second
    images: dict[str, CameraFrame] = field(default_factory=dict)
    # further observation features the driver reads, by lerobot key (a simulated task's
    # observation.environment_state: its object poses); passed to the policy as they are
    features: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass(frozen=True)
class JointCommand:
    """Joint position targets [n] and a gripper target, in the arm's units."""

    joints: np.ndarray
    gripper: float


@dataclass(frozen=True)
class EeCommand:
    """An end-effector position target [3] (metres, world) and a gripper target; orientation is the
    arm's default (the virtual arm keeps the hand pointing down)."""

    ee_pos: np.ndarray
    gripper: float


@dataclass(frozen=True)
class EeStep:
    """An end-effector displacement ``delta`` [3] (metres) from the measured position ``origin`` [3]
    (world), and a gripper target: the target is ``origin + delta``. A driver that takes displacements
    natively (a delta-action task) gets ``delta`` itself, bit for bit, when the filter did not change it."""

    origin: np.ndarray
    delta: np.ndarray
    gripper: float

    @property
    def target(self) -> np.ndarray:
        return np.asarray(self.origin, dtype=np.float64) + np.asarray(self.delta, dtype=np.float64)


ArmCommand = JointCommand | EeCommand | EeStep


@runtime_checkable
class Kinematics(Protocol):
    """Forward and inverse kinematics of the end-effector point. Not thread-safe: control thread only."""

    def fk(self, joints: np.ndarray) -> np.ndarray:
        """[3] end-effector position for joint values [n]."""

    def ik(self, ee_pos: np.ndarray, joints_ref: np.ndarray) -> np.ndarray:
        """Joint values [n] near ``joints_ref`` that put the end effector at ``ee_pos`` [3]."""


class Arm(ABC):
    """A robot arm driver. ``connect()`` before anything else, ``disconnect()`` at the end."""

    name: str = "arm"
    joint_names: tuple[str, ...] = ()  # the commanded joints, in the order of JointCommand.joints
    gripper_name: str | None = "gripper"  # its name among the native action names (None: no gripper)
    gripper_open: float = 1.0  # gripper targets for "open" and "closed" (end-effector action spaces)
    gripper_closed: float = 0.0
    control_hz: float = 10.0  # the rate the driver is meant to be commanded at (the CLI's --rate overrides)
    kinematics: Kinematics | None = None
    cameras: tuple[str, ...] = ()
    camera_shapes: dict[str, tuple[int, ...]] = {}  # fixed camera shapes [H, W, 3] (empty: any size, set_camera_size)
    state_names: tuple[str, ...] = ()  # names of ArmObservation.state (empty: the action names)
    feature_shapes: dict[str, tuple[int, ...]] = {}  # shapes of ArmObservation.features, by lerobot key
    # Named slices of ArmObservation.state for the policy's state layout (None: the host names them);
    # a simulated task names ee_pos, gripper, joint_pos and its object poses.
    state_layout: dict[str, slice] | None = None
    instruction: str | None = None  # the task the driver knows it runs (a simulated task's instruction)
    ee_native: bool = False  # True: takes end-effector targets through command_ee, never joint targets (module docstring)
    native_space: str | None = None  # the one action space an ee_native driver takes (ee_delta | ee_absolute)
    max_step: float | None = None  # ee_delta: the largest step per axis the driver takes (None: from the limits)
    # Simulated time one command lasts, for a simulator that advances a fixed time per command (a task env:
    # 1 / its task rate, whatever the host's rate); None: real time, one control period. Step limits use it.
    command_period_s: float | None = None
    dynamic_scene: bool = False  # True: the scene the driver describes changes during an episode (objects move)

    @property
    def action_names(self) -> tuple[str, ...]:
        """The native action vector's names (joint-space policies): the joints, then the gripper."""
        return self.joint_names + ((self.gripper_name,) if self.gripper_name else ())

    @property
    @abstractmethod
    def limits(self) -> ArmLimits:
        """What the arm may be commanded to do (the safety layer enforces it)."""

    @property
    @abstractmethod
    def stopped(self) -> bool:
        """True after :meth:`safe_stop` (until the process restarts or ``connect()`` again)."""

    @abstractmethod
    def connect(self) -> None:
        """Open the device; raises :class:`~policy_steer.hardware.errors.DriverUnavailable` with one line."""

    @abstractmethod
    def disconnect(self) -> None:
        """Release the device (what happens to torque is the driver's documented choice)."""

    @abstractmethod
    def observe(self) -> ArmObservation:
        """Read the arm (and its cameras) now."""

    @abstractmethod
    def command(self, cmd: JointCommand) -> None:
        """Send joint targets for the coming control period; returns at once. Raises ArmStopped after a stop."""

    @abstractmethod
    def safe_stop(self) -> None:
        """Driver-defined safe stop: brake where the arm stands (torque on) and refuse further commands."""

    # --- declared with defaults that fit a real arm ------------------------------------------------
    def command_ee(self, cmd: EeCommand | EeStep) -> None:
        """An end-effector target, for an ``ee_native`` driver only (already checked by the command filter)."""
        raise SafetyError(f"{self.name} takes joint targets only")

    @property
    def episode_over(self) -> bool:
        """The driver ended the episode (a simulated task's success, failure or time limit); an arm never does."""
        return False

    @property
    def info(self) -> dict[str, Any]:
        """The last step's information (a simulated task's ``success``, ``failure``, ...)."""
        return {}

    def start_episode(self, seed: int | None = None) -> None:
        """A new episode begins: a simulated task resets its world (``seed``); a real arm stays where it is."""

    def episode_context(self, seed: int | None = None) -> EpisodeContext | None:
        """The episode context the driver knows (a simulated task: read from the simulator now), or None."""
        return None

    def arm_description(self) -> ArmDescription | None:
        """The arm's own model and controller (a model file of the arm alone, its joint order, end-effector
        site, limits), for the ``kinematic`` and ``model-robot`` future-state estimators; the host sends it
        in the robot description. None: the driver describes no model."""
        return None

    def robot_description(self) -> RobotDescription | None:
        """The driver's own robot description (a simulated task's, with its model rollout), or None: the
        safety layer derives it from the action space and the observation map."""
        return None

    def set_camera_size(self, camera: str, size: tuple[int, int]) -> None:
        """Deliver ``camera`` at ``size`` (H, W), what the policy asks for. Fixed cameras are checked."""
        shape = self.camera_shapes.get(camera)
        if camera not in self.cameras:
            raise SafetyError(f"the policy wants camera {camera!r}; {self.name} has {list(self.cameras)}")
        if shape is not None and tuple(shape[:2]) != tuple(size):
            raise SafetyError(f"the policy wants camera {camera!r} at {list(size)}; {self.name} gives {list(shape[:2])}")

    def check_policy(self, spec: PolicySpec) -> None:
        """Raise SafetyError naming what does not fit, when the policy cannot drive this driver (a simulated
        task checks the observation keys and the action size it takes); the host checks the rest."""

    def narrow_limits(self, spec: dict[str, Any]) -> None:
        """Narrow :attr:`limits` with a limits file's content (:func:`~policy_steer.hardware.limits.narrow`)."""
        raise SafetyError(f"{self.name} cannot narrow its limits")

    def __enter__(self) -> Arm:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.disconnect()
