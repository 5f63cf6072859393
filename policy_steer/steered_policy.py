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
from policy_steer.types import STEP, TASK, Chunk, Observation


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
        self.sampler_config = sampler or SamplerConfig()
        self.sampler = Sampler(policy, self.sampler_config)
        self.generator = torch.Generator(device=policy.device)
        self.generator.manual_seed(seed if seed is not None else int(torch.seed() % (2**63)))
        self.task: str | None = None  # an instruction that overrides the observation's (``configure``)
        # The steering method and settings this policy was built with; ``configure`` starts from them.
        self.method = "none"
        self.method_settings: dict[str, Any] = {}
        self._default = ("none", {})

    @classmethod
    def from_method(
        cls,
        policy: DenoisingPolicy,
        method: str = "none",
        settings: dict[str, Any] | None = None,
        sampler: SamplerConfig | None = None,
        seed: int | None = None,
    ) -> "SteeredPolicy":
        """Build the strategies of a registered steering method (``"none"``, ``"taco"``, ``"taco+vls"``, ...)."""
        from policy_steer.steering.registry import build_steering

        settings = dict(settings or {})
        setup = build_steering(policy, method, settings)
        steered = cls(policy, setup.strategies, sampler=setup.sampler or sampler, seed=seed)
        steered.method, steered.method_settings = method, settings
        steered._default = (method, dict(settings))
        return steered

    def configure(self, task: str | None = None, steer: dict[str, Any] | None = None) -> dict[str, Any]:
        """Change the instruction and the steering settings (the protocol's ``configure``).

        ``steer`` is the whole map wanted, e.g. ``{"method": "taco", "candidates": 8}``; ``{}`` means
        this policy's defaults; a key set to None falls back to its default. Returns the settings now
        in force. An unknown method or a bad value raises ConfigError and changes nothing.
        """
        from policy_steer.steering.registry import build_steering

        if steer is not None:
            method, settings = self._default[0], dict(self._default[1])
            for key, value in steer.items():
                if key == "method":
                    method = self._default[0] if value is None else str(value)
                elif value is None:
                    settings.pop(key, None)
                    if key in self._default[1]:
                        settings[key] = self._default[1][key]
                else:
                    settings[key] = value
            setup = build_steering(self.policy, method, settings)
            self.strategies = setup.strategies
            self.sampler = Sampler(self.policy, setup.sampler or self.sampler_config)
            self.method, self.method_settings = method, settings
        self.task = task
        return {"method": self.method, **self.method_settings}

    def export_session_state(self) -> Any:
        return self.policy.export_session_state()

    def import_session_state(self, state: Any) -> None:
        self.policy.import_session_state(state)

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
        self,
        obs: Observation,
        prefix: np.ndarray | None = None,
        start_step: int | None = None,
        prefix_start: int | None = None,
        prefix_committed: int | None = None,
    ) -> Chunk:
        """One chunk for ``obs``; ``prefix`` [P, A] (policy units) is the previous plan around its start.

        By default (PROTOCOL.md) the prefix holds actions already committed before ``start_step``.
        ``prefix_start`` (the control index of its row 0) and ``prefix_committed`` (how many of its
        leading rows run for sure) let a runtime pass a longer previous plan that overlaps the chunk
        (RTC's soft-masked inpainting); strategies that do not read a prefix ignore all three.
        """
        t0 = time.perf_counter()
        if self.task is not None:
            obs = {**obs, TASK: self.task}
        policy = self.policy
        n = self.candidates
        ctx = policy.expand(policy.prepare(obs), n)
        t_prep = time.perf_counter()
        noise = policy.make_noise(n, self.generator)
        prefix_t = None if prefix is None else self._prefix_tensor(prefix)
        step = int(obs.get(STEP, 0)) if start_step is None else int(start_step)
        offset = None
        if prefix_t is not None and prefix_start is not None:
            offset = int(prefix_start) - step
        result = self.sampler.sample(
            ctx, noise, self.strategies, generator=self.generator, prefix=prefix_t, obs=obs,
            prefix_offset=offset, prefix_committed=prefix_committed,
        )
        x = result.x0[result.winner, policy.chunk_slice]
        actions = policy.unnormalize_actions(x).cpu().numpy().astype(np.float32)
        if not np.all(np.isfinite(actions)):
            raise ValidationError("the policy produced non-finite actions; refusing to return them")
        t1 = time.perf_counter()
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
