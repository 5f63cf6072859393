"""SteeredPolicy: a frozen base policy + the sampler + strategies, one chunk per call."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from policy_steer.errors import CONTEXT_MISMATCH, CONTEXT_REQUIRED, ConfigError, SteeringRefused, ValidationError
from policy_steer.policies.base import DenoisingPolicy
from policy_steer.sampler import Sampler, SamplerConfig
from policy_steer.steering.base import Strategy
from policy_steer.types import OBS_STATE, STEP, TASK, Chunk, EpisodeContext, Observation


class SteeredPolicy:
    """``predict_chunk(obs, prefix=None) -> Chunk``.

    The observation is prepared once, expanded to as many candidates as the strategies ask for (the
    largest ``candidates``), sampled with fresh noise from this object's generator (``seed`` makes a
    run reproducible), and the winning candidate is returned in policy output units.

    Episodes: ``start_episode(context, seed)`` checks that every strategy can act with the episode's
    context (:class:`~policy_steer.errors.SteeringRefused` otherwise, and nothing changes), clears the
    history, reseeds and tells the strategies; ``update_context(context)`` hands them the scene as it
    is now. Every chunk's ``info["strategies"]`` maps each strategy to whether it acted on the chunk.

    ``keep_candidates`` (off by default; a recorder turns it on): every chunk's info also holds
    ``candidate_actions``, float32 [M, H, A] in policy output units (row ``info["winner"]`` is the
    chunk), and ``ancestry`` [M] (which initial sample each candidate descends from after resampling),
    so that each candidate can be drawn with its score (``info["steer"][strategy]["scores"]``). It only
    copies what the sampler already computed: the chunk and the noise stream are the same either way.
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
        self.context: EpisodeContext | None = None  # the current episode's (None: no episode started)
        self.keep_candidates = False  # also return every candidate's actions in the chunk's info (class docstring)

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
        from policy_steer.steering.registry import build_steering, check_settings

        settings = dict(settings or {})
        check_settings(method, settings)
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
        from policy_steer.steering.registry import build_steering, check_settings

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
            check_settings(method, settings)
            setup = build_steering(self.policy, method, settings)
            sampler = Sampler(self.policy, setup.sampler or self.sampler_config)
            if self.context is not None:  # mid-episode: the new strategies must be able to act in it
                self._check(setup.strategies, self.context)
                for s in setup.strategies:
                    s.reset_episode(self.context)
            self.strategies, self.sampler = setup.strategies, sampler
            self.method, self.method_settings = method, settings
        self.task = task
        return {"method": self.method, **self.method_settings}

    def export_session_state(self) -> Any:
        """Everything per episode (history, noise stream, context, strategies' state), so one policy
        can interleave several robots' episodes (the server swaps it per session)."""
        return {
            "policy": self.policy.export_session_state(),
            "generator": self.generator.get_state(),
            "context": self.context,
            "strategies": [s.export_episode_state() for s in self.strategies],
        }

    def import_session_state(self, state: Any) -> None:
        self.policy.import_session_state(state["policy"])
        self.generator.set_state(state["generator"])
        self.context = state["context"]
        saved = state["strategies"]
        for s, st in zip(self.strategies, saved if len(saved) == len(self.strategies) else [None] * len(self.strategies)):
            s.import_episode_state(st)

    @property
    def spec(self):
        return self.policy.spec

    @property
    def folder(self) -> str | None:
        """The checkpoint folder of the base policy (a server's default verifier root), when known."""
        return None if self.policy.path is None else str(self.policy.path)

    @property
    def candidates(self) -> int:
        return max([s.candidates for s in self.strategies], default=1)

    @property
    def wants_prefix(self) -> bool:
        """Whether a strategy reads the previous plan (the runtime then sends it)."""
        return any(s.wants_prefix for s in self.strategies)

    def refusals(self, context: EpisodeContext) -> list[tuple[str, str, str]]:
        """(strategy, code, reason) for every strategy that cannot act in an episode with ``context``."""
        out = []
        mine = self.policy.trained_task
        if context.task is not None and mine is not None and context.task != mine:
            out.append(("policy", CONTEXT_MISMATCH, f"the context is for task {context.task!r}; this policy was trained on {mine!r}"))
        if context.robot is not None and context.robot.robot_state_dim > 0:
            st = self.policy.spec.observation.get(OBS_STATE)
            if st is not None and context.robot.robot_state_dim > st.shape[0]:
                out.append(("policy", CONTEXT_MISMATCH,
                            f"the robot's state has {context.robot.robot_state_dim} robot dims; the policy's whole state has {st.shape[0]}"))
        for s in self.strategies:
            why = s.refusal(context)
            if why is not None:
                out.append((s.name, CONTEXT_REQUIRED, why))
        return out

    def _check(self, strategies: list[Strategy], context: EpisodeContext) -> None:
        saved, self.strategies = self.strategies, strategies
        try:
            problems = self.refusals(context)
        finally:
            self.strategies = saved
        if problems:
            who, code, why = problems[0]
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            raise SteeringRefused(code, f"{who}: {why}{more}", strategy=who)

    def start_episode(self, context: EpisodeContext | None = None, seed: int | None = None) -> dict[str, Any]:
        """Start an episode with ``context`` (None: an empty one); returns the strategies in force.

        Raises SteeringRefused (and changes nothing) when a strategy cannot act with this context.
        ``seed`` (or ``context.seed``) reseeds the noise stream.
        """
        context = context or EpisodeContext()
        self._check(self.strategies, context)
        self.policy.reset()
        seed = context.seed if seed is None else seed
        if seed is not None:
            self.generator.manual_seed(int(seed))
        self.context = context
        for s in self.strategies:
            s.reset_episode(context)
        return {"method": self.method, "strategies": [s.name for s in self.strategies]}

    def update_context(self, context: EpisodeContext) -> None:
        """The episode's scene now (objects moved); the episode goes on.

        Checked like an episode start (a context for another task, a scene taken away under VLS):
        SteeringRefused, and the context in force stays."""
        if self.context is None:
            raise ConfigError("update_context before start_episode: no episode is running")
        self._check(self.strategies, context)
        self.context = context
        for s in self.strategies:
            s.update_context(context)

    def reset(self, seed: int | None = None, context: EpisodeContext | None = None) -> None:
        """Start an episode (:meth:`start_episode`); kept for callers that only reset."""
        self.start_episode(context, seed=seed)

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

        By default (docs/protocol.md, `observe`) the prefix holds actions already committed before ``start_step``.
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
            "strategies": {s.name: bool(s.acted()) for s in self.strategies},
        }
        for name, sc in result.scores.items():
            info["steer"].setdefault(name, {})["scores"] = sc
        if self.keep_candidates:
            every = policy.unnormalize_actions(result.x0[:, policy.chunk_slice]).cpu().numpy().astype(np.float32)
            info["candidate_actions"] = every  # [M, H, A]; types.RECORDING_ONLY_INFO: never sent over the wire
            info["ancestry"] = list(result.ancestry)
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
