"""ROS 2 messages of a run, built from plain data with ``rosbags``' typestore (no ROS installation).

One job: turn what the control loop saw and did (observations, chunks with their info, executed
steps, the episode context) into standard ROS 2 messages of the ``ROS2_HUMBLE`` typestore
(the types below are the same in Jazzy), serialised as CDR, the encoding rosbag2, RViz and Foxglove read.

Topics and types (the recorder's channels, :data:`TOPICS`):

====================================  ===================================  ==================================
``/joint_states``                     ``sensor_msgs/msg/JointState``       the robot's joints (``joint_pos``) and gripper, per step
``/tf``                               ``tf2_msgs/msg/TFMessage``           ``world -> ee`` per step; ``world -> <object>`` for the scene
``/camera/<name>/image_raw``          ``sensor_msgs/msg/Image`` (rgb8)     each camera the policy reads, per step
``/policy_steer/executed_path``       ``nav_msgs/msg/Path``                the end effector's measured path so far, with each chunk and at the end
``/policy_steer/chunk``               ``trajectory_msgs/msg/JointTrajectory`` each arrived chunk: one point per row, ``time_from_start`` = row / hz
``/policy_steer/candidates``          ``visualization_msgs/msg/MarkerArray`` each arrived chunk: every candidate's ee trajectory, scene boxes, keypoints
``/policy_steer/figures``             ``std_msgs/msg/Float64MultiArray``   each arrived chunk's numbers for plots (:data:`FIGURES`; NaN: not measured)
``/diagnostics``                      ``diagnostic_msgs/msg/DiagnosticArray`` chunk figures, holds, safety interventions, future-state error, recorder drops
``/policy_steer/episode``             ``std_msgs/msg/String``              the episode's outcome as JSON, once, at the end
====================================  ===================================  ==================================

End-effector trajectories of candidates: our tasks' actions are end-effector targets, and the
robot description says how (:class:`~policy_steer.types.RobotDescription`): ``delta`` rows move the
target by ``clip(a[:3], -max_step, max_step)`` from the measured end effector, ``absolute`` rows are the
target. The chunk's trajectory starts at the end effector it was conditioned on (the future state under
vlash). ``joint`` action spaces have no such map without the arm's kinematics: no trajectories are drawn
(the marker text says so), never a guess.

Marker namespaces of ``/policy_steer/candidates`` (a ``DELETEALL`` first, so a viewer shows one chunk):
``candidates`` (one LINE_STRIP per candidate, coloured from red (lowest score) to green (highest)),
``executed`` (the chosen candidate, thick and white), ``obstacles`` / ``objects`` / ``table`` (the
scene's boxes, spheres and cylinders), ``keypoints`` (spheres), ``text`` (M, the winner, the strategies' figures: TACO
counts, VLS rewards). Candidate ``i`` has marker id ``i``, so a reader matches markers to scores.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
from rosbags.interfaces import Nodetype
from rosbags.typesys import Stores, get_typestore

from policy_steer.scene import Scene
from policy_steer.types import RobotDescription

TYPESTORE = get_typestore(Stores.ROS2_HUMBLE)

FRAME = "world"  # the frame our scenes and end-effector positions are given in
EE_FRAME = "ee"

JOINT_STATES = "/joint_states"
TF = "/tf"
EXECUTED_PATH = "/policy_steer/executed_path"
CHUNK = "/policy_steer/chunk"
CANDIDATES = "/policy_steer/candidates"
DIAGNOSTICS = "/diagnostics"
EPISODE = "/policy_steer/episode"
FIGURES_TOPIC = "/policy_steer/figures"

TOPICS: dict[str, str] = {
    JOINT_STATES: "sensor_msgs/msg/JointState",
    TF: "tf2_msgs/msg/TFMessage",
    EXECUTED_PATH: "nav_msgs/msg/Path",
    CHUNK: "trajectory_msgs/msg/JointTrajectory",
    CANDIDATES: "visualization_msgs/msg/MarkerArray",
    DIAGNOSTICS: "diagnostic_msgs/msg/DiagnosticArray",
    EPISODE: "std_msgs/msg/String",
    FIGURES_TOPIC: "std_msgs/msg/Float64MultiArray",
}
# The entries of /policy_steer/figures, in order (also the labels of its layout): plots in Foxglove read
# e.g. ``/policy_steer/figures.data[0]`` (the chunk's compute time).
FIGURES = ("latency_ms", "delay_steps", "candidates", "taco_count_executed", "taco_count_best",
           "vls_reward_executed", "vls_reward_mean")
IMAGE_TYPE = "sensor_msgs/msg/Image"


def camera_topic(camera: str) -> str:
    return f"/camera/{camera}/image_raw"


_NUMPY = {
    "bool": np.bool_, "byte": np.uint8, "char": np.uint8, "int8": np.int8, "uint8": np.uint8, "int16": np.int16,
    "uint16": np.uint16, "int32": np.int32, "uint32": np.uint32, "int64": np.int64, "uint64": np.uint64,
    "float32": np.float32, "float64": np.float64,
}


_DEFAULTS: dict[str, dict[str, Any]] = {}


def build(typename: str, **fields: Any) -> Any:
    """A message of ``typename`` with ``fields`` set and every other field at its ROS default (zero,
    empty), so builders name only what they mean. Unknown field names raise TypeError. The defaults are
    built once per type and shared (messages here are only ever read: serialised, never changed)."""
    defaults = _DEFAULTS.get(typename)
    if defaults is None:
        _, defs = TYPESTORE.fielddefs[typename]
        defaults = _DEFAULTS[typename] = {name: _default(kind, sub) for name, (kind, sub) in defs}
    unknown = fields.keys() - defaults.keys()
    if unknown:
        raise TypeError(f"{typename} has no field(s) {sorted(unknown)}")
    return TYPESTORE.types[typename](**{**defaults, **fields})


def _default(kind: Nodetype, sub: Any) -> Any:
    if kind == Nodetype.BASE:
        t = sub[0]
        return "" if t == "string" or t == "wstring" else False if t == "bool" else 0.0 if t.startswith("float") else 0
    if kind == Nodetype.NAME:
        return build(sub)
    (ekind, esub), n = sub
    if ekind == Nodetype.BASE and esub[0] in _NUMPY:
        return np.zeros(n if kind == Nodetype.ARRAY else 0, dtype=_NUMPY[esub[0]])
    if kind == Nodetype.ARRAY:
        return [_default(ekind, esub) for _ in range(n)]
    return []


def serialize(msg: Any, typename: str) -> bytes:
    return bytes(TYPESTORE.serialize_cdr(msg, typename))


def msgdef(typename: str) -> str:
    """The ``ros2msg`` definition with its dependencies (what Foxglove's schema wants)."""
    return TYPESTORE.generate_msgdef(typename, ros_version=2)[0]


# ------------------------------------------------------------------------------------------ pieces


def to_ns(stamp: float) -> int:
    """Clock seconds -> integer nanoseconds (bag timestamps and header stamps)."""
    return int(round(float(stamp) * 1e9))


def header(stamp: float, frame: str = FRAME) -> Any:
    ns = to_ns(stamp)
    return build("std_msgs/msg/Header", stamp=build("builtin_interfaces/msg/Time", sec=ns // 1_000_000_000,
                                                    nanosec=ns % 1_000_000_000), frame_id=frame)


def point(p: Any) -> Any:
    return build("geometry_msgs/msg/Point", x=float(p[0]), y=float(p[1]), z=float(p[2]))


def color(r: float, g: float, b: float, a: float = 1.0) -> Any:
    return build("std_msgs/msg/ColorRGBA", r=float(r), g=float(g), b=float(b), a=float(a))


def pose(p: Any, yaw: float = 0.0) -> Any:
    q = build("geometry_msgs/msg/Quaternion", x=0.0, y=0.0, z=math.sin(yaw / 2), w=math.cos(yaw / 2))
    return build("geometry_msgs/msg/Pose", position=point(p), orientation=q)


def transform(stamp: float, child: str, p: Any, yaw: float = 0.0) -> Any:
    q = build("geometry_msgs/msg/Quaternion", x=0.0, y=0.0, z=math.sin(yaw / 2), w=math.cos(yaw / 2))
    tr = build("geometry_msgs/msg/Transform",
               translation=build("geometry_msgs/msg/Vector3", x=float(p[0]), y=float(p[1]), z=float(p[2])), rotation=q)
    return build("geometry_msgs/msg/TransformStamped", header=header(stamp), child_frame_id=child, transform=tr)


def score_color(score: float, lo: float, hi: float) -> Any:
    """Red (lowest score of the chunk) through yellow to green (highest)."""
    u = 0.5 if hi - lo <= 1e-12 else (float(score) - lo) / (hi - lo)
    return color(min(1.0, 2 * (1 - u)), min(1.0, 2 * u), 0.1, 0.9)


# ------------------------------------------------------------------------------------------ messages


def joint_states(stamp: float, state: np.ndarray, robot: RobotDescription) -> Any:
    """JointState from the state vector's ``joint_pos`` slice (and ``gripper``, when there is one)."""
    names: list[str] = []
    pos: list[float] = []
    for key in ("joint_pos", "gripper"):
        sl = robot.state_layout.get(key)
        if sl is None:
            continue
        vals = np.asarray(state[sl], dtype=np.float64).reshape(-1)
        names += [f"{key}_{i}" if len(vals) > 1 else key for i in range(len(vals))]
        pos += [float(v) for v in vals]
    return build("sensor_msgs/msg/JointState", header=header(stamp, ""), name=names, position=np.asarray(pos, dtype=np.float64))


def tf_message(transforms: list[Any]) -> Any:
    return build("tf2_msgs/msg/TFMessage", transforms=transforms)


def scene_transforms(stamp: float, scene: Scene) -> list[Any]:
    """``world -> <object name>`` for every scene object."""
    return [transform(stamp, o.name, o.position, o.yaw) for o in scene.objects]


def image(stamp: float, frame: np.ndarray, camera: str) -> Any:
    """uint8 [H, W, 3] -> sensor_msgs/Image, rgb8, row-major."""
    frame = np.ascontiguousarray(frame, dtype=np.uint8)
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"camera {camera!r}: expected an [H, W, 3] uint8 frame, got shape {frame.shape}")
    h, w, _ = frame.shape
    return build(IMAGE_TYPE, header=header(stamp, camera), height=h, width=w, encoding="rgb8", is_bigendian=0,
                 step=3 * w, data=frame.reshape(-1))


