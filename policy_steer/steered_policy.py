"""SteeredPolicy: a frozen base policy + the sampler + strategies, one chunk per call."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from policy_steer.errors import ValidationError
from policy_steer.policies.base import DenoisingPolicy
from policy_steer.sampler import Sampler, SamplerConfig
from policy_steer.steering.base import Strategy
from policy_steer.types import STEP, Chunk, Observation


class SteeredPolicy:
    """``predict_chunk(obs, prefix=None) -> Chunk``.

    The observation is prepared once, expanded to as many candidates as the strategies ask for (the
    largest ``candidates``), sampled with fresh noise from this object's generator (``seed`` makes a
    run reproducible), and the winning candidate is returned in policy output units.
    """

    def __init__(
        self,
        policy: DenoisingPolicy,
        strategies: list[Strategy] | None = None,
        sampler: SamplerConfig | None = None,
        seed: int | None = None,
    ) -> None:
        self.policy = policy
        self.strategies = list(strategies or [])
        self.sampler = Sampler(policy, sampler)
        self.generator = torch.Generator(device=policy.device)
        self.generator.manual_seed(seed if seed is not None else int(torch.seed() % (2**63)))

    @property
    def spec(self):
        return self.policy.spec

    @property
    def candidates(self) -> int:
        return max([s.candidates for s in self.strategies], default=1)

    def reset(self, seed: int | None = None, episode: dict[str, Any] | None = None) -> None:
        """Start an episode: clear the policy's history, reseed if asked, tell the strategies.

        ``episode`` carries what strategies may need to know about the episode (``task``, ``variant``,
        ``instruction``, ``scene``, ``robot``); it is passed to each strategy's ``reset_episode``.
        """
        self.policy.reset()
        if seed is not None:
            self.generator.manual_seed(seed)
        for s in self.strategies:
            s.reset_episode(episode or {})

    @torch.no_grad()
    def predict_chunk(
        self, obs: Observation, prefix: np.ndarray | None = None, start_step: int | None = None
    ) -> Chunk:
        """One chunk for ``obs``; ``prefix`` [d, A] (policy units) are actions already committed before it."""
        t0 = time.perf_counter()
        policy = self.policy
        n = self.candidates
        ctx = policy.expand(policy.prepare(obs), n)
        t_prep = time.perf_counter()
        noise = policy.make_noise(n, self.generator)
        prefix_t = None if prefix is None else self._prefix_tensor(prefix)
        result = self.sampler.sample(ctx, noise, self.strategies, generator=self.generator, prefix=prefix_t, obs=obs)
        x = result.x0[result.winner, policy.chunk_slice]
        actions = policy.unnormalize_actions(x).cpu().numpy().astype(np.float32)
        if not np.all(np.isfinite(actions)):
            raise ValidationError("the policy produced non-finite actions; refusing to return them")
        t1 = time.perf_counter()
        step = int(obs.get(STEP, 0)) if start_step is None else int(start_step)
        info: dict[str, Any] = {
            "latency_ms": (t1 - t0) * 1e3,
            "prepare_ms": (t_prep - t0) * 1e3,
            "candidates": n,
            "winner": result.winner,
            "steer": dict(result.info),
        }
        for name, sc in result.scores.items():
            info["steer"].setdefault(name, {})["scores"] = sc
        return Chunk(actions=actions, start_step=step, info=info)

    def _prefix_tensor(self, prefix: np.ndarray) -> torch.Tensor:
        prefix = np.asarray(prefix, dtype=np.float32)
        a = self.policy.spec.action_dim
        if prefix.ndim != 2 or prefix.shape[1] != a:
            raise ValidationError(f"prefix must be [d, {a}], got shape {prefix.shape}")
        if not np.all(np.isfinite(prefix)):
            raise ValidationError("prefix contains non-finite values")
        t = torch.from_numpy(prefix).to(self.policy.device)
        return self.policy.normalize_actions(t)
