"""From an arm reading to the observation a policy expects (lerobot keys), and the runtime's description.

Two state layouts:

- ``task``: ``ee_pos`` [3], ``gripper`` [1] (opening, 1 open .. 0 closed), ``joint_pos`` [n]: the robot
  part of the plain-MuJoCo tasks' ``observation.state`` (needs kinematics), for end-effector policies;
- ``native``: the driver's own proprioceptive vector (a lerobot robot's float observation features in
  order: what lerobot datasets record as ``observation.state``), for joint-space policies; a driver that
  names the slices of its state (``Arm.state_layout``: a simulated task's ``ee_pos``, ``gripper``,
  ``joint_pos`` and object poses) gives the layout too.

Features the driver observes besides the arm (``ArmObservation.features``, shapes in
``Arm.feature_shapes``: a simulated task's ``observation.environment_state``) are passed on as they are.

``extra_state`` values are appended (and sent as ``observation.environment_state``): a dry run of a
task policy whose state holds object poses or a goal can be given fixed ones. Camera frames go to
``observation.images.<camera>``; ``task`` carries the instruction.

The runtime needs a ``state_layout`` naming ``ee_pos`` (it logs the estimate error with it); in the
native layout that name covers the first three values only. The VLASH future state of a joint-space
policy is "the arm reached its last pending targets" (VLASH's own assumption, valid for absolute
position actions): :meth:`ObservationMap.rollout` builds it from the latest measured state.
"""

from __future__ import annotations

import numpy as np

from policy_steer.hardware.arm import Arm, ArmObservation
from policy_steer.hardware.errors import SafetyError
from policy_steer.types import OBS_ENV_STATE, OBS_STATE, TASK, FeatureSpec, Observation, RobotDescription, image_key

LAYOUTS = ("task", "native")


class ObservationMap:
    def __init__(
        self,
        arm: Arm,
        layout: str,
        extra_state: np.ndarray | None = None,
        instruction: str | None = None,
        cameras: tuple[str, ...] = (),
    ) -> None:
        if layout not in LAYOUTS:
            raise SafetyError(f"unknown state layout {layout!r}; use one of {LAYOUTS}")
        if layout == "task" and arm.kinematics is None:
            raise SafetyError(f"the task state layout needs the end-effector position; {arm.name} has no kinematics")
        missing = sorted(set(cameras) - set(arm.cameras))
        if missing:
            raise SafetyError(f"the policy wants cameras {missing}; {arm.name} has {list(arm.cameras)}")
        self.arm = arm
        self.layout = layout
        self.extra = None if extra_state is None or len(extra_state) == 0 else np.asarray(extra_state, np.float32)
        self.instruction = instruction
        self.cameras = tuple(cameras)
        n = len(arm.joint_names)
        if layout == "task":
            self.state_layout = {"ee_pos": slice(0, 3), "gripper": slice(3, 4), "joint_pos": slice(4, 4 + n)}
            self.robot_state_dim = 4 + n
            self.state_names: tuple[str, ...] = ("ee_x", "ee_y", "ee_z", "gripper", *arm.joint_names)
        elif arm.state_layout is not None:
            names = self._native_names()
            self.robot_state_dim = len(names)
            self.state_layout = dict(arm.state_layout)
            self.state_names = names
        else:
            names = self._native_names()
            self.robot_state_dim = len(names)
            self.state_layout = {"state": slice(0, len(names)), "ee_pos": slice(0, min(3, len(names)))}
            self.state_names = names
        if self.extra is not None:
            self.state_layout["extra"] = slice(self.robot_state_dim, self.robot_state_dim + len(self.extra))
        self.state_dim = self.robot_state_dim + (0 if self.extra is None else len(self.extra))
        self._last_state: np.ndarray | None = None

    def _native_names(self) -> tuple[str, ...]:
        return tuple(self.arm.state_names or self.arm.action_names)

    # --- mapping -----------------------------------------------------------------------------------
    def __call__(self, obs: ArmObservation) -> Observation:
        if self.layout == "task":
            g = (obs.gripper - self.arm.gripper_closed) / (self.arm.gripper_open - self.arm.gripper_closed)
            robot = np.concatenate([obs.ee_pos, [np.clip(g, 0.0, 1.0)], obs.joints])
        else:
            robot = np.asarray(obs.state)
        state = robot if self.extra is None else np.concatenate([robot, self.extra])
        state = state.astype(np.float32)
        self._last_state = state
        out: Observation = {OBS_STATE: state}
        for key, value in obs.features.items():
            out[key] = np.array(value, copy=True)
        if self.extra is not None:
            out[OBS_ENV_STATE] = self.extra.copy()
        for cam in self.cameras:
            out[image_key(cam)] = obs.images[cam].image
        if self.instruction is not None:
            out[TASK] = self.instruction
        return out

    def features(self) -> dict[str, FeatureSpec]:
        """What this map produces (to check against the server's ``welcome``)."""
        f = {OBS_STATE: FeatureSpec("<f4", (self.state_dim,))}
        for key, shape in self.arm.feature_shapes.items():
            f[key] = FeatureSpec("<f4", tuple(shape))
        if self.extra is not None:
            f[OBS_ENV_STATE] = FeatureSpec("<f4", (len(self.extra),))
        return f

    # --- the runtime's view ------------------------------------------------------------------------
    def description(self, action_mode: str, action_names: tuple[str, ...] | None, max_step: float | None) -> RobotDescription:
        """``action_names`` (joint spaces) enables the target-as-state rollout for VLASH."""
        rollout = None
        if action_names is not None:
            idx = {n: i for i, n in enumerate(self.state_names)}
            pairs = [(a, idx[n]) for a, n in enumerate(action_names) if n in idx]
            if pairs:
                a_idx = np.array([a for a, _ in pairs])
                s_idx = np.array([s for _, s in pairs])
                rollout = lambda pending: self.rollout(pending, a_idx, s_idx)  # noqa: E731
        return RobotDescription(
            action_mode=action_mode, state_layout=dict(self.state_layout), robot_state_dim=self.robot_state_dim,
            max_step=max_step, rollout=rollout,
        )

    def rollout(self, pending: np.ndarray, a_idx: np.ndarray, s_idx: np.ndarray) -> np.ndarray:
        """[K, S]: the latest measured state with the commanded entries set to each pending target."""
        if self._last_state is None:
            raise RuntimeError("no observation yet")
        pending = np.asarray(pending, dtype=np.float32)
        out = np.repeat(self._last_state[None], len(pending), axis=0)
        out[:, s_idx] = pending[:, a_idx]
        return out


def check_against_welcome(obs_map: ObservationMap, expected: dict[str, FeatureSpec]) -> None:
    """Raise SafetyError naming what differs between what the arm sends and what the policy expects."""
    ours = obs_map.features()
    problems = []
    for key, feat in expected.items():
        if key.startswith("observation.images."):
            continue  # cameras are checked by the driver (it renders or reads them at the promised size)
        if key not in ours:
            problems.append(f"{key} {list(feat.shape)} (the arm does not provide it)")
        elif tuple(ours[key].shape) != tuple(feat.shape):
            problems.append(
                f"{key}: the policy expects {list(feat.shape)}, the arm provides {list(ours[key].shape)} "
                f"({', '.join(obs_map.state_names) if key == OBS_STATE else key})"
            )
    if problems:
        raise SafetyError(
            "the policy's observation does not fit this arm: " + "; ".join(problems)
            + " (--state_extra appends fixed values, e.g. a goal, for a dry run)"
        )