def path(stamp: float, poses: list[tuple[float, np.ndarray]]) -> Any:
    """nav_msgs/Path of (stamp, ee [3]) poses."""
    ps = [build("geometry_msgs/msg/PoseStamped", header=header(t), pose=pose(p)) for t, p in poses]
    return build("nav_msgs/msg/Path", header=header(stamp), poses=ps)


def action_names(action_dim: int, robot: RobotDescription | None) -> list[str]:
    """Column names of an action row: ``dx dy dz`` (delta) or ``x y z`` (absolute), then ``gripper``."""
    mode = robot.action_mode if robot is not None else "delta"
    if mode == "joint":
        return [f"joint_{i}" for i in range(action_dim)]
    xyz = ["dx", "dy", "dz"] if mode == "delta" else ["x", "y", "z"]
    names = xyz[:action_dim] + ["gripper"] * (action_dim > 3)
    return names + [f"a{i}" for i in range(len(names), action_dim)]


def joint_trajectory(stamp: float, actions: np.ndarray, hz: float, robot: RobotDescription | None) -> Any:
    """A chunk [H, A] as JointTrajectory: row i at ``time_from_start`` i / hz, positions = the row."""
    pts = []
    for i, row in enumerate(np.asarray(actions, dtype=np.float64)):
        ns = to_ns(i / hz)
        pts.append(build("trajectory_msgs/msg/JointTrajectoryPoint", positions=row.copy(),
                         time_from_start=build("builtin_interfaces/msg/Duration", sec=ns // 1_000_000_000,
                                               nanosec=ns % 1_000_000_000)))
    return build("trajectory_msgs/msg/JointTrajectory", header=header(stamp),
                 joint_names=action_names(actions.shape[1], robot), points=pts)


