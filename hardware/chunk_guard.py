"""Chunks pass the safety layer on arrival; only their validated rows may later reach the arm.

:class:`GuardedChunkSource` wraps any runtime chunk source. When the control loop picks a chunk up,
the guard checks it (shape, finite values: a chunk with one NaN is refused whole), clamps its rows into
the action space's bounds (counted), tells the watchdog a fresh chunk arrived, and registers the
clamped rows in :class:`ValidatedRows`. At every control step the safety layer executes the runtime's
action only if it is one of those rows; anything else (the runtime's own hold, an action that did not
come from a validated chunk) becomes the safety layer's hold. So a driver only ever receives commands
derived from validated rows, or the previous command.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, NoReturn

import numpy as np

from policy_steer.errors import ValidationError
from policy_steer.hardware.interventions import InterventionLog
from policy_steer.hardware.spaces import ActionSpace
from policy_steer.hardware.watchdog import Watchdog
from policy_steer.types import Chunk, EpisodeContext, ExecutedStep, Observation, PolicySpec


class ChunkRejected(ValidationError):
    """A chunk the safety layer refused (non-finite values, wrong shape); the runtime asks again."""


class ValidatedRows:
    """The rows of the last ``keep`` validated chunks, looked up by exact float32 value."""

    def __init__(self, keep: int = 8) -> None:
        self.keep = keep
        self._chunks: OrderedDict[int, list[bytes]] = OrderedDict()
        self._rows: dict[bytes, tuple[int, int]] = {}
        self._serial = 0

    def add(self, actions: np.ndarray) -> int:
        serial = self._serial
        self._serial += 1
        keys = [np.ascontiguousarray(r, dtype=np.float32).tobytes() for r in actions]
        self._chunks[serial] = keys
        for i, k in enumerate(keys):
            self._rows[k] = (serial, i)
        while len(self._chunks) > self.keep:
            _, old = self._chunks.popitem(last=False)
            for k in old:
                if self._rows.get(k, (None,))[0] not in self._chunks:
                    self._rows.pop(k, None)
        return serial

    def find(self, action: np.ndarray) -> tuple[int, int] | None:
        """(chunk serial, row) of a validated row equal to ``action``, or None."""
        a = np.asarray(action)
        if a.dtype.kind != "f":
            return None
        return self._rows.get(np.ascontiguousarray(a, dtype=np.float32).tobytes())

    def clear(self) -> None:
        self._chunks.clear()
        self._rows.clear()


class ChunkGuard:
    """Validation of arriving chunks (control thread)."""

    def __init__(self, space: ActionSpace, log: InterventionLog, watchdog: Watchdog,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.space = space
        self.log = log
        self.watchdog = watchdog
        self.clock = clock
        self.rows = ValidatedRows()
        self.accepted = 0
        self.rejected = 0

    def admit(self, chunk: Chunk, requested: float, arrived: float | None) -> Chunk:
        """The chunk with its rows clamped into the action space's bounds; raises ChunkRejected (counted)."""
        raw = np.asarray(chunk.actions)
        if raw.ndim != 2 or raw.shape[1] != self.space.dim:
            self._reject(f"chunk of shape {list(raw.shape)}; the action space has {self.space.dim} columns",
                         f"chunk of shape {list(raw.shape)} refused by the safety layer")
        with np.errstate(over="ignore", invalid="ignore"):
            actions = raw.astype(np.float32)  # what the rows will be (Chunk holds float32; a float64 1e300 is inf)
        if not np.all(np.isfinite(actions)):
            bad = int(np.count_nonzero(~np.isfinite(actions)))
            self._reject(f"chunk for step {chunk.start_step} has {bad} non-finite values (in float32)",
                         f"chunk for step {chunk.start_step} has non-finite values; refused by the safety layer")
        clamped, n = self.space.validate_chunk(actions)
        if n:
            self.log.record("clamp:chunk", f"chunk for step {chunk.start_step}: {n} of {actions.size} values "
                                           f"clamped into the {self.space.name} bounds")
        self.rows.add(clamped)
        self.accepted += 1
        self.watchdog.chunk_arrived(requested, arrived if arrived is not None else self.clock())
        info = dict(chunk.info or {})
        info["safety"] = {"clamped": n}
        return Chunk(clamped, chunk.start_step, info)

    def _reject(self, detail: str, message: str) -> NoReturn:
        self.rejected += 1
        self.log.record("reject:chunk", detail)
        raise ChunkRejected(message)


class GuardedHandle:
    """A chunk handle whose ``poll`` returns the validated chunk (or raises ChunkRejected)."""

    def __init__(self, inner: Any, guard: ChunkGuard) -> None:
        self.inner = inner
        self.guard = guard
        self.submitted = inner.submitted
        self._result: Chunk | None = None
        self._error: BaseException | None = None

    @property
    def completed(self) -> float | None:
        return self.inner.completed

    def done(self) -> bool:
        return self.inner.done()

    def poll(self) -> Chunk | None:
        if self._error is not None:
            raise self._error
        if self._result is not None:
            return self._result
        chunk = self.inner.poll()
        if chunk is None:
            return None
        try:
            self._result = self.guard.admit(chunk, self.submitted, self.inner.completed)
        except ChunkRejected as e:
            self._error = e
            raise
        return self._result


class GuardedChunkSource:
    """Any runtime chunk source (:class:`~policy_steer.runtime.chunk_source.ChunkSource`), with every chunk
    validated by a :class:`ChunkGuard`; the episode calls pass through."""

    def __init__(self, inner: Any, guard: ChunkGuard) -> None:
        self.inner = inner
        self.guard = guard

    @property
    def spec(self) -> PolicySpec:
        return self.inner.spec

    @property
    def wants_prefix(self) -> bool:
        return self.inner.wants_prefix

    def submit(
        self,
        obs: Observation,
        start_step: int,
        prefix: np.ndarray | None = None,
        state_kind: str = "measured",
        prefix_start: int | None = None,
        prefix_committed: int | None = None,
    ) -> GuardedHandle:
        handle = self.inner.submit(obs, start_step, prefix=prefix, state_kind=state_kind,
                                   prefix_start=prefix_start, prefix_committed=prefix_committed)
        return GuardedHandle(handle, self.guard)

    def start_episode(self, context: EpisodeContext, seed: int | None = None) -> dict[str, Any]:
        """A new episode: rows of earlier chunks are never executed again. The call blocks until the
        server answered (a strategy may prepare the episode first): the watchdog watches from its answer."""
        self.guard.rows.clear()
        watchdog = self.guard.watchdog
        armed = watchdog.armed
        watchdog.disarm()
        try:
            return self.inner.start_episode(context, seed)
        finally:
            if armed:
                watchdog.arm()

    def update_context(self, context: EpisodeContext) -> None:
        self.inner.update_context(context)

    def report_executed(self, step: ExecutedStep) -> None:
        self.inner.report_executed(step)

    def close(self) -> None:
        self.inner.close()
