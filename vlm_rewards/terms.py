"""The registry of reward terms. Adding a term is one decorated function::

    @term("stay_above", "Penalise the end effector below a height.",
          margin=args.number("metres of clearance", 0.02, minimum=0.0),
          height=args.number("surface height; null: the table", None))
    def stay_above(x: TermInput, margin: float, height: float | None) -> Tensor:
        ...  # -> [B]

The keyword specs (:mod:`policy_steer.vlm_rewards.args`) are used to validate programs, to write the
JSON Schema and to resolve names to tensors at compile time. A term returns a reward per candidate
(higher is better), differentiable in ``x.traj`` (and ``x.gripper``). ``goal=True`` marks terms that
measure how far the task of a stage is from done; a stage's progress is read from them.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Callable

from torch import Tensor

from policy_steer.vlm_rewards.args import Arg


@dataclass(frozen=True)
class TermInput:
    """What every term function sees.

    traj: [B, T, 3] end-effector positions (world metres), any float dtype.
    gripper: [B, T] gripper command (+1 close, -1 open) or None when the action space has none.
    progress: the session's progress of the current stage in [0, 1].
    surface_height: z of the table top; workspace_low / workspace_high: [3] tensors (traj dtype).
    """

    traj: Tensor
    gripper: Tensor | None
    progress: float
    surface_height: float
    workspace_low: Tensor
    workspace_high: Tensor


@dataclass(frozen=True)
class TermSpec:
    name: str
    doc: str
    fn: Callable[..., Tensor]
    args: dict[str, Arg]
    goal: bool


_TERMS: dict[str, TermSpec] = {}


def term(name: str, doc: str, *, goal: bool = False, **arg_specs: Arg) -> Callable:
    """Register ``fn(x: TermInput, **args) -> [B]`` as the term ``name`` with the given argument specs."""

    def register(fn: Callable[..., Tensor]) -> Callable[..., Tensor]:
        params = list(inspect.signature(fn).parameters)
        if params[1:] != list(arg_specs):
            # a spec that does not match the function would only fail at compile time; fail at import
            raise TypeError(f"term {name!r}: function parameters {params[1:]} != argument specs {list(arg_specs)}")
        if name in _TERMS:
            raise ValueError(f"term {name!r} is already registered")
        _TERMS[name] = TermSpec(name, doc, fn, dict(arg_specs), goal)
        return fn

    return register


def registered_terms() -> dict[str, TermSpec]:
    """All terms by name (the built-in library included)."""
    import policy_steer.vlm_rewards.library  # noqa: F401  (registers the built-in terms on import)

    return dict(_TERMS)


def get_term(name: str) -> TermSpec | None:
    return registered_terms().get(name)
