"""The robot side of the control loop: anything with ``observe()``, ``act(action)`` and ``reset()``.

A :class:`Robot` is a real arm behind its safety layer, a simulated task, or :class:`SimRobot` (a
TaskEnv that steps when it is told to act: the simulation benchmark and tests). Every member the
control loop (:mod:`policy_steer.runtime.loop`) reads is declared here, with a default where one makes
sense; a robot class inherits the defaults by subclassing :class:`Robot` (it is a ``Protocol``, so
any object with these members fits too).

- ``description``: the :class:`~policy_steer.types.RobotDescription` (action space, state layout)
  for safe holds and the future-state estimators; ``control_hz``: its control rate;
- ``episode_over``: the robot ended the episode (success, failure, time-out); an arm that never
  does keeps it False and the loop runs to ``max_steps`` or ``stop()``;
- ``info``: the last step's info (``success``, ``failure``, ``goal_jump_step`` ...; empty if none);
- ``last_executed`` / ``last_intervention``: what the last ``act`` really sent and, when that differs
  from the command, why (a safety layer's clip or hold); None: exactly the command;
- ``dynamic_scene``: the scene can change during the episode and the robot can read it
  (a simulator): the loop sends ``context()`` as an update before every request;
- ``context(seed)``: the :class:`~policy_steer.types.EpisodeContext` now (instruction, scene,
  robot description); by default only the robot description.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Protocol, runtime_checkable

import numpy as np

from policy_steer.types import TASK, EpisodeContext, Observation, RobotDescription

_NO_INFO: Mapping[str, Any] = MappingProxyType({})


@runtime_checkable
class Robot(Protocol):
    description: RobotDescription
    control_hz: float
    episode_over: bool = False
    info: Mapping[str, Any] = _NO_INFO
    last_executed: np.ndarray | None = None
    last_intervention: str | None = None
    dynamic_scene: bool = False

    def observe(self) -> Observation:
        """The current observation (lerobot keys; ``task`` if the robot knows its instruction)."""
        ...

    def act(self, action: np.ndarray) -> None:
        """Command one action [A] for the coming control period; must not block longer than that."""
        ...

    def reset(self, seed: int | None = None) -> Observation:
        """Start an episode; returns the first observation."""
        ...

    def context(self, seed: int | None = None) -> EpisodeContext:
        """The episode context now (read at reset, and before every request when ``dynamic_scene``)."""
        return EpisodeContext(robot=self.description, seed=seed)


class SimRobot(Robot):
    """A TaskEnv as a robot: ``act`` runs one ``env.step`` at once; the control loop keeps the pace.

    ``episode_over`` turns true when the env terminates or truncates; ``info`` is the last step's info;
    ``context`` is the env's :meth:`~policy_steer.envs.base.TaskEnv.episode_context` (ground truth, read
    from the simulator now), and the scene is dynamic. ``suppress_goal_jump``: after every reset the
    env's moving-goal jump is cancelled (the counterfactual episode of the reaction figure);
    ``goal_jump_suppressed`` says whether the env could. The env is only touched from the thread that
    calls ``reset``/``observe``/``act`` (the control thread), which is also where the ``model``
    estimator's rollout runs.
    """

    dynamic_scene = True

    def __init__(self, env, suppress_goal_jump: bool = False) -> None:
        self.env = env
        u = env.unwrapped
        self.description = RobotDescription.from_env(env)
        self.control_hz = float(u.control_hz)
        self.instruction = u.instruction
        self.suppress_goal_jump = bool(suppress_goal_jump)
        self.goal_jump_suppressed = False
        self._obs: dict[str, Any] | None = None
        self.info: Mapping[str, Any] = {}
        self.episode_over = False
        self.last_executed: np.ndarray | None = None
        self.steps = 0

    def reset(self, seed: int | None = None) -> Observation:
        self._obs, self.info = self.env.reset(seed=seed)
        if self.suppress_goal_jump:
            self.goal_jump_suppressed = bool(self.env.unwrapped.suppress_goal_jump())
        self.episode_over = False
        self.last_executed = None
        self.steps = 0
        return self.observe()

    def context(self, seed: int | None = None) -> EpisodeContext:
        return self.env.unwrapped.episode_context(seed)

    def observe(self) -> Observation:
        if self._obs is None:
            raise RuntimeError("call reset() before observe()")
        return {**{k: np.array(v, copy=True) for k, v in self._obs.items()}, TASK: self.instruction}

    def act(self, action: np.ndarray) -> None:
        if self.episode_over:
            return  # the episode ended: further commands are ignored, as a stopped arm would
        action = np.asarray(action, dtype=np.float32)
        self._obs, _, terminated, truncated, self.info = self.env.step(action)
        self.last_executed = action
        self.steps += 1
        self.episode_over = bool(terminated or truncated)
