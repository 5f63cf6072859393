"""Action spaces: what a policy's action vector means for an arm.

- ``ee_delta``: ``[dx, dy, dz(, g)]`` metres per control step from the measured end effector, then a
  gripper command (+1 close, -1 open); the plain-MuJoCo tasks' default (``policy_steer.envs``).
- ``ee_absolute``: ``[x, y, z(, g)]`` world targets (metres), then the gripper command.
- ``joint``: the arm's native action vector (:attr:`~policy_steer.hardware.arm.Arm.action_names`):
  joint position targets then the gripper target, in the arm's units. This is what lerobot policies
  trained on a lerobot robot's datasets output (``shoulder_pan.pos`` ... ``gripper.pos``).

End-effector spaces need the arm's kinematics (the virtual arm has them; a lerobot robot would need a
kinematic model: lerobot's ``RobotKinematics`` with the robot's URDF, which is not wired in here), unless
the driver takes end-effector targets natively (``Arm.ee_native``: a simulated task, whose controller
solves its own inverse kinematics; it takes only the space it was built for, ``Arm.native_space``).

Each space clamps a chunk's rows into its own bounds (:meth:`ActionSpace.validate_chunk`: deltas to the
largest step, absolute targets to the workspace, joints to their ranges, gripper commands to theirs)
and turns one row into an arm command (:meth:`ActionSpace.to_command`); the command filter then
checks the command itself against the limits.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from policy_steer.hardware.arm import Arm, ArmCommand, ArmObservation, EeCommand, EeStep, JointCommand
from policy_steer.hardware.errors import SafetyError

SPACES = ("ee_delta", "ee_absolute", "joint")


def _clip(actions: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, int]:
    out = np.clip(actions, lo, hi).astype(np.float32)
    return out, int(np.count_nonzero(out != actions))


class ActionSpace(ABC):
    name: str
    mode: str  # the runtime's RobotDescription.action_mode: "delta" or "absolute"
    dim: int

    def __init__(self, arm: Arm, hz: float) -> None:
        self.arm = arm
        self.hz = hz

    @abstractmethod
    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """([A], [A]) the per-column bounds rows are clamped to."""

    def validate_chunk(self, actions: np.ndarray) -> tuple[np.ndarray, int]:
        """A clamped float32 copy of finite ``actions`` [H, A] and how many values were changed."""
        lo, hi = self.bounds()
        return _clip(np.asarray(actions, dtype=np.float32), lo.astype(np.float32), hi.astype(np.float32))

    @abstractmethod
    def to_command(self, action: np.ndarray, obs: ArmObservation, last: JointCommand) -> ArmCommand:
        """The arm command for one validated row, given the latest observation and the last command."""

    def hold(self, obs: ArmObservation, last: JointCommand) -> ArmCommand:
        """Stay where the arm is measured (an ee_native driver's hold; joint drivers repeat their last command)."""
        return last

    @abstractmethod
    def row(self, cmd: ArmCommand, obs: ArmObservation) -> np.ndarray:
        """float32 [dim]: ``cmd`` (what reached the driver) as a row of this action space, from ``obs``."""


class _EeSpace(ActionSpace):
    def __init__(self, arm: Arm, hz: float, action_dim: int) -> None:
        super().__init__(arm, hz)
        if arm.kinematics is None and not arm.ee_native:
            raise SafetyError(
                f"the {self.name!r} action space needs the arm's kinematics; {arm.name} has none "
                "(use --action_space joint, or give the driver a kinematic model)"
            )
        if action_dim not in (3, 4):
            raise SafetyError(
                f"the {self.name!r} action space has 3 or 4 columns (x, y, z, gripper); the policy has {action_dim}")
        self.dim = action_dim

    def _gripper(self, action: np.ndarray, last: JointCommand) -> float:
        if self.dim < 4:
            return last.gripper
        return self.arm.gripper_closed if action[3] > 0 else self.arm.gripper_open

    def gripper_command(self, gripper: float) -> float:
        """A gripper target back as the policy's gripper command: +1 close, -1 open."""
        mid = 0.5 * (self.arm.gripper_open + self.arm.gripper_closed)
        closer = (gripper < mid) if self.arm.gripper_closed < self.arm.gripper_open else (gripper > mid)
        return 1.0 if closer else -1.0

    def _ee_of(self, cmd: ArmCommand) -> np.ndarray:
        if isinstance(cmd, EeStep):
            return cmd.target
        if isinstance(cmd, EeCommand):
            return np.asarray(cmd.ee_pos, dtype=np.float64)
        return self.arm.kinematics.fk(np.asarray(cmd.joints, dtype=np.float64))

    def _row(self, xyz: np.ndarray, cmd: ArmCommand) -> np.ndarray:
        out = np.zeros(self.dim, np.float32)
        out[:3] = xyz
        if self.dim > 3:
            out[3] = self.gripper_command(cmd.gripper)
        return out


class EeDeltaSpace(_EeSpace):
    name, mode = "ee_delta", "delta"

    def __init__(self, arm: Arm, hz: float, action_dim: int, max_step: float | None = None) -> None:
        super().__init__(arm, hz, action_dim)
        ee = arm.limits.ee_step(hz)
        if max_step is None:
            max_step = arm.max_step if arm.max_step is not None else (ee if ee is not None else 0.03)
        self.max_step = float(max_step)

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        hi = np.array([self.max_step] * 3 + [1.0])[: self.dim]
        return -hi, hi

    def to_command(self, action: np.ndarray, obs: ArmObservation, last: JointCommand) -> ArmCommand:
        return EeStep(np.asarray(obs.ee_pos, dtype=np.float64), np.asarray(action[:3], dtype=np.float64),
                      self._gripper(action, last))

    def hold(self, obs: ArmObservation, last: JointCommand) -> ArmCommand:
        return EeStep(np.asarray(obs.ee_pos, dtype=np.float64), np.zeros(3), last.gripper)

    def row(self, cmd: ArmCommand, obs: ArmObservation) -> np.ndarray:
        if isinstance(cmd, EeStep):
            return self._row(cmd.delta, cmd)
        return self._row(self._ee_of(cmd) - np.asarray(obs.ee_pos, dtype=np.float64), cmd)


class EeAbsoluteSpace(_EeSpace):
    name, mode = "ee_absolute", "absolute"

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        lim = self.arm.limits
        if lim.has_workspace:
            lo, hi = lim.workspace_low, lim.workspace_high
        else:
            lo, hi = np.full(3, -np.inf), np.full(3, np.inf)
        return np.concatenate([lo, [-1.0]])[: self.dim], np.concatenate([hi, [1.0]])[: self.dim]

    def to_command(self, action: np.ndarray, obs: ArmObservation, last: JointCommand) -> ArmCommand:
        return EeCommand(np.asarray(action[:3], dtype=np.float64), self._gripper(action, last))

    def hold(self, obs: ArmObservation, last: JointCommand) -> ArmCommand:
        return EeCommand(np.asarray(obs.ee_pos, dtype=np.float64), last.gripper)

    def row(self, cmd: ArmCommand, obs: ArmObservation) -> np.ndarray:
        return self._row(self._ee_of(cmd), cmd)


class JointSpace(ActionSpace):
    """The arm's native action vector; a policy may also leave the gripper out (then it keeps its target)."""

    name, mode = "joint", "absolute"

    def __init__(self, arm: Arm, hz: float, action_dim: int) -> None:
        super().__init__(arm, hz)
        n = len(arm.joint_names)
        names = arm.action_names
        if action_dim not in (n, len(names)):
            raise SafetyError(
                f"the policy's actions have {action_dim} values; {arm.name} takes {len(names)} ({', '.join(names)})"
            )
        self.dim = action_dim
        self.names = names[:action_dim]

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        lim = self.arm.limits
        lo = np.concatenate([lim.joint_low, [lim.gripper_low]])[: self.dim]
        hi = np.concatenate([lim.joint_high, [lim.gripper_high]])[: self.dim]
        return lo, hi

    def to_command(self, action: np.ndarray, obs: ArmObservation, last: JointCommand) -> ArmCommand:
        n = len(self.arm.joint_names)
        g = float(action[n]) if self.dim > n else last.gripper
        return JointCommand(np.asarray(action[:n], dtype=np.float64), g)

    def row(self, cmd: ArmCommand, obs: ArmObservation) -> np.ndarray:
        return np.concatenate([np.asarray(cmd.joints, np.float64), [cmd.gripper]])[: self.dim].astype(np.float32)


def make_space(name: str, arm: Arm, hz: float, action_dim: int, max_step: float | None = None) -> ActionSpace:
    """``auto``: the driver's native space if it has one (a simulated task's), ``joint`` for arms without
    kinematics, else ``ee_delta`` (the simulated tasks' space). ``max_step``: ``ee_delta``'s largest step
    per axis (default: the arm's end-effector speed limit / rate, else 3 cm)."""
    native = arm.native_space
    if name == "auto":
        name = native or ("joint" if arm.kinematics is None else "ee_delta")
    if native is not None and name != native:
        raise SafetyError(f"{arm.name} takes {native} actions only, not {name}")
    if name == "ee_delta":
        return EeDeltaSpace(arm, hz, action_dim, max_step)
    if name == "ee_absolute":
        return EeAbsoluteSpace(arm, hz, action_dim)
    if name == "joint":
        return JointSpace(arm, hz, action_dim)
    raise SafetyError(f"unknown action space {name!r}; use auto or one of {list(SPACES)}")
