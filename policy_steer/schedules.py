"""Noise schedules of the two families, as the sampler needs them.

A :class:`Schedule` belongs to a policy and knows its training parameterisation; ``plan(method,
num_steps)`` returns a :class:`Plan` for one sampling run: the model time of every step, the update
rule, the clean-chunk estimate ``x0_hat``, and how a shift of the score (a reward gradient) enters the
model output.

- Diffusion (lerobot DiffusionPolicy): the policy's own diffusers scheduler (DDPM or DDIM) does the
  update, so chunks match lerobot's loop exactly; x_t = sqrt(abar) x0 + sqrt(1 - abar) eps.
- Flow matching: a linear path x_t = a(t) x0 + s(t) n with the model predicting v = dx_t/dt. pi0,
  pi05 and SmolVLA use a = 1 - t, s = t, integrating t from 1 (noise) to 0; lerobot's multi_task_dit
  uses a = t, s = 1 - (1 - sigma_min) t from 0 to 1. ``euler`` is lerobot's deterministic loop;
  ``flow_sde`` adds noise with the same marginals (for particle methods, where a deterministic loop
  would turn resampled duplicates into identical chunks).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from policy_steer.errors import STEER_UNSUPPORTED, ConfigError, SteeringRefused


class Plan(ABC):
    """One sampling run's schedule: ``num_steps`` updates from noise (k = 0) to data."""

    family: str
    method: str
    num_steps: int

    @abstractmethod
    def model_time(self, k: int, batch_size: int, device: torch.device) -> Tensor:
        """[B] the time argument of the denoiser at step k."""

    @abstractmethod
    def x0_hat(self, x_t: Tensor, out: Tensor, k: int) -> Tensor:
        """The clean chunk predicted at step k from the model output; differentiable."""

    @abstractmethod
    def step(self, x_t: Tensor, out: Tensor, k: int, generator: torch.Generator | None) -> Tensor:
        """x at step k+1."""

    def draws_noise(self, k: int) -> bool:
        """Whether ``step(..., k, generator)`` may draw from the generator. False: the update is
        row-wise deterministic, so several sessions' rows can take it in one call (Sampler.sample_runs)
        and no session's noise stream moves. True is always safe."""
        return True

    @abstractmethod
    def shift_score(self, out: Tensor, grad: Tensor, k: int) -> Tensor:
        """Model output whose update follows score + ``grad`` (grad = d log r / d x_t), classifier-guidance form."""

    @abstractmethod
    def noise_level(self, k: int) -> float:
        """Std of the noise still in x at step k (sqrt(1 - abar) or s(t)); 0 at the data end."""

    def progress(self, k: int) -> float:
        """Fraction of the run done before step k, 0 .. 1."""
        return k / self.num_steps


class Schedule(ABC):
    family: str
    prediction: str  # "epsilon", "sample" or "velocity"
    default_method: str
    default_steps: int
    methods: tuple[str, ...]

    @abstractmethod
    def plan(self, method: str | None = None, num_steps: int | None = None) -> Plan: ...

    def _check(self, method: str | None, num_steps: int | None) -> tuple[str, int]:
        method = method or self.default_method
        if method == "auto":
            method = self.default_method
        if method not in self.methods:
            raise SteeringRefused(STEER_UNSUPPORTED, f"sampler method {method!r} does not apply to a {self.family} policy; use one of {self.methods}")
        num_steps = self.default_steps if num_steps is None else int(num_steps)
        if num_steps < 1:
            raise ConfigError(f"num_steps must be >= 1, got {num_steps}")
        return method, num_steps


# ---------------------------------------------------------------------------------------------------
# Diffusion


