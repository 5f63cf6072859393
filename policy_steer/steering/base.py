"""The hook interface every steering strategy implements.

Every hook a caller may use is declared here with a default, so no caller looks one up by name.

Per episode (the episode context, :class:`~policy_steer.types.EpisodeContext`, reaches a strategy
only through these):

- ``refusal(context) -> str | None``: why this strategy cannot act in an episode with this context
  (VLS without a scene); None when it can. Checked before ``reset_episode``; a refusal is raised to
  the caller as :class:`~policy_steer.errors.SteeringRefused`, never turned into a weaker run.
- ``reset_episode(context)``: a new episode starts; ``update_context(context)``: the scene changed
  mid-episode (a pushed block, a jumped goal).
- ``acted() -> bool``: after a chunk, whether this strategy changed it (it may stand aside for a
  chunk, e.g. VLS when its reward synthesis failed: the chunk's info says so).
- ``export_episode_state()`` / ``import_episode_state(state)``: the per-episode state, so that one
  server can interleave several robots' episodes.
- ``wants_prefix``: the strategy reads the previous plan (RTC inpainting); the runtime sends it.
- ``batchable``: several sessions' rows may share one sampling run with this strategy
  (:meth:`~policy_steer.sampler.Sampler.sample_runs`, behind ``SteeredPolicy.predict_chunks``). Its
  hooks are then called once per session with that session's own :class:`SamplerRun` (its rows, its
  noise generator, observation and info), its episode state imported before and exported after each
  call; so a batchable strategy keeps everything per episode in ``export/import_episode_state``,
  everything per run on the run, and never needs gradients (one denoiser call over every session's
  rows builds no graph per session). Not batchable (the default): its session's chunk is computed
  alone.

In one sampling run a strategy takes part at four points (all optional):

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

from typing import TYPE_CHECKING, Any, ClassVar

from torch import Tensor

from policy_steer.types import EpisodeContext

if TYPE_CHECKING:
    from policy_steer.sampler import SamplerRun, StepView


class Strategy:
    name: ClassVar[str] = "strategy"
    candidates: int = 1  # how many samples this strategy wants in the batch
    wants_features: bool = False  # ask the sampler for the policy's internal feature at the last step
    selects: bool = False  # its score picks the executed candidate
    wants_prefix: bool = False  # it reads the previous plan (the runtime then sends it as the prefix)
    batchable: ClassVar[bool] = False  # its sessions may share one sampling run (module docstring)

    def needs_grad(self, k: int) -> bool:
        return False

    # ---------------------------------------------------------------- episodes

    def refusal(self, context: EpisodeContext) -> str | None:
        """Why this strategy cannot act in an episode with ``context`` (None: it can)."""
        return None

    def reset_episode(self, context: EpisodeContext) -> None:
        """A new episode starts with ``context`` (already accepted by :meth:`refusal`)."""

    def update_context(self, context: EpisodeContext) -> None:
        """The episode's context changed (the scene now); the episode goes on."""

    def acted(self) -> bool:
        """Whether this strategy changed the last chunk (False: it stood aside; its figures say why)."""
        return True

    def export_episode_state(self) -> Any:
        """The per-episode state (None: the strategy keeps none)."""
        return None

    def import_episode_state(self, state: Any) -> None:
        """Restore what :meth:`export_episode_state` returned."""

    # ---------------------------------------------------------------- one sampling run

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
