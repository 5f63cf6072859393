"""Feynman-Kac resampling of particles between denoising steps (FK steering, Singhal et al. 2025).

After each step in the window, every particle's reward ``r_k`` is evaluated on its clean-chunk
estimate, and the incremental log-potential is, per particle (``lam`` the inverse temperature):

- ``difference``: ``lam * (r_k - r_prev)`` (``r_prev``: the reward at the previous potential step,
  0 at the first); the weights telescope to ``exp(lam * r)``: the target is the reward-tilted policy;
- ``max``: ``lam * max_{j <= k} r_j`` (the best reward along the particle's path; VLS's choice);
- ``sum``: ``lam * sum_{j <= k} r_j``.

Log-weights accumulate since the last resampling. When the effective sample size
``ESS = (sum w)^2 / sum w^2`` falls below ``ess_threshold * B`` the particles are resampled
(systematic by default, multinomial as an option) through ``run.resample`` (which reindexes every
strategy's per-particle state) and the weights reset. Unlike VLS's released flow path, where an
indexing bug keeps this from ever firing, the same code runs for both families and every
resampling is counted.

Reward units differ between stages and tasks (squared metres, weighted), so by default each step's
rewards are divided by their spread over the particles before the potential is formed, and ``lam``
is in units of that spread: ``reward_scale="mad"`` (default) uses the median absolute deviation
(x 1.4826, a standard deviation for normal data), which one far-off particle (a chunk through an
obstacle) cannot inflate, so the others still compete; ``"std"`` the standard deviation (an outlier
then takes all the spread: only it is weeded out); ``"raw"`` the rewards as they are.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from policy_steer.errors import ConfigError

POTENTIALS = ("difference", "max", "sum")
RESAMPLERS = ("systematic", "multinomial")
REWARD_SCALES = ("mad", "std", "raw")


@dataclass
class FKConfig:
    enabled: bool = True
    potential: str = "max"
    lam: float = 1.0
    ess_threshold: float = 0.5  # resample when ESS < ess_threshold * B (VLS: B / 2)
    resampler: str = "systematic"
    reward_scale: str = "mad"
    start: float = 0.0  # potentials from this denoising progress on (after the step's update) ...
    end: float = 1.0  # ... up to (not including) this progress; the final step never resamples
    every: int = 1  # evaluate potentials every this many steps

    def __post_init__(self) -> None:
        if self.potential not in POTENTIALS:
            raise ConfigError(f"FK potential must be one of {POTENTIALS}, got {self.potential!r}")
        if self.resampler not in RESAMPLERS:
            raise ConfigError(f"FK resampler must be one of {RESAMPLERS}, got {self.resampler!r}")
        if self.reward_scale not in REWARD_SCALES:
            raise ConfigError(f"FK reward_scale must be one of {REWARD_SCALES}, got {self.reward_scale!r}")
        if not (math.isfinite(self.lam) and self.lam >= 0):
            raise ConfigError(f"FK lam must be finite and >= 0, got {self.lam}")
        if not 0.0 <= self.ess_threshold <= 1.0:
            raise ConfigError(f"FK ess_threshold must be in [0, 1], got {self.ess_threshold}")
        if not 0.0 <= self.start <= self.end <= 1.0:
            raise ConfigError(f"FK window must satisfy 0 <= start <= end <= 1, got [{self.start}, {self.end})")
        if self.every < 1:
            raise ConfigError(f"FK every must be >= 1, got {self.every}")


def reward_spread(r: Tensor, how: str) -> Tensor:
    """The unit rewards [B] are measured in: MAD (robust), std, or 1 (raw); never 0."""
    if how == "raw" or r.numel() < 2:
        return torch.ones((), dtype=r.dtype, device=r.device)
    std = r.std()
    if how == "mad":
        mad = 1.4826 * (r - r.median()).abs().median()
        if mad > 1e-12:
            return mad
    return std.clamp_min(1e-12)  # "std", or a MAD of 0 (more than half the rewards tie)


def effective_sample_size(log_w: Tensor) -> float:
    """ESS of unnormalised log-weights [B]: 1 / sum(w_norm^2), in [1, B]."""
    w = torch.softmax(log_w.double(), dim=0)
    return float(1.0 / (w**2).sum())


def systematic_indices(log_w: Tensor, generator: torch.Generator | None) -> Tensor:
    """[B] ancestor indices, systematic resampling (one uniform draw; low variance)."""
    b = log_w.shape[0]
    w = torch.softmax(log_w.double(), dim=0)
    u0 = torch.rand(1, generator=generator, device=log_w.device, dtype=torch.float64)
    u = (u0 + torch.arange(b, device=log_w.device, dtype=torch.float64)) / b
    cdf = torch.cumsum(w, 0)
    cdf[-1] = 1.0  # guard against rounding below the last u
    return torch.searchsorted(cdf, u).clamp_max(b - 1)


def multinomial_indices(log_w: Tensor, generator: torch.Generator | None) -> Tensor:
    w = torch.softmax(log_w.double(), dim=0)
    return torch.multinomial(w, w.shape[0], replacement=True, generator=generator)


@dataclass
class FKState:
    """Per-particle potential statistics of one sampling run (reindexed on resampling)."""

    log_w: Tensor
    prev: Tensor  # reward at the previous potential step (difference)
    best: Tensor  # running max (max)
    total: Tensor  # running sum (sum)
    evaluations: int = 0
    resamples: int = 0
    ess: list[float] = field(default_factory=list)  # ESS / B at every potential step

    @classmethod
    def fresh(cls, batch: int, device: torch.device) -> "FKState":
        z = torch.zeros(batch, dtype=torch.float64, device=device)
        return cls(log_w=z.clone(), prev=z.clone(), best=torch.full_like(z, -math.inf), total=z.clone())

    def reindex(self, indices: Tensor) -> None:
        idx = indices.to(self.prev.device)
        self.prev, self.best, self.total = self.prev[idx], self.best[idx], self.total[idx]
        self.log_w = torch.zeros_like(self.log_w)


class FeynmanKac:
    """The FK bookkeeping: ``potential(rewards)`` adds a step's log-potentials and says whether to resample."""

    def __init__(self, config: FKConfig) -> None:
        self.config = config

    def wants(self, k: int, num_steps: int, progress_after: float) -> bool:
        c = self.config
        if not c.enabled or k >= num_steps - 1:  # the last update gives the final samples: selection decides
            return False
        return c.start <= progress_after < c.end and k % c.every == 0

    def update(self, state: FKState, rewards: Tensor) -> bool:
        """Fold this step's rewards [B] into the weights; True when ESS fell below the threshold."""
        c = self.config
        r = rewards.detach().double().to(state.prev.device)
        r = torch.nan_to_num(r, nan=-1e9, posinf=1e9, neginf=-1e9)
        r = r / reward_spread(r, c.reward_scale)
        if c.potential == "difference":
            incr = r - state.prev
        elif c.potential == "max":
            state.best = torch.maximum(state.best, r)
            incr = state.best
        else:
            state.total = state.total + r
            incr = state.total
        state.prev = r
        state.log_w = state.log_w + c.lam * incr
        state.evaluations += 1
        b = r.numel()
        ess = effective_sample_size(state.log_w)
        state.ess.append(ess / b)
        return b > 1 and ess < c.ess_threshold * b

    def indices(self, state: FKState, generator: torch.Generator | None) -> Tensor:
        if self.config.resampler == "systematic":
            return systematic_indices(state.log_w, generator)
        return multinomial_indices(state.log_w, generator)
