"""Scene descriptions: what is where, in a plain serializable form.

A :class:`Scene` is core vocabulary (part of the :class:`~policy_steer.types.EpisodeContext`): a
simulator reads it from its own state (ground truth), a real robot from a file or a perception
module, and reward synthesis (``policy_steer.vlm_rewards``) reads it: named objects with shapes and
sizes, and named keypoints. Positions are metres in the frame ``frame`` names (``world`` for our
tasks). Everything round-trips through JSON (``to_dict`` / ``from_dict``); ``from_dict`` checks the
published schema (``policy_steer/schema/episode_context.schema.json``) first, so a scene received
over the wire or read from a user's file fails with one line naming the problem.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

ObjectKind = Literal["manipuland", "target", "goal", "obstacle", "distractor", "table"]
Shape = Literal["box", "sphere", "cylinder"]


@dataclass
class SceneObject:
    name: str
    kind: ObjectKind
    shape: Shape
    position: list[float]  # [3] centre, world frame, metres
    half_size: list[float]  # [3] half extents (sphere: radius in all three; cylinder: r, r, half height)
    yaw: float = 0.0  # rotation about world z, radians


@dataclass
class Scene:
    task: str
    variant: str
    instruction: str
    objects: list[SceneObject] = field(default_factory=list)
    keypoints: dict[str, list[float]] = field(default_factory=dict)  # name -> [3]
    surface_height: float = 0.0  # z of the table top
    workspace_low: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    workspace_high: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    ee_position: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    gripper_opening: float = 0.0  # 0 closed .. 1 open
    frame: str = "world"  # the frame positions are given in

    def object(self, name: str) -> SceneObject:
        for o in self.objects:
            if o.name == name:
                return o
        raise KeyError(f"no object {name!r} in scene (have {[o.name for o in self.objects]})")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Scene":
        """A scene from plain data, checked against the published schema (ValidationError names the problem)."""
        from policy_steer.schema import validate

        validate(d, "scene")
        d = dict(d)
        d["objects"] = [SceneObject(**o) for o in d.get("objects", [])]
        d["keypoints"] = {k: [float(x) for x in v] for k, v in d.get("keypoints", {}).items()}
        return cls(**d)
