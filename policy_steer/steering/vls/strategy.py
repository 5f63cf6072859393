"""The VLS sampler strategy: reward-gradient guidance, repulsion, Feynman-Kac resampling, selection.

One :class:`VLSStrategy` serves a sequence of episodes:

- ``refusal``: an episode without a scene or a robot description is refused (the caller is told);
- ``reset_episode``: a new reward program for the episode (:class:`EpisodeReward`; a failed synthesis
  leaves the episode unsteered, logged, counted and flagged in every chunk); ``update_context``: the
  scene now, for the stage updates;
- ``begin``: the chunk's reward (stage updated from the current scene, trajectory from the end
  effector in the observation) and fresh particle statistics;
- ``guide`` (each step): ``lambda_k * normalised reward gradient`` (xyz only; through the denoiser or
  through x0_hat) plus, early, the RBF repulsion between particles, entered in the classifier-guidance
  form (diffusion) or as a velocity correction (flow); see :mod:`.guidance`;
- ``after_step``: Feynman-Kac potentials on the updated clean-chunk estimates; resampling when the
  ESS falls below the threshold (:mod:`.resampling`);
- ``score``: the reward of every finished particle; ``selects = True``, so the sampler executes the
  argmax unless a selecting strategy named before it decides (see the package docstring for
  ``taco+vls``);
- ``selected``: the reward of the chunk that was actually executed, and which strategy chose it.

Figures (numbers, averaged per episode by the benchmark) land in ``chunk.info["steer"]["vls"]``.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from policy_steer.errors import ConfigError
from policy_steer.policies.base import DenoisingPolicy
from policy_steer.steering.base import Strategy
from policy_steer.steering.vls.chunk_reward import ChunkReward
from policy_steer.steering.vls.episode import EpisodeReward
from policy_steer.steering.vls.guidance import (
    GradientConfig,
    apply_shift,
    cap_shift,
    normalize_gradient,
    resolve_form,
    reward_gradient,
)
from policy_steer.steering.vls.repulsion import RepulsionConfig, repulsion_shift, spread
from policy_steer.steering.vls.resampling import FeynmanKac, FKConfig, FKState
from policy_steer.steering.vls.strength import StrengthConfig
from policy_steer.types import EpisodeContext
from policy_steer.vlm_rewards import SwitchConfig, SynthesisConfig

if TYPE_CHECKING:
    from policy_steer.sampler import SamplerRun, StepView


@dataclass
class VLSConfig:
    particles: int = 4  # B: candidates sampled together
    gradient: bool = True  # reward-gradient guidance (the ablation's "without the gradient": False)
    grad: GradientConfig = field(default_factory=GradientConfig)
    strength: StrengthConfig = field(default_factory=StrengthConfig)
    repulsion: RepulsionConfig = field(default_factory=RepulsionConfig)
    fk: FKConfig = field(default_factory=FKConfig)
    select: bool = True  # the final reward picks the executed particle
    synthesis: SynthesisConfig = field(default_factory=SynthesisConfig)
    switch: SwitchConfig = field(default_factory=SwitchConfig)
    clip_grad: str = "straight_through"  # delta actions: gradient through the env's step clip (see chunk_reward)

    def __post_init__(self) -> None:
        if int(self.particles) < 1:
            raise ConfigError(f"VLS needs particles >= 1, got {self.particles}")
        self.particles = int(self.particles)


class VLSStrategy(Strategy):
    name = "vls"
    selects = True

    def __init__(self, policy: DenoisingPolicy, config: VLSConfig | None = None, episode: EpisodeReward | None = None) -> None:
        self.config = config or VLSConfig()
        self.candidates = self.config.particles
        self.selects = self.config.select
        self.policy = policy
        self.episode = episode or EpisodeReward(policy, self.config.synthesis, self.config.switch, self.config.clip_grad)
        self.fk = FeynmanKac(self.config.fk)
        self._reward: ChunkReward | None = None
        self._form: str | None = None
        self._fk_state: FKState | None = None
        self._figures: dict[str, Any] = {}
        self._num_steps = 0
        self._overhead = 0.0
        self._last_rewards: Tensor | None = None

    # ---------------------------------------------------------------- plumbing

    def settings(self) -> dict:
        d = asdict(self.config)
        d.pop("synthesis", None)
        d["reward_backend"] = self.config.synthesis.backend
        return d

    def refusal(self, context: EpisodeContext) -> str | None:
        return self.episode.refusal(context)

    def reset_episode(self, context: EpisodeContext) -> None:
        self.episode.reset(context)

    def update_context(self, context: EpisodeContext) -> None:
        self.episode.update(context)

    def acted(self) -> bool:
        return self._reward is not None

    def export_episode_state(self) -> Any:
        return self.episode.export_state()

    def import_episode_state(self, state: Any) -> None:
        self.episode.import_state(state)

    def _lambda(self, progress: float) -> float:
        return self.config.strength.at(progress) if self.config.gradient else 0.0

    def needs_grad(self, k: int) -> bool:
        if self._reward is None or self.config.grad.through != "denoiser" or self._num_steps == 0:
            return False
        return self._lambda(k / self._num_steps) > 0.0

    # ---------------------------------------------------------------- the run

    def begin(self, run: "SamplerRun") -> None:
        t0 = time.perf_counter()
        self._num_steps = run.plan.num_steps
        self._reward = self.episode.for_chunk(run.obs)
        self._fk_state = FKState.fresh(run.batch_size, run.x.device)
        self._form = resolve_form(self.config.grad.form, run.plan)
        session = self.episode.session
        self._figures = {
            "steered": int(self._reward is not None),
            "synthesis_failed": int(self.episode.failure is not None),
            "particles": run.batch_size,
            "guided_steps": 0,
            "repulsion_steps": 0,
            "fk_evaluations": 0,
            "fk_resamples": 0,
            "grad_rms": 0.0,
        }
        if session is not None:
            self._figures.update({"stage": session.stage_index, "stage_progress": session.progress,
                                  "stage_switches": len(session.events)})
        if self.episode.failure is not None:
            self._figures["unsteered_reason"] = self.episode.failure
        self._overhead = time.perf_counter() - t0

    def guide(self, view: "StepView") -> None:
        if self._reward is None:
            return
        t0 = time.perf_counter()
        plan, k = view.plan, view.k
        progress = plan.progress(k)
        lam = self._lambda(progress)
        rep = self.config.repulsion
        shift: Tensor | None = None
        if lam > 0.0:
            mask = self._reward.mask(view.x_t)
            g, _ = reward_gradient(view, self._reward, self.config.grad.through, mask)
            rms = float(g.flatten(1).norm(dim=1).mean()) / max(float(mask.sum()) * g.shape[1], 1.0) ** 0.5
            self._figures["grad_rms"] += rms
            shift = cap_shift(lam * normalize_gradient(g, mask, self.config.grad.normalize), mask, self.config.grad.cap)
            self._figures["guided_steps"] += 1
        if rep.active(progress, view.x_t.shape[0]):
            with torch.no_grad():
                x0 = plan.x0_hat(view.x_t.detach(), view.out.detach(), k)
                r_shift = rep.scale * repulsion_shift(x0, self.policy.chunk_slice)
            shift = r_shift if shift is None else shift + r_shift
            self._figures["repulsion_steps"] += 1
        if shift is not None:
            view.out = apply_shift(plan, view.out, shift.detach(), k, self._form)
        self._overhead += time.perf_counter() - t0

    def after_step(self, run: "SamplerRun", view: "StepView") -> None:
        if self._reward is None or self._fk_state is None:
            return
        k = view.k
        if not self.fk.wants(k, run.plan.num_steps, run.plan.progress(k + 1) if k + 1 < run.plan.num_steps else 1.0):
            return
        t0 = time.perf_counter()
        # The clean-chunk estimate of this step's (guided) output predicts where each particle is going.
        with torch.no_grad():
            x0 = run.plan.x0_hat(view.x_t.detach(), view.out.detach(), k)
            r = self._reward(x0)
        state = self._fk_state
        fire = self.fk.update(state, r)
        self._figures["fk_evaluations"] += 1
        if fire:
            idx = self.fk.indices(state, run.generator)
            run.resample(idx)  # calls on_resample on every strategy, this one included
            state.resamples += 1
            self._figures["fk_resamples"] += 1
        self._overhead += time.perf_counter() - t0

    def on_resample(self, indices: Tensor) -> None:
        if self._fk_state is not None:
            self._fk_state.reindex(indices)

    def score(self, run: "SamplerRun", x0: Tensor) -> Tensor | None:
        info = run.info.setdefault(self.name, {})
        info.update(self._figures)
        if self._reward is None:
            info["overhead_ms"] = self._overhead * 1e3
            return None
        t0 = time.perf_counter()
        with torch.no_grad():
            r = self._reward(x0).float()
        r = torch.nan_to_num(r, nan=-1e30, posinf=1e30, neginf=-1e30)  # a broken candidate never wins
        self._last_rewards = r
        state = self._fk_state
        info.update({
            "reward_best": float(r.max()),
            "reward_mean": float(r.mean()),
            "unique_ancestors": len(set(run.ancestry.tolist())),
            "spread_final": spread(x0, self.policy.chunk_slice),
        })
        if state is not None and state.ess:
            info["ess_min"] = min(state.ess)
            info["ess_mean"] = sum(state.ess) / len(state.ess)
        if info["guided_steps"]:
            info["grad_rms"] = info["grad_rms"] / info["guided_steps"]
        self._overhead += time.perf_counter() - t0
        info["overhead_ms"] = self._overhead * 1e3
        return r if self.selects else None

    def selected(self, run: "SamplerRun", winner: int, decided_by: str | None) -> None:
        info = run.info.setdefault(self.name, {})
        info["selected_by"] = decided_by or "none"
        info["reward_selects"] = int(decided_by == self.name)
        r = self._last_rewards
        if self._reward is not None and r is not None and 0 <= winner < r.shape[0]:
            info["reward_executed"] = float(r[winner])
            info["reward_gain"] = float(r[winner]) - info.get("reward_mean", float(r[winner]))
        self._last_rewards = None