def ee_trajectories(actions: np.ndarray, ee_start: np.ndarray, robot: RobotDescription | None) -> np.ndarray | None:
    """End-effector positions [M, H, 3] after each row of ``actions`` [M, H, A] from ``ee_start`` [3]
    (module docstring); None when the action space has no such map (joint actions, no description)."""
    if robot is None or robot.action_mode not in ("delta", "absolute") or actions.shape[-1] < 3:
        return None
    xyz = np.asarray(actions, dtype=np.float64)[..., :3]
    if robot.action_mode == "absolute":
        return xyz
    if robot.max_step is not None:
        xyz = np.clip(xyz, -robot.max_step, robot.max_step)
    return np.asarray(ee_start, dtype=np.float64)[None, None, :] + np.cumsum(xyz, axis=-2)


def _marker(stamp: float, ns: str, mid: int, kind: int, **fields: Any) -> Any:
    return build("visualization_msgs/msg/Marker", header=header(stamp), ns=ns, id=mid, type=kind, action=0, **fields)


def _vec(x: float, y: float, z: float) -> Any:
    return build("geometry_msgs/msg/Vector3", x=float(x), y=float(y), z=float(z))


M = TYPESTORE.types["visualization_msgs/msg/Marker"]


def scene_markers(stamp: float, scene: Scene | None) -> list[Any]:
    """The scene's objects (obstacles apart) and keypoints as markers."""
    out = []
    if scene is None:
        return out
    shapes = {"box": M.CUBE, "sphere": M.SPHERE, "cylinder": M.CYLINDER}
    for i, o in enumerate(scene.objects):
        obstacle = o.kind == "obstacle"
        c = color(0.8, 0.1, 0.1, 0.5) if obstacle else color(0.3, 0.5, 0.9, 0.4) if o.kind in ("target", "goal") else color(0.6, 0.6, 0.6, 0.6)
        hs = o.half_size
        ns = "obstacles" if obstacle else "table" if o.kind == "table" else "objects"
        out.append(_marker(stamp, ns, i, shapes.get(o.shape, M.CUBE),
                           pose=pose(o.position, o.yaw), scale=_vec(2 * hs[0], 2 * hs[1], 2 * hs[2]), color=c, text=o.name))
    for i, (name, p) in enumerate(sorted(scene.keypoints.items())):
        out.append(_marker(stamp, "keypoints", i, M.SPHERE, pose=pose(p), scale=_vec(0.015, 0.015, 0.015),
                           color=color(0.2, 0.4, 1.0, 1.0), text=name))
    return out


