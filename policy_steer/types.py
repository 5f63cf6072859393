"""The words of DESIGN.md as data: observation keys, chunks and policy specs.

An **observation** is a plain dict with lerobot's keys:

- ``observation.state``: float32 [S], the robot and scene state vector (named slices per task);
- ``observation.environment_state``: float32 [E], the non-robot part (object poses, goal) for policies
  such as lerobot's DiffusionPolicy that refuse a state-only input;
- ``observation.images.<camera>``: uint8 [H, W, 3];
- ``task``: the instruction (str); ``step``: the control index (int); ``stamp``: monotonic seconds.

A **chunk** is float32 [H, A] actions in the policy's output units, with the control index of its
first action and an ``info`` dict (scores, timings, which candidate won).

An **episode context** (:class:`EpisodeContext`) is what a steering strategy may know about the
episode beyond the observation: the instruction, a scene description (:class:`~policy_steer.scene.Scene`)
and a robot description (:class:`RobotDescription`). A simulator fills it from its own state, a real
robot from a file or a perception module; it crosses the wire (protocol v2's ``episode`` and
``context`` messages) as plain data, like an observation.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Literal

import numpy as np

from policy_steer.scene import Scene

OBS_STATE = "observation.state"
OBS_ENV_STATE = "observation.environment_state"
OBS_IMAGES = "observation.images"
TASK = "task"
STEP = "step"
STAMP = "stamp"
ACTION = "action"

Observation = dict[str, Any]
Family = Literal["diffusion", "flow"]


def image_key(camera: str) -> str:
    return f"{OBS_IMAGES}.{camera}"


@dataclass(frozen=True)
class FeatureSpec:
    """dtype (numpy string, e.g. ``<f4``, ``|u1``) and shape of one observation array."""

    dtype: str
    shape: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"dtype": self.dtype, "shape": list(self.shape)}


@dataclass(frozen=True)
class PolicySpec:
    """What a base policy promises; negotiated with robots in the protocol's ``welcome``.

    ``horizon`` is the length of the chunks this policy returns (actions from the current control step
    on; for a lerobot policy with n_obs_steps > 1 the actions that belong to the past are dropped),
    ``n_action_steps`` how many of them lerobot would execute before replanning.
    """

    name: str
    family: Family
    horizon: int
    action_dim: int
    n_action_steps: int
    num_steps: int
    control_hz: float
    observation: dict[str, FeatureSpec] = field(default_factory=dict)
    n_obs_steps: int = 1

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["observation"] = {k: v.to_dict() for k, v in self.observation.items()}
        return d


# Chunk info that only a recording on the same machine reads (SteeredPolicy.keep_candidates: every
# candidate's actions); large arrays, never sent over the wire (the server leaves them out of `chunk`).
RECORDING_ONLY_INFO = ("candidate_actions", "ancestry")


@dataclass
class Chunk:
    """float32 [H, A] actions in policy output units; ``actions[i]`` runs at control index start_step + i."""

    actions: np.ndarray
    start_step: int
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.actions = np.ascontiguousarray(self.actions, dtype=np.float32)
        if self.actions.ndim != 2:
            raise ValueError(f"chunk actions must be [H, A], got shape {self.actions.shape}")

    @property
    def horizon(self) -> int:
        return int(self.actions.shape[0])

    @property
    def end_step(self) -> int:
        """The control index just after the chunk's last action."""
        return self.start_step + self.horizon


MJCF_PIECE_CHARS = 4096  # the protocol's limit on one header string (docs/protocol.md)


