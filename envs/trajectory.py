"""The differentiable map from an action chunk to the end-effector trajectory it asks for.

The plain-MuJoCo tasks execute an action by setting the end-effector target to
``measured ee + clip(delta, -max_step, max_step)`` (delta mode) or to the action itself (absolute
mode), and the controller reaches each target within the control step (see
:mod:`policy_steer.envs.mujoco_task`). So the ee after step ``k`` of a chunk is, up to tracking error,

- delta:    ``ee_start + sum_{i <= k} clip(a_i[:3], -max_step, max_step)``
- absolute: ``a_k[:3]``

Measured tracking error over 16-step chunks of the scripted experts (worst case over many chunks):
under 1 mm for reach (free motion), about 3 mm for pick-place (grasping, carrying), about 9 mm for
push (the tip lags while it pushes); ``tests/envs/test_trajectory.py`` holds them under 3, 6 and 15 mm.
Contact with anything that resists makes the real trajectory fall short of this one, and the env
clips targets to its workspace box (not modelled here). The gripper column, if any, is ignored. Reward guidance differentiates through this map.
"""

from __future__ import annotations

import torch

MODES = ("delta", "absolute")


def ee_trajectory(
    actions: torch.Tensor, ee_start: torch.Tensor, mode: str = "delta", max_step: float | None = None
) -> torch.Tensor:
    """End-effector positions [B, H, 3] after each action of ``actions`` [B, H, A] from ``ee_start`` [B, 3].

    ``max_step`` (delta mode): clip each displacement as the env does (the clipped part has zero
    gradient; leave it None to keep gradients everywhere). Leading dims other than B also work.
    """
    if mode not in MODES:
        raise ValueError(f"unknown action mode {mode!r}; use one of {MODES}")
    if actions.shape[-1] < 3:
        raise ValueError(f"actions need at least 3 columns (x, y, z), got shape {tuple(actions.shape)}")
    xyz = actions[..., :3]
    if mode == "absolute":
        return xyz
    if max_step is not None:
        xyz = xyz.clamp(-max_step, max_step)
    return ee_start.unsqueeze(-2).to(xyz.dtype) + torch.cumsum(xyz, dim=-2)
