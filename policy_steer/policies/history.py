"""The observation history of policies with ``n_obs_steps > 1`` (lerobot keeps it in queues).

Frames are keyed by control step: a second ``prepare`` for the same step (a re-plan) replaces the
frame instead of appending it. Before the history is full it is padded with its oldest frame, as
lerobot's ``populate_queues`` does at an episode start. ``export``/``load`` move it in and out, so a
server can keep one history per robot session on a shared model.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import torch
from torch import Tensor


class ObservationHistory:
    def __init__(self, n_obs_steps: int) -> None:
        self.n_obs_steps = n_obs_steps
        self._frames: deque[tuple[int | None, dict[str, Tensor]]] = deque(maxlen=n_obs_steps)

    def push(self, step: int | None, frame: dict[str, Tensor]) -> None:
        if self._frames and step is not None and self._frames[-1][0] == step:
            self._frames[-1] = (step, frame)
        else:
            self._frames.append((step, frame))

    def stacked(self) -> dict[str, Tensor]:
        """Each key as [1, n_obs_steps, ...], oldest first."""
        frames = [f for _, f in self._frames]
        frames = [frames[0]] * (self.n_obs_steps - len(frames)) + frames
        return {k: torch.stack([f[k] for f in frames], dim=1) for k in frames[0]}

    def clear(self) -> None:
        self._frames.clear()

    def export(self) -> list[tuple[int | None, dict[str, Tensor]]]:
        return list(self._frames)

    def load(self, state: Any) -> None:
        self._frames = deque(state or [], maxlen=self.n_obs_steps)
