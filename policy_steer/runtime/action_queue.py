"""The action queue between chunks and the robot.

Actions are stored with the control index they belong to. A new chunk replaces everything from its
``start_step`` on; ``pop(step)`` returns the action for exactly that control index or nothing, so the
robot never executes an action past the executed part of its chunk (``n_execute``), nor one from a
chunk that a newer chunk has replaced, nor one planned for another step.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from policy_steer.errors import ValidationError
from policy_steer.types import Chunk


@dataclass(frozen=True)
class QueuedAction:
    step: int  # control index at which it runs
    chunk_id: int
    index: int  # row in its chunk
    action: np.ndarray  # [A]


class ActionQueue:
    def __init__(self, action_dim: int) -> None:
        self.action_dim = action_dim
        self._items: dict[int, QueuedAction] = {}
        self._next_id = 0
        self.latest_chunk_id = -1

    def insert(self, chunk: Chunk, n_execute: int, first_index: int = 0, now: int | None = None) -> int:
        """Queue rows ``first_index .. n_execute-1`` of ``chunk``; returns the chunk's id.

        Row i runs at ``chunk.start_step + i``. Rows planned before ``now`` are dropped (they belong to
        the past). Queued actions of older chunks at or after the first inserted step are discarded.
        Non-finite or wrongly shaped chunks are refused before anything changes.
        """
        actions = np.asarray(chunk.actions)
        if actions.ndim != 2 or actions.shape[1] != self.action_dim:
            raise ValidationError(f"chunk must be [H, {self.action_dim}], got {actions.shape}")
        if not np.all(np.isfinite(actions)):
            raise ValidationError("chunk contains non-finite actions; not queued")
        n_execute = min(int(n_execute), actions.shape[0])
        chunk_id = self._next_id
        self._next_id += 1
        first = max(first_index, 0 if now is None else now - chunk.start_step)
        if first >= n_execute:
            return chunk_id  # entirely in the past
        first_step = chunk.start_step + first
        self._items = {s: q for s, q in self._items.items() if s < first_step}
        for i in range(first, n_execute):
            s = chunk.start_step + i
            self._items[s] = QueuedAction(step=s, chunk_id=chunk_id, index=i, action=actions[i].copy())
        self.latest_chunk_id = chunk_id
        return chunk_id

    def pop(self, step: int) -> QueuedAction | None:
        """The action planned for ``step``, or None. Anything planned for earlier steps is dropped."""
        self._items = {s: q for s, q in self._items.items() if s >= step}
        return self._items.pop(step, None)

    def remaining(self, step: int) -> int:
        """How many consecutive actions are queued from ``step`` on."""
        n = 0
        while step + n in self._items:
            n += 1
        return n

    def pending(self, step: int) -> np.ndarray:
        """[r, A] the consecutive actions queued from ``step`` on (for future-state estimation)."""
        r = self.remaining(step)
        if r == 0:
            return np.zeros((0, self.action_dim), dtype=np.float32)
        return np.stack([self._items[step + i].action for i in range(r)])

    def clear(self) -> None:
        self._items.clear()
