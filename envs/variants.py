"""What each shift variant draws, and the typed parameters that say how hard it is.

The five variants (``VARIANTS`` in :mod:`policy_steer.envs.base`) share one seeded *base layout*
(robot start, objects, goal): a reset draws it from one random stream and the variant's extras from a
second one, so the same seed gives the same base problem in every variant and a nominal episode can
be replayed in a shifted one. Changing a variant's parameters changes only the variant's extras (and
how big they are), never the base layout: a sweep over a parameter runs the same problems.

Every variant but ``nominal`` has a parameter dataclass; a task env holds one instance
(``env.variant_params``), built from its task's defaults (``default_variant_params``) and the
constructor's ``variant_params`` overrides (``make("push", "obstacle", variant_params={"obstacle.height": 0.08})``).
The defaults are the constants the tasks had before parameters existed, so every default episode is
unchanged (tests/envs/test_variant_params.py replays committed records). A parameter is named
``<group>.<field>``; the group of each variant is :data:`GROUPS`:

- ``obstacle`` (task-specific: :class:`~policy_steer.envs.tasks.push.PushObstacle`,
  :class:`~policy_steer.envs.tasks.pick_place.WallObstacle`, :class:`~policy_steer.envs.tasks.reach.ReachObstacle`):
  a static obstacle on the path the demonstration of this seed takes, its size, height and place.
  Contact of the robot or the manipulated object with it ends the episode: ``failure = "collision:obstacle"``.
- ``surface`` (:class:`SurfaceShift`, variant ``shifted-surface``): the table and everything on it moved
  by ``(dx, dy, dz)``, each magnitude drawn from its range, times ``scale``, with a random sign. The
  robot's base does not move. ``Scene.surface_height`` and the ``table`` object say where the table is.
- ``clutter`` (:class:`Clutter`): ``count`` free objects standing on the table in a ring around the
  goal. Robot contact with one, or one displaced by more than ``knock_distance``, ends the episode:
  ``failure = "collision:distractor"``.
- ``goal`` (:class:`MovingGoal`, variant ``moving-goal``): the goal jumps once, at a seeded control step
  in [``step_min``, ``step_max``], to a new place at least ``jump_min`` from the old one;
  ``info["goal_jump_step"]`` says when, and the state shows the new goal from that step on.

Bad input is refused by :func:`resolve_params` with one :class:`~policy_steer.errors.ConfigError` naming
the parameter and its range: an unknown name, a value outside the documented range, a parameter of
another variant.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping

import numpy as np

from policy_steer.errors import ConfigError

# variant -> the group its parameters are named under
GROUPS: dict[str, str] = {"obstacle": "obstacle", "shifted-surface": "surface", "clutter": "clutter", "moving-goal": "goal"}


def param(default: float | int, low: float | int, high: float | int, doc: str, unit: str = "m") -> Any:
    """A dataclass field of a variant's parameters: its default, its documented range [low, high] and meaning."""
    return field(default=default, metadata={"range": (low, high), "doc": doc, "unit": unit})


