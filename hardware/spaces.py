"""Action spaces: what a policy's action vector means for an arm.

- ``ee_delta``: ``[dx, dy, dz(, g)]`` metres per control step from the measured end effector, then a
  gripper command (+1 close, -1 open); the plain-MuJoCo tasks' default (``policy_steer.envs``).
- ``ee_absolute``: ``[x, y, z(, g)]`` world targets (metres), then the gripper command.
- ``joint``: the arm's native action vector (:attr:`~policy_steer.hardware.arm.Arm.action_names`):
  joint position targets then the gripper target, in the arm's units. This is what lerobot policies
  trained on a lerobot robot's datasets output (``shoulder_pan.pos`` ... ``gripper.pos``).

End-effector spaces need the arm's kinematics (the virtual arm has them; a lerobot robot would need a
kinematic model: lerobot's ``RobotKinematics`` with the robot's URDF, which is not wired in here).

Each space clamps a chunk's rows into its own bounds (:meth:`ActionSpace.validate_chunk`: deltas to the
largest step, absolute targets to the workspace, joints to their ranges, gripper commands to theirs)
and turns one row into an arm command (:meth:`ActionSpace.to_command`); the command filter then
checks the command itself against the limits.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from policy_steer.hardware.arm import Arm, ArmCommand, ArmObservation, EeCommand, JointCommand
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


class _EeSpace(ActionSpace):
    def __init__(self, arm: Arm, hz: float, action_dim: int) -> None:
        super().__init__(arm, hz)
        if arm.kinematics is None:
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


class EeDeltaSpace(_EeSpace):
    name, mode = "ee_delta", "delta"

    def __init__(self, arm: Arm, hz: float, action_dim: int, max_step: float | None = None) -> None:
        super().__init__(arm, hz, action_dim)
        ee = arm.limits.ee_step(hz)
        self.max_step = float(max_step if max_step is not None else (ee if ee is not None else 0.03))

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        hi = np.array([self.max_step] * 3 + [1.0])[: self.dim]
        return -hi, hi

    def to_command(self, action: np.ndarray, obs: ArmObservation, last: JointCommand) -> ArmCommand:
        return EeCommand(np.asarray(obs.ee_pos, dtype=np.float64) + action[:3], self._gripper(action, last))


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


def make_space(name: str, arm: Arm, hz: float, action_dim: int) -> ActionSpace:
    """``auto``: ``joint`` for arms without kinematics, else ``ee_delta`` (the simulated tasks' space)."""
    if name == "auto":
        name = "joint" if arm.kinematics is None else "ee_delta"
    if name == "ee_delta":
        return EeDeltaSpace(arm, hz, action_dim)
    if name == "ee_absolute":
        return EeAbsoluteSpace(arm, hz, action_dim)
    if name == "joint":
        return JointSpace(arm, hz, action_dim)
    raise SafetyError(f"unknown action space {name!r}; use auto or one of {list(SPACES)}")
