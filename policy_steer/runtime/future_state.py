"""Future-state estimators for VLASH: the state the robot will be in when a new chunk starts.

VLASH's reference implementation uses the target of the last pending action as the future state,
which only holds for absolute position actions with state dim == action dim. Here the estimator is a
pluggable part that says when it does not apply:

- ``kinematic``: the arm's own model (the robot description's :class:`~policy_steer.types.ArmDescription`:
  an MJCF of the arm alone and its controller's settings). Each pending action becomes an end-effector
  target (delta: integrated from the predicted end effector, clipped to ``max_step``; absolute: the
  action; both clipped to the controller's workspace) and the arm's IK turns it into joint targets from
  the previous ones (joint actions: the targets themselves), within the joint ranges and the
  controller's per-step joint limit; the end effector is the FK of those joints. Joints and end
  effector are predicted together, so the state is one the arm can be in; objects stay as measured.
  A model that does not sit exactly where the arm is measured is corrected by the difference now
  (measured ee minus the model's FK of the measured joints), held over the chunk.
- ``model-robot``: the arm alone rolled forward through its servos on the same model (the arm's
  description must give its actuators, ``control_substeps`` > 0); without an arm model, the robot part
  of the simulator rollout (``rollout``). Objects stay as measured.
- ``model``: roll the pending actions forward on a scratch copy of the whole simulator (objects
  included), as the VLASH Kinetix evaluation does: an oracle no robot has. Needs a ``rollout`` function.
- ``target``: absolute end-effector targets; the end effector will be at the last pending target.
- ``delta``: delta end-effector actions; integrate them from the current end-effector position.

``target`` and ``delta`` update only the end-effector (and gripper) slices; joint positions and
objects keep their measured values (a state no demonstration contains: prefer ``kinematic``).
With no pending actions every estimator returns the measured state.

``auto`` picks, in this order, the best the robot's description allows: ``kinematic`` when it
describes its arm model; else ``model`` when it has a rollout (a joint-space arm's target-as-state
rollout, or a simulator that publishes no arm model); else ``delta`` or ``target`` by action mode.
It logs which. The whole-scene oracle ``model`` is never picked for an arm that describes its model.
"""

from __future__ import annotations

import logging
from typing import Callable

import numpy as np

from policy_steer.errors import ConfigError
from policy_steer.runtime.arm_model import ArmModel
from policy_steer.types import OBS_ENV_STATE, OBS_STATE, Observation, RobotDescription  # noqa: F401 (re-exported)


class FutureStateEstimator:
    name = "estimator"

    def check(self, robot: RobotDescription) -> None:
        """Raise ConfigError if this estimator does not apply to the robot's action space."""

    def estimate(self, state: np.ndarray, pending: np.ndarray, robot: RobotDescription) -> np.ndarray:
        """observation.state [S] after executing ``pending`` [r, A] from ``state`` [S]."""
        raise NotImplementedError


log = logging.getLogger(__name__)


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


def _gripper_consistent(state: np.ndarray, pending: np.ndarray, robot: RobotDescription, col: int) -> np.ndarray:
    """The gripper opening after ``pending`` when only the arm is modelled (no object to close on):
    a close command leaves a gripper already closing or closed where it is measured (on an object it
    stays at the object's width), closes a fully open one; an open command opens it."""
    if "gripper" in robot.state_layout and pending.shape[1] > col:
        g = robot.state_layout["gripper"]
        if pending[-1, col] <= 0:
            state[g] = 1.0
        elif float(np.max(state[g])) >= 0.95:
            state[g] = 0.0
    return state


class KinematicEstimator(FutureStateEstimator):
    """The arm's own IK/FK on the pending actions (module docstring); needs ``robot.arm``."""

    name = "kinematic"

    def __init__(self) -> None:
        self._model: ArmModel | None = None

    def check(self, robot: RobotDescription) -> None:
        if robot.arm is None:
            raise ConfigError(
                f"the {self.name!r} future-state estimator needs the arm's model (the robot description's 'arm': "
                f"an MJCF of the arm alone, its joint order and end-effector site); this robot describes none"
            )
        if robot.action_mode not in ("delta", "absolute", "joint"):
            raise ConfigError(f"the {self.name!r} estimator does not know action mode {robot.action_mode!r}")
        if robot.action_mode == "delta" and robot.max_step is None:
            raise ConfigError(f"the {self.name!r} estimator needs the robot's max_step for delta actions")
        model = ArmModel(robot.arm)
        model.check_robot(robot)
        self._model = model

    def _arm(self, robot: RobotDescription) -> ArmModel:
        if self._model is None or self._model.arm is not robot.arm:
            self.check(robot)
        return self._model

    def _target(self, arm: ArmModel, action: np.ndarray, ee_now: np.ndarray, robot: RobotDescription):
        """(ee target [3] | None, joint target [n] | None) of one action."""
        if robot.action_mode == "joint":
            return None, np.asarray(action[: arm.n], dtype=np.float64)
        if robot.action_mode == "delta":
            return arm.clip_target(ee_now + np.clip(action[:3], -robot.max_step, robot.max_step)), None
        return arm.clip_target(np.asarray(action[:3], dtype=np.float64)), None

    def _gripper_col(self, arm: ArmModel, robot: RobotDescription) -> int:
        return arm.n if robot.action_mode == "joint" else 3

    def estimate(self, state: np.ndarray, pending: np.ndarray, robot: RobotDescription) -> np.ndarray:
        out = np.array(state, dtype=np.float32, copy=True)
        if not len(pending):
            return out
        arm = self._arm(robot)
        pending = np.asarray(pending, dtype=np.float64)
        lay = robot.state_layout
        q = np.asarray(state[lay["joint_pos"]], dtype=np.float64)
        ee = np.asarray(state[lay["ee_pos"]], dtype=np.float64)
        offset = ee - arm.fk(q)  # measured minus modelled, held over the chunk
        q, ee = self._forward(arm, q, ee, offset, arm.held_orientation(q), pending, robot)
        out[lay["ee_pos"]] = ee
        out[lay["joint_pos"]] = q
        return _gripper_consistent(out, pending, robot, self._gripper_col(arm, robot))

    def _forward(self, arm: ArmModel, q: np.ndarray, ee: np.ndarray, offset: np.ndarray, orientation: np.ndarray | None,
                 pending: np.ndarray, robot: RobotDescription) -> tuple[np.ndarray, np.ndarray]:
        for a in pending:
            ee_target, q_to = self._target(arm, a, ee, robot)
            if q_to is None:
                q_to = arm.ik(ee_target - offset, q, orientation)
            q = arm.limit_step(q, q_to)
            ee = arm.fk(q) + offset
        return q, ee


