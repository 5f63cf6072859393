"""VLASH's "action quantization", kept as a separate, named option so that its effect is never
confused with asynchrony: execute every q-th absolute target, or the sum of q consecutive deltas, so
the robot covers q planned steps per control step."""

from __future__ import annotations

import numpy as np

from policy_steer.errors import ConfigError


def quantize_actions(actions: np.ndarray, q: int, action_mode: str) -> np.ndarray:
    """[H, A] -> [ceil(H / q), A]. The gripper column (index 3, if any) keeps the group's last command."""
    if q < 1:
        raise ConfigError(f"quantization q must be >= 1, got {q}")
    if q == 1:
        return actions
    h = actions.shape[0]
    groups = [actions[i : i + q] for i in range(0, h, q)]
    if action_mode == "absolute":
        return np.stack([g[-1] for g in groups])
    if action_mode == "delta":
        out = np.stack([g[-1].copy() for g in groups])
        out[:, :3] = np.stack([g[:, :3].sum(axis=0) for g in groups])
        return out
    raise ConfigError(f"cannot quantize {action_mode!r} actions")
