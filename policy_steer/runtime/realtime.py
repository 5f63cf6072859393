"""The control loop on the wall clock (robots): :class:`~policy_steer.runtime.loop.ControlLoop` with a
:class:`~policy_steer.runtime.loop.WallClock`, under the names the robot processes use.

The loop runs on the calling thread (the control thread); the chunk source computes off it (a worker
thread, or a policy server through the transport client). Every period (ticks at t0 + k / hz) it
settles a finished chunk (queued by the shared planner, or dropped as stale, or its failure recorded),
observes, asks for the next chunk without blocking when the planner wants one (the trigger is the
measured delay estimate unless set), and executes the queued action for this control index or a safe
hold: a slow policy makes the robot hold, never run on stale or out-of-chunk actions. Everything is
stamped and recorded; see :mod:`policy_steer.runtime.loop` for the records and figures.

- :class:`RealtimeConfig`: :class:`~policy_steer.runtime.loop.LoopConfig` plus ``control_hz`` (None:
  the robot's rate) and ``pause`` (wait for a due chunk instead of holding), with the robot defaults
  (``vlash``, 1000 steps);
- :class:`RealtimeLoop` / :func:`run_realtime`: the loop on a :class:`WallClock` built from them;
- ``RealtimeResult``, ``RealtimeChunk``, ``RealtimeStep``: the loop's
  :class:`~policy_steer.runtime.loop.LoopResult`, :class:`~policy_steer.runtime.loop.ChunkRecord`,
  :class:`~policy_steer.runtime.loop.StepRecord`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from policy_steer.errors import ConfigError
from policy_steer.runtime.chunk_source import ChunkSource
from policy_steer.runtime.loop import ChunkRecord, ControlLoop, LoopConfig, LoopResult, StepRecord, WallClock
from policy_steer.runtime.robot import Robot

__all__ = ["RealtimeConfig", "RealtimeLoop", "RealtimeResult", "RealtimeChunk", "RealtimeStep", "run_realtime"]

RealtimeResult = LoopResult
RealtimeChunk = ChunkRecord
RealtimeStep = StepRecord


@dataclass
class RealtimeConfig(LoopConfig):
    mode: str = "vlash"  # sync | async | vlash
    max_steps: int | None = 1000  # control steps per run (the robot may end the episode earlier)
    control_hz: float | None = None  # None: the robot's rate
    pause: bool = False  # wait for a due chunk instead of holding (the robot's time pauses during inference)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.control_hz is not None and not self.control_hz > 0:
            raise ConfigError(f"control_hz must be > 0, got {self.control_hz}")


class RealtimeLoop(ControlLoop):
    """:class:`~policy_steer.runtime.loop.ControlLoop` on ``WallClock(cfg.control_hz, cfg.pause)``."""

    def __init__(
        self,
        robot: Robot,
        source: ChunkSource,
        cfg: RealtimeConfig | None = None,
        on_step: Callable[[StepRecord], None] | None = None,
        on_chunk: Callable[[ChunkRecord], None] | None = None,
    ) -> None:
        cfg = cfg or RealtimeConfig()
        super().__init__(robot, source, WallClock(cfg.control_hz, pause=cfg.pause), cfg, on_step, on_chunk)


def run_realtime(robot: Robot, source: ChunkSource, cfg: RealtimeConfig | None = None, seed: int | None = None) -> LoopResult:
    """One wall-clock run of ``robot`` under ``source``; see :class:`RealtimeLoop`."""
    return RealtimeLoop(robot, source, cfg).run(seed=seed)