class DiffusionSchedule(Schedule):
    """Wraps a diffusers DDPM/DDIM scheduler configuration (the policy's own)."""

    family = "diffusion"
    methods = ("ddpm", "ddim")

    def __init__(self, scheduler, default_steps: int) -> None:
        from diffusers import DDIMScheduler, DDPMScheduler

        self._config = scheduler.config
        self._classes = {"ddpm": DDPMScheduler, "ddim": DDIMScheduler}
        self.default_method = "ddim" if isinstance(scheduler, DDIMScheduler) else "ddpm"
        self.default_steps = int(default_steps)
        self.prediction = self._config.prediction_type
        if self.prediction not in ("epsilon", "sample"):
            raise ConfigError(f"unsupported diffusion prediction_type {self.prediction!r}")
        self.alphas_cumprod = scheduler.alphas_cumprod.clone().float()

    def plan(self, method: str | None = None, num_steps: int | None = None) -> "DiffusionPlan":
        method, num_steps = self._check(method, num_steps)
        sched = self._classes[method].from_config(self._config)
        sched.set_timesteps(num_steps)
        return DiffusionPlan(self, sched, method, num_steps)


class DiffusionPlan(Plan):
    family = "diffusion"

    def __init__(self, schedule: DiffusionSchedule, scheduler, method: str, num_steps: int) -> None:
        self.schedule = schedule
        self.scheduler = scheduler
        self.method = method
        self.timesteps = [int(t) for t in scheduler.timesteps]
        self.num_steps = len(self.timesteps)
        self.prediction = schedule.prediction

    def _abar(self, k: int) -> float:
        return float(self.schedule.alphas_cumprod[self.timesteps[k]])

    def model_time(self, k: int, batch_size: int, device: torch.device) -> Tensor:
        return torch.full((batch_size,), self.timesteps[k], dtype=torch.long, device=device)

    def x0_hat(self, x_t: Tensor, out: Tensor, k: int) -> Tensor:
        if self.prediction == "sample":
            return out
        abar = self._abar(k)
        return (x_t - math.sqrt(1.0 - abar) * out) / math.sqrt(abar)

    def step(self, x_t: Tensor, out: Tensor, k: int, generator: torch.Generator | None) -> Tensor:
        return self.scheduler.step(out, self.timesteps[k], x_t, generator=generator).prev_sample

    def draws_noise(self, k: int) -> bool:
        return self.method != "ddim"  # DDIM at diffusers' default eta = 0 (what step calls) draws nothing

    def shift_score(self, out: Tensor, grad: Tensor, k: int) -> Tensor:
        # score = -eps / sqrt(1 - abar): a score shift g is eps' = eps - sqrt(1 - abar) g, and the
        # implied clean sample moves by (1 - abar) / sqrt(abar) g.
        abar = self._abar(k)
        if self.prediction == "epsilon":
            return out - math.sqrt(1.0 - abar) * grad
        return out + (1.0 - abar) / math.sqrt(abar) * grad

    def noise_level(self, k: int) -> float:
        return math.sqrt(1.0 - self._abar(k))


# ---------------------------------------------------------------------------------------------------
# Flow matching


@dataclass(frozen=True)
class FlowPath:
    """x_t = a(t) x0 + s(t) n; the model predicts v = a'(t) x0 + s'(t) n.

    ``grid(num_steps)`` returns the model times of the steps and the step sizes dt, computed exactly as
    the lerobot loop computes them (so that chunks match to float tolerance).
    """

    a: Callable[[float], float]
    s: Callable[[float], float]
    da: Callable[[float], float]
    ds: Callable[[float], float]
    grid: Callable[[int], tuple[list[float], list[float]]]


def _pi0_grid(num_steps: int) -> tuple[list[float], list[float]]:
    dt = -1.0 / num_steps
    return [1.0 + k * dt for k in range(num_steps)], [dt] * num_steps


PI0_PATH = FlowPath(a=lambda t: 1.0 - t, s=lambda t: t, da=lambda t: -1.0, ds=lambda t: 1.0, grid=_pi0_grid)
"""pi0 / pi05 / SmolVLA: x_t = t n + (1 - t) x0, v = n - x0, time 1 -> 0 (openpi convention)."""


