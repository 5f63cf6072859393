"""The control loop in simulation, on a virtual clock.

One control step = one ``env.step``. An inference that takes d control steps (from the latency model)
is computed when it is triggered, but its chunk only becomes available d steps later; meanwhile the
robot executes what is queued, or holds position when nothing is (a stall). Results therefore do not
depend on how fast this machine is.

Modes (DESIGN.md):

- ``sync``: when the queue is empty, observe, infer (the robot holds for d steps), execute K actions.
- ``async``: when at most ``trigger`` actions remain, infer from the current state while executing;
  the chunk is planned as if it started now, so its first d rows belong to the past and are skipped.
- ``vlash``: when at most ``trigger`` actions remain, estimate the state at the end of the pending
  actions, infer from it, and start the new chunk exactly there.

With d = 0 and the default trigger (= the delay estimate), the three modes give identical episodes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from policy_steer.errors import ConfigError
from policy_steer.runtime.action_queue import ActionQueue
from policy_steer.runtime.future_state import RobotDescription, make_estimator, with_state
from policy_steer.runtime.latency import parse_latency
from policy_steer.runtime.quantization import quantize_actions
from policy_steer.types import OBS_STATE, STAMP, STEP, TASK, Chunk, Observation

MODES = ("sync", "async", "vlash")


@dataclass
class RuntimeConfig:
    mode: str = "sync"  # sync | async | vlash
    latency: str = "0"  # control steps per inference: N, uniform:LO-HI, replay:FILE.json
    trigger: int | None = None  # re-plan when at most this many actions remain (None: the delay estimate)
    n_execute: int | None = None  # actions executed per chunk (None: the policy's n_action_steps)
    estimator: str = "auto"  # vlash future state: auto | target | delta | model
    quantize: int = 1  # action quantization q (1 = off)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"unknown mode {self.mode!r}; use one of {MODES}")
        if self.trigger is not None and self.trigger < 0:
            raise ConfigError(f"trigger must be >= 0, got {self.trigger}")
        if self.n_execute is not None and self.n_execute < 1:
            raise ConfigError(f"n_execute must be >= 1, got {self.n_execute}")


@dataclass
class ChunkRecord:
    chunk_id: int
    obs_step: int  # control index of the observation it was conditioned on
    start_step: int  # control index of its first executed row
    arrival_step: int
    delay_steps: int
    latency_ms: float  # measured compute time on this machine
    state_kind: str  # "measured" or "estimated"
    assumed_ee: list[float]  # end-effector position the chunk was conditioned on
    estimate_error: float | None = None  # |assumed ee - measured ee| when its first row ran (metres)
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class StepRecord:
    step: int
    chunk_id: int | None  # None: held (stall)
    index: int | None
    action: list[float]
    ee: list[float]


@dataclass
class EpisodeResult:
    seed: int
    success: bool
    failure: str | None
    steps: int  # control steps from reset to success or time-out, stalls included
    stall_steps: int
    chunks: list[ChunkRecord]
    records: list[StepRecord]
    seam_jump: float | None  # mean |a_t - a_{t-1}| (xyz) where the executed chunk changes
    state_estimate_error: float | None
    reaction_steps: int | None  # moving-goal: from the jump to the first action planned after it

    def summary(self) -> dict[str, Any]:
        lat = [c.latency_ms for c in self.chunks]
        return {
            "seed": self.seed, "success": self.success, "failure": self.failure, "steps": self.steps,
            "stall_steps": self.stall_steps, "n_chunks": len(self.chunks), "seam_jump": self.seam_jump,
            "state_estimate_error": self.state_estimate_error, "reaction_steps": self.reaction_steps,
            "chunk_latency_ms": lat,
        }


def hold_action(state: np.ndarray, robot: RobotDescription, action_dim: int, last: np.ndarray | None) -> np.ndarray:
    """Stay where you are: zero delta (or the current position as target), gripper unchanged."""
    a = np.zeros(action_dim, dtype=np.float32)
    if robot.action_mode == "absolute":
        a[:3] = state[robot.state_layout["ee_pos"]]
    if action_dim >= 4:
        if last is not None:
            a[3] = last[3]
        else:
            a[3] = -1.0 if state[robot.state_layout["gripper"]][0] > 0.5 else 1.0
    return a


@dataclass
class _InFlight:
    chunk: Chunk
    arrival: int
    record: ChunkRecord


def run_episode(env, policy, cfg: RuntimeConfig, seed: int, record_steps: bool = False) -> EpisodeResult:
    """Run one seeded episode of ``env`` (a TaskEnv) under ``policy`` (a SteeredPolicy)."""
    u = env.unwrapped
    robot = RobotDescription.from_env(env)
    spec = policy.spec
    if spec.action_dim != u.action_dim:
        raise ConfigError(f"policy action dim {spec.action_dim} does not fit task {u.task!r} (action dim {u.action_dim})")
    latency = parse_latency(cfg.latency, u.control_hz)
    trigger = latency.estimate() if cfg.trigger is None else cfg.trigger
    estimator = make_estimator(cfg.estimator, robot) if cfg.mode == "vlash" else None
    n_exec = -(-(cfg.n_execute or spec.n_action_steps) // cfg.quantize)
    rng = np.random.default_rng(seed)
    ee_slice = robot.state_layout["ee_pos"]

    obs, info = env.reset(seed=seed)
    policy.reset(seed=seed, episode={
        "task": u.task, "variant": u.variant, "instruction": u.instruction, "scene": u.scene(), "robot": robot,
    })
    queue = ActionQueue(spec.action_dim)
    inflight: _InFlight | None = None
    chunks: list[ChunkRecord] = []
    by_id: dict[int, ChunkRecord] = {}
    records: list[StepRecord] = []
    seams: list[float] = []
    prev: tuple[int | None, np.ndarray | None] = (None, None)
    last_action: np.ndarray | None = None
    stall = 0
    step = 0
    jump_step: int | None = None
    reaction: int | None = None
    success, failure = False, None

    def observation(o: dict, k: int) -> Observation:
        return {**o, TASK: u.instruction, STEP: k, STAMP: float(k) / u.control_hz}

    def deliver(f: _InFlight) -> None:
        chunk = f.chunk
        actions = quantize_actions(chunk.actions, cfg.quantize, robot.action_mode)
        if cfg.mode == "async":
            # Naive: rows planned for steps before the arrival belong to the past.
            q_chunk = Chunk(actions, chunk.start_step, chunk.info)
            first = max(0, step - chunk.start_step)
            cid = queue.insert(q_chunk, n_execute=first + n_exec, first_index=first)
        else:
            # sync / vlash: the robot held where the chunk assumed it would be, so a late chunk starts on arrival.
            start = max(chunk.start_step, step)
            cid = queue.insert(Chunk(actions, start, chunk.info), n_execute=n_exec)
            f.record.start_step = start
        f.record.chunk_id = cid
        by_id[cid] = f.record
        chunks.append(f.record)

    while True:
        if inflight is not None and inflight.arrival <= step:
            deliver(inflight)
            inflight = None
        remaining = queue.remaining(step)
        wants = remaining == 0 if cfg.mode == "sync" else remaining <= trigger
        if inflight is None and wants:
            d = latency.sample(rng)
            state = np.asarray(obs[OBS_STATE], dtype=np.float32)
            cond = observation(obs, step)
            if cfg.mode == "vlash":
                pending = queue.pending(step)
                est = estimator.estimate(state, pending, robot)
                cond = with_state(cond, est, robot)
                start, kind, assumed = step + len(pending), "estimated", est[ee_slice]
            elif cfg.mode == "async":
                start, kind, assumed = step, "measured", state[ee_slice]
            else:
                start, kind, assumed = step + d, "measured", state[ee_slice]
            chunk = policy.predict_chunk(cond, start_step=start)
            rec = ChunkRecord(
                chunk_id=-1, obs_step=step, start_step=start, arrival_step=step + d, delay_steps=d,
                latency_ms=float(chunk.info.get("latency_ms", 0.0)), state_kind=kind,
                assumed_ee=[float(v) for v in assumed], info=_small_info(chunk.info),
            )
            inflight = _InFlight(chunk, step + d, rec)
            if d == 0:
                deliver(inflight)
                inflight = None

        qa = queue.pop(step)
        state = np.asarray(obs[OBS_STATE], dtype=np.float32)
        if qa is None:
            action = hold_action(state, robot, spec.action_dim, last_action)
            stall += 1
            cid = idx = None
        else:
            action, cid, idx = qa.action, qa.chunk_id, qa.index
            rec = by_id[cid]
            if rec.estimate_error is None:
                rec.estimate_error = float(np.linalg.norm(np.asarray(rec.assumed_ee) - state[ee_slice]))
            if prev[0] is not None and prev[0] != cid:
                seams.append(float(np.linalg.norm(action[:3] - prev[1][:3])))
            prev = (cid, action)
            if jump_step is not None and reaction is None and rec.obs_step >= jump_step:
                reaction = step - jump_step
        last_action = action
        if record_steps:
            records.append(StepRecord(step, cid, idx, [float(v) for v in action], [float(v) for v in state[ee_slice]]))

        obs, _, terminated, truncated, info = env.step(action)
        step += 1
        if jump_step is None and info.get("goal_jump_step") is not None:
            jump_step = int(info["goal_jump_step"])
        if terminated or truncated:
            success = bool(info.get("success", False))
            failure = info.get("failure")
            break

    errs = [c.estimate_error for c in chunks if c.estimate_error is not None]
    return EpisodeResult(
        seed=seed, success=success, failure=failure, steps=step, stall_steps=stall, chunks=chunks,
        records=records, seam_jump=float(np.mean(seams)) if seams else None,
        state_estimate_error=float(np.mean(errs)) if errs else None, reaction_steps=reaction,
    )


def _small_info(info: dict[str, Any]) -> dict[str, Any]:
    """What a chunk record keeps of the chunk's info (figures, not arrays)."""
    return {k: v for k, v in info.items() if k in ("winner", "candidates", "steer", "latency_ms", "prepare_ms")}
