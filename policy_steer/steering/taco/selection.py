"""TACO's best-of-M selection as a sampler strategy.

``SteeredPolicy`` prepares the observation once, expands the context to M rows and samples the M
candidates in one batched loop (never M prefix passes); the sampler asks the policy for its internal
feature at the last step (``wants_features``), this strategy scores every candidate with its verifier,
and the sampler executes the argmax (``torch.argmax``: ties go to the lowest index, so a selection is
deterministic given the candidates).

Noise: fresh noise from the steered policy's generator by default (each chunk draws new candidates);
with ``fixed_noise`` the same M initial samples (seeded by ``noise_seed``) start every chunk, as in
TACO's fixed-noise ablation. A stochastic sampler (DDPM) still draws its step noise fresh.

Every candidate's score (the CFN count) lands in ``chunk.info["steer"]["taco"]["scores"]``; the
figures below (numbers, so the benchmark averages them per episode) in ``chunk.info["steer"]["taco"]``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from policy_steer.errors import ConfigError
from policy_steer.steering.base import Strategy
from policy_steer.steering.taco.verifiers import Verifier
from policy_steer.types import EpisodeContext

if TYPE_CHECKING:
    from policy_steer.sampler import SamplerRun


class TacoSelection(Strategy):
    name = "taco"
    selects = True
    # Per session: scores and winner of its own M rows (a batched server's sessions share one run).
    # Its verifier is read-only; the CFN and nearest-bank verifiers keep no episode state.
    batchable = True

    def __init__(
        self,
        verifier: Verifier,
        candidates: int = 16,
        fixed_noise: bool = False,
        noise_seed: int = 0,
        also_score: list[Verifier] | None = None,
    ) -> None:
        if int(candidates) < 1:
            raise ConfigError(f"TACO needs candidates >= 1, got {candidates}")
        self.verifier = verifier
        self.candidates = int(candidates)
        self.fixed_noise = bool(fixed_noise)
        self.noise_seed = int(noise_seed)
        # other verifiers scored on the same candidates, for comparison only (they decide nothing)
        self.also_score = list(also_score or [])
        self.wants_features = verifier.needs_features or any(v.needs_features for v in self.also_score)
        self._noise: Tensor | None = None

    def reset_episode(self, context: EpisodeContext) -> None:
        for v in [self.verifier, *self.also_score]:
            v.reset_episode()

    def begin(self, run: "SamplerRun") -> None:
        if not self.fixed_noise:
            return
        if self._noise is None or self._noise.shape != run.x.shape or self._noise.device != run.x.device:
            g = torch.Generator(device=run.x.device).manual_seed(self.noise_seed)
            self._noise = run.policy.make_noise(run.batch_size, g)
        run.x = self._noise.clone()

    def score(self, run: "SamplerRun", x0: Tensor) -> Tensor:
        scores = self.verifier.score(run.features, x0).float().reshape(-1)
        if scores.shape[0] != x0.shape[0]:
            raise RuntimeError(f"verifier {self.verifier.name} gave {scores.shape[0]} scores for {x0.shape[0]} candidates")
        info = run.info.setdefault(self.name, {})
        info.update({
            "verifier": self.verifier.name,
            "best_score": float(scores.max()),
            "mean_score": float(scores.mean()),
            # how much the choice mattered: winner against the median candidate
            "score_gain": float(scores.max() - scores.median()),
        })
        for v in self.also_score:
            info[f"{v.name}_scores"] = [float(s) for s in v.score(run.features, x0).reshape(-1)]
        return scores

    def settings(self) -> dict[str, Any]:
        return {"candidates": self.candidates, "fixed_noise": self.fixed_noise, **self.verifier.settings()}