@dataclass(frozen=True)
class VariantParams:
    """Base of the parameter dataclasses. Subclasses declare fields with :func:`param` only."""

    group: ClassVar[str]

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            lo, hi = f.metadata["range"]
            if f.type in ("int", int) and (isinstance(v, bool) or not isinstance(v, (int, np.integer))):
                raise ConfigError(f"{self.group}.{f.name} must be an integer in [{lo}, {hi}], got {v!r}")
            if not (lo <= v <= hi):
                raise ConfigError(
                    f"{self.group}.{f.name} = {v:g} is outside its range [{lo:g}, {hi:g}] {f.metadata['unit']} "
                    f"({f.metadata['doc']})"
                )
        self.check()

    def check(self) -> None:
        """Constraints between fields (a subclass raises ConfigError naming the fields)."""

    def as_dict(self) -> dict[str, float | int]:
        """``{"<group>.<field>": value}`` of every field, in declaration order."""
        return {f"{self.group}.{f.name}": getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def describe(cls) -> list[dict[str, Any]]:
        """One row per parameter: name, type, default, range, unit, doc (for ``envs list`` and errors)."""
        return [
            {"name": f"{cls.group}.{f.name}", "type": "int" if f.type in ("int", int) else "float", "default": f.default,
             "range": list(f.metadata["range"]), "unit": f.metadata["unit"], "doc": f.metadata["doc"]}
            for f in dataclasses.fields(cls)
        ]


def _ordered(lo_name: str, hi_name: str, p: VariantParams) -> None:
    if getattr(p, lo_name) > getattr(p, hi_name):
        raise ConfigError(f"{p.group}.{lo_name} ({getattr(p, lo_name):g}) must be <= {p.group}.{hi_name} ({getattr(p, hi_name):g})")


@dataclass(frozen=True)
class SurfaceShift(VariantParams):
    """``shifted-surface``: the table's shift, each axis's magnitude uniform in [min, max], times ``scale``."""

    group: ClassVar[str] = "surface"
    dx_min: float = param(0.02, 0.0, 0.10, "least |dx| of the table shift")
    dx_max: float = param(0.05, 0.0, 0.10, "largest |dx| of the table shift")
    dy_min: float = param(0.02, 0.0, 0.10, "least |dy| of the table shift")
    dy_max: float = param(0.05, 0.0, 0.10, "largest |dy| of the table shift")
    dz_min: float = param(0.02, 0.0, 0.06, "least |dz| of the table shift")
    dz_max: float = param(0.04, 0.0, 0.06, "largest |dz| of the table shift")
    # one number that sweeps the whole shift: 0 is the nominal table, 1 today's shift, 2 twice as far
    scale: float = param(1.0, 0.0, 2.0, "factor on the drawn shift (0: the nominal table)", unit="x")

    def check(self) -> None:
        for a in ("dx", "dy", "dz"):
            _ordered(f"{a}_min", f"{a}_max", self)

    @property
    def largest(self) -> tuple[float, float]:
        """(largest |dx|, |dy| ; largest |dz|) after ``scale``: bounds of the shifted workspace."""
        return self.scale * max(self.dx_max, self.dy_max), self.scale * self.dz_max


@dataclass(frozen=True)
class Clutter(VariantParams):
    """``clutter``: distractors standing in a ring around the goal."""

    group: ClassVar[str] = "clutter"
    count: int = param(3, 1, 6, "number of distractors", unit="")
    ring_min: float = param(0.065, 0.04, 0.20, "least horizontal distance of a distractor from the goal")
    ring_max: float = param(0.09, 0.04, 0.20, "largest horizontal distance of a distractor from the goal")
    spacing: float = param(0.05, 0.0, 0.10, "least distance between two distractors")
    knock_distance: float = param(0.01, 0.001, 0.05, "displacement of a distractor that counts as knocking it over")

    def check(self) -> None:
        _ordered("ring_min", "ring_max", self)


@dataclass(frozen=True)
class MovingGoal(VariantParams):
    """``moving-goal``: when and how far the goal jumps (the steps' defaults are the task's)."""

    group: ClassVar[str] = "goal"
    step_min: int = param(8, 1, 140, "earliest control step of the jump", unit="steps")
    step_max: int = param(20, 1, 140, "latest control step of the jump", unit="steps")
    jump_min: float = param(0.08, 0.0, 0.20, "least distance between the old and the new goal")

    def check(self) -> None:
        _ordered("step_min", "step_max", self)


def parse_value(name: str, text: str) -> float | int:
    """A parameter value from text (the CLI): a number; ``name`` is only for the error."""
    try:
        v = float(text)
    except ValueError:
        raise ConfigError(f"variant parameter {name}: {text!r} is not a number") from None
    return int(v) if v.is_integer() and "." not in text and "e" not in text.lower() else v


def parse_setting(text: str) -> dict[str, str]:
    """One parameter setting as people type it, ``"obstacle.height=0.08;obstacle.radius=0.03"`` -> the
    overrides :func:`resolve_params` takes (values as text, checked there). ``envs show`` and ``sim-robot``
    read ``--variant_params`` this way (``bench`` takes value lists: policy_steer/bench/cells.py)."""
    params: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in (text or "").split(";"))):
        name, eq, value = part.partition("=")
        if not eq:
            raise ConfigError(f"--variant_params: {part!r} is not name=value")
        params[name.strip()] = value.strip()
    return params


