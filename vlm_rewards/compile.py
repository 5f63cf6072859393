"""Compilation of a validated program against a scene into torch functions with autograd.

A :class:`StageReward` is the reward of one stage::

    reward(traj [B, T, 3], gripper [B, T] | None = None, progress: float = 0.0) -> [B]

a weighted sum of its terms, batched over candidates, differentiable in ``traj`` and ``gripper``
(any float dtype and device). Names are resolved to positions of the scene given at compile time;
recompile (cheap: no model involved) when the scene moves, as :class:`RewardSession` does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor

from policy_steer.scene import Scene
from policy_steer.errors import ValidationError
from policy_steer.vlm_rewards.errors import ProgramError
from policy_steer.vlm_rewards.program import RewardProgram, Stage
from policy_steer.vlm_rewards.terms import TermInput, TermSpec, registered_terms
from policy_steer.vlm_rewards.validate import validate_program


@dataclass(frozen=True)
class CompiledTerm:
    path: str  # e.g. "stages[0].terms[2]"
    spec: TermSpec
    weight: float
    args: dict[str, Any]  # resolved: tensors for points and vectors, Body for objects

    def __call__(self, x: TermInput) -> Tensor:
        return self.spec.fn(x, **self.args)


class StageReward:
    """The compiled reward of one stage (see the module docstring for the call signature)."""

    def __init__(self, stage: Stage, index: int, scene: Scene) -> None:
        self.stage = stage
        self.index = index
        self.surface_height = float(scene.surface_height)
        self._workspace = (
            torch.tensor(scene.workspace_low, dtype=torch.float64),
            torch.tensor(scene.workspace_high, dtype=torch.float64),
        )
        terms = registered_terms()
        self.terms: list[CompiledTerm] = []
        for j, t in enumerate(stage.terms):
            spec = terms[t.term]
            resolved = {k: spec.args[k].resolve(v, scene) for k, v in t.args.items()}
            self.terms.append(CompiledTerm(f"stages[{index}].terms[{j}]", spec, t.weight, resolved))
        self._dry_run(torch.tensor(scene.ee_position, dtype=torch.float64))

    @property
    def name(self) -> str:
        return self.stage.name

    @property
    def has_goal(self) -> bool:
        return any(t.spec.goal and t.weight > 0 for t in self.terms)

    def _input(self, traj: Tensor, gripper: Tensor | None, progress: float) -> TermInput:
        lo, hi = self._workspace
        return TermInput(traj, gripper, float(progress), self.surface_height, lo.to(traj), hi.to(traj))

    def __call__(self, traj: Tensor, gripper: Tensor | None = None, progress: float = 0.0) -> Tensor:
        """traj [B, T, 3], gripper [B, T] or None -> reward [B] (higher is better)."""
        _check_inputs(traj, gripper)
        x = self._input(traj, gripper, progress)
        total = traj[:, 0, 0] * 0.0  # zero, but in the graph of traj: autograd.grad works for any stage
        for t in self.terms:
            total = total + t.weight * t(x)
        return total

    def breakdown(self, traj: Tensor, gripper: Tensor | None = None, progress: float = 0.0) -> dict[str, Tensor]:
        """Each term's weighted contribution [B], keyed ``"<path> <term>"`` (for logs and telemetry)."""
        _check_inputs(traj, gripper)
        x = self._input(traj, gripper, progress)
        return {f"{t.path} {t.spec.name}": t.weight * t(x) for t in self.terms}

    def goal_cost(self, position: Tensor | list[float]) -> float:
        """Sum of the goal terms' weighted costs (>= 0) with the end effector held at ``position`` [3].

        The stage's progress compares this on the observed state with its value when the stage began.
        """
        p = torch.as_tensor(position, dtype=torch.float64).reshape(1, 1, 3)
        x = self._input(p, None, 0.0)
        with torch.no_grad():
            cost = sum((-t.weight * t(x)) for t in self.terms if t.spec.goal)
        return max(float(cost), 0.0) if torch.is_tensor(cost) else 0.0

    def on_chunk(
        self,
        actions: Tensor,
        chunk_map: Callable[..., tuple[Tensor, Tensor | None]],
        progress: float = 0.0,
        **map_kwargs: Any,
    ) -> Tensor:
        """An action chunk [B, H, A] -> reward [B] through ``chunk_map`` (a :class:`ChunkMap` or
        :class:`TrajectoryMap`), e.g. ``reward.on_chunk(x_normalised, chunk_map, ee_start=ee)``."""
        traj, gripper = chunk_map(actions, **map_kwargs)
        return self(traj, gripper, progress)

    def _dry_run(self, ee: Tensor) -> None:
        # Catch what only shows with the scene's numbers (an axis of zero length, an empty region)
        # at compile time, with the place, instead of as a NaN gradient in the sampler.
        traj = ee.reshape(1, 1, 3).expand(1, 3, 3) + torch.linspace(0, 0.01, 3, dtype=torch.float64).reshape(1, 3, 1)
        x = self._input(traj, torch.zeros(1, 3, dtype=torch.float64), 0.0)
        problems = []
        for t in self.terms:
            try:
                value = t(x)
            except ValueError as e:
                problems.append((f"{t.path}.args", f"{t.spec.name}: {e}"))
                continue
            if value.shape != (1,) or not bool(torch.isfinite(value).all()):
                problems.append((t.path, f"{t.spec.name} gives {value.tolist()} in this scene (expected one finite value)"))
        if problems:
            raise ProgramError(problems)


@dataclass
class CompiledProgram:
    program: RewardProgram
    stages: list[StageReward]

    def __len__(self) -> int:
        return len(self.stages)

    def __getitem__(self, i: int) -> StageReward:
        return self.stages[i]


def compile_stage(program: RewardProgram, index: int, scene: Scene) -> StageReward:
    """Compile stage ``index`` of ``program`` against ``scene`` (names are checked first)."""
    program = validate_program(program.to_dict(), scene)
    return StageReward(program.stages[index], index, scene)


def compile_program(program: RewardProgram, scene: Scene) -> CompiledProgram:
    """Compile every stage against ``scene``; a name missing from the scene is a :class:`ProgramError`."""
    checked = validate_program(program.to_dict(), scene)
    return CompiledProgram(program, [StageReward(s, i, scene) for i, s in enumerate(checked.stages)])


def _check_inputs(traj: Tensor, gripper: Tensor | None) -> None:
    if not torch.is_tensor(traj) or traj.ndim != 3 or traj.shape[-1] != 3 or not traj.is_floating_point():
        raise ValidationError(f"traj: expected a float tensor [B, T, 3], got {_describe(traj)}")
    if traj.shape[1] < 1:
        raise ValidationError("traj: needs at least one time step")
    if gripper is not None and (not torch.is_tensor(gripper) or tuple(gripper.shape) != tuple(traj.shape[:2])):
        raise ValidationError(f"gripper: expected a tensor [B, T] = {list(traj.shape[:2])}, got {_describe(gripper)}")


def _describe(x: Any) -> str:
    if torch.is_tensor(x):
        return f"{x.dtype} {list(x.shape)}"
    return type(x).__name__

