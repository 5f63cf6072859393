"""The guidance strength of each denoising step: a scale times a schedule in denoising progress.

``lambda_k = scale * f(p_k)`` for ``p_k = plan.progress(k)`` (0 at pure noise, -> 1 at the data end)
inside the window ``[start, end)``, 0 outside it:

- ``constant``: f = 1;
- ``linear``: f = p (weak while x0_hat is still mostly noise);
- ``sigmoid``: f = sigmoid(steepness * (p - midpoint)), VLS's adaptive strength: the guidance grows
  as the sample takes shape, up to ``scale`` (VLS's lambda_max).

VLS's flow path guides only for time <= 0.8 of pi0's 1 -> 0 clock, i.e. ``start = 0.2`` here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from policy_steer.errors import ConfigError

SCHEDULES = ("constant", "linear", "sigmoid")


@dataclass
class StrengthConfig:
    scale: float = 1.0  # lambda_max
    schedule: str = "sigmoid"
    midpoint: float = 0.3  # sigmoid: progress at half strength
    steepness: float = 12.0  # sigmoid: slope at the midpoint (per unit of progress)
    start: float = 0.0  # guide from this progress on
    end: float = 1.0  # ... up to (not including) this progress

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"guidance schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if not (math.isfinite(self.scale) and self.scale >= 0):
            raise ConfigError(f"guidance scale must be finite and >= 0, got {self.scale}")
        if not 0.0 <= self.start <= self.end <= 1.0:
            raise ConfigError(f"guidance window must satisfy 0 <= start <= end <= 1, got [{self.start}, {self.end})")

    def at(self, progress: float) -> float:
        """lambda at denoising progress ``progress`` in [0, 1]."""
        if self.scale == 0.0 or not (self.start <= progress < self.end):
            return 0.0
        if self.schedule == "constant":
            f = 1.0
        elif self.schedule == "linear":
            f = progress
        else:
            f = 1.0 / (1.0 + math.exp(-self.steepness * (progress - self.midpoint)))
        return self.scale * f
