"""The control loop on the wall clock: a control thread at the control rate, inference off it.

The calling thread is the control thread. Every period (monotonic clock, ticks at t0 + k / hz) it:

1. polls the chunk in flight; a finished one is checked and queued by the shared
   :class:`~policy_steer.runtime.planner.ChunkPlanner` (same modes and rules as the simulation loop),
   and its latency goes into the online delay estimate (:class:`MeasuredDelay`: a window of recent
   latencies, a conservative quantile, converted to control steps);
2. observes the robot (stamped);
3. if nothing is in flight and the planner wants a chunk (``sync``: queue empty; otherwise at most
   ``trigger`` actions left, by default the current delay estimate), submits a request to the chunk
   source (which computes it on its own thread or on a server) and returns at once;
4. executes the queued action for this control index, or a safe hold (stay in place, gripper
   unchanged) when there is none: a slow policy makes the robot hold, never run on stale or
   out-of-chunk actions.

Everything is stamped (tick, observation, action, submission, completion, delivery), and every chunk
and step is recorded. A request that fails or times out is recorded and asked again; a chunk that
arrives too old (``max_chunk_age_s``) or from an earlier episode is dropped.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from policy_steer.errors import ConfigError
from policy_steer.runtime.chunk_source import ChunkHandle, ChunkSource
from policy_steer.runtime.latency import MeasuredDelay
from policy_steer.runtime.planner import MODES, ChunkPlanner, InferenceRequest, hold_action
from policy_steer.runtime.robot import Robot
from policy_steer.types import OBS_STATE, STAMP, STEP


@dataclass
class RealtimeConfig:
    mode: str = "vlash"  # sync | async | vlash
    control_hz: float | None = None  # None: the robot's rate
    trigger: int | None = None  # ask when at most this many actions remain (None: the current delay estimate)
    n_execute: int | None = None  # actions executed per chunk (None: the policy's n_action_steps)
    estimator: str = "auto"  # vlash future state: auto | target | delta | model
    quantize: int = 1  # action quantization q (1 = off)
    delay_window: int = 20  # latencies kept for the delay estimate
    delay_quantile: float = 0.9  # conservative quantile of that window
    initial_delay_steps: int = 1  # the estimate before any latency was measured
    fixed_delay_steps: int | None = None  # plan for this delay instead of the measured one (still measured, recorded)
    max_steps: int = 1000  # control steps per run (the robot may end the episode earlier)
    max_chunk_age_s: float | None = None  # drop a chunk whose observation is older than this on arrival
    request_timeout_s: float | None = None  # give up on a request after this long (then ask again)
    send_prefix: bool | None = None  # pass the previous plan (None: when the chunk source wants one)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"unknown mode {self.mode!r}; use one of {MODES}")
        if self.control_hz is not None and not self.control_hz > 0:
            raise ConfigError(f"control_hz must be > 0, got {self.control_hz}")
        if self.trigger is not None and self.trigger < 0:
            raise ConfigError(f"trigger must be >= 0, got {self.trigger}")
        if not 0.0 < self.delay_quantile <= 1.0:
            raise ConfigError(f"delay_quantile must be in (0, 1], got {self.delay_quantile}")
        if self.delay_window < 1 or self.max_steps < 1:
            raise ConfigError("delay_window and max_steps must be >= 1")
        if self.fixed_delay_steps is not None and self.fixed_delay_steps < 0:
            raise ConfigError(f"fixed_delay_steps must be >= 0, got {self.fixed_delay_steps}")


@dataclass
class RealtimeChunk:
    """One request and what became of it. Stamps are monotonic seconds."""

    obs_step: int
    start_step: int
    state_kind: str
    delay_estimate: int  # steps the planner expected
    committed: int
    submitted: float
    assumed_ee: list[float]
    completed: float | None = None
    delivered_step: int | None = None  # control index at which it was queued
    chunk_id: int | None = None
    first_step: int | None = None  # control index of its first queued row
    first_index: int | None = None
    dropped: str | None = None  # "stale:epoch" | "stale:older" | "stale:past" | "stale:age" | "abandoned"
    error: str | None = None  # the request failed (timeout, server error, ...)
    estimate_error: float | None = None  # |assumed ee - measured ee| when its first row ran (metres)
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def latency_s(self) -> float | None:
        return None if self.completed is None else self.completed - self.submitted


@dataclass
class RealtimeStep:
    step: int
    tick: float  # when the tick was due
    started: float  # when it started (late by started - tick)
    observed: float  # observation stamp
    acted: float  # when act() returned
    chunk_id: int | None  # None: held
    index: int | None
    action: list[float]
    ee: list[float]  # measured
    assumed_ee: list[float] | None = None  # on a chunk's first executed row: what it was conditioned on
    delay_estimate: int = 0


@dataclass
class RealtimeResult:
    steps: int
    stall_steps: int
    late_ticks: int  # ticks that started more than one period late
    chunks: list[RealtimeChunk]
    records: list[RealtimeStep]
    episode_over: bool
    info: dict[str, Any]
    delay_estimate: int  # the measured estimate at the end

    def summary(self) -> dict[str, Any]:
        lat = [c.latency_s * 1e3 for c in self.chunks if c.latency_s is not None]
        errs = [c.estimate_error for c in self.chunks if c.estimate_error is not None]
        return {
            "steps": self.steps, "stall_steps": self.stall_steps, "late_ticks": self.late_ticks,
            "n_chunks": sum(c.chunk_id is not None for c in self.chunks),
            "dropped": sum(c.dropped is not None for c in self.chunks),
            "failed": sum(c.error is not None for c in self.chunks),
            "chunk_latency_ms": lat, "delay_estimate": self.delay_estimate,
            "state_estimate_error": float(np.mean(errs)) if errs else None,
            "success": bool(self.info.get("success", False)),
        }


@dataclass
class _InFlight:
    request: InferenceRequest
    handle: ChunkHandle
    record: RealtimeChunk


class RealtimeLoop:
    """``run()`` drives ``robot`` from ``source`` at the control rate until ``max_steps``, the end of the
    robot's episode (``robot.episode_over``), or ``stop()`` from another thread.

    ``on_step(step_record)`` is called after every executed (or held) action and ``on_chunk(chunk_record)``
    when a request is settled (queued, dropped or failed), both on the control thread: keep them short
    (the sim-as-robot process publishes them as telemetry).
    """

    def __init__(
        self,
        robot: Robot,
        source: ChunkSource,
        cfg: RealtimeConfig | None = None,
        on_step: Callable[[RealtimeStep], None] | None = None,
        on_chunk: Callable[[RealtimeChunk], None] | None = None,
    ) -> None:
        self.robot = robot
        self.on_step = on_step
        self.on_chunk = on_chunk
        self.source = source
        self.cfg = cfg or RealtimeConfig()
        spec = source.spec
        desc = robot.description
        if "ee_pos" not in desc.state_layout:
            raise ConfigError("the robot's state layout must name 'ee_pos' (holds and estimate errors use it)")
        self.hz = float(self.cfg.control_hz or robot.control_hz)
        send_prefix = source.wants_prefix if self.cfg.send_prefix is None else self.cfg.send_prefix
        self.planner = ChunkPlanner(
            mode=self.cfg.mode, robot=desc, action_dim=spec.action_dim,
            n_execute=self.cfg.n_execute or spec.n_action_steps, quantize=self.cfg.quantize,
            estimator=self.cfg.estimator, send_prefix=send_prefix,
        )
        self.delay = MeasuredDelay(self.hz, self.cfg.delay_window, self.cfg.delay_quantile, self.cfg.initial_delay_steps)
        self._stop = threading.Event()

    def stop(self) -> None:
        self._stop.set()

    def run(self, seed: int | None = None, reset: bool = True) -> RealtimeResult:
        cfg, robot, planner = self.cfg, self.robot, self.planner
        desc = robot.description
        ee = desc.state_layout["ee_pos"]
        action_dim = self.source.spec.action_dim
        dt = 1.0 / self.hz
        self._stop.clear()
        planner.reset()
        if reset:
            robot.reset(seed=seed)
            episode = robot.episode_info() if hasattr(robot, "episode_info") else {"robot": desc}
            self.source.reset(seed=seed, episode=episode)

        inflight: _InFlight | None = None
        chunks: list[RealtimeChunk] = []
        by_id: dict[int, RealtimeChunk] = {}
        records: list[RealtimeStep] = []
        stall = late_ticks = 0
        last_action: np.ndarray | None = None
        step = 0
        t0 = time.monotonic()
        while step < cfg.max_steps and not self._stop.is_set():
            tick = t0 + step * dt
            wait = tick - time.monotonic()
            if wait > 0 and self._stop.wait(wait):
                break
            started = time.monotonic()
            if started - tick > dt:
                late_ticks += 1  # this machine or the robot could not keep the rate; recorded, not hidden

            # 1. a finished chunk goes into the queue (or is dropped, with the reason recorded)
            if inflight is not None:
                settling = inflight.record
                inflight = self._settle(inflight, step, started, by_id)
                if inflight is None and self.on_chunk is not None:
                    self.on_chunk(settling)
            # 2. observe
            obs = robot.observe()
            observed = time.monotonic()
            obs[STEP], obs[STAMP] = step, observed
            state = np.asarray(obs[OBS_STATE], dtype=np.float32)
            # 3. ask for a chunk (never blocks)
            d_est = self.delay.estimate() if cfg.fixed_delay_steps is None else cfg.fixed_delay_steps
            trigger = d_est if cfg.trigger is None else cfg.trigger
            if inflight is None and planner.wants(step, trigger):
                req = planner.request(obs, step, d_est, stamp=observed)
                handle = self.source.submit(
                    req.obs, req.start_step, prefix=req.prefix, state_kind=req.state_kind,
                    prefix_start=req.prefix_start, prefix_committed=req.prefix_committed,
                )
                rec = RealtimeChunk(
                    obs_step=step, start_step=req.start_step, state_kind=req.state_kind, delay_estimate=d_est,
                    committed=req.committed, submitted=handle.submitted,
                    assumed_ee=[float(v) for v in req.assumed_state[ee]],
                )
                chunks.append(rec)
                inflight = _InFlight(req, handle, rec)
            # 4. act: the queued action for this control index, or hold
            qa = planner.pop(step)
            assumed = None
            if qa is None:
                action, cid, idx = hold_action(state, desc, action_dim, last_action), None, None
                stall += 1
            else:
                action, cid, idx = qa.action, qa.chunk_id, qa.index
                crec = by_id[cid]
                if crec.estimate_error is None:
                    crec.estimate_error = float(np.linalg.norm(np.asarray(crec.assumed_ee) - state[ee]))
                    assumed = crec.assumed_ee
            robot.act(action)
            acted = time.monotonic()
            last_action = action
            records.append(RealtimeStep(
                step=step, tick=tick, started=started, observed=observed, acted=acted, chunk_id=cid, index=idx,
                action=[float(v) for v in action], ee=[float(v) for v in state[ee]], assumed_ee=assumed,
                delay_estimate=d_est,
            ))
            if self.on_step is not None:
                self.on_step(records[-1])
            step += 1
            if getattr(robot, "episode_over", False):
                break

        if inflight is not None:
            inflight.record.dropped = "abandoned"  # the run ended first; it will never be queued
        planner.reset()  # anything still computing is now stale
        return RealtimeResult(
            steps=step, stall_steps=stall, late_ticks=late_ticks, chunks=chunks, records=records,
            episode_over=bool(getattr(robot, "episode_over", False)), info=dict(getattr(robot, "info", {}) or {}),
            delay_estimate=self.delay.estimate(),
        )

    def _settle(self, f: _InFlight, step: int, now: float, by_id: dict[int, RealtimeChunk]) -> _InFlight | None:
        """Queue a finished chunk, record a failed or timed-out request; None when nothing is in flight."""
        rec, handle = f.record, f.handle
        if not handle.done():
            timeout = self.cfg.request_timeout_s
            if timeout is not None and now - handle.submitted > timeout:
                rec.error = f"timeout after {now - handle.submitted:.3f} s"
                self.delay.record(now - handle.submitted)  # at least this slow: plan for it
                return None
            return f
        try:
            chunk = handle.poll()
        except Exception as e:  # noqa: BLE001 - a failed request is recorded; the loop asks again and holds meanwhile
            rec.completed = handle.completed or now
            rec.error = f"{type(e).__name__}: {e}"
            return None
        rec.completed = handle.completed if handle.completed is not None else now
        self.delay.record(rec.completed - handle.submitted)
        rec.info = {k: v for k, v in (chunk.info or {}).items() if k in ("latency_ms", "prepare_ms", "steer", "winner")}
        rec.delivered_step = step
        age = rec.completed - f.request.stamp if f.request.stamp is not None else 0.0
        if self.cfg.max_chunk_age_s is not None and age > self.cfg.max_chunk_age_s:
            rec.dropped = "stale:age"
            return None
        got = self.planner.deliver(chunk, f.request, now=step)
        if not got.accepted:
            rec.dropped = got.reason
            return None
        rec.chunk_id, rec.first_step, rec.first_index = got.chunk_id, got.first_step, got.first_index
        by_id[got.chunk_id] = rec
        return None


def run_realtime(robot: Robot, source: ChunkSource, cfg: RealtimeConfig | None = None, seed: int | None = None) -> RealtimeResult:
    """One wall-clock run of ``robot`` under ``source``; see :class:`RealtimeLoop`."""
    return RealtimeLoop(robot, source, cfg).run(seed=seed)
