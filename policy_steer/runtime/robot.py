"""The robot side of the wall-clock loop: anything with ``observe()`` and ``act(action)``.

A :class:`Robot` is a real arm driver, the sim-as-robot process, or :class:`SimRobot` (a TaskEnv that
steps when it is told to act, for tests and for running the wall-clock loop on one machine). The loop
also needs a :class:`~policy_steer.runtime.future_state.RobotDescription` (action space, state layout)
for safe holds and the future-state estimators; robots provide it as ``description``.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np

from policy_steer.runtime.future_state import RobotDescription
from policy_steer.types import TASK, Observation


@runtime_checkable
class Robot(Protocol):
    description: RobotDescription
    control_hz: float

    def observe(self) -> Observation:
        """The current observation (lerobot keys; ``task`` if the robot knows its instruction)."""

    def act(self, action: np.ndarray) -> None:
        """Command one action [A] for the coming control period; must not block longer than that."""

    def reset(self, seed: int | None = None) -> Observation:
        """Start an episode; returns the first observation."""


class SimRobot:
    """A TaskEnv as a robot: ``act`` runs one ``env.step`` at once; the control loop keeps the pace.

    ``episode_over`` turns true when the env terminates or truncates; ``info`` is the last step's info.
    The env is only touched from the thread that calls ``reset``/``observe``/``act`` (the control
    thread), which is also where the ``model`` estimator's rollout runs.
    """

    def __init__(self, env) -> None:
        self.env = env
        u = env.unwrapped
        self.description = RobotDescription.from_env(env)
        self.control_hz = float(u.control_hz)
        self.instruction = u.instruction
        self._obs: dict[str, Any] | None = None
        self.info: dict[str, Any] = {}
        self.episode_over = False
        self.steps = 0

    def reset(self, seed: int | None = None) -> Observation:
        self._obs, self.info = self.env.reset(seed=seed)
        self.episode_over = False
        self.steps = 0
        return self.observe()

    def episode_info(self) -> dict[str, Any]:
        """What strategies may want to know about the episode (as the simulation loop passes it)."""
        u = self.env.unwrapped
        return {"task": u.task, "variant": u.variant, "instruction": u.instruction, "scene": u.scene(),
                "robot": self.description}

    def observe(self) -> Observation:
        if self._obs is None:
            raise RuntimeError("call reset() before observe()")
        return {**{k: np.array(v, copy=True) for k, v in self._obs.items()}, TASK: self.instruction}

    def act(self, action: np.ndarray) -> None:
        if self.episode_over:
            return  # the episode ended: further commands are ignored, as a stopped arm would
        self._obs, _, terminated, truncated, self.info = self.env.step(np.asarray(action, dtype=np.float32))
        self.steps += 1
        self.episode_over = bool(terminated or truncated)
