"""One sampling loop for both families (DDPM, DDIM, flow Euler, flow SDE), with strategy hooks.

The loop works in the policy's normalised action space on x [B, H, A]:

    x = noise
    for k in range(num_steps):
        out = policy.denoise(x, t_k, ctx)           # eps / sample / velocity
        strategies guide  (may change out)           # view.x0_hat is the clean-chunk estimate
        x = plan.step(x, out, k)                     # the policy's own update rule
        strategies after_step (may resample x)
    winner = argmax of the first selecting strategy's score

See :mod:`policy_steer.steering.base` for the hook contract.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from policy_steer.policies.base import Context, DenoisingPolicy
from policy_steer.schedules import Plan
from policy_steer.steering.base import Strategy


@dataclass
class SamplerConfig:
    method: str = "auto"  # auto (the policy's own), ddpm, ddim, euler, flow_sde
    num_steps: int | None = None  # None: the policy's own number of steps


@dataclass
class SamplerRun:
    """The state of one sampling run, as strategies see it."""

    policy: DenoisingPolicy
    plan: Plan
    ctx: Context
    x: Tensor  # [B, H, A] current sample
    generator: torch.Generator | None = None
    prefix: Tensor | None = None  # [P, A] normalised actions of the previous plan (see prefix_offset)
    prefix_offset: int = 0  # chunk row at which prefix row 0 runs (-P: the prefix ends right before the chunk)
    prefix_committed: int | None = None  # how many leading prefix rows run for sure (None: all of them)
    obs: dict[str, Any] | None = None  # the raw observation the chunk is conditioned on
    strategies: list[Strategy] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    ancestry: Tensor | None = None  # [B] which initial sample each row descends from
    features: Tensor | None = None  # [B, F] internal feature at the last step, when asked for
    x0_last: Tensor | None = None  # [B, H, A] x0_hat of the last step

    @property
    def batch_size(self) -> int:
        return int(self.x.shape[0])

    def resample(self, indices: Tensor) -> None:
        """Reindex the batch: row i becomes old row indices[i] (particle resampling)."""
        indices = indices.to(self.x.device)
        self.x = self.x[indices]
        self.ancestry = self.ancestry[indices]
        if self.features is not None:
            self.features = self.features[indices]
        if self.x0_last is not None:
            self.x0_last = self.x0_last[indices]
        for s in self.strategies:
            s.on_resample(indices)


class StepView:
    """One step as guidance sees it. Replacing ``out`` changes the update; ``x0_hat`` follows ``out``."""

    def __init__(self, run: SamplerRun, k: int, t: Tensor, x_t: Tensor, out: Tensor, with_grad: bool) -> None:
        self.run = run
        self.k = k
        self.t = t
        self.x_t = x_t
        self.with_grad = with_grad
        self._out = out
        self._x0_hat: Tensor | None = None

    @property
    def plan(self) -> Plan:
        return self.run.plan

    @property
    def out(self) -> Tensor:
        return self._out

    @out.setter
    def out(self, value: Tensor) -> None:
        self._out = value
        self._x0_hat = None

    @property
    def x0_hat(self) -> Tensor:
        if self._x0_hat is None:
            self._x0_hat = self.run.plan.x0_hat(self.x_t, self._out, self.k)
        return self._x0_hat


@dataclass
class SampleResult:
    x0: Tensor  # [B, H, A] final samples, normalised
    winner: int
    scores: dict[str, list[float]]
    info: dict[str, Any]
    ancestry: list[int]


class Sampler:
    def __init__(self, policy: DenoisingPolicy, config: SamplerConfig | None = None) -> None:
        self.policy = policy
        self.config = config or SamplerConfig()
        # Built once: a diffusers scheduler per run would cost more than a small denoiser call.
        self._plan = policy.schedule.plan(self.config.method, self.config.num_steps)

    @property
    def plan(self) -> Plan:
        return self._plan

    def sample(
        self,
        ctx: Context,
        noise: Tensor,
        strategies: list[Strategy] | None = None,
        generator: torch.Generator | None = None,
        prefix: Tensor | None = None,
        obs: dict[str, Any] | None = None,
        prefix_offset: int | None = None,
        prefix_committed: int | None = None,
    ) -> SampleResult:
        """Run the loop from ``noise`` [B, H, A] with ``ctx`` already expanded to B rows.

        ``prefix`` [P, A] (normalised) is the previous plan that strategies such as RTC inpainting
        follow: its row 0 runs at chunk row ``prefix_offset`` (default -P: it ends right before the
        chunk) and its first ``prefix_committed`` rows (default all) run whatever this chunk says.
        """
        strategies = list(strategies or [])
        policy, plan = self.policy, self._plan
        if ctx.batch_size != noise.shape[0]:
            raise ValueError(f"context has {ctx.batch_size} rows but noise has {noise.shape[0]}")
        run = SamplerRun(
            policy=policy, plan=plan, ctx=ctx, x=noise, generator=generator, prefix=prefix, obs=obs,
            prefix_offset=(-int(prefix.shape[0]) if prefix is not None else 0) if prefix_offset is None else int(prefix_offset),
            prefix_committed=prefix_committed, strategies=strategies, ancestry=torch.arange(noise.shape[0], device=noise.device),
        )
        for s in strategies:
            s.begin(run)
        want_features = any(s.wants_features for s in strategies)
        last = plan.num_steps - 1

        for k in range(plan.num_steps):
            t = plan.model_time(k, run.batch_size, run.x.device)
            with_grad = any(s.needs_grad(k) for s in strategies)
            view = self._model_step(run, k, t, with_grad, want_features and k == last)
            for s in strategies:
                s.guide(view)
            if k == last:
                run.x0_last = view.x0_hat.detach()
            with torch.no_grad():
                run.x = plan.step(view.x_t.detach(), view.out.detach(), k, generator)
            for s in strategies:
                s.after_step(run, view)

        x0 = run.x.detach()
        scores: dict[str, list[float]] = {}
        winner, decided_by = 0, None
        for s in strategies:
            sc = s.score(run, x0)
            if sc is None:
                continue
            scores[s.name] = [float(v) for v in sc]
            if s.selects and decided_by is None:
                winner, decided_by = int(torch.argmax(sc).item()), s.name  # argmax returns the first maximum
        for s in strategies:
            s.selected(run, winner, decided_by)
        return SampleResult(x0=x0, winner=winner, scores=scores, info=run.info, ancestry=run.ancestry.tolist())

    def _model_step(self, run: SamplerRun, k: int, t: Tensor, with_grad: bool, features: bool) -> StepView:
        policy = run.policy
        x_t = run.x.detach()
        if with_grad:
            x_t = x_t.requires_grad_(True)
        with torch.set_grad_enabled(with_grad):
            if features:
                out, run.features = policy.denoise_with_features(x_t, t, run.ctx)
                run.features = run.features.detach()
            else:
                out = policy.denoise(x_t, t, run.ctx)
        return StepView(run, k, t, x_t, out, with_grad)
