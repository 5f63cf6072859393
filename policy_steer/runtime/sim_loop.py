"""A simulation benchmark episode: the one control loop (:mod:`policy_steer.runtime.loop`) on the
virtual clock, a TaskEnv as the robot (:class:`~policy_steer.runtime.robot.SimRobot`) and the steered
policy in process (:class:`~policy_steer.runtime.chunk_source.LocalChunkSource`, inline).

One control step = one ``env.step``. An inference that takes d control steps (from the latency model)
is computed when it is triggered, but its chunk only becomes available d steps later; meanwhile the
robot executes what is queued, or holds position when nothing is (a stall). Results therefore do not
depend on how fast this machine is. The modes (``sync``, ``async``, ``vlash``) and the rules for
arriving chunks are those of :class:`~policy_steer.runtime.planner.ChunkPlanner`. What this module adds
to the loop is the moving-goal reaction figure (the counterfactual episode below).

With d = 0 and the default trigger (= the delay estimate), the three modes give identical episodes.

Figures of an episode: those of the loop (:mod:`policy_steer.runtime.loop`: ``steps``,
``completion_steps`` with the time-out ``max_episode_steps``, ``stall_steps``, ``seam_jump``,
``within_chunk_jump``, ``state_estimate_error``, ``goal_jump_step``, ``reaction_opportunity_steps``), and

- ``reaction_steps`` (moving-goal): ``k - j``, where j is the control index of the first observation
  that shows the new goal (the goal moves at the end of env step j, ``info["goal_jump_step"]``) and k
  the first control index at which the measured end effector is more than
  ``RuntimeConfig.reaction_departure`` (5 mm) away from where it is, at the same index, in the
  counterfactual episode of the same seed in which the goal does not move
  (:meth:`~policy_steer.envs.base.TaskEnv.suppress_goal_jump`). With the same seed every chunk draws the
  same noise and is asked for at the same step in both episodes, so the two are identical until a
  chunk conditioned on the new goal runs; k is the first step at which the robot's motion has changed
  because of the new goal. (Requiring the change to point *at* the new goal would be wrong on push and
  pick-place, where the right reaction is often to go around the object on the other side, away from
  the goal.) The counterfactual episode runs only until that departure is found. None when the episode
  ended first, or the env cannot cancel its jump (``reaction_censored``);
- ``reaction_opportunity_steps`` (moving-goal): ``k0 - j``, k0 the first control step that executes an
  action of a chunk conditioned on an observation taken at or after j: the earliest step a reaction
  is possible, whatever the policy does with it (``reaction_steps >= reaction_opportunity_steps + 1``:
  an action moves the end effector one step later).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from policy_steer.errors import ConfigError
from policy_steer.runtime.arm_model import ArmMismatch, perturbed
from policy_steer.runtime.chunk_source import LocalChunkSource
from policy_steer.runtime.loop import ChunkRecord, ControlLoop, LoopConfig, LoopObserver, LoopResult, StepRecord, VirtualClock
from policy_steer.runtime.planner import MODES, hold_action
from policy_steer.runtime.robot import SimRobot
from policy_steer.types import OBS_STATE, Observation

__all__ = ["MODES", "RuntimeConfig", "ChunkRecord", "StepRecord", "EpisodeResult", "hold_action", "run_episode"]

EpisodeResult = LoopResult  # one result type for both clocks


@dataclass
class RuntimeConfig:
    mode: str = "sync"  # sync | async | vlash
    latency: str = "0"  # control steps per inference: N, uniform:LO-HI, replay:FILE.json
    trigger: int | None = None  # re-plan when at most this many actions remain (None: the delay estimate)
    n_execute: int | None = None  # actions executed per chunk (None: the policy's n_action_steps)
    estimator: str = "auto"  # vlash future state: auto | kinematic | model-robot | model | delta | target
    # the estimator's arm model made wrong (runtime/arm_model.py ArmMismatch): none | link=M,gain=F,joint_offset=RAD
    arm_mismatch: str = "none"
    quantize: int = 1  # action quantization q (1 = off)
    send_prefix: bool | None = None  # pass the previous plan as prefix (None: when a strategy asks, e.g. rtc)
    reaction_departure: float = 0.005  # metres: moving-goal reaction threshold (module docstring)

    def __post_init__(self) -> None:
        self.loop_config()  # the loop's checks, now
        self.mismatch = ArmMismatch.parse(self.arm_mismatch)

    def loop_config(self, max_steps: int | None = None) -> LoopConfig:
        return LoopConfig(
            mode=self.mode, trigger=self.trigger, n_execute=self.n_execute, estimator=self.estimator,
            quantize=self.quantize, send_prefix=self.send_prefix, max_steps=max_steps,
        )


def run_episode(env, policy, cfg: RuntimeConfig, seed: int, record_steps: bool = False,
                reaction: bool = True, observer: LoopObserver | None = None) -> EpisodeResult:
    """Run one seeded episode of ``env`` (a TaskEnv) under ``policy`` (a SteeredPolicy, or any
    :class:`~policy_steer.runtime.chunk_source.InProcessPolicy`).

    On ``moving-goal`` (and ``reaction``), the counterfactual episode of the same seed without the goal
    jump is run afterwards, until the end effectors part, to measure ``reaction_steps``.
    ``observer`` (e.g. a bag recorder) sees the episode, not the counterfactual.
    """
    result, ee_trace = _play(env, policy, cfg, seed, record_steps, observer=observer)
    j = result.goal_jump_step
    if reaction and j is not None:
        def departed(step: int, ee: np.ndarray) -> bool:
            return step >= j and step < len(ee_trace) and float(np.linalg.norm(ee - ee_trace[step])) > cfg.reaction_departure

        _, cf_trace = _play(env, policy, cfg, seed, False, suppress_jump=True, stop=departed, until=len(ee_trace) - 1)
        k = len(cf_trace) - 1
        if k >= 0 and departed(k, cf_trace[k]):
            result.reaction_steps = k - j
        result.reaction_censored = result.reaction_steps is None
    return result


def _play(env, policy, cfg: RuntimeConfig, seed: int, record_steps: bool, suppress_jump: bool = False,
          stop=None, until: int | None = None, observer: LoopObserver | None = None) -> tuple[EpisodeResult, list[np.ndarray]]:
    """One episode; returns it and the measured end effector at every control index (before its action,
    and after the last one when the env ended the episode).

    ``suppress_jump``: the counterfactual episode (the moving-goal jump cancelled after reset; it ends at
    once if the env cannot); ``stop(step, ee)``: end the episode as soon as it returns True (ee at
    ``step``), and ``until``: after that many control steps (both only for the counterfactual, whose
    figures are not used)."""
    u = env.unwrapped
    spec = policy.spec
    if spec.action_dim != u.action_dim:
        raise ConfigError(f"policy action dim {spec.action_dim} does not fit task {u.task!r} (action dim {u.action_dim})")
    robot = SimRobot(env, suppress_goal_jump=suppress_jump)
    if cfg.mismatch.active:
        # The estimator's arm model is wrong (the simulated arm is not): drawn per seed, the same in the
        # counterfactual episode.
        desc = robot.description
        if desc.arm is None:
            raise ConfigError(f"--arm_mismatch needs an arm model; task {u.task!r} describes none")
        robot.description = dataclasses.replace(desc, arm=perturbed(desc.arm, cfg.mismatch, seed))
    source = LocalChunkSource(policy, inline=True)
    loop = ControlLoop(robot, source, VirtualClock(cfg.latency), cfg.loop_config(max_steps=int(u.max_episode_steps)),
                       observer=observer)
    ee = robot.description.state_layout["ee_pos"]
    trace: list[np.ndarray] = []

    def stop_if(step: int, obs: Observation) -> bool:
        trace.append(np.asarray(obs[OBS_STATE], dtype=np.float32)[ee].astype(np.float64))
        if suppress_jump and not robot.goal_jump_suppressed:
            return True  # no counterfactual without a way to cancel the jump: no reaction figure
        if stop is not None and stop(step, trace[-1]):
            return True
        return until is not None and step >= until

    result = loop.run(seed=seed, stop_if=stop_if)
    result.arm_mismatch = cfg.arm_mismatch if cfg.mismatch.active else None
    if result.episode_over:
        trace.append(np.asarray(robot.observe()[OBS_STATE], dtype=np.float64)[ee])
    if not record_steps:
        result.records = []
    return result, trace

