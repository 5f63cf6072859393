"""What to ask the policy for, and where its chunk goes: the mode logic shared by both clocks.

The virtual-clock loop (:mod:`policy_steer.runtime.sim_loop`) and the wall-clock loop
(:mod:`policy_steer.runtime.realtime`) differ only in how time passes; both use a
:class:`ChunkPlanner` for the modes of DESIGN.md:

- ``sync``: ask when nothing is queued, from the measured state; the robot holds until the chunk
  arrives, and the chunk starts on arrival.
- ``async`` (naive): ask when at most ``trigger`` actions remain, from the measured state, as if the
  chunk started now; on arrival the rows that belong to the past are skipped.
- ``vlash``: ask when at most ``trigger`` actions remain; the pending actions that will run while the
  chunk is computed (the first ``min(remaining, delay estimate)``) are *committed*; the future-state
  estimator predicts the state after them, the policy is conditioned on it, and the new chunk starts
  exactly where the committed actions end.

Every chunk is checked on arrival: a chunk asked for in an earlier episode, or conditioned on an
older observation than a chunk already queued, is stale and dropped; rows planned for steps that
have already run are skipped; rows past ``n_execute`` are never queued. A chunk that arrives after
its planned start goes in on arrival: shifted (the robot held where the chunk assumed it would be) or,
if the robot kept moving on older actions meanwhile, with the rows for those steps skipped.

With RTC inpainting (a strategy with ``wants_prefix``) the request also carries the previous plan:
the queued actions from now on plus the latest chunk's planned-but-unqueued rows, the control index of
its first row, and how many of its rows are committed.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

from policy_steer.errors import ConfigError
from policy_steer.runtime.action_queue import ActionQueue, QueuedAction
from policy_steer.runtime.future_state import FutureStateEstimator, RobotDescription, make_estimator, with_state
from policy_steer.runtime.quantization import quantize_actions
from policy_steer.types import OBS_STATE, Chunk, Observation

MODES = ("sync", "async", "vlash")


@dataclass
class InferenceRequest:
    """One chunk asked for: what the policy sees and where its chunk will run."""

    obs: Observation  # what the policy is conditioned on (vlash: the robot part replaced by the estimate)
    obs_step: int  # control index of the observation
    start_step: int  # control index at which the chunk's row 0 runs
    state_kind: str  # "measured" or "estimated"
    assumed_state: np.ndarray  # [S] the state the chunk is conditioned on
    committed: int  # actions that run before the chunk takes over (vlash: the estimator's horizon)
    delay_estimate: int  # control steps the planner expected the inference to take
    epoch: int  # the planner's episode counter when asked; chunks from another epoch are stale
    prefix: np.ndarray | None = None  # [P, A] the previous plan from ``prefix_start`` on (policy units)
    prefix_start: int | None = None  # control index of prefix row 0
    prefix_committed: int | None = None  # how many leading prefix rows run whatever the chunk says
    stamp: float | None = None  # monotonic seconds of the observation (wall clock only)


@dataclass
class Delivery:
    """What became of an arrived chunk."""

    accepted: bool
    reason: str | None = None  # why it was dropped ("stale:epoch", "stale:older", "stale:past")
    chunk_id: int | None = None
    first_step: int | None = None  # control index of its first queued row
    first_index: int | None = None  # chunk row of its first queued row
    n_queued: int = 0


@dataclass
class _LastChunk:
    actions: np.ndarray  # [H', A] as queued (after quantization)
    row0_step: int  # control index at which row 0 runs (after any shift on late arrival)
    obs_step: int


@dataclass
class ChunkPlanner:
    """Mode logic around an :class:`ActionQueue`; see the module docstring."""

    mode: str
    robot: RobotDescription
    action_dim: int
    n_execute: int  # planned actions executed per chunk (before quantization)
    quantize: int = 1
    estimator: str = "auto"
    send_prefix: bool = False
    queue: ActionQueue = field(init=False)
    epoch: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"unknown mode {self.mode!r}; use one of {MODES}")
        if self.n_execute < 1:
            raise ConfigError(f"n_execute must be >= 1, got {self.n_execute}")
        if self.quantize < 1:
            raise ConfigError(f"quantization q must be >= 1, got {self.quantize}")
        self.set_send_prefix(self.send_prefix)
        self._estimator: FutureStateEstimator | None = (
            make_estimator(self.estimator, self.robot) if self.mode == "vlash" else None
        )
        self.queue = ActionQueue(self.action_dim)
        self.n_exec_rows = -(-self.n_execute // self.quantize)  # queued rows per chunk
        self.reset()

    def set_send_prefix(self, send: bool) -> None:
        """Whether requests carry the previous plan (the chunk source's steering reads it)."""
        if send and self.quantize > 1:
            raise ConfigError("prefix inpainting needs unquantized actions (the prefix is in policy steps); use quantize 1")
        self.send_prefix = bool(send)

    @property
    def estimator_name(self) -> str | None:
        return None if self._estimator is None else self._estimator.name

    def reset(self) -> None:
        """A new episode: forget everything queued; chunks asked for before now become stale."""
        self.queue.clear()
        self.epoch += 1
        self._last: _LastChunk | None = None
        self._newest_obs_step = -1
        self._executed: deque[int] = deque(maxlen=512)  # recent control steps that ran a queued action

    # --- asking ---------------------------------------------------------------------------------
    def wants(self, step: int, trigger: int) -> bool:
        """Should a chunk be asked for at ``step`` (none in flight)?"""
        remaining = self.queue.remaining(step)
        return remaining == 0 if self.mode == "sync" else remaining <= trigger

    def request(self, obs: Observation, step: int, delay_estimate: int, stamp: float | None = None) -> InferenceRequest:
        """The request for a chunk asked at ``step`` with the observation ``obs`` taken then."""
        state = np.asarray(obs[OBS_STATE], dtype=np.float32)
        pending = self.queue.pending(step)
        if self.mode == "vlash":
            committed = min(len(pending), max(0, int(delay_estimate)))
            est = self._estimator.estimate(state, pending[:committed], self.robot)
            cond, start, kind, assumed = with_state(obs, est, self.robot), step + committed, "estimated", est
        else:
            # sync: the robot holds until the chunk arrives (it starts then); async: planned from now.
            committed = 0 if self.mode == "sync" else min(len(pending), max(0, int(delay_estimate)))
            cond, start, kind, assumed = dict(obs), step, "measured", state.copy()
        req = InferenceRequest(
            obs=cond, obs_step=step, start_step=start, state_kind=kind, assumed_state=np.asarray(assumed, np.float32),
            committed=committed, delay_estimate=int(delay_estimate), epoch=self.epoch, stamp=stamp,
        )
        if self.send_prefix:
            req.prefix, req.prefix_start = self._previous_plan(step, pending)
            req.prefix_committed = committed
        return req

    def _previous_plan(self, step: int, pending: np.ndarray) -> tuple[np.ndarray, int]:
        """[P, A] queued actions from ``step`` on, then the latest chunk's planned rows after them."""
        rows = [pending]
        last = self._last
        if last is not None:
            i0 = step + len(pending) - last.row0_step
            if 0 <= i0 < len(last.actions):
                rows.append(last.actions[i0:])
        return np.concatenate(rows, axis=0).astype(np.float32), step

    # --- arriving -------------------------------------------------------------------------------
    def deliver(self, chunk: Chunk, req: InferenceRequest, now: int) -> Delivery:
        """Queue ``chunk`` (asked for with ``req``) arriving at control index ``now``."""
        if req.epoch != self.epoch:
            return Delivery(False, "stale:epoch")
        if req.obs_step < self._newest_obs_step:
            return Delivery(False, "stale:older")
        actions = quantize_actions(np.asarray(chunk.actions), self.quantize, self.robot.action_mode)
        start = req.start_step
        if self.mode == "async" or now <= start:
            row0, first = start, max(0, now - start)  # async: rows for steps already run belong to the past
        elif self.mode == "sync":
            row0, first = now, 0  # the robot held: the chunk starts on arrival
        else:
            # vlash, late: rows for steps at which the robot kept moving (on older actions) are past;
            # for steps at which it held, the chunk is shifted (the robot waited at the estimated state).
            moved = sum(1 for s in self._executed if start <= s < now)
            row0, first = now - moved, moved
        if first >= len(actions):
            return Delivery(False, "stale:past")
        n_queue = first + self.n_exec_rows  # never more than n_execute rows of a chunk run
        cid = self.queue.insert(Chunk(actions, row0, chunk.info), n_execute=n_queue, first_index=first)
        self._newest_obs_step = req.obs_step
        self._last = _LastChunk(actions=actions, row0_step=row0, obs_step=req.obs_step)
        return Delivery(True, None, cid, row0 + first, first, min(n_queue, len(actions)) - first)

    # --- executing ------------------------------------------------------------------------------
    def pop(self, step: int) -> QueuedAction | None:
        """The queued action for ``step`` (None: hold)."""
        qa = self.queue.pop(step)
        if qa is not None:
            self._executed.append(step)
        return qa


def hold_action(state: np.ndarray, robot: RobotDescription, action_dim: int, last: np.ndarray | None) -> np.ndarray:
    """Stay where you are: zero delta (or the current position as target), gripper unchanged."""
    a = np.zeros(action_dim, dtype=np.float32)
    if robot.action_mode == "absolute":
        a[:3] = state[robot.state_layout["ee_pos"]]
    if action_dim >= 4:
        if last is not None:
            a[3] = last[3]
        elif "gripper" in robot.state_layout:
            a[3] = -1.0 if state[robot.state_layout["gripper"]][0] > 0.5 else 1.0
        else:
            a[3] = -1.0
    return a
