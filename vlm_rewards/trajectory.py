"""Trajectory maps: an action chunk -> the end-effector trajectory the reward is computed on.

Per action space (all differentiable, batched over candidates):

- ``delta``: ``[dx, dy, dz(, grip)]`` metres per step; positions are the cumulative sum from the
  current end effector (as VLS), after each action: ``p_h = ee_start + sum_{k<=h} clip(scale * d_k)``;
- ``absolute``: ``[x, y, z(, grip)]`` world targets; positions are the targets (perfect tracking);
- ``joint``: joint position targets ``[q_1..q_n(, grip)]`` through a differentiable forward kinematics
  ``fk`` given by the caller (the robot's; e.g. :func:`policy_steer.envs.kinematics.fk` for the tasks'
  5-joint arm);
- ``joint_delta``: joint increments, cumulated from ``q_start``, then forward kinematics.

``delta`` and ``absolute`` model an end-effector controller as the robot description states it
(action mode, ``max_step``): the same per-component clip as the controller (a clipped component
passes no gradient: moving it further out would not change the motion). This package does not import
the simulator; a test checks that this map agrees with the tasks' own
(:func:`policy_steer.envs.trajectory.ee_trajectory`).

The gripper channel (``gripper_index``) is returned as is (+1 close, -1 open).
:class:`ChunkMap` adds the policy's un-normalisation in front, so guidance can map the sampler's
normalised ``x`` [B, H, A] straight to positions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal

import torch
from torch import Tensor

from policy_steer.errors import ConfigError, ValidationError

ActionSpace = Literal["delta", "absolute", "joint", "joint_delta"]
ACTION_SPACES: tuple[str, ...] = ("delta", "absolute", "joint", "joint_delta")
ForwardKinematics = Callable[[Tensor], Tensor]  # joints [..., n] -> ee position [..., 3]


def ee_positions(actions: Tensor, ee_start: Tensor, mode: str, max_step: float | None = None) -> Tensor:
    """End-effector positions [B, H, 3] after each action of ``actions`` [B, H, >=3] from ``ee_start`` [B, 3]
    (``delta``: clipped displacements cumulated; ``absolute``: the targets themselves)."""
    xyz = actions[..., :3]
    if mode == "absolute":
        return xyz
    if max_step is not None:
        xyz = xyz.clamp(-max_step, max_step)
    return ee_start.unsqueeze(-2).to(xyz.dtype) + torch.cumsum(xyz, dim=-2)


def joint_targets(q: Tensor, fk: ForwardKinematics) -> Tensor:
    """joint targets [B, H, n] -> positions [B, H, 3] through ``fk``."""
    return fk(q)


def joint_deltas(dq: Tensor, q_start: Tensor, fk: ForwardKinematics) -> Tensor:
    """joint increments [B, H, n], q_start [B, n] or [n] -> positions [B, H, 3]."""
    q0 = q_start.to(dq).reshape(-1, 1, dq.shape[-1])
    return fk(q0 + torch.cumsum(dq, dim=1))


@dataclass
class TrajectoryMap:
    """Actions in output units [B, H, A] -> (positions [B, H, 3], gripper [B, H] or None)."""

    space: ActionSpace = "delta"
    scale: float = 1.0  # delta: metres per action unit (VLS's scale)
    max_step: float | None = None  # delta: per-component clip, as the env applies it
    gripper_index: int | None = None  # the action channel of the gripper command; None: no gripper
    fk: ForwardKinematics | None = None  # joint spaces
    n_joints: int = 0  # joint spaces: channels 0..n-1 are joints

    def __post_init__(self) -> None:
        if self.space not in ACTION_SPACES:
            raise ConfigError(f"unknown action space {self.space!r}; use one of {list(ACTION_SPACES)}")
        if self.space.startswith("joint") and self.fk is None:
            raise ConfigError(f"action space {self.space!r} needs the robot's forward kinematics (fk=...)")
        if self.space.startswith("joint") and self.n_joints <= 0:
            raise ConfigError(f"action space {self.space!r} needs n_joints > 0")

    @property
    def position_channels(self) -> int:
        return self.n_joints if self.space.startswith("joint") else 3

    def __call__(
        self, actions: Tensor, ee_start: Tensor | None = None, q_start: Tensor | None = None
    ) -> tuple[Tensor, Tensor | None]:
        if actions.ndim != 3 or actions.shape[-1] < self.position_channels:
            raise ValidationError(
                f"actions: expected [B, H, A>={self.position_channels}] for space {self.space!r}, got {list(actions.shape)}"
            )
        n = self.position_channels
        if self.space == "delta":
            if ee_start is None:
                raise ValidationError("ee_start: the delta map needs the current end-effector position [B, 3] or [3]")
            ee = torch.as_tensor(ee_start).to(actions)
            traj = ee_positions(actions[..., :3] * self.scale, ee, "delta", self.max_step)
        elif self.space == "absolute":
            traj = ee_positions(actions[..., :3], actions.new_zeros(3), "absolute")
        elif self.space == "joint":
            traj = joint_targets(actions[..., :n], self.fk)
        else:
            if q_start is None:
                raise ValidationError("q_start: the joint_delta map needs the current joint positions [B, n] or [n]")
            traj = joint_deltas(actions[..., :n], torch.as_tensor(q_start), self.fk)
        gripper = None
        if self.gripper_index is not None and actions.shape[-1] > self.gripper_index:
            gripper = actions[..., self.gripper_index]
        return traj, gripper


@dataclass
class ChunkMap:
    """A chunk as the sampler holds it (normalised, [B, H, A]) -> (positions [B, H, 3], gripper [B, H]).

    ``unnormalize`` is the policy's differentiable un-normalisation
    (``DenoisingPolicy.unnormalize_actions``); None when the chunk is already in output units.
    ``ee_start`` / ``q_start`` may be set once per chunk here or passed per call.
    """

    traj_map: TrajectoryMap
    unnormalize: Callable[[Tensor], Tensor] | None = None
    ee_start: Tensor | None = None
    q_start: Tensor | None = None

    def __call__(
        self, x: Tensor, ee_start: Tensor | None = None, q_start: Tensor | None = None
    ) -> tuple[Tensor, Tensor | None]:
        actions = self.unnormalize(x) if self.unnormalize is not None else x
        return self.traj_map(
            actions,
            ee_start=self.ee_start if ee_start is None else ee_start,
            q_start=self.q_start if q_start is None else q_start,
        )
