"""The reward of the sampler's tensor: normalised chunk -> end-effector trajectory -> stage reward.

The sampler holds candidates as ``x`` [B, H_model, A_model] in the policy's normalised action space.
:class:`ChunkReward` takes the rows that form the returned chunk (``policy.chunk_slice``: the first
one runs at the chunk's start), un-normalises them with the policy's differentiable statistics, maps
them to positions with the robot's trajectory map (delta: cumulative sum from the end effector the
chunk was conditioned on; absolute: the targets) and evaluates the current stage of the episode's
:class:`~policy_steer.vlm_rewards.RewardSession`: ``reward(x) -> [B]``, differentiable in ``x``.

Only the xyz channels (0..2) are guided: :meth:`ChunkReward.mask` is 1 there and 0 on every other
channel (gripper, a VLA's padding).

Delta actions are clipped by the env at ``max_step`` per component. The reward's *value* uses the
clip (what the robot will do); its *gradient* passes through it (``clip_grad="straight_through"``,
default) so that a saturated component can still be pulled back, or is cut there (``"zero"``,
the plain clamp of :func:`policy_steer.vlm_rewards.trajectory.ee_positions`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from policy_steer.errors import ConfigError
from policy_steer.runtime.future_state import RobotDescription
from policy_steer.vlm_rewards import ChunkMap, RewardSession, TrajectoryMap

CLIP_GRADS = ("straight_through", "zero")
XYZ = 3  # the guided channels: 0..2


def straight_through_clip(a: Tensor, limit: float) -> Tensor:
    """a.clamp(-limit, limit) in value, identity in gradient. [..., 3] -> [..., 3]."""
    return a + (a.clamp(-limit, limit) - a).detach()


def trajectory_map_for(robot: RobotDescription, action_dim: int, clip_grad: str = "straight_through") -> TrajectoryMap:
    """The trajectory map of a robot's action mode (delta / absolute), with its gripper channel.

    With ``clip_grad="straight_through"`` the map itself does not clip (the caller clips with
    :func:`straight_through_clip`); with ``"zero"`` it clips as the env does (no gradient when saturated).
    """
    if clip_grad not in CLIP_GRADS:
        raise ConfigError(f"clip_grad must be one of {CLIP_GRADS}, got {clip_grad!r}")
    if robot.action_mode not in ("delta", "absolute"):
        raise ConfigError(f"VLS has no trajectory map for action mode {robot.action_mode!r}")
    gripper = XYZ if ("gripper" in robot.state_layout and action_dim > XYZ) else None
    max_step = robot.max_step if (robot.action_mode == "delta" and clip_grad == "zero") else None
    return TrajectoryMap(space=robot.action_mode, max_step=max_step, gripper_index=gripper)


@dataclass
class ChunkReward:
    """``reward(x [B, H_model, A_model]) -> [B]`` for one chunk (one observation, one stage).

    session: the episode's reward (its current stage and progress are read at call time);
    unnormalize: the policy's differentiable normalised -> output-units map;
    rows: model rows of the returned chunk; ee_start [3]: the end effector the chunk starts from.
    """

    session: RewardSession
    traj_map: TrajectoryMap
    unnormalize: Callable[[Tensor], Tensor]
    rows: slice
    ee_start: Tensor
    clip: float | None = None  # straight-through clip of delta xyz (None: the map clips, or no clip)

    def __post_init__(self) -> None:
        self._map = ChunkMap(self.traj_map, unnormalize=self._actions, ee_start=self.ee_start)

    def _actions(self, x: Tensor) -> Tensor:
        a = self.unnormalize(x)
        if self.clip is None:
            return a
        return torch.cat([straight_through_clip(a[..., :XYZ], self.clip), a[..., XYZ:]], dim=-1)

    def trajectory(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """x [B, H_model, A_model] -> positions [B, H, 3], gripper [B, H] or None."""
        return self._map(x[:, self.rows])

    def __call__(self, x: Tensor) -> Tensor:
        traj, gripper = self.trajectory(x)
        return self.session(traj, gripper).to(x.dtype)

    def mask(self, x: Tensor) -> Tensor:
        """[1, 1, A_model] weights of the guided channels (xyz) for tensors shaped like ``x``."""
        m = torch.zeros(1, 1, x.shape[-1], dtype=x.dtype, device=x.device)
        m[..., :XYZ] = 1.0
        return m