class ArmRolloutEstimator(KinematicEstimator):
    """``model-robot`` on an arm model: the arm alone simulated through its servos (module docstring)."""

    name = "model-robot"

    def check(self, robot: RobotDescription) -> None:
        super().check(robot)
        if self._model.actuators is None:
            raise ConfigError(
                "the 'model-robot' estimator rolls the arm's servos forward: the arm description must set "
                "control_substeps > 0 and its model give a position actuator per joint (use 'kinematic')"
            )

    def _forward(self, arm: ArmModel, q: np.ndarray, ee: np.ndarray, offset: np.ndarray, orientation: np.ndarray | None,
                 pending: np.ndarray, robot: RobotDescription) -> tuple[np.ndarray, np.ndarray]:
        targets = [lambda ee_now, a=a: self._target(arm, a, ee_now, robot) for a in pending]
        qs, ees = arm.rollout(q, targets, offset, orientation)
        return qs[-1], ees[-1]


class ModelEstimator(FutureStateEstimator):
    """Roll the pending actions forward on a scratch copy of the simulator.

    ``model`` returns the whole predicted state (objects included); ``model-robot`` only its robot
    part, the task part staying measured, which is what an offset-trained policy saw in training
    (VLASH keeps the images, here the scene, at the time of the request). A robot that describes its
    arm model gets ``model-robot`` from that model instead (:class:`ArmRolloutEstimator`).
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


def _model_robot(robot: RobotDescription) -> FutureStateEstimator:
    """The arm model's rollout where the robot describes an arm with servos, else the simulator's."""
    if robot.arm is not None and robot.arm.control_substeps > 0:
        return ArmRolloutEstimator()
    return ModelEstimator(robot_only=True)


ESTIMATORS: dict[str, Callable[[RobotDescription], FutureStateEstimator]] = {
    "kinematic": lambda robot: KinematicEstimator(),
    "model-robot": _model_robot,
    "model": lambda robot: ModelEstimator(),
    "delta": lambda robot: DeltaEstimator(),
    "target": lambda robot: TargetEstimator(),
}


def auto_estimator(robot: RobotDescription) -> str:
    """The estimator ``auto`` means for ``robot`` (the order of the module docstring)."""
    if robot.arm is not None:
        return "kinematic"
    if robot.rollout is not None:
        return "model"
    return "delta" if robot.action_mode == "delta" else "target"


def make_estimator(name: str, robot: RobotDescription) -> FutureStateEstimator:
    """The estimator ``name`` checked against ``robot`` (ConfigError when it does not apply, or when the
    robot's arm model does not fit its state: before any episode runs)."""
    if name == "auto":
        name = auto_estimator(robot)
        log.info("future-state estimator auto -> %s (%s)", name,
                 "the robot describes its arm model" if robot.arm is not None
                 else "a rollout, no arm model" if robot.rollout is not None else f"{robot.action_mode} actions, no arm model")
    if name not in ESTIMATORS:
        raise ConfigError(f"unknown future-state estimator {name!r}; use one of {['auto', *ESTIMATORS]}")
    est = ESTIMATORS[name](robot)
    est.check(robot)
    return est


def with_state(obs: Observation, state: np.ndarray, robot: RobotDescription) -> Observation:
    """A copy of ``obs`` conditioned on ``state`` (environment_state follows the state's task part)."""
    out = dict(obs)
    out[OBS_STATE] = np.asarray(state, dtype=np.float32)
    if OBS_ENV_STATE in obs:
        out[OBS_ENV_STATE] = out[OBS_STATE][robot.robot_state_dim:].copy()
    return out