@dataclass(frozen=True)
class ArmDescription:
    """The arm's kinematic model and its controller, as a robot integrator has them: what the
    ``kinematic`` and ``model-robot`` future-state estimators (:mod:`policy_steer.runtime.arm_model`)
    need, and all they get. Plain data; it crosses the wire in the robot description.

    ``mjcf`` is the MJCF text of the arm alone (no table, no objects), self-contained (no ``include``
    or ``file=`` references: kinematics need no meshes); MuJoCo parses it, nothing in it is executed.
    Its joint ranges are the arm's joint limits; position actuators on ``joints`` make a dynamic
    rollout possible (``control_substeps`` > 0). ``joints`` names the model's joints in the order of
    the state's ``joint_pos`` slice; ``ee_site`` the site whose position is ``ee_pos``.

    The controller: end-effector targets are clipped to ``workspace_low``/``workspace_high`` (world
    metres; None: no box), turned into joint targets by damped least squares (``ik_damping``,
    ``ik_iterations``, ``ik_tolerance``) from the previous joint target, holding the site orientation
    ``ee_orientation`` (row-major 3x3 world rotation, weighted ``orientation_weight`` metres per
    radian; None: position only); a joint target moves at most ``max_joint_step`` rad per control step
    (None: no limit). A dynamic rollout ramps the servo targets (smoothstep with velocity
    feed-forward) over ``ramp_fraction`` of the ``control_substeps`` physics steps of a control step.
    """

    mjcf: str
    joints: tuple[str, ...]
    ee_site: str
    workspace_low: tuple[float, float, float] | None = None
    workspace_high: tuple[float, float, float] | None = None
    ee_orientation: tuple[float, ...] | None = None
    orientation_weight: float = 0.3
    ik_damping: float = 1e-3
    ik_iterations: int = 12
    ik_tolerance: float = 2e-5
    max_joint_step: float | None = None
    control_substeps: int = 0
    ramp_fraction: float = 0.5

    def to_dict(self) -> dict[str, Any]:
        """Plain data; the MJCF as a list of pieces of at most ``MJCF_PIECE_CHARS`` (the protocol's limit
        on one header string), joined in order by :meth:`from_dict`."""
        d = asdict(self)
        d["mjcf"] = [self.mjcf[i:i + MJCF_PIECE_CHARS] for i in range(0, len(self.mjcf), MJCF_PIECE_CHARS)]
        d["joints"] = list(self.joints)
        for k in ("workspace_low", "workspace_high", "ee_orientation"):
            d[k] = None if d[k] is None else [float(v) for v in d[k]]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ArmDescription":
        """From plain data already checked against the schema's ``arm``."""
        def vec(k: str) -> tuple[float, ...] | None:
            return None if d.get(k) is None else tuple(float(v) for v in d[k])

        mjs = d.get("max_joint_step")
        mjcf = d["mjcf"]
        return cls(
            mjcf=mjcf if isinstance(mjcf, str) else "".join(mjcf), joints=tuple(str(j) for j in d["joints"]), ee_site=str(d["ee_site"]),
            workspace_low=vec("workspace_low"), workspace_high=vec("workspace_high"),
            ee_orientation=vec("ee_orientation"), orientation_weight=float(d.get("orientation_weight", 0.3)),
            ik_damping=float(d.get("ik_damping", 1e-3)), ik_iterations=int(d.get("ik_iterations", 12)),
            ik_tolerance=float(d.get("ik_tolerance", 2e-5)), max_joint_step=None if mjs is None else float(mjs),
            control_substeps=int(d.get("control_substeps", 0)), ramp_fraction=float(d.get("ramp_fraction", 0.5)),
        )


