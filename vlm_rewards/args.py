"""Argument specifications of reward terms: one spec checks a value, describes it in JSON Schema and
turns it into what the term function receives.

Kinds:

- ``point``: a name; a scene keypoint, or an object (its centre). Resolves to a float64 tensor [3].
- ``object``: the name of a scene object. Resolves to a :class:`Body`.
- ``number`` / ``integer``: a finite number within optional bounds. Resolves to a Python number.
- ``vec3``: three finite numbers (metres). Resolves to a float64 tensor [3].
- ``choice``: one of a fixed set of strings.
- ``bool``: true or false.

An argument is required unless it has a default. ``default=None`` means "taken from the scene"
(e.g. the table height); the term function then receives ``None`` and reads the scene.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from policy_steer.scene import Scene

ArgKind = Literal["point", "object", "number", "integer", "vec3", "choice", "bool"]


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()


@dataclass(frozen=True)
class Body:
    """A scene object as the terms see it (float64 tensors; cast to the trajectory's dtype at use)."""

    name: str
    shape: str  # box, sphere, cylinder
    centre: Tensor  # [3]
    half_size: Tensor  # [3]
    yaw: float


@dataclass(frozen=True)
class Arg:
    kind: ArgKind
    doc: str
    default: Any = REQUIRED
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: bool = False
    choices: tuple[str, ...] = ()

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    # -- checking ---------------------------------------------------------------------------------

    def check(self, value: Any, scene: Scene | None) -> tuple[Any, str | None]:
        """``(normalised value, None)`` or ``(None, problem)``. ``scene=None`` skips name lookups."""
        if value is None and self.default is None:
            return None, None
        if self.kind in ("point", "object", "choice"):
            if not isinstance(value, str):
                return None, f"expected a string ({self._what()}), got {_type_name(value)}"
            if self.kind == "choice" and value not in self.choices:
                return None, f"{value!r} is not one of {list(self.choices)}"
            if scene is not None and self.kind == "point":
                if value not in scene.keypoints and value not in {o.name for o in scene.objects}:
                    have = sorted(scene.keypoints) + [o.name for o in scene.objects if o.name not in scene.keypoints]
                    return None, f"{value!r} is not in the scene (have: {', '.join(have)})"
            if scene is not None and self.kind == "object":
                names = [o.name for o in scene.objects]
                if value not in names:
                    return None, f"{value!r} is not an object in the scene (have: {', '.join(names)})"
            return value, None
        if self.kind == "bool":
            if not isinstance(value, bool):
                return None, f"expected true or false, got {_type_name(value)}"
            return value, None
        if self.kind == "vec3":
            if not isinstance(value, (list, tuple)) or len(value) != 3:
                return None, f"expected a list of 3 numbers, got {_short(value)}"
            out = []
            for i, v in enumerate(value):
                if not _is_number(v):
                    return None, f"[{i}]: expected a number, got {_type_name(v)}"
                if not math.isfinite(v):
                    return None, f"[{i}]: {v} is not a finite number"
                out.append(float(v))
            return out, None
        # number / integer
        if not _is_number(value):
            return None, f"expected a {'whole ' if self.kind == 'integer' else ''}number, got {_type_name(value)}"
        if not math.isfinite(value):
            return None, f"{value} is not a finite number"
        if self.kind == "integer":
            if float(value) != int(value):
                return None, f"expected a whole number, got {value}"
            value = int(value)
        else:
            value = float(value)
        if self.minimum is not None:
            if self.exclusive_minimum and not value > self.minimum:
                return None, f"{value} must be > {self.minimum}"
            if not self.exclusive_minimum and value < self.minimum:
                return None, f"{value} must be >= {self.minimum}"
        if self.maximum is not None and value > self.maximum:
            return None, f"{value} must be <= {self.maximum}"
        return value, None

    def _what(self) -> str:
        return {"point": "a keypoint or object name", "object": "an object name", "choice": "a choice"}[self.kind]

    # -- schema -----------------------------------------------------------------------------------

    def schema(self, scene: Scene | None = None) -> dict[str, Any]:
        """JSON Schema of this argument; with a scene, names are restricted to the scene's."""
        s: dict[str, Any]
        if self.kind == "point":
            s = {"type": "string"}
            if scene is not None:
                s["enum"] = sorted(set(scene.keypoints) | {o.name for o in scene.objects})
        elif self.kind == "object":
            s = {"type": "string"}
            if scene is not None:
                s["enum"] = [o.name for o in scene.objects]
        elif self.kind == "choice":
            s = {"type": "string", "enum": list(self.choices)}
        elif self.kind == "bool":
            s = {"type": "boolean"}
        elif self.kind == "vec3":
            s = {"type": "array", "items": {"type": "number"}, "minItems": 3, "maxItems": 3}
        else:
            s = {"type": "integer" if self.kind == "integer" else "number"}
            if self.minimum is not None:
                s["exclusiveMinimum" if self.exclusive_minimum else "minimum"] = self.minimum
            if self.maximum is not None:
                s["maximum"] = self.maximum
        if self.default is None:
            s = {"anyOf": [s, {"type": "null"}]}
        s["description"] = self.doc
        if not self.required and self.default is not None:
            s["default"] = list(self.default) if isinstance(self.default, tuple) else self.default
        return s

    # -- resolution -------------------------------------------------------------------------------

    def resolve(self, value: Any, scene: Scene) -> Any:
        """What the term function receives (value already checked against ``scene``)."""
        if value is None:
            return None
        if self.kind == "point":
            if value in scene.keypoints:
                return torch.tensor(scene.keypoints[value], dtype=torch.float64)
            return torch.tensor(scene.object(value).position, dtype=torch.float64)
        if self.kind == "object":
            o = scene.object(value)
            return Body(
                o.name,
                o.shape,
                torch.tensor(o.position, dtype=torch.float64),
                torch.tensor(o.half_size, dtype=torch.float64),
                float(o.yaw),
            )
        if self.kind == "vec3":
            return torch.tensor(value, dtype=torch.float64)
        return value


# Constructors, so that a term's spec reads as a list of keyword arguments.


def point(doc: str, default: Any = REQUIRED) -> Arg:
    return Arg("point", doc, default)


def obj(doc: str, default: Any = REQUIRED) -> Arg:
    return Arg("object", doc, default)


def number(
    doc: str, default: Any = REQUIRED, *, minimum: float | None = None, maximum: float | None = None, positive: bool = False
) -> Arg:
    if positive:
        return Arg("number", doc, default, minimum=0.0, maximum=maximum, exclusive_minimum=True)
    return Arg("number", doc, default, minimum=minimum, maximum=maximum)


def integer(doc: str, default: Any = REQUIRED, *, minimum: int | None = None, maximum: int | None = None) -> Arg:
    return Arg("integer", doc, default, minimum=minimum, maximum=maximum)


def vec3(doc: str, default: Any = REQUIRED) -> Arg:
    return Arg("vec3", doc, tuple(default) if isinstance(default, list) else default)


def choice(doc: str, choices: tuple[str, ...], default: Any = REQUIRED) -> Arg:
    return Arg("choice", doc, default, choices=tuple(choices))


def flag(doc: str, default: Any = REQUIRED) -> Arg:
    return Arg("bool", doc, default)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _type_name(v: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(v), type(v).__name__
    )


def _short(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."