def dit_path(sigma_min: float) -> FlowPath:
    """lerobot multi_task_dit: x_t = t x0 + (1 - (1 - sigma_min) t) n, v = x0 - (1 - sigma_min) n, time 0 -> 1."""

    def grid(num_steps: int) -> tuple[list[float], list[float]]:
        g = torch.linspace(0, 1, num_steps + 1)
        return [g[i].item() for i in range(num_steps)], [(g[i + 1] - g[i]).item() for i in range(num_steps)]

    c = 1.0 - sigma_min
    return FlowPath(a=lambda t: t, s=lambda t: 1.0 - c * t, da=lambda t: 1.0, ds=lambda t: -c, grid=grid)


class FlowSchedule(Schedule):
    family = "flow"
    prediction = "velocity"
    methods = ("euler", "flow_sde")
    default_method = "euler"

    def __init__(self, path: FlowPath, default_steps: int, sde_noise: float = 1.0) -> None:
        self.path = path
        self.default_steps = int(default_steps)
        self.sde_noise = float(sde_noise)

    def plan(self, method: str | None = None, num_steps: int | None = None) -> "FlowPlan":
        method, num_steps = self._check(method, num_steps)
        return FlowPlan(self.path, method, num_steps, self.sde_noise)


class FlowPlan(Plan):
    family = "flow"

    # Keep the ODE/SDE conversion away from the singular end of the path (a(t) = 0 at pure noise).
    _EPS = 1e-3

    def __init__(self, path: FlowPath, method: str, num_steps: int, sde_noise: float) -> None:
        self.path = path
        self.method = method
        self.num_steps = num_steps
        self.times, self.dts = path.grid(num_steps)
        self.sde_noise = sde_noise

    def model_time(self, k: int, batch_size: int, device: torch.device) -> Tensor:
        return torch.tensor(self.times[k], dtype=torch.float32, device=device).expand(batch_size)

    def _coeffs(self, k: int) -> tuple[float, float, float, float, float]:
        t = self.times[k]
        a, s, da, ds = self.path.a(t), self.path.s(t), self.path.da(t), self.path.ds(t)
        det = a * ds - s * da
        return a, s, da, ds, det

    def x0_hat(self, x_t: Tensor, out: Tensor, k: int) -> Tensor:
        _, s, _, ds, det = self._coeffs(k)
        return (ds * x_t - s * out) / det

    def noise_hat(self, x_t: Tensor, out: Tensor, k: int) -> Tensor:
        a, _, da, _, det = self._coeffs(k)
        return (a * out - da * x_t) / det

    def draws_noise(self, k: int) -> bool:
        return self.method != "euler" and self.sde_noise != 0.0

    def step(self, x_t: Tensor, out: Tensor, k: int, generator: torch.Generator | None) -> Tensor:
        dt = self.dts[k]
        x_next = x_t + dt * out
        if self.method == "euler" or self.sde_noise == 0.0:
            return x_next
        # SDE with the ODE's marginals: dx = [u + g^2/2 * score] dtau + g dW, integrating in tau = |t| direction,
        # score = -n_hat / s. With g^2 = 2 eta s the drift correction is -eta * n_hat and the noise vanishes
        # at the data end (s -> 0).
        _, s, _, _, _ = self._coeffs(k)
        s_next = self.path.s(self.times[k] + dt)
        if s <= self._EPS or s_next <= self._EPS:
            return x_next  # last step: deterministic
        dtau = abs(dt)
        eta = self.sde_noise
        n_hat = self.noise_hat(x_t, out, k)
        z = torch.randn(x_t.shape, generator=generator, device=x_t.device, dtype=x_t.dtype)
        return x_next - eta * dtau * n_hat + math.sqrt(2.0 * eta * s * dtau) * z

    def shift_score(self, out: Tensor, grad: Tensor, k: int) -> Tensor:
        # A score shift g moves n_hat by -s g and x0_hat by s^2 g / a; the velocity moves by
        # s (da s - ds a) / a * g. Near pure noise (a -> 0) a is clamped.
        a, s, da, ds, _ = self._coeffs(k)
        a = max(a, self._EPS)
        return out + s * (da * s - ds * a) / a * grad

    def noise_level(self, k: int) -> float:
        return float(self.path.s(self.times[k]))
