"""The control loop in simulation, on a virtual clock.

One control step = one ``env.step``. An inference that takes d control steps (from the latency model)
is computed when it is triggered, but its chunk only becomes available d steps later; meanwhile the
robot executes what is queued, or holds position when nothing is (a stall). Results therefore do not
depend on how fast this machine is. The modes (``sync``, ``async``, ``vlash``) and the rules for
arriving chunks are those of :class:`~policy_steer.runtime.planner.ChunkPlanner`, shared with the
wall-clock loop.

With d = 0 and the default trigger (= the delay estimate), the three modes give identical episodes.

Figures of an episode:

- ``steps``: control steps from reset to the end of the episode (success, failure or time-out),
  stalls included; ``completion_steps``: the same, but an episode that did not succeed counts as the
  time-out (``max_episode_steps``), so that a policy which fails early (a collision) does not look fast.
  This is the issue's "control steps from reset to success or time-out, stalls included";
- ``stall_steps``: steps at which nothing was queued and the robot held;
- ``seam_jump``: mean |a_first(new) - a_last(old)| (xyz) over the seams, where a_last(old) is the last
  *executed* action of the chunk that ran before and a_first(new) the first executed action of the
  next chunk (held steps between them, as in ``sync``, are not actions of either chunk). For delta
  actions this is the jump in commanded velocity at the seam. ``within_chunk_jump``: the same
  difference between consecutive executed actions of one chunk, the reference a seam jump is read
  against (the policy's own smoothness);
- ``state_estimate_error``: mean over chunks of |assumed ee - measured ee| (metres) at the step its
  first row runs (sync: drift while holding; async: how far the robot moved during the inference;
  vlash: the future-state estimator's error);
- ``reaction_steps`` (moving-goal): ``k - j``, where j is the control index of the first observation
  that shows the new goal (the goal moves at the end of env step j, ``info["goal_jump_step"]``) and k
  the first control index at which the measured end effector is more than
  ``RuntimeConfig.reaction_departure`` (5 mm) away from where it is, at the same index, in the counterfactual episode of the same seed in
  which the goal does not move. With the same seed every chunk draws the same noise and is asked for
  at the same step in both episodes, so the two are identical until a chunk conditioned on the new
  goal runs; k is the first step at which the robot's motion has changed because of the new goal.
  (Requiring the change to point *at* the new goal would be wrong on push and pick-place, where the
  right reaction is often to go around the object on the other side, away from the goal.) The
  counterfactual episode runs only until that departure is found. None when the episode ended first
  (``reaction_censored``);
- ``reaction_opportunity_steps`` (moving-goal): ``k0 - j``, k0 the first control step that executes an
  action of a chunk conditioned on an observation taken at or after j: the earliest step a reaction
  is possible, whatever the policy does with it (``reaction_steps >= reaction_opportunity_steps + 1``: an action moves the end effector one step later).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from policy_steer.errors import ConfigError
from policy_steer.runtime.future_state import RobotDescription
from policy_steer.runtime.latency import parse_latency
from policy_steer.runtime.planner import MODES, ChunkPlanner, InferenceRequest, hold_action
from policy_steer.types import OBS_STATE, STAMP, STEP, TASK, Chunk

__all__ = ["MODES", "RuntimeConfig", "ChunkRecord", "StepRecord", "EpisodeResult", "hold_action", "run_episode",
           "policy_wants_prefix"]


@dataclass
class RuntimeConfig:
    mode: str = "sync"  # sync | async | vlash
    latency: str = "0"  # control steps per inference: N, uniform:LO-HI, replay:FILE.json
    trigger: int | None = None  # re-plan when at most this many actions remain (None: the delay estimate)
    n_execute: int | None = None  # actions executed per chunk (None: the policy's n_action_steps)
    estimator: str = "auto"  # vlash future state: auto | target | delta | model
    quantize: int = 1  # action quantization q (1 = off)
    send_prefix: bool | None = None  # pass the previous plan as prefix (None: when a strategy asks, e.g. rtc)
    reaction_departure: float = 0.005  # metres: moving-goal reaction threshold (module docstring)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"unknown mode {self.mode!r}; use one of {MODES}")
        if self.trigger is not None and self.trigger < 0:
            raise ConfigError(f"trigger must be >= 0, got {self.trigger}")
        if self.n_execute is not None and self.n_execute < 1:
            raise ConfigError(f"n_execute must be >= 1, got {self.n_execute}")
        if self.quantize < 1:
            raise ConfigError(f"quantize must be >= 1, got {self.quantize}")


@dataclass
class ChunkRecord:
    chunk_id: int  # -1: dropped on arrival (see ``dropped``)
    obs_step: int  # control index of the observation it was conditioned on
    start_step: int  # control index of its first queued row
    arrival_step: int
    delay_steps: int
    latency_ms: float  # measured compute time on this machine
    state_kind: str  # "measured" or "estimated"
    assumed_ee: list[float]  # end-effector position the chunk was conditioned on
    committed: int = 0  # actions that ran before it took over (vlash: the estimator's horizon)
    first_index: int = 0  # chunk row of its first queued row (async: the rows that belonged to the past)
    estimate_error: float | None = None  # |assumed ee - measured ee| when its first row ran (metres)
    dropped: str | None = None  # why it never ran ("stale:...")
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class StepRecord:
    step: int
    chunk_id: int | None  # None: held (stall)
    index: int | None  # row in its chunk
    action: list[float]
    ee: list[float]  # measured end effector before the action
    assumed_ee: list[float] | None = None  # on a chunk's first executed row: the ee it was conditioned on


@dataclass
class EpisodeResult:
    seed: int
    success: bool
    failure: str | None
    steps: int  # control steps from reset to the end of the episode, stalls included
    stall_steps: int
    chunks: list[ChunkRecord]
    records: list[StepRecord]
    seam_jump: float | None  # mean |a_first(new) - a_last(old)| (xyz) at chunk seams
    state_estimate_error: float | None
    reaction_steps: int | None  # moving-goal: see the module docstring
    goal_jump_step: int | None = None
    reaction_censored: bool = False  # the goal jumped but the episode ended before any reaction
    completion_steps: int | None = None  # steps if success, else the time-out (see the module docstring)
    within_chunk_jump: float | None = None  # mean |a_t - a_(t-1)| (xyz) between rows of one chunk
    reaction_opportunity_steps: int | None = None  # moving-goal: first step a reaction is possible, minus j
    max_episode_steps: int | None = None

    def summary(self) -> dict[str, Any]:
        lat = [c.latency_ms for c in self.chunks]
        return {
            "seed": self.seed, "success": self.success, "failure": self.failure, "steps": self.steps,
            "completion_steps": self.completion_steps if self.completion_steps is not None else self.steps,
            "stall_steps": self.stall_steps, "n_chunks": len(self.chunks), "seam_jump": self.seam_jump,
            "within_chunk_jump": self.within_chunk_jump,
            "state_estimate_error": self.state_estimate_error, "reaction_steps": self.reaction_steps,
            "reaction_opportunity_steps": self.reaction_opportunity_steps,
            "goal_jump_step": self.goal_jump_step, "reaction_censored": self.reaction_censored,
            "chunk_latency_ms": lat,
        }


def policy_wants_prefix(policy) -> bool:
    """Does any strategy of ``policy`` (a SteeredPolicy or a chunk source) read the previous plan?"""
    if hasattr(policy, "wants_prefix"):
        return bool(policy.wants_prefix)
    return any(getattr(s, "wants_prefix", False) for s in getattr(policy, "strategies", []))


@dataclass
class _InFlight:
    request: InferenceRequest
    chunk: Chunk
    arrival: int
    record: ChunkRecord


def run_episode(env, policy, cfg: RuntimeConfig, seed: int, record_steps: bool = False,
                reaction: bool = True) -> EpisodeResult:
    """Run one seeded episode of ``env`` (a TaskEnv) under ``policy`` (a SteeredPolicy).

    On ``moving-goal`` (and ``reaction``), the counterfactual episode of the same seed without the goal
    jump is run afterwards, until the end effectors part, to measure ``reaction_steps``.
    """
    result, ee_trace = _play(env, policy, cfg, seed, record_steps)
    j = result.goal_jump_step
    if reaction and j is not None:
        def departed(step: int, ee: np.ndarray) -> bool:
            return step >= j and step < len(ee_trace) and float(np.linalg.norm(ee - ee_trace[step])) > cfg.reaction_departure

        if _can_suppress_jump(env):
            _, cf_trace = _play(env, policy, cfg, seed, False, suppress_jump=True, stop=departed,
                                until=len(ee_trace) - 1)
            k = len(cf_trace) - 1
            if k >= 0 and departed(k, cf_trace[k]):
                result.reaction_steps = k - j
        result.reaction_censored = result.reaction_steps is None
    return result


def _can_suppress_jump(env) -> bool:
    lay = getattr(env.unwrapped, "layout", None)
    return lay is not None and hasattr(lay, "goal_jump_step")


def _play(env, policy, cfg: RuntimeConfig, seed: int, record_steps: bool, suppress_jump: bool = False,
          stop=None, until: int | None = None) -> tuple[EpisodeResult, list[np.ndarray]]:
    """One episode; returns it and the measured end effector at every control index (before its action).

    ``suppress_jump``: the counterfactual episode (the moving-goal jump disabled after reset);
    ``stop(step, ee)``: end the episode as soon as it returns True (ee at ``step``), and ``until``: after
    that many control steps (both only for the counterfactual, whose figures are not used)."""
    u = env.unwrapped
    robot = RobotDescription.from_env(env)
    spec = policy.spec
    if spec.action_dim != u.action_dim:
        raise ConfigError(f"policy action dim {spec.action_dim} does not fit task {u.task!r} (action dim {u.action_dim})")
    latency = parse_latency(cfg.latency, u.control_hz)
    d_est = latency.estimate()
    trigger = d_est if cfg.trigger is None else cfg.trigger
    send_prefix = policy_wants_prefix(policy) if cfg.send_prefix is None else cfg.send_prefix
    planner = ChunkPlanner(
        mode=cfg.mode, robot=robot, action_dim=spec.action_dim, n_execute=cfg.n_execute or spec.n_action_steps,
        quantize=cfg.quantize, estimator=cfg.estimator, send_prefix=send_prefix,
    )
    rng = np.random.default_rng(seed)
    ee_slice = robot.state_layout["ee_pos"]

    obs, info = env.reset(seed=seed)
    if suppress_jump:
        u.layout.goal_jump_step = None
    context = u.episode_context(seed)
    policy.start_episode(context, seed=seed)
    inflight: _InFlight | None = None
    chunks: list[ChunkRecord] = []
    by_id: dict[int, ChunkRecord] = {}
    records: list[StepRecord] = []
    ee_trace: list[np.ndarray] = []
    seams: list[float] = []
    within: list[float] = []
    prev: tuple[int | None, np.ndarray | None] = (None, None)
    last_action: np.ndarray | None = None
    stall = 0
    step = 0
    jump_step: int | None = None
    opportunity: int | None = None
    success, failure = False, None

    def deliver(f: _InFlight) -> None:
        got = planner.deliver(f.chunk, f.request, now=step)
        rec = f.record
        if got.accepted:
            rec.chunk_id, rec.start_step, rec.first_index = got.chunk_id, got.first_step, got.first_index
            by_id[got.chunk_id] = rec
        else:
            rec.dropped = got.reason
        chunks.append(rec)

    while True:
        state = np.asarray(obs[OBS_STATE], dtype=np.float32)
        ee_trace.append(state[ee_slice].astype(np.float64))
        if stop is not None and stop(step, ee_trace[-1]):
            break
        if until is not None and step >= until:
            break
        if inflight is not None and inflight.arrival <= step:
            deliver(inflight)
            inflight = None
        if inflight is None and planner.wants(step, trigger):
            d = latency.sample(rng)
            cond = {**obs, TASK: u.instruction, STEP: step, STAMP: float(step) / u.control_hz}
            req = planner.request(cond, step, d_est)
            policy.update_context(context.with_scene(u.scene(), stamp=float(step) / u.control_hz))
            chunk = policy.predict_chunk(
                req.obs, prefix=req.prefix, start_step=req.start_step,
                **({"prefix_start": req.prefix_start, "prefix_committed": req.prefix_committed} if req.prefix is not None else {}),
            )
            rec = ChunkRecord(
                chunk_id=-1, obs_step=step, start_step=req.start_step, arrival_step=step + d, delay_steps=d,
                latency_ms=float(chunk.info.get("latency_ms", 0.0)), state_kind=req.state_kind,
                assumed_ee=[float(v) for v in req.assumed_state[ee_slice]], committed=req.committed,
                info=_small_info(chunk.info),
            )
            inflight = _InFlight(req, chunk, step + d, rec)
            if d == 0:
                deliver(inflight)
                inflight = None

        qa = planner.pop(step)
        assumed = None
        if qa is None:
            action = hold_action(state, robot, spec.action_dim, last_action)
            stall += 1
            cid = idx = None
        else:
            action, cid, idx = qa.action, qa.chunk_id, qa.index
            rec = by_id[cid]
            if rec.estimate_error is None:
                rec.estimate_error = float(np.linalg.norm(np.asarray(rec.assumed_ee) - state[ee_slice]))
                assumed = rec.assumed_ee
            if prev[0] is not None:
                jump = float(np.linalg.norm(action[:3] - prev[1][:3]))
                (within if prev[0] == cid else seams).append(jump)
            prev = (cid, action)
            if jump_step is not None and opportunity is None and rec.obs_step >= jump_step:
                opportunity = step - jump_step
        last_action = action
        if record_steps:
            records.append(StepRecord(step, cid, idx, [float(v) for v in action], [float(v) for v in state[ee_slice]], assumed))

        obs, _, terminated, truncated, info = env.step(action)
        step += 1
        if jump_step is None and info.get("goal_jump_step") is not None:
            jump_step = int(info["goal_jump_step"])
        if terminated or truncated:
            success = bool(info.get("success", False))
            failure = info.get("failure")
            ee_trace.append(np.asarray(obs[OBS_STATE], dtype=np.float64)[ee_slice])
            break

    errs = [c.estimate_error for c in chunks if c.estimate_error is not None]
    max_steps = int(getattr(u, "max_episode_steps", step) or step)
    result = EpisodeResult(
        seed=seed, success=success, failure=failure, steps=step, stall_steps=stall, chunks=chunks,
        records=records, seam_jump=float(np.mean(seams)) if seams else None,
        state_estimate_error=float(np.mean(errs)) if errs else None, reaction_steps=None,
        goal_jump_step=jump_step, reaction_censored=False,
        completion_steps=step if success else max(step, max_steps),
        within_chunk_jump=float(np.mean(within)) if within else None,
        reaction_opportunity_steps=opportunity, max_episode_steps=max_steps,
    )
    return result, ee_trace


def _small_info(info: dict[str, Any]) -> dict[str, Any]:
    """What a chunk record keeps of the chunk's info (figures, not arrays)."""
    return {k: v for k, v in info.items() if k in ("winner", "candidates", "steer", "latency_ms", "prepare_ms")}
