"""Reward-gradient guidance of one denoising step (VLS's gradient refinement, both families).

The gradient ``g`` [B, H_model, A_model] of the chunk reward, taken one of three ways (named options):

- ``through="denoiser"``: ``g = d r(x0_hat(x_t)) / d x_t``, the vector-Jacobian product through the
  denoiser (the sampler builds the step with autograd; one backward pass through the model). This is
  VLS's "gradient of the reward w.r.t. x_t" and the classifier-guidance (DPS) gradient.
- ``through="x0_hat"``: ``g = d r / d x0_hat`` at the current clean-chunk estimate, the Jacobian
  d x0_hat / d x_t taken as the identity: no backward pass through the model (cheaper, cruder).
- ``through="x0_hat_scaled"``: the same, times the Jacobian of x0_hat with the model's output held
  fixed (a scalar per step: ``1 / sqrt(abar)`` for an epsilon-predicting diffusion policy, ``ds / det``
  on a flow path, about 1): DPS's gradient without the denoiser's own Jacobian. No backward pass
  through the model either. A sample-predicting policy has no such term (its x0_hat is the output).

Only the xyz channels are kept. ``normalize="unit"`` rescales each particle's gradient to unit
root-mean-square over the guided entries (VLS's unit normalisation, times sqrt(#entries) so that
lambda does not depend on the horizon: lambda is "normalised action units per entry"); ``"raw"``
keeps the reward's own units (lambda is then an inverse temperature: the target is p(x) exp(lambda r)).
Unit normalisation pushes every step equally hard, however flat the reward is around the particle
(a chunk that violates nothing is still pushed at full strength along whatever slope is left);
raw gradients vanish where the reward is satisfied. ``cap`` bounds the RMS of the final shift per
particle (for raw gradients, whose size spans orders of magnitude between a free chunk and one
through an obstacle).

The shift enters the model output in one of two forms:

- ``form="score"`` (classifier guidance, :meth:`Plan.shift_score`): the score moves by ``lambda g``;
  DDPM/DDIM epsilon: ``eps' = eps - sqrt(1 - abar_t) * lambda * g`` (exactly VLS's diffusion update);
  sample prediction and flow velocity in their equivalent forms;
- ``form="velocity"`` (flow only, VLS's flow update): ``v' = v + sign(dt) * lambda * g``, so that the
  Euler step moves x by ``|dt| * lambda * g`` up the reward whichever way the policy's clock runs
  (pi0: ``v -= lambda g``).

``form="auto"``: score for diffusion, velocity for flow.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import torch
from torch import Tensor

from policy_steer.errors import ConfigError
from policy_steer.schedules import Plan

if TYPE_CHECKING:
    from policy_steer.sampler import StepView

THROUGH = ("denoiser", "x0_hat", "x0_hat_scaled")
NORMALIZE = ("unit", "raw")
FORMS = ("auto", "score", "velocity")


@dataclass
class GradientConfig:
    through: str = "denoiser"
    normalize: str = "unit"
    form: str = "auto"
    cap: float | None = None  # max RMS of the shift (lambda * gradient) per particle; None: no cap

    def __post_init__(self) -> None:
        if self.through not in THROUGH:
            raise ConfigError(f"VLS gradient 'through' must be one of {THROUGH}, got {self.through!r}")
        if self.normalize not in NORMALIZE:
            raise ConfigError(f"VLS gradient normalize must be one of {NORMALIZE}, got {self.normalize!r}")
        if self.form not in FORMS:
            raise ConfigError(f"VLS guidance form must be one of {FORMS}, got {self.form!r}")
        if self.cap is not None and not (math.isfinite(self.cap) and self.cap > 0):
            raise ConfigError(f"VLS gradient cap must be > 0 (or None), got {self.cap}")


def reward_gradient(
    view: "StepView", reward: Callable[[Tensor], Tensor], through: str, mask: Tensor
) -> tuple[Tensor, Tensor]:
    """(g [B, H_model, A_model] masked to the guided channels, reward of x0_hat [B]) at this step.

    ``through="denoiser"`` needs the step built with autograd (``needs_grad``); the graph is kept
    (``retain_graph``) for any later strategy of the same step.
    """
    plan, k = view.plan, view.k
    with torch.enable_grad():  # predict_chunk runs under no_grad
        if through == "denoiser":
            if not view.x_t.requires_grad:
                raise RuntimeError("VLS: gradient through the denoiser, but the step was built without autograd")
            # x0_hat rebuilt here rather than read from the view's cache: another strategy may have
            # built that one with autograd off
            x0 = plan.x0_hat(view.x_t, view.out, k)
            r = reward(x0)
            (g,) = torch.autograd.grad(r.sum(), view.x_t, retain_graph=True)
        else:
            x0 = plan.x0_hat(view.x_t.detach(), view.out.detach(), k).requires_grad_(True)
            r = reward(x0)
            (g,) = torch.autograd.grad(r.sum(), x0)
            if through == "x0_hat_scaled":
                g = g * x0_hat_slope(plan, k)
    g = torch.nan_to_num(g.detach(), nan=0.0, posinf=0.0, neginf=0.0) * mask
    return g, r.detach()


def x0_hat_slope(plan: Plan, k: int) -> float:
    """d x0_hat / d x_t at step k with the model output held fixed (every plan's x0_hat is affine in x_t)."""
    one, zero = torch.ones(1), torch.zeros(1)
    return float(plan.x0_hat(one, zero, k) - plan.x0_hat(zero, zero, k))


def normalize_gradient(g: Tensor, mask: Tensor, how: str, eps: float = 1e-12) -> Tensor:
    """Per particle: ``unit`` -> RMS 1 over the guided entries (zero gradients stay zero); ``raw`` -> g."""
    if how == "raw":
        return g
    n = float(mask.sum()) * g.shape[1]  # guided entries per particle
    norm = g.flatten(1).norm(dim=1).clamp_min(eps).reshape(-1, 1, 1)
    return g / norm * math.sqrt(max(n, 1.0))


def cap_shift(shift: Tensor, mask: Tensor, cap: float | None) -> Tensor:
    """Scale down the particles whose shift [B, H, A] has an RMS over the guided entries above ``cap``."""
    if cap is None:
        return shift
    n = max(float(mask.sum()) * shift.shape[1], 1.0)
    rms = shift.flatten(1).norm(dim=1) / math.sqrt(n)
    return shift * (cap / rms.clamp_min(cap)).reshape(-1, 1, 1)


def resolve_form(form: str, plan: Plan) -> str:
    if form == "auto":
        return "velocity" if plan.family == "flow" else "score"
    if form == "velocity" and plan.family != "flow":
        raise ConfigError("VLS guidance form 'velocity' applies to flow policies only; use 'score' (or 'auto')")
    return form


def apply_shift(plan: Plan, out: Tensor, shift: Tensor, k: int, form: str) -> Tensor:
    """The model output whose update moves x up ``shift`` [B, H_model, A_model] (already scaled)."""
    if form == "velocity":
        direction = 1.0 if plan.dts[k] > 0 else -1.0
        return out + direction * shift
    return plan.shift_score(out, shift, k)
