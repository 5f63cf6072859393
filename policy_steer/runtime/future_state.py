"""Future-state estimators for VLASH: the state the robot will be in when a new chunk starts.

VLASH's reference implementation uses the target of the last pending action as the future state,
which only holds for absolute position actions with state dim == action dim. Here the estimator is a
pluggable part that says when it does not apply:

- ``target``: absolute end-effector targets; the end effector will be at the last pending target.
- ``delta``: delta end-effector actions; integrate them from the current end-effector position.
- ``model``: roll the pending actions forward on a scratch copy of the simulator (everything moves,
  objects included), as the VLASH Kinetix evaluation does. Needs a ``rollout`` function.
  ``model-robot`` takes only the robot part of that rollout (the scene stays measured, as in offset
  training).

``target`` and ``delta`` update only the end-effector (and gripper) slices; joint positions and
objects keep their measured values. With no pending actions every estimator returns the measured state.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from policy_steer.errors import ConfigError
from policy_steer.types import OBS_ENV_STATE, OBS_STATE, Observation, RobotDescription  # noqa: F401 (re-exported)


class FutureStateEstimator:
    name = "estimator"

    def check(self, robot: RobotDescription) -> None:
        """Raise ConfigError if this estimator does not apply to the robot's action space."""

    def estimate(self, state: np.ndarray, pending: np.ndarray, robot: RobotDescription) -> np.ndarray:
        """observation.state [S] after executing ``pending`` [r, A] from ``state`` [S]."""
        raise NotImplementedError


def _gripper_after(state: np.ndarray, pending: np.ndarray, robot: RobotDescription) -> np.ndarray:
    # The gripper command is +1 close / -1 open; the state reads opening 1 open .. 0 closed.
    if "gripper" in robot.state_layout and pending.shape[1] >= 4:
        state[robot.state_layout["gripper"]] = 0.0 if pending[-1, 3] > 0 else 1.0
    return state


class TargetEstimator(FutureStateEstimator):
    name = "target"

    def check(self, robot: RobotDescription) -> None:
        if robot.action_mode != "absolute":
            raise ConfigError(
                f"the 'target' future-state estimator needs absolute position actions; this robot uses "
                f"{robot.action_mode!r} actions (use 'delta' or 'model')"
            )

    def estimate(self, state: np.ndarray, pending: np.ndarray, robot: RobotDescription) -> np.ndarray:
        state = np.array(state, dtype=np.float32, copy=True)
        if len(pending):
            state[robot.state_layout["ee_pos"]] = pending[-1, :3]
            state = _gripper_after(state, pending, robot)
        return state


class DeltaEstimator(FutureStateEstimator):
    name = "delta"

    def check(self, robot: RobotDescription) -> None:
        if robot.action_mode != "delta":
            raise ConfigError(
                f"the 'delta' future-state estimator integrates delta actions; this robot uses "
                f"{robot.action_mode!r} actions (use 'target' or 'model')"
            )

    def estimate(self, state: np.ndarray, pending: np.ndarray, robot: RobotDescription) -> np.ndarray:
        state = np.array(state, dtype=np.float32, copy=True)
        if len(pending):
            deltas = pending[:, :3]
            if robot.max_step is not None:
                deltas = np.clip(deltas, -robot.max_step, robot.max_step)  # the controller clips the same way
            state[robot.state_layout["ee_pos"]] += deltas.sum(axis=0)
            state = _gripper_after(state, pending, robot)
        return state


class ModelEstimator(FutureStateEstimator):
    """Roll the pending actions forward on a scratch copy of the simulator.

    ``model`` returns the whole predicted state (objects included); ``model-robot`` only its robot
    part, the task part staying measured, which is what an offset-trained policy saw in training
    (VLASH keeps the images, here the scene, at the time of the request).
    """

    name = "model"

    def __init__(self, robot_only: bool = False) -> None:
        self.robot_only = robot_only
        self.name = "model-robot" if robot_only else "model"

    def check(self, robot: RobotDescription) -> None:
        if robot.rollout is None:
            raise ConfigError(f"the {self.name!r} future-state estimator needs a simulator rollout; this robot has none")

    def estimate(self, state: np.ndarray, pending: np.ndarray, robot: RobotDescription) -> np.ndarray:
        if not len(pending):
            return np.array(state, dtype=np.float32, copy=True)
        future = np.asarray(robot.rollout(pending)[-1], dtype=np.float32)
        if not self.robot_only:
            return future
        out = np.array(state, dtype=np.float32, copy=True)
        out[: robot.robot_state_dim] = future[: robot.robot_state_dim]
        return out


ESTIMATORS: dict[str, Callable[[], FutureStateEstimator]] = {
    "target": TargetEstimator,
    "delta": DeltaEstimator,
    "model": ModelEstimator,
    "model-robot": lambda: ModelEstimator(robot_only=True),
}


def make_estimator(name: str, robot: RobotDescription) -> FutureStateEstimator:
    """``auto`` picks ``model`` where a simulator rollout exists, else the one that fits the action mode."""
    if name == "auto":
        name = "model" if robot.rollout is not None else ("delta" if robot.action_mode == "delta" else "target")
    if name not in ESTIMATORS:
        raise ConfigError(f"unknown future-state estimator {name!r}; use one of {['auto', *ESTIMATORS]}")
    est = ESTIMATORS[name]()
    est.check(robot)
    return est


def with_state(obs: Observation, state: np.ndarray, robot: RobotDescription) -> Observation:
    """A copy of ``obs`` conditioned on ``state`` (environment_state follows the state's task part)."""
    out = dict(obs)
    out[OBS_STATE] = np.asarray(state, dtype=np.float32)
    if OBS_ENV_STATE in obs:
        out[OBS_ENV_STATE] = out[OBS_STATE][robot.robot_state_dim:].copy()
    return out