def candidate_markers(
    stamp: float,
    actions: np.ndarray,
    info: dict[str, Any],
    ee_start: np.ndarray | None,
    robot: RobotDescription | None,
    scene: Scene | None,
) -> Any:
    """The MarkerArray of one arrived chunk (module docstring). ``actions`` [H, A] is the chunk; its
    candidates come from ``info["candidate_actions"]`` [M, H, A] when the policy kept them, their
    scores from the strategy that chose (``info["steer"][name]["scores"]``)."""
    every = info.get("candidate_actions")
    every = np.asarray(actions, dtype=np.float32)[None] if every is None else np.asarray(every, dtype=np.float32)
    winner = int(info.get("winner", 0)) if every.shape[0] > 1 else 0
    steer = info.get("steer") or {}
    scored = [(name, f["scores"]) for name, f in steer.items() if isinstance(f, dict) and len(f.get("scores") or []) == every.shape[0]]
    chooser, scores = scored[-1] if scored else (None, [0.0] * every.shape[0])  # the last scorer decides (sampler order)
    lo, hi = (min(scores), max(scores)) if scores else (0.0, 0.0)
    markers = [build("visualization_msgs/msg/Marker", header=header(stamp), action=M.DELETEALL)]
    traj = ee_trajectories(every, ee_start, robot) if ee_start is not None else None
    ns = "particles" if chooser == "vls" else "candidates"
    if traj is not None:
        for i, tr in enumerate(traj):
            pts = [point(ee_start)] + [point(p) for p in tr]
            markers.append(_marker(stamp, ns, i, M.LINE_STRIP, scale=_vec(0.003, 0, 0), points=pts,
                                   color=score_color(scores[i], lo, hi), text=f"{chooser or 'score'}={scores[i]:.4g}"))
        pts = [point(ee_start)] + [point(p) for p in traj[winner]]
        markers.append(_marker(stamp, "executed", winner, M.LINE_STRIP, scale=_vec(0.008, 0, 0), points=pts,
                               color=color(1.0, 1.0, 1.0, 1.0), text=f"executed: candidate {winner}"))
    markers += scene_markers(stamp, scene)
    text = [f"M={every.shape[0]} winner={winner}"]
    for name, figures in steer.items():
        if not isinstance(figures, dict):
            continue
        nums = [f"{k}={v:.4g}" for k, v in figures.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
        sc = figures.get("scores")
        if sc:
            nums.insert(0, ("rewards" if name == "vls" else "counts" if name == "taco" else "scores") + "=["
                        + ", ".join(f"{v:.3g}" for v in sc) + "]")
        text.append(f"{name}: " + " ".join(nums))
    if traj is None:
        text.append(f"no end-effector trajectories: action mode {getattr(robot, 'action_mode', None)!r} has no ee map here")
    anchor = ee_start if ee_start is not None else [0.0, 0.0, 0.0]
    markers.append(_marker(stamp, "text", 0, M.TEXT_VIEW_FACING, pose=pose(np.asarray(anchor) + [0, 0, 0.12]),
                           scale=_vec(0, 0, 0.02), color=color(1, 1, 1, 1), text="\n".join(text)))
    return build("visualization_msgs/msg/MarkerArray", markers=markers)


def figures(info: dict[str, Any], delay_steps: int | None) -> Any:
    """The chunk's :data:`FIGURES` as a Float64MultiArray (labels in its layout; NaN where not measured)."""
    steer = info.get("steer") or {}
    taco = steer.get("taco") or {}
    vls = steer.get("vls") or {}
    counts = taco.get("scores") or []
    winner = int(info.get("winner", 0))
    nan = float("nan")
    values = {
        "latency_ms": info.get("latency_ms"), "delay_steps": delay_steps, "candidates": info.get("candidates"),
        "taco_count_executed": counts[winner] if winner < len(counts) else None,
        "taco_count_best": max(counts) if counts else None,
        "vls_reward_executed": vls.get("reward_executed"), "vls_reward_mean": vls.get("reward_mean"),
    }
    data = np.array([nan if values[k] is None else float(values[k]) for k in FIGURES], dtype=np.float64)
    dims = [build("std_msgs/msg/MultiArrayDimension", label=k, size=1, stride=1) for k in FIGURES]
    return build("std_msgs/msg/Float64MultiArray", layout=build("std_msgs/msg/MultiArrayLayout", dim=dims), data=data)


OK, WARN, ERROR = 0, 1, 2


def status(name: str, level: int, message: str, values: dict[str, Any]) -> Any:
    kv = [build("diagnostic_msgs/msg/KeyValue", key=str(k), value=_fmt(v)) for k, v in values.items()]
    return build("diagnostic_msgs/msg/DiagnosticStatus", level=level, name=name,
                 message=message, hardware_id="policy_steer", values=kv)


def diagnostics(stamp: float, statuses: list[Any]) -> Any:
    return build("diagnostic_msgs/msg/DiagnosticArray", header=header(stamp, ""), status=statuses)


def episode(outcome: dict[str, Any]) -> Any:
    return build("std_msgs/msg/String", data=json.dumps(outcome, sort_keys=True, default=_json))


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def _json(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    return str(v)
