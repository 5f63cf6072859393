"""The contract every task environment keeps (plain MuJoCo tasks and the robosuite adapter).

A task env is a ``gymnasium.Env`` whose observation is a dict with lerobot's keys:

- ``observation.state``: float32 [S]. It always starts with the robot part, in this order:
  ``ee_pos`` (3, world metres), ``gripper`` (1, opening 0 closed .. 1 open), ``joint_pos`` (n joints),
  followed by the task part (object poses, goal). ``state_layout`` names every slice.
- ``observation.environment_state``: float32 [E], exactly the task part of the state (everything after
  the robot part). lerobot's DiffusionPolicy refuses a state-only input, so policies read the object
  poses from here; policies that read only ``observation.state`` see them there too.
- ``observation.images.<camera>``: uint8 [h, w, 3], only for cameras listed in ``cameras``.

Actions are float32 [A]: ``[dx, dy, dz]`` end-effector position targets (``action_mode="delta"``,
metres per control step, clipped to ``max_step``) or ``[x, y, z]`` world targets
(``action_mode="absolute"``), followed by a gripper command (+1 close, -1 open) on tasks with a
gripper. A chunk maps to its end-effector trajectory with :func:`policy_steer.envs.trajectory.ee_trajectory`.

``info`` carries ``success`` (bool), ``failure`` (a reason string, or None), ``is_success`` (the
same as success, for gymnasium wrappers), and on ``moving-goal`` ``goal_jump_step`` (the control
index at which the goal moved, or None before it has). ``terminated`` is True on success or
failure, ``truncated`` at ``max_episode_steps``.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np

from policy_steer.scene import Scene
from policy_steer.types import ArmDescription, EpisodeContext, RobotDescription

VARIANTS: tuple[str, ...] = ("nominal", "obstacle", "shifted-surface", "clutter", "moving-goal")
ROBOT_SLICES: tuple[str, ...] = ("ee_pos", "gripper", "joint_pos")


class TaskEnv(gym.Env):
    """Base class of the task environments; see the module docstring for the observation contract."""

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["rgb_array"], "render_fps": 10}

    task: ClassVar[str]  # "reach", "push", "pick-place", "lift"
    instruction: str  # the task string written into datasets and observations
    variant: str
    action_mode: str  # "delta" or "absolute"
    control_hz: float
    max_step: float  # metres per control step (delta mode)
    max_episode_steps: int
    cameras: tuple[str, ...]
    state_layout: dict[str, slice]  # names every slice of observation.state
    robot_state_dim: int  # length of the robot part (ee_pos + gripper + joint_pos)
    arm_description: ArmDescription | None = None  # the arm's published model (None: the env has none)

    @property
    def action_dim(self) -> int:
        return int(self.action_space.shape[0])

    @property
    def has_gripper(self) -> bool:
        return self.action_dim == 4

    @abstractmethod
    def scene(self) -> Scene:
        """The scene now: objects, keypoints, table height, workspace, end effector."""

    def episode_context(self, seed: int | None = None) -> EpisodeContext:
        """The episode context read from the simulator now (ground truth), as a robot host sends it."""
        return EpisodeContext(
            instruction=self.instruction, scene=self.scene(), robot=RobotDescription.from_env(self),
            task=self.task, variant=self.variant, seed=seed,
        )

    def suppress_goal_jump(self) -> bool:
        """Moving-goal: cancel this episode's goal jump (call right after ``reset``); the benchmark's
        reaction figure compares the episode with this counterfactual one of the same seed. Returns
        whether the env could (the base has no jump to cancel: False, nothing changes)."""
        return False

    @abstractmethod
    def success(self) -> bool:
        """The task's success predicate on the current simulator state."""

    @abstractmethod
    def rollout(self, actions: np.ndarray) -> np.ndarray:
        """Predict observation.state after each of ``actions`` [K, A] on a scratch copy of the simulator.

        The env itself is not changed. Returns float32 [K, S]. Used by the VLASH ``model`` future-state
        estimator.
        """

    def ee_position(self) -> np.ndarray:
        """float64 [3] current end-effector position (world metres)."""
        obs = self.observe()
        return np.asarray(obs["observation.state"][self.state_layout["ee_pos"]], dtype=np.float64)

    @abstractmethod
    def observe(self) -> dict[str, np.ndarray]:
        """The current observation dict (same as reset/step return), without stepping."""
