"""The one control loop: chunks in, one action per control step out, on a virtual or a wall clock.

The simulation benchmark, the simulated robot process and the real robot run this loop; they differ
only in the :class:`Clock` (virtual or wall), the chunk source (in process or a policy server's client,
:mod:`~policy_steer.runtime.chunk_source`) and the robot (simulated or an arm,
:mod:`~policy_steer.runtime.robot`). The modes (``sync``, ``async``, ``vlash``) and the rules for
arriving chunks are those of :class:`~policy_steer.runtime.planner.ChunkPlanner`.

At every control step the loop

1. waits for the step's tick (wall clock: t0 + k / hz; virtual clock: at once);
2. settles the chunk in flight when it is due: the chunk is checked and queued by the planner (or
   dropped, the reason recorded), or the request's failure is recorded and the loop asks again;
3. observes the robot, stamped;
4. if nothing is in flight and the planner wants a chunk (``sync``: queue empty; otherwise at most
   ``trigger`` actions left, by default the delay estimate), sends the robot's context as an update when
   its scene is dynamic (a simulator), then submits the request;
5. executes the queued action for this control index, or a safe hold (stay in place, gripper
   unchanged) when there is none, and reports it to the source (``report_executed``).

At reset it calls ``source.start_episode(robot.context(seed), seed)``: a strategy that cannot act with
that context refuses, and the episode does not run.

The clocks:

- :class:`VirtualClock` (simulation): an inference of d control steps (the latency model of
  :mod:`~policy_steer.runtime.latency`) submitted at step s is delivered at step s + d, while the robot
  runs what is queued or holds (d = 0: in the same step). If the source has not finished by then (a
  thread, a server), the loop waits for it: simulated time pauses during inference, so results do not
  depend on how fast anything is. Stamps are simulated seconds (step / hz).
- :class:`WallClock` (robots): ticks at t0 + k / hz on the monotonic clock; chunks are queued when
  they arrive, and the delay is measured online (:class:`~policy_steer.runtime.latency.MeasuredDelay`);
  ticks that start more than a period late are counted. ``pause=True`` waits for a chunk that is due
  instead of holding (the robot's time pauses during inference; for a simulated robot this gives the
  virtual clock's episode).

Figures of a run (:class:`LoopResult`):

- ``steps``: control steps from reset to the end (success, failure, time-out, ``max_steps`` or
  ``stop()``), stalls included; ``completion_steps``: the same, but a run that did not succeed counts as
  ``max_steps`` (the episode's time-out), so that a policy which fails early does not look fast;
- ``stall_steps``: steps at which nothing was queued and the robot held;
- ``seam_jump``: mean |a_first(new) - a_last(old)| (xyz) over the seams, where a_last(old) is the last
  *executed* action of the chunk that ran before and a_first(new) the first executed action of the
  next one (held steps between them belong to neither); ``within_chunk_jump``: the same difference
  between consecutive executed actions of one chunk (the policy's own smoothness);
- ``state_estimate_error``: mean over chunks of |assumed ee - measured ee| (metres) at the step their
  first row runs (sync: drift while holding; async: how far the robot moved during the inference;
  vlash: the future-state estimator's error);
- ``goal_jump_step`` (moving-goal: the robot's ``info["goal_jump_step"]``, the control index j of the
  first observation that shows the new goal) and ``reaction_opportunity_steps``: k0 - j, k0 the first
  control step that executes an action of a chunk conditioned on an observation taken at or after j.
  ``reaction_steps`` needs the counterfactual episode; :func:`policy_steer.runtime.sim_loop.run_episode`
  fills it;
- ``late_ticks`` (wall clock), ``delay_estimate`` (the delay planned for at the end).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, runtime_checkable

import numpy as np

from policy_steer.errors import ConfigError
from policy_steer.runtime.chunk_source import ChunkHandle, ChunkSource
from policy_steer.runtime.latency import LatencyModel, MeasuredDelay, parse_latency
from policy_steer.runtime.planner import MODES, ChunkPlanner, InferenceRequest, hold_action
from policy_steer.runtime.robot import Robot
from policy_steer.types import OBS_STATE, STAMP, STEP, Chunk, EpisodeContext, ExecutedStep, Observation

__all__ = ["LoopConfig", "Clock", "VirtualClock", "WallClock", "ChunkRecord", "StepRecord", "LoopResult",
           "LoopObserver", "ControlLoop", "CHUNK_INFO_KEYS"]

# What a chunk record keeps of the chunk's info (figures, not arrays).
CHUNK_INFO_KEYS = ("winner", "candidates", "steer", "strategies", "latency_ms", "prepare_ms")


@dataclass
class LoopConfig:
    mode: str = "sync"  # sync | async | vlash
    trigger: int | None = None  # ask when at most this many actions remain (None: the delay estimate)
    n_execute: int | None = None  # actions executed per chunk (None: the policy's n_action_steps)
    estimator: str = "auto"  # vlash future state: auto | kinematic | model-robot | model | delta | target
    quantize: int = 1  # action quantization q (1 = off)
    send_prefix: bool | None = None  # pass the previous plan (None: when the chunk source wants one)
    max_steps: int | None = None  # control steps per run (None: until the robot ends the episode or stop())
    max_chunk_age_s: float | None = None  # drop a chunk whose observation is older than this on arrival (clock s)
    request_timeout_s: float | None = None  # give up on a request after this long, wall seconds (then ask again)
    delay_window: int = 20  # wall clock: latencies kept for the delay estimate
    delay_quantile: float = 0.9  # wall clock: conservative quantile of that window
    initial_delay_steps: int = 1  # wall clock: the estimate before any latency was measured
    fixed_delay_steps: int | None = None  # plan for this delay instead of the clock's estimate (still recorded)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"unknown mode {self.mode!r}; use one of {MODES}")
        if self.trigger is not None and self.trigger < 0:
            raise ConfigError(f"trigger must be >= 0, got {self.trigger}")
        if self.n_execute is not None and self.n_execute < 1:
            raise ConfigError(f"n_execute must be >= 1, got {self.n_execute}")
        if self.quantize < 1:
            raise ConfigError(f"quantize must be >= 1, got {self.quantize}")
        if not 0.0 < self.delay_quantile <= 1.0:
            raise ConfigError(f"delay_quantile must be in (0, 1], got {self.delay_quantile}")
        if self.delay_window < 1 or (self.max_steps is not None and self.max_steps < 1):
            raise ConfigError("delay_window and max_steps must be >= 1")
        if self.fixed_delay_steps is not None and self.fixed_delay_steps < 0:
            raise ConfigError(f"fixed_delay_steps must be >= 0, got {self.fixed_delay_steps}")


# ------------------------------------------------------------------------------------------ clocks


@runtime_checkable
class Clock(Protocol):
    """How time passes for the loop. ``start`` begins a run; the loop then asks, per step:

    - ``tick(step) -> (due, started)`` stamps, after waiting for the step (None: ``stop`` was set meanwhile);
    - ``now(step)``: a stamp on this clock (the observation's, the action's, the context's);
    - ``plan_delay(measured)``: the delay in steps the planner plans for (trigger, vlash horizon);
    - ``due_step(step)``: for a request submitted at ``step``, the step at which its chunk is delivered
      (None: whenever it arrives);
    - ``must_wait(due_step, start_step, step)``: whether the loop waits, at ``step``, for a chunk in
      flight that has not arrived (instead of running on or holding);
    - ``paused(seconds)``: the loop waited that long for a chunk;
    - ``age(request, handle, step)``: how old the chunk's observation is on arrival (clock seconds).
    """

    name: str
    hz: float | None  # the control rate (None: the robot's)
    late_ticks: int

    def start(self, hz: float, seed: int | None, stop: threading.Event) -> None: ...

    def tick(self, step: int) -> tuple[float, float] | None: ...

    def now(self, step: int) -> float: ...

    def plan_delay(self, measured: MeasuredDelay) -> int: ...

    def due_step(self, step: int) -> int | None: ...

    def must_wait(self, due_step: int | None, start_step: int, step: int) -> bool: ...

    def paused(self, seconds: float) -> None: ...

    def age(self, request: InferenceRequest, handle: ChunkHandle, step: int) -> float: ...


class VirtualClock:
    """Simulated time: see the module docstring. ``latency``: N, ``uniform:LO-HI`` or ``replay:FILE.json``
    (:func:`~policy_steer.runtime.latency.parse_latency`); the delays of a run are drawn from a generator
    seeded with the run's seed, so a seeded run is the same on any machine."""

    name = "virtual"

    def __init__(self, latency: str | int = "0", control_hz: float | None = None) -> None:
        self.latency_spec = str(latency)
        self.hz = None if control_hz is None else float(control_hz)
        self.latency: LatencyModel = parse_latency(self.latency_spec, self.hz or 10.0)  # a bad spec fails now
        self.late_ticks = 0
        self._hz = self.hz or 10.0
        self._rng = np.random.default_rng(0)

    def start(self, hz: float, seed: int | None, stop: threading.Event) -> None:
        self._hz = float(hz)
        self.latency = parse_latency(self.latency_spec, self._hz)  # replayed latencies start over
        self._rng = np.random.default_rng(seed)

    def tick(self, step: int) -> tuple[float, float] | None:
        t = float(step) / self._hz
        return t, t

    def now(self, step: int) -> float:
        return float(step) / self._hz

    def plan_delay(self, measured: MeasuredDelay) -> int:
        return self.latency.estimate()

    def due_step(self, step: int) -> int | None:
        return step + self.latency.sample(self._rng)

    def must_wait(self, due_step: int | None, start_step: int, step: int) -> bool:
        return due_step is not None and due_step <= step

    def paused(self, seconds: float) -> None:
        pass

    def age(self, request: InferenceRequest, handle: ChunkHandle, step: int) -> float:
        return float(step - request.obs_step) / self._hz


class WallClock:
    """The monotonic clock at ``hz`` (None: the robot's rate); see the module docstring.

    ``pause``: when the chunk in flight should already run (its start step has come) and has not
    arrived, wait for it instead of holding; the tick schedule moves on by the time waited (not late).
    """

    name = "wall"

    def __init__(self, hz: float | None = None, pause: bool = False) -> None:
        if hz is not None and not hz > 0:
            raise ConfigError(f"control_hz must be > 0, got {hz}")
        self.hz = None if hz is None else float(hz)
        self.pause = bool(pause)
        self.late_ticks = 0
        self._dt = 0.0
        self._t0 = 0.0
        self._stop = threading.Event()

    def start(self, hz: float, seed: int | None, stop: threading.Event) -> None:
        self._dt = 1.0 / float(hz)
        self._stop = stop
        self.late_ticks = 0
        self._t0 = time.monotonic()

    def tick(self, step: int) -> tuple[float, float] | None:
        due = self._t0 + step * self._dt
        wait = due - time.monotonic()
        if wait > 0 and self._stop.wait(wait):
            return None
        started = time.monotonic()
        if started - due > self._dt:
            self.late_ticks += 1  # this machine or the robot could not keep the rate; recorded, not hidden
        return due, started

    def now(self, step: int) -> float:
        return time.monotonic()

    def plan_delay(self, measured: MeasuredDelay) -> int:
        return measured.estimate()

    def due_step(self, step: int) -> int | None:
        return None

    def must_wait(self, due_step: int | None, start_step: int, step: int) -> bool:
        return self.pause and start_step <= step

    def paused(self, seconds: float) -> None:
        self._t0 += seconds

    def age(self, request: InferenceRequest, handle: ChunkHandle, step: int) -> float:
        if request.stamp is None or handle.completed is None:
            return 0.0
        return handle.completed - request.stamp


# ------------------------------------------------------------------------------------------ records


@dataclass
class ChunkRecord:
    """One request and what became of it. ``submitted``/``completed``: this machine's monotonic stamps
    of the request (under either clock: what the inference really took)."""

    obs_step: int  # control index of the observation it was conditioned on
    start_step: int  # control index its row 0 was planned for (the request's start_step)
    state_kind: str  # "measured" or "estimated"
    delay_estimate: int  # steps the planner expected
    committed: int  # actions that ran before it took over (vlash: the estimator's horizon)
    assumed_ee: list[float]  # end-effector position the chunk was conditioned on
    submitted: float
    due_step: int | None = None  # virtual clock: the step it is delivered at (obs_step + the drawn delay)
    completed: float | None = None  # when the source finished it (set when settled)
    delivered_step: int | None = None  # control index at which it arrived (queued or dropped)
    delay_steps: int | None = None  # delivered_step - obs_step
    chunk_id: int | None = None  # None: never queued (dropped, failed, still in flight at the end)
    first_step: int | None = None  # control index of its first queued row
    first_index: int | None = None  # chunk row of its first queued row (async: the rows that belonged to the past)
    dropped: str | None = None  # "stale:epoch" | "stale:older" | "stale:past" | "stale:age" | "abandoned"
    error: str | None = None  # the request failed (timeout, server error, ...)
    estimate_error: float | None = None  # |assumed ee - measured ee| when its first row ran (metres)
    latency_ms: float | None = None  # compute time the policy reported (chunk info)
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def latency_s(self) -> float | None:
        return None if self.completed is None else self.completed - self.submitted

    @property
    def arrival_step(self) -> int | None:
        return self.delivered_step


@dataclass
class StepRecord:
    """One control step. Stamps are clock seconds (monotonic on the wall clock, step / hz on the virtual)."""

    step: int
    chunk_id: int | None  # None: held (stall)
    index: int | None  # row in its chunk
    action: list[float]  # what the loop commanded
    ee: list[float]  # measured end effector before the action
    assumed_ee: list[float] | None = None  # on a chunk's first executed row: the ee it was conditioned on
    tick: float = 0.0  # when the tick was due
    started: float = 0.0  # when it started (late by started - tick)
    observed: float = 0.0  # observation stamp
    acted: float = 0.0  # when act() returned
    delay_estimate: int = 0
    executed: list[float] | None = None  # what the robot really sent, when it differs from ``action``
    intervention: str | None = None  # why (the robot's ``last_intervention``)


@dataclass
class LoopResult:
    seed: int | None
    steps: int  # control steps from reset to the end, stalls included
    stall_steps: int
    chunks: list[ChunkRecord]  # every request, in submission order
    records: list[StepRecord]
    episode_over: bool  # the robot ended the episode
    info: dict[str, Any]  # the robot's last info
    success: bool
    failure: str | None
    clock: str = "virtual"
    late_ticks: int = 0
    delay_estimate: int = 0  # the delay planned for at the end
    seam_jump: float | None = None
    within_chunk_jump: float | None = None
    state_estimate_error: float | None = None
    goal_jump_step: int | None = None
    reaction_opportunity_steps: int | None = None
    reaction_steps: int | None = None  # filled by the simulation benchmark's counterfactual episode
    reaction_censored: bool = False
    completion_steps: int | None = None
    max_episode_steps: int | None = None
    estimator: str | None = None  # vlash: the future-state estimator that ran (auto resolved)
    arm_mismatch: str | None = None  # the estimator's arm model was perturbed so (simulation benchmark)

    def summary(self) -> dict[str, Any]:
        """Per-run figures as plain data. ``chunk_latency_ms``: per settled chunk, the compute time the
        policy reported on the virtual clock (the simulated delay comes from the latency model), the
        measured round trip on the wall clock."""
        settled = [c for c in self.chunks if c.completed is not None]
        if self.clock == "virtual":
            lat = [c.latency_ms if c.latency_ms is not None else c.latency_s * 1e3 for c in settled if c.delivered_step is not None]
        else:
            lat = [c.latency_s * 1e3 for c in settled]
        return {
            "seed": self.seed, "success": self.success, "failure": self.failure, "steps": self.steps,
            "completion_steps": self.completion_steps if self.completion_steps is not None else self.steps,
            "stall_steps": self.stall_steps, "late_ticks": self.late_ticks,
            "n_chunks": sum(c.chunk_id is not None for c in self.chunks),
            "dropped": sum(c.dropped is not None for c in self.chunks),
            "failed": sum(c.error is not None for c in self.chunks),
            "seam_jump": self.seam_jump, "within_chunk_jump": self.within_chunk_jump,
            "state_estimate_error": self.state_estimate_error, "reaction_steps": self.reaction_steps,
            "reaction_opportunity_steps": self.reaction_opportunity_steps,
            "goal_jump_step": self.goal_jump_step, "reaction_censored": self.reaction_censored,
            "chunk_latency_ms": lat, "delay_estimate": self.delay_estimate,
            "estimator": self.estimator, "arm_mismatch": self.arm_mismatch,
        }


# ------------------------------------------------------------------------------------------ the loop


@runtime_checkable
class LoopObserver(Protocol):
    """What the loop does, as data, with the loop's clock stamps (virtual seconds in simulation, the
    monotonic clock on a robot); a recorder (:mod:`policy_steer.recording`) is one. Every call is on the
    control thread: an observer must return at once (queue, never write or wait).

    - ``started(context, hz)``: an episode began (after reset), with the context the source was given;
    - ``context(context, stamp)``: the scene as it is now (a dynamic scene, before a request);
    - ``observed(step, obs, stamp)``: the observation of control index ``step``;
    - ``chunk(record, chunk, stamp)``: a request settled; ``chunk`` is what arrived, info and all (None:
      the request failed); ``record`` says whether it was queued or dropped;
    - ``stepped(record, executed)``: the action of a control step (or the hold) went to the robot;
    - ``ended(result)``: the run is over.
    """

    def started(self, context: EpisodeContext, hz: float) -> None: ...

    def context(self, context: EpisodeContext, stamp: float) -> None: ...

    def observed(self, step: int, obs: Observation, stamp: float) -> None: ...

    def chunk(self, record: ChunkRecord, chunk: Chunk | None, stamp: float) -> None: ...

    def stepped(self, record: StepRecord, executed: ExecutedStep) -> None: ...

    def ended(self, result: LoopResult) -> None: ...


@dataclass
class _InFlight:
    request: InferenceRequest
    handle: ChunkHandle
    record: ChunkRecord
    due_step: int | None


class _Stopped(Exception):
    pass


class ControlLoop:
    """``run()`` drives ``robot`` from ``source`` on ``clock`` until ``max_steps``, the end of the robot's
    episode (``robot.episode_over``), ``stop_if`` or ``stop()`` from another thread.

    ``on_step(step_record)`` is called after every executed (or held) action and ``on_chunk(chunk_record)``
    when a request is settled (queued, dropped or failed), both on the control thread: keep them short.
    ``observer`` (a :class:`LoopObserver`, e.g. a bag recorder) sees every observation, chunk and step
    with the clock's stamps; it may be replaced between runs (one recording per episode).
    """

    def __init__(
        self,
        robot: Robot,
        source: ChunkSource,
        clock: Clock,
        cfg: LoopConfig | None = None,
        on_step: Callable[[StepRecord], None] | None = None,
        on_chunk: Callable[[ChunkRecord], None] | None = None,
        observer: LoopObserver | None = None,
    ) -> None:
        self.robot = robot
        self.source = source
        self.clock = clock
        self.cfg = cfg or LoopConfig()
        self.on_step = on_step
        self.on_chunk = on_chunk
        self.observer = observer
        spec = source.spec
        desc = robot.description
        if "ee_pos" not in desc.state_layout:
            raise ConfigError("the robot's state layout must name 'ee_pos' (holds and estimate errors use it)")
        self.hz = float(clock.hz or robot.control_hz)
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

    def delay_estimate(self) -> int:
        fixed = self.cfg.fixed_delay_steps
        return self.clock.plan_delay(self.delay) if fixed is None else fixed

    def run(
        self,
        seed: int | None = None,
        reset: bool = True,
        stop_if: Callable[[int, Observation], bool] | None = None,
    ) -> LoopResult:
        """One run (an episode when ``reset``). ``stop_if(step, obs)`` is asked after every observation;
        True ends the run before that step acts."""
        cfg, robot, planner, clock, source = self.cfg, self.robot, self.planner, self.clock, self.source
        desc = robot.description
        ee = desc.state_layout["ee_pos"]
        action_dim = source.spec.action_dim
        self._stop.clear()
        planner.reset()
        clock.start(self.hz, seed, self._stop)
        if reset:
            robot.reset(seed=seed)
            context = robot.context(seed)
            source.start_episode(context, seed)
            if self.observer is not None:
                self.observer.started(context, self.hz)
            if cfg.send_prefix is None:  # a server says in its answer whether its steering reads a prefix
                planner.set_send_prefix(source.wants_prefix)

        flight: _InFlight | None = None
        chunks: list[ChunkRecord] = []
        by_id: dict[int, ChunkRecord] = {}
        records: list[StepRecord] = []
        seams: list[float] = []
        within: list[float] = []
        prev_cid: int | None = None
        prev_action: np.ndarray | None = None
        last_action: np.ndarray | None = None
        stall = 0
        step = 0
        jump_step: int | None = None
        opportunity: int | None = None
        try:
            while (cfg.max_steps is None or step < cfg.max_steps) and not self._stop.is_set():
                tick = clock.tick(step)
                if tick is None:
                    break
                due, started = tick
                # 1. the chunk in flight, when due, goes into the queue (or is dropped, or its failure recorded)
                if flight is not None:
                    flight = self._advance(flight, step, by_id)
                # 2. observe
                obs = robot.observe()
                observed = clock.now(step)
                obs[STEP], obs[STAMP] = step, observed
                state = np.asarray(obs[OBS_STATE], dtype=np.float32)
                if self.observer is not None:
                    self.observer.observed(step, obs, observed)
                if stop_if is not None and stop_if(step, obs):
                    break
                # 3. ask for a chunk
                d_est = self.delay_estimate()
                trigger = d_est if cfg.trigger is None else cfg.trigger
                if flight is None and planner.wants(step, trigger):
                    flight = self._submit(obs, step, d_est, observed, seed)
                    chunks.append(flight.record)
                    if clock.must_wait(flight.due_step, flight.request.start_step, step):
                        flight = self._advance(flight, step, by_id)  # due now (d = 0, or a pausing wall clock)
                # 4. act: the queued action for this control index, or hold
                qa = planner.pop(step)
                assumed = None
                if qa is None:
                    action, cid, idx, rec = hold_action(state, desc, action_dim, last_action), None, None, None
                    stall += 1
                else:
                    action, cid, idx = qa.action, qa.chunk_id, qa.index
                    rec = by_id[cid]
                    if rec.estimate_error is None:
                        rec.estimate_error = float(np.linalg.norm(np.asarray(rec.assumed_ee) - state[ee]))
                        assumed = rec.assumed_ee
                    if prev_cid is not None:
                        jump = float(np.linalg.norm(action[:3] - prev_action[:3]))
                        (within if prev_cid == cid else seams).append(jump)
                    prev_cid, prev_action = cid, action
                    if jump_step is not None and opportunity is None and rec.obs_step >= jump_step:
                        opportunity = step - jump_step
                last_action = action
                robot.act(action)
                acted = clock.now(step)
                sent, why = robot.last_executed, robot.last_intervention
                executed = None if sent is None else np.asarray(sent, dtype=np.float32)
                differs = executed is not None and not np.array_equal(executed, action)
                records.append(StepRecord(
                    step=step, chunk_id=cid, index=idx, action=[float(v) for v in action],
                    ee=[float(v) for v in state[ee]], assumed_ee=assumed, tick=due, started=started,
                    observed=observed, acted=acted, delay_estimate=d_est,
                    executed=[float(v) for v in executed] if differs else None, intervention=why,
                ))
                done = ExecutedStep(
                    step=step, action=executed if executed is not None else action, commanded=action, state=state,
                    chunk_start_step=None if rec is None else rec.start_step, index=idx, safety=why, stamp=acted,
                )
                source.report_executed(done)
                if self.observer is not None:
                    self.observer.stepped(records[-1], done)
                if self.on_step is not None:
                    self.on_step(records[-1])
                step += 1
                if jump_step is None and robot.info.get("goal_jump_step") is not None:
                    jump_step = int(robot.info["goal_jump_step"])
                if robot.episode_over:
                    break
        except _Stopped:
            pass

        if flight is not None:
            flight.record.dropped = "abandoned"  # the run ended first; it will never be queued
        planner.reset()  # anything still computing is now stale
        episode_over = bool(robot.episode_over)
        info = dict(robot.info)
        success = episode_over and bool(info.get("success", False))
        errs = [c.estimate_error for c in chunks if c.estimate_error is not None]
        limit = cfg.max_steps
        result = LoopResult(
            seed=seed, steps=step, stall_steps=stall, chunks=chunks, records=records, episode_over=episode_over,
            info=info, success=success, failure=info.get("failure") if episode_over else None, clock=clock.name,
            late_ticks=clock.late_ticks, delay_estimate=self.delay_estimate(),
            seam_jump=float(np.mean(seams)) if seams else None,
            within_chunk_jump=float(np.mean(within)) if within else None,
            state_estimate_error=float(np.mean(errs)) if errs else None,
            goal_jump_step=jump_step, reaction_opportunity_steps=opportunity,
            completion_steps=step if success else max(step, limit or step), max_episode_steps=limit,
            estimator=planner.estimator_name,
        )
        if self.observer is not None:
            self.observer.ended(result)
        return result

    # --- requests --------------------------------------------------------------------------------
    def _submit(self, obs: Observation, step: int, d_est: int, stamp: float, seed: int | None) -> _InFlight:
        robot, clock = self.robot, self.clock
        req = self.planner.request(obs, step, d_est, stamp=stamp)
        due_step = clock.due_step(step)
        if robot.dynamic_scene:
            ctx = robot.context(seed)
            ctx = ctx.with_scene(ctx.scene, stamp=stamp)
            self.source.update_context(ctx)
            if self.observer is not None:
                self.observer.context(ctx, stamp)
        handle = self.source.submit(
            req.obs, req.start_step, prefix=req.prefix, state_kind=req.state_kind,
            prefix_start=req.prefix_start, prefix_committed=req.prefix_committed,
        )
        ee = robot.description.state_layout["ee_pos"]
        rec = ChunkRecord(
            obs_step=step, start_step=req.start_step, state_kind=req.state_kind, delay_estimate=d_est,
            committed=req.committed, assumed_ee=[float(v) for v in req.assumed_state[ee]],
            submitted=handle.submitted, due_step=due_step,
        )
        return _InFlight(req, handle, rec, due_step)

    def _advance(self, f: _InFlight, step: int, by_id: dict[int, ChunkRecord]) -> _InFlight | None:
        """Settle the chunk in flight if it is due at ``step`` (waiting for it if the clock says so);
        None when nothing is in flight any more."""
        handle = f.handle
        if not handle.done() and self.clock.must_wait(f.due_step, f.request.start_step, step):
            self._wait(handle)
        if handle.done():
            if f.due_step is not None and step < f.due_step:
                return f  # virtual clock: computed, but its delay has not passed yet
            chunk = self._settle(f, step, by_id)
        else:
            timeout = self.cfg.request_timeout_s
            waited = time.monotonic() - handle.submitted
            if timeout is None or waited <= timeout:
                return f
            f.record.error = f"timeout after {waited:.3f} s"
            self.delay.record(waited)  # at least this slow: plan for it
            chunk = None
        if self.observer is not None:
            self.observer.chunk(f.record, chunk, self.clock.now(step))
        if self.on_chunk is not None:
            self.on_chunk(f.record)
        return None

    def _wait(self, handle: ChunkHandle) -> None:
        """Block until ``handle`` is done, its request times out, or ``stop()``; the clock is told."""
        t0 = time.monotonic()
        timeout = self.cfg.request_timeout_s
        nap = 2e-4
        while not handle.done():
            if timeout is not None and time.monotonic() - handle.submitted > timeout:
                break
            if self._stop.wait(nap):
                self.clock.paused(time.monotonic() - t0)
                raise _Stopped
            nap = min(2 * nap, 2e-3)
        self.clock.paused(time.monotonic() - t0)

    def _settle(self, f: _InFlight, step: int, by_id: dict[int, ChunkRecord]) -> Chunk | None:
        """Queue a finished chunk, or record why not (the request failed, the chunk is stale); returns
        what arrived (None: the request failed)."""
        rec, handle = f.record, f.handle
        try:
            chunk = handle.poll()
        except Exception as e:  # noqa: BLE001 - a failed request is recorded; the loop asks again and holds meanwhile
            rec.completed = handle.completed if handle.completed is not None else time.monotonic()
            rec.error = f"{type(e).__name__}: {e}"
            return None
        rec.completed = handle.completed if handle.completed is not None else time.monotonic()
        self.delay.record(rec.completed - handle.submitted)
        info = chunk.info or {}
        rec.info = {k: v for k, v in info.items() if k in CHUNK_INFO_KEYS}
        lat = info.get("latency_ms")
        rec.latency_ms = None if lat is None else float(lat)
        rec.delivered_step, rec.delay_steps = step, step - rec.obs_step
        if self.cfg.max_chunk_age_s is not None and self.clock.age(f.request, handle, step) > self.cfg.max_chunk_age_s:
            rec.dropped = "stale:age"
            return chunk
        got = self.planner.deliver(chunk, f.request, now=step)
        if not got.accepted:
            rec.dropped = got.reason
            return chunk
        rec.chunk_id, rec.first_step, rec.first_index = got.chunk_id, got.first_step, got.first_index
        by_id[got.chunk_id] = rec
        return chunk
