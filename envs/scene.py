"""Scene descriptions: what is where, in a plain serializable form.

A :class:`Scene` is read from the simulator (ground truth) and handed to reward synthesis
(``policy_steer.vlm_rewards``): named objects with shapes and sizes, and named keypoints. Positions
are world-frame metres. Everything round-trips through JSON (``to_dict`` / ``from_dict``).
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
        d = dict(d)
        d["objects"] = [SceneObject(**o) for o in d.get("objects", [])]
        return cls(**d)
