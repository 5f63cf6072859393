"""The policy's internal feature of a candidate chunk, the way TACO reads it.

TACO's verifier never sees actions: it reads an activation of the denoiser at the *last* denoising
step (for pi0 / pi05: the first action token of the action expert's last layer; for our adapters:
``DenoisingPolicy.denoise_with_features``). Two ways to get it:

- :func:`sample_with_features`: run the sampler (the policy's own loop) on n candidates and keep the
  feature the last step produced for each: exactly what selection sees at run time;
- :func:`chunk_features`: the feature of a *given* chunk (a recorded or a perturbed one): noise it to
  the last step's level, ``x_t = a_K x0 + s_K eps``, and call the denoiser once at that step. Used
  to score chunks the policy did not sample (the held-out evaluation).

Chunks here are model tensors: [B, H_model, A_model], normalised (see ``DenoisingPolicy``).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from policy_steer.policies.base import Context, DenoisingPolicy
from policy_steer.sampler import Sampler, SamplerRun
from policy_steer.schedules import DiffusionPlan, FlowPlan, Plan
from policy_steer.steering.base import Strategy


class FeatureProbe(Strategy):
    """Asks the sampler for the last-step feature and keeps it (selects nothing)."""

    name = "feature_probe"
    wants_features = True

    def __init__(self) -> None:
        self.features: Tensor | None = None

    def score(self, run: SamplerRun, x0: Tensor) -> None:
        self.features = run.features
        return None


def sample_with_features(
    sampler: Sampler, ctx: Context, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """Sample ``ctx.batch_size`` candidates from fresh noise: (x0 [B, H, A], features [B, F])."""
    policy = sampler.policy
    probe = FeatureProbe()
    noise = policy.make_noise(ctx.batch_size, generator)
    with torch.no_grad():
        result = sampler.sample(ctx, noise, [probe], generator=generator)
    if probe.features is None:
        raise RuntimeError(f"{type(policy).__name__}.denoise_with_features returned no feature")
    return result.x0, probe.features


def signal_level(plan: Plan, k: int) -> float:
    """a_k of x_t = a_k x0 + s_k eps at step k (s_k is ``plan.noise_level(k)``)."""
    if isinstance(plan, DiffusionPlan):
        return math.sqrt(plan._abar(k))
    if isinstance(plan, FlowPlan):
        return float(plan.path.a(plan.times[k]))
    raise TypeError(f"no signal level for a {type(plan).__name__}")


def chunk_features(
    policy: DenoisingPolicy, plan: Plan, ctx: Context, x0: Tensor, generator: torch.Generator | None = None
) -> Tensor:
    """Features [B, F] of given chunks x0 [B, H_model, A_model] (normalised), read at the plan's last step."""
    if ctx.batch_size != x0.shape[0]:
        raise ValueError(f"context has {ctx.batch_size} rows, chunks {x0.shape[0]}")
    k = plan.num_steps - 1
    eps = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    x_t = signal_level(plan, k) * x0 + plan.noise_level(k) * eps
    with torch.no_grad():
        _, feat = policy.denoise_with_features(x_t, plan.model_time(k, x0.shape[0], x0.device), ctx)
    return feat.detach()


def concat_contexts(contexts: list[Context]) -> Context | None:
    """One context for the rows of several (batch-dim tensors only); None when one holds shared state.

    A context with ``shared`` entries (a VLA's KV cache) is expanded by its adapter in ways this module
    does not know, so callers fall back to one sampler call per observation.
    """
    if any(c.shared for c in contexts):
        return None
    keys = set(contexts[0].tensors)
    if any(set(c.tensors) != keys for c in contexts):
        return None
    tensors = {k: torch.cat([c.tensors[k] for c in contexts], dim=0) for k in keys}
    return Context(batch_size=sum(c.batch_size for c in contexts), tensors=tensors)


def chunk_distance(x0: Tensor, target: Tensor, action_dim: int) -> Tensor:
    """RMS distance [B] between chunks x0 [B, H, A_model] and target [H, A_model] over the real action dims."""
    diff = x0[..., :action_dim] - target[..., :action_dim].to(x0)
    return diff.pow(2).mean(dim=(-1, -2)).sqrt()
