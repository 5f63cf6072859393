"""One sampling loop for both families (DDPM, DDIM, flow Euler, flow SDE), with strategy hooks.

The loop works in the policy's normalised action space on x [B, H, A]:

    x = noise
    for k in range(num_steps):
        out = policy.denoise(x, t_k, ctx)           # eps / sample / velocity
        strategies guide  (may change out)           # view.x0_hat is the clean-chunk estimate
        x = plan.step(x, out, k)                     # the policy's own update rule
        strategies after_step (may resample x)
    winner = argmax of the first selecting strategy's score

Several sessions' runs may share the loop (:meth:`Sampler.sample_runs`): one denoiser call per step
over all their rows, everything else (strategies, noise stream, scores, winner) per run.

See :mod:`policy_steer.steering.base` for the hook contract.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
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
    start_step: int = 0  # the first step the loop runs; a warm start sets it in begin() with run.x at that step's noise level
    # Several sessions sharing one loop (Sampler.sample_runs): this run's strategies' episode states,
    # put in force around each of their hooks. None: the strategies' own state is the run's (one run).
    episode_states: list[Any] | None = None

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


@contextmanager
def _episode_in_force(run: SamplerRun) -> Iterator[None]:
    """Around a run's hooks in a shared loop: its strategies hold its session's episode state."""
    if run.episode_states is None:
        yield
        return
    for s, state in zip(run.strategies, run.episode_states):
        s.import_episode_state(state)
    try:
        yield
    finally:
        run.episode_states = [s.export_episode_state() for s in run.strategies]


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
        run = self.new_run(ctx, noise, strategies, generator, prefix, obs, prefix_offset, prefix_committed)
        return self.sample_runs(ctx, [run])[0]

    def new_run(
        self,
        ctx: Context,
        noise: Tensor,
        strategies: list[Strategy] | None = None,
        generator: torch.Generator | None = None,
        prefix: Tensor | None = None,
        obs: dict[str, Any] | None = None,
        prefix_offset: int | None = None,
        prefix_committed: int | None = None,
    ) -> SamplerRun:
        """A run from ``noise`` [B, H, A] with ``ctx`` of B rows (arguments as :meth:`sample`), not started."""
        if ctx.batch_size != noise.shape[0]:
            raise ValueError(f"context has {ctx.batch_size} rows but noise has {noise.shape[0]}")
        return SamplerRun(
            policy=self.policy, plan=self._plan, ctx=ctx, x=noise, generator=generator, prefix=prefix, obs=obs,
            prefix_offset=(-int(prefix.shape[0]) if prefix is not None else 0) if prefix_offset is None else int(prefix_offset),
            prefix_committed=prefix_committed, strategies=list(strategies or []),
            ancestry=torch.arange(noise.shape[0], device=noise.device),
        )

    def sample_runs(self, ctx: Context, runs: list[SamplerRun]) -> list[SampleResult]:
        """The loop, for one run or for several sessions' runs sharing it (``SteeredPolicy.predict_chunks``).

        ``ctx`` holds every run's rows stacked in run order (one run: its own context). Each step is one
        denoiser call over all rows; each run's strategies then see a :class:`StepView` of their run's
        rows only, step them with their run's generator (a session's noise is what it would draw
        alone) and score and select among their own rows. Several runs need every strategy
        ``batchable`` and ``episode_states`` set on every run (its strategies' state is put in force
        around each of their hooks); a step that needs gradients cannot be shared (ValueError).
        """
        plan = self._plan
        shared = len(runs) > 1
        if shared:
            for r in runs:
                alone = [s.name for s in r.strategies if not s.batchable]
                if alone or r.episode_states is None:
                    raise ValueError(
                        f"runs cannot share a sampling loop: strategies {alone} are not batchable"
                        if alone else "runs sharing a sampling loop need episode_states"
                    )
        if ctx.batch_size != sum(r.batch_size for r in runs):
            raise ValueError(f"context has {ctx.batch_size} rows but the runs have {sum(r.batch_size for r in runs)}")
        for r in runs:
            with _episode_in_force(r):
                for s in r.strategies:
                    s.begin(r)
        everyone = [s for r in runs for s in r.strategies]
        want_features = any(s.wants_features for s in everyone)
        last = plan.num_steps - 1
        start = runs[0].start_step
        if not 0 <= start < plan.num_steps:
            raise ValueError(f"start_step must be in [0, {plan.num_steps}), got {start}")
        if any(r.start_step != start for r in runs):
            raise ValueError(f"runs sharing a sampling loop start at different steps: {[r.start_step for r in runs]}")
        for k in range(start, plan.num_steps):
            x = runs[0].x if not shared else torch.cat([r.x for r in runs])
            t = plan.model_time(k, x.shape[0], x.device)
            with_grad = any(s.needs_grad(k) for s in everyone)
            if with_grad and shared:
                raise ValueError(f"step {k} needs gradients: it cannot be shared by several sessions' runs")
            x_t, out, features = self._model_step(x, t, ctx, with_grad, want_features and k == last)
            views, lo = [], 0
            for r in runs:
                rows = slice(lo, lo + r.batch_size)
                lo = rows.stop
                part = (lambda v: v) if not shared else (lambda v, rows=rows: v[rows])  # one run: x_t stays the grad leaf
                if features is not None:
                    r.features = part(features)
                view = StepView(r, k, part(t), part(x_t), part(out), with_grad)
                with _episode_in_force(r):
                    for s in r.strategies:
                        s.guide(view)
                    if k == last:
                        r.x0_last = view.x0_hat.detach()
                views.append(view)
            with torch.no_grad():
                if shared and not plan.draws_noise(k):  # one update for every row: nobody's noise is drawn
                    x_new = plan.step(torch.cat([v.x_t.detach() for v in views]),
                                      torch.cat([v.out.detach() for v in views]), k, None)
                    updated = list(x_new.split([r.batch_size for r in runs]))
                else:  # each run's update draws from its own generator
                    updated = [plan.step(v.x_t.detach(), v.out.detach(), k, r.generator) for r, v in zip(runs, views)]
            for r, view, x_next in zip(runs, views, updated):
                r.x = x_next
                with _episode_in_force(r):
                    for s in r.strategies:
                        s.after_step(r, view)
        return [self._finish(r) for r in runs]

    @staticmethod
    def _finish(run: SamplerRun) -> SampleResult:
        """Score the run's final samples; the first selecting strategy picks the winner among its rows."""
        x0 = run.x.detach()
        scores: dict[str, list[float]] = {}
        winner, decided_by = 0, None
        with _episode_in_force(run):
            for s in run.strategies:
                sc = s.score(run, x0)
                if sc is None:
                    continue
                scores[s.name] = [float(v) for v in sc]
                if s.selects and decided_by is None:
                    winner, decided_by = int(torch.argmax(sc).item()), s.name  # argmax returns the first maximum
            for s in run.strategies:
                s.selected(run, winner, decided_by)
        return SampleResult(x0=x0, winner=winner, scores=scores, info=run.info, ancestry=run.ancestry.tolist())

    def _model_step(
        self, x: Tensor, t: Tensor, ctx: Context, with_grad: bool, features: bool
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """One denoiser call over every row: (x_t, out, feature [B, F] or None); x_t is a grad leaf when asked."""
        policy = self.policy
        x_t = x.detach()
        if with_grad:
            x_t = x_t.requires_grad_(True)
        feats = None
        with torch.set_grad_enabled(with_grad):
            if features:
                out, feats = policy.denoise_with_features(x_t, t, ctx)
                feats = feats.detach()
            else:
                out = policy.denoise(x_t, t, ctx)
        return x_t, out, feats
