"""The hook interface every steering strategy implements.

A strategy takes part in one sampling run at four points (all optional):

- ``begin(run)``: before the first step; may set ``run.x`` (warm start) or read ``run.prefix``.
- ``guide(view)``: each step, before the update; may replace ``view.out`` (guidance). When
  ``needs_grad(view.k)`` is true the sampler builds the step with autograd on, so ``view.x_t`` is a
  leaf that ``view.out`` and ``view.x0_hat`` depend on.
- ``after_step(run, view)``: each step, after the update; may call ``run.resample(indices)`` (particles).
- ``score(run, x0) -> [B] | None``: at the end; a strategy with ``selects = True`` picks the executed
  candidate (argmax, ties to the lowest index); every strategy's scores are recorded.
- ``selected(run, winner, decided_by)``: after the choice; ``winner`` is the executed row and
  ``decided_by`` the name of the strategy whose score chose it (None: no strategy did, row 0 runs).

Strategies compose: guidance terms add up in the order given, any strategy may resample, the first
selecting strategy decides. Each writes its figures to ``run.info[self.name]``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from torch import Tensor

if TYPE_CHECKING:
    from policy_steer.sampler import SamplerRun, StepView


class Strategy:
    name: ClassVar[str] = "strategy"
    candidates: int = 1  # how many samples this strategy wants in the batch
    wants_features: bool = False  # ask the sampler for the policy's internal feature at the last step
    selects: bool = False  # its score picks the executed candidate

    def needs_grad(self, k: int) -> bool:
        return False

    def reset_episode(self, episode: dict) -> None:
        """A new episode starts; ``episode`` may hold task, variant, instruction, scene, robot."""

    def begin(self, run: "SamplerRun") -> None:
        pass

    def guide(self, view: "StepView") -> None:
        pass

    def after_step(self, run: "SamplerRun", view: "StepView") -> None:
        pass

    def on_resample(self, indices: Tensor) -> None:
        """Called when the batch is reindexed; reindex any per-sample state kept by the strategy."""

    def score(self, run: "SamplerRun", x0: Tensor) -> Tensor | None:
        return None

    def selected(self, run: "SamplerRun", winner: int, decided_by: str | None) -> None:
        """The executed row is known (figures about the executed candidate go here)."""

    def settings(self) -> dict:
        """The settings in force, as plain data (reported in the protocol's ``configured``)."""
        return {}
