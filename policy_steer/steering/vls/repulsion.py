"""RBF repulsion between particles early in denoising (VLS's diversity term).

Particles are the clean-chunk estimates ``x0_hat`` restricted to the guided entries (chunk rows,
xyz), flattened to [B, D]. With the RBF kernel ``k_ij = exp(-|x_i - x_j|^2 / h)`` and the median
bandwidth ``h = median_{i<j} |x_i - x_j|^2 / log(B + 1)`` (SVGD's heuristic), the repulsive
direction of particle i is

    phi_i = sum_j (2 / h) (x_i - x_j) k_ij        (= -sum_j d k_ij / d x_i)

pushing it away from its close neighbours. The directions are scaled together (the largest one to
RMS 1 per entry, so the relative pushes are kept) and enter the step like a reward gradient, with
strength ``scale`` while the denoising progress is below ``until`` (VLS: the first 30% of steps).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from policy_steer.errors import ConfigError


@dataclass
class RepulsionConfig:
    scale: float = 0.5  # 0: off
    until: float = 0.3  # active while progress < until

    def __post_init__(self) -> None:
        if not (math.isfinite(self.scale) and self.scale >= 0):
            raise ConfigError(f"repulsion scale must be finite and >= 0, got {self.scale}")
        if not 0.0 <= self.until <= 1.0:
            raise ConfigError(f"repulsion 'until' must be in [0, 1], got {self.until}")

    def active(self, progress: float, batch: int) -> bool:
        return self.scale > 0 and batch > 1 and progress < self.until


def rbf_repulsion(points: Tensor, eps: float = 1e-12) -> Tensor:
    """points [B, D] -> repulsive directions [B, D] (largest row scaled to RMS 1; zeros if B < 2)."""
    b, d = points.shape
    if b < 2:
        return torch.zeros_like(points)
    diff = points.unsqueeze(1) - points.unsqueeze(0)  # [B, B, D]: x_i - x_j
    d2 = (diff**2).sum(-1)  # [B, B]
    off = d2[~torch.eye(b, dtype=torch.bool, device=points.device)]
    h = (off.median() / math.log(b + 1)).clamp_min(eps)
    k = torch.exp(-d2 / h)  # the diagonal adds (x_i - x_i) * 1 = 0
    phi = (2.0 / h) * (diff * k.unsqueeze(-1)).sum(1)  # [B, D]
    rms = phi.norm(dim=1) / math.sqrt(d)
    return phi / rms.amax().clamp_min(eps)


def repulsion_shift(x0_hat: Tensor, rows: slice, channels: int = 3) -> Tensor:
    """x0_hat [B, H_model, A_model] -> repulsive directions in the same shape (zero outside rows x xyz)."""
    sub = x0_hat[:, rows, :channels]
    phi = rbf_repulsion(sub.reshape(sub.shape[0], -1).float()).reshape(sub.shape).to(x0_hat.dtype)
    out = torch.zeros_like(x0_hat)
    out[:, rows, :channels] = phi
    return out


def spread(x: Tensor, rows: slice, channels: int = 3) -> float:
    """Mean pairwise distance between particles of x [B, H_model, A_model] on rows x xyz (a figure)."""
    sub = x[:, rows, :channels].reshape(x.shape[0], -1).float()
    if sub.shape[0] < 2:
        return 0.0
    dist = torch.cdist(sub, sub)
    b = sub.shape[0]
    return float(dist.sum() / (b * (b - 1)))
