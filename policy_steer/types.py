"""The words of DESIGN.md as data: observation keys, chunks and policy specs.

An **observation** is a plain dict with lerobot's keys:

- ``observation.state``: float32 [S], the robot and scene state vector (named slices per task);
- ``observation.environment_state``: float32 [E], the non-robot part (object poses, goal) for policies
  such as lerobot's DiffusionPolicy that refuse a state-only input;
- ``observation.images.<camera>``: uint8 [H, W, 3];
- ``task``: the instruction (str); ``step``: the control index (int); ``stamp``: monotonic seconds.

A **chunk** is float32 [H, A] actions in the policy's output units, with the control index of its
first action and an ``info`` dict (scores, timings, which candidate won).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

OBS_STATE = "observation.state"
OBS_ENV_STATE = "observation.environment_state"
OBS_IMAGES = "observation.images"
TASK = "task"
STEP = "step"
STAMP = "stamp"
ACTION = "action"

Observation = dict[str, Any]
Family = Literal["diffusion", "flow"]


def image_key(camera: str) -> str:
    return f"{OBS_IMAGES}.{camera}"


@dataclass(frozen=True)
class FeatureSpec:
    """dtype (numpy string, e.g. ``<f4``, ``|u1``) and shape of one observation array."""

    dtype: str
    shape: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"dtype": self.dtype, "shape": list(self.shape)}


@dataclass(frozen=True)
class PolicySpec:
    """What a base policy promises; negotiated with robots in the protocol's ``welcome``.

    ``horizon`` is the length of the chunks this policy returns (actions from the current control step
    on; for a lerobot policy with n_obs_steps > 1 the actions that belong to the past are dropped),
    ``n_action_steps`` how many of them lerobot would execute before replanning.
    """

    name: str
    family: Family
    horizon: int
    action_dim: int
    n_action_steps: int
    num_steps: int
    control_hz: float
    observation: dict[str, FeatureSpec] = field(default_factory=dict)
    n_obs_steps: int = 1

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["observation"] = {k: v.to_dict() for k, v in self.observation.items()}
        return d


@dataclass
class Chunk:
    """float32 [H, A] actions in policy output units; ``actions[i]`` runs at control index start_step + i."""

    actions: np.ndarray
    start_step: int
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.actions = np.ascontiguousarray(self.actions, dtype=np.float32)
        if self.actions.ndim != 2:
            raise ValueError(f"chunk actions must be [H, A], got shape {self.actions.shape}")

    @property
    def horizon(self) -> int:
        return int(self.actions.shape[0])

    @property
    def end_step(self) -> int:
        """The control index just after the chunk's last action."""
        return self.start_step + self.horizon
