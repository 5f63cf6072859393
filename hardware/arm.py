"""The ``Arm`` interface every driver implements, and what goes in and out of it.

An arm is observed (:class:`ArmObservation`: joint positions, the end-effector pose when the driver
knows its kinematics, the gripper, camera frames, each with a monotonic stamp) and commanded with
**joint targets** (:class:`JointCommand`, already checked by the safety layer). End-effector targets
(:class:`EeCommand`) are turned into joint targets by the safety layer through the arm's
:class:`Kinematics`, so that every command that reaches a driver is one whose joint values, step and
end-effector position have been checked. An arm without kinematics takes joint targets only.

Drivers also say what they can do safely: :attr:`Arm.limits` (joint ranges, workspace box, maximum
velocities; see :mod:`~policy_steer.hardware.limits`), a default control rate, and a
driver-defined :meth:`Arm.safe_stop` (brake where it stands, keep torque on, refuse further commands).
``command`` and ``safe_stop`` may be called from different threads; drivers serialise them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from policy_steer.hardware.limits import ArmLimits


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


ArmCommand = JointCommand | EeCommand


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

    def __enter__(self) -> Arm:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.disconnect()