@dataclass(frozen=True)
class RobotDescription:
    """The robot's action space and state layout: what future-state estimators, safe holds and the
    reward's trajectory map need to know.

    ``rollout`` ([K, A] pending actions -> [K, S] states) exists only next to a simulator; it never
    crosses the wire (``to_dict`` leaves it out).
    """

    action_mode: str  # "delta" or "absolute" (end-effector), "joint"
    state_layout: dict[str, slice]
    robot_state_dim: int
    max_step: float | None = None  # delta mode: metres per control step
    rollout: Callable[[np.ndarray], np.ndarray] | None = field(default=None, compare=False)
    arm: ArmDescription | None = None  # the arm's model and controller (None: not described)

    @classmethod
    def from_env(cls, env) -> "RobotDescription":
        """The description of a task env (``policy_steer.envs``; read duck-typed, the core imports no env)."""
        u = env.unwrapped
        return cls(
            action_mode=u.action_mode,
            state_layout=dict(u.state_layout),
            robot_state_dim=int(u.robot_state_dim),
            max_step=u.max_step,
            rollout=u.rollout,
            arm=u.arm_description,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "action_mode": self.action_mode,
            "state_layout": {k: [int(s.start or 0), int(s.stop)] for k, s in self.state_layout.items()},
            "robot_state_dim": int(self.robot_state_dim),
            "max_step": None if self.max_step is None else float(self.max_step),
            "arm": None if self.arm is None else self.arm.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RobotDescription":
        from policy_steer.schema import validate

        validate(d, "robot")
        layout = {}
        for k, (a, b) in d["state_layout"].items():
            if b < a:
                from policy_steer.errors import ValidationError

                raise ValidationError(f"robot fails its schema at state_layout/{k}: stop {b} < start {a}")
            layout[k] = slice(int(a), int(b))
        ms = d.get("max_step")
        arm = None if d.get("arm") is None else ArmDescription.from_dict(d["arm"])
        return cls(str(d["action_mode"]), layout, int(d["robot_state_dim"]), None if ms is None else float(ms), arm=arm)


@dataclass
class EpisodeContext:
    """What a strategy may know about the episode beyond the observation (see the module docstring).

    Every field is optional: a strategy that needs one it lacks says so
    (:meth:`policy_steer.steering.base.Strategy.refusal`), it never runs weaker in silence. ``task``
    and ``variant`` name what the robot runs (checked against the policy's own task where both are
    known); ``seed`` makes the episode's noise reproducible; ``stamp`` is the robot's monotonic clock
    when the context was read. Round-trips through plain data (``to_dict`` / ``from_dict``, the
    latter checked against ``policy_steer/schema/episode_context.schema.json``).
    """

    instruction: str | None = None
    scene: Scene | None = None
    robot: RobotDescription | None = None
    task: str | None = None
    variant: str | None = None
    seed: int | None = None
    stamp: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "instruction": self.instruction,
            "task": self.task,
            "variant": self.variant,
            "seed": self.seed,
            "stamp": float(self.stamp),
            "scene": None if self.scene is None else self.scene.to_dict(),
            "robot": None if self.robot is None else self.robot.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: Any) -> "EpisodeContext":
        """Checked against the published schema; ValidationError names the first problem."""
        from policy_steer.schema import validate

        validate(d, "context")
        return cls(
            instruction=d.get("instruction"),
            scene=None if d.get("scene") is None else Scene.from_dict(d["scene"]),
            robot=None if d.get("robot") is None else RobotDescription.from_dict(d["robot"]),
            task=d.get("task"),
            variant=d.get("variant"),
            seed=d.get("seed"),
            stamp=float(d.get("stamp", 0.0)),
        )

    def with_scene(self, scene: Scene | None, stamp: float | None = None) -> "EpisodeContext":
        """The same episode with the scene as it is now (objects moved, a goal jumped)."""
        return dataclasses.replace(self, scene=scene, stamp=self.stamp if stamp is None else float(stamp))


@dataclass
class ExecutedStep:
    """What the robot executed at one control step (protocol v2's ``executed``; the robot's telemetry).

    ``action`` [A] is what reached the robot after its safety layer, ``commanded`` [A] what the loop
    asked for (they differ when the safety layer intervened: ``safety`` says how); ``state`` [S] is the
    measured ``observation.state`` before the action. ``chunk_start_step``/``index`` name the chunk row
    that ran (None: a hold, nothing validated was queued).
    """

    step: int
    action: np.ndarray
    commanded: np.ndarray
    state: np.ndarray | None = None
    chunk_start_step: int | None = None
    index: int | None = None
    safety: str | None = None
    stamp: float = 0.0

    @property
    def held(self) -> bool:
        return self.chunk_start_step is None