def resolve_params(
    task: str, variant: str, defaults: Mapping[str, VariantParams], overrides: Mapping[str, Any] | VariantParams | None,
) -> VariantParams | None:
    """The parameters of ``task``'s ``variant``: its ``defaults`` entry with ``overrides`` applied and checked.

    ``overrides``: ``{"<group>.<field>": value}`` (values may be numbers or their text) or a whole
    dataclass of the variant's type. Returns None for a variant without parameters (``nominal``).
    Raises ConfigError naming the parameter (and its range, or the variant it belongs to)."""
    default = defaults.get(variant)
    if isinstance(overrides, VariantParams):
        if default is None or type(overrides) is not type(default):
            want = "none" if default is None else type(default).__name__
            raise ConfigError(f"{task}/{variant} takes {want} parameters, got {type(overrides).__name__}")
        return overrides
    overrides = dict(overrides or {})
    if not overrides:
        return default
    known = {f.name: f for f in dataclasses.fields(default)} if default is not None else {}
    changes: dict[str, Any] = {}
    for name, value in overrides.items():
        group, _, fname = str(name).partition(".")
        if default is None or group != default.group:
            owner = [v for v, g in GROUPS.items() if g == group]
            if owner and owner[0] != variant:
                raise ConfigError(f"variant parameter {name} belongs to variant {owner[0]!r}, not {variant!r} (task {task})")
            listing = _listing(default)
            raise ConfigError(f"unknown variant parameter {name} for {task}/{variant}; {listing}")
        if fname not in known:
            raise ConfigError(f"unknown variant parameter {name} for {task}/{variant}; {_listing(default)}")
        v = parse_value(name, value) if isinstance(value, str) else value
        if known[fname].type in ("float", float) and isinstance(v, (int, np.integer)) and not isinstance(v, bool):
            v = float(v)
        changes[fname] = v
    return dataclasses.replace(default, **changes)


def _listing(default: VariantParams | None) -> str:
    if default is None:
        return "it takes no parameters"
    rows = default.describe()
    return "known: " + ", ".join(f"{r['name']} in [{r['range'][0]:g}, {r['range'][1]:g}] {r['unit']}".rstrip() for r in rows)


def surface_offset(rng: np.random.Generator, spec: SurfaceShift) -> np.ndarray:
    """[3] table shift: each component's magnitude in its range, times ``spec.scale``, with a random sign."""
    mags = np.array([rng.uniform(spec.dx_min, spec.dx_max), rng.uniform(spec.dy_min, spec.dy_max),
                     rng.uniform(spec.dz_min, spec.dz_max)])
    signs = rng.choice([-1.0, 1.0], size=3)
    return mags * signs * spec.scale  # x * 1.0 is exact: the default shift is unchanged


def ring_positions(
    rng: np.random.Generator,
    centre: np.ndarray,
    n: int,
    radius: tuple[float, float],
    spacing: float,
    free_direction: np.ndarray | None = None,
    free_half_angle: float = 0.0,
    existing: list[np.ndarray] | None = None,
    attempts: int = 500,
) -> np.ndarray:
    """[n, 2] points at ``radius`` from ``centre`` (xy), pairwise ``spacing`` apart, none within
    ``free_half_angle`` radians of ``free_direction`` (a sector kept clear, e.g. where the block comes from)
    and none within ``spacing`` of the ``existing`` points [2]."""
    out: list[np.ndarray] = []
    taken = list(existing or [])
    free_angle = None if free_direction is None else float(np.arctan2(free_direction[1], free_direction[0]))
    for _ in range(attempts):
        if len(out) == n:
            break
        a = rng.uniform(-np.pi, np.pi)
        if free_angle is not None and abs((a - free_angle + np.pi) % (2 * np.pi) - np.pi) < free_half_angle:
            continue
        p = centre[:2] + rng.uniform(*radius) * np.array([np.cos(a), np.sin(a)])
        if all(np.linalg.norm(p - q) >= spacing for q in out + taken):
            out.append(p)
    if len(out) < n:  # the default constraints are loose enough that this does not happen; fail loudly if it does
        raise ConfigError(f"could not place {n} distractors around {centre[:2]} at {radius} m, {spacing} m apart "
                          "(clutter.count / clutter.ring_* / clutter.spacing leave no room)")
    return np.array(out)
