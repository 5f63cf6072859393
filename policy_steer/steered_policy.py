"""SteeredPolicy: a frozen base policy + the sampler + strategies, one chunk per call."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from policy_steer.errors import CONTEXT_MISMATCH, CONTEXT_REQUIRED, ConfigError, SteeringRefused, ValidationError
from policy_steer.policies.base import DenoisingPolicy
from policy_steer.sampler import SampleResult, Sampler, SamplerConfig
from policy_steer.steering.base import Strategy
from policy_steer.types import OBS_STATE, STEP, TASK, Chunk, EpisodeContext, Observation

if TYPE_CHECKING:
    from policy_steer.transport.inference import BatchItem


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

    Several robots (``predict_chunks``, a server's ``--max_batch``): their observations share one
    sampling run while each keeps its own history, noise stream, context and strategies' state.
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
        return self._chunk(result, step, t0, t_prep)

    def _chunk(self, result: SampleResult, step: int, t0: float, t_prep: float) -> Chunk:
        """The winner of ``result`` in policy output units, with the chunk's info (the strategies in force
        hold the state of the session it is for: ``acted()`` is read here)."""
        policy = self.policy
        x = result.x0[result.winner, policy.chunk_slice]
        actions = policy.unnormalize_actions(x).cpu().numpy().astype(np.float32)
        if not np.all(np.isfinite(actions)):
            raise ValidationError("the policy produced non-finite actions; refusing to return them")
        t1 = time.perf_counter()
        info: dict[str, Any] = {
            "latency_ms": (t1 - t0) * 1e3,
            "prepare_ms": (t_prep - t0) * 1e3,
            "candidates": int(result.x0.shape[0]),
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

    # --- several sessions in one sampling run (the server's BatchPolicy) ------------------------------
    @property
    def shares_runs(self) -> bool:
        """Whether the strategies in force let several sessions share one sampling run (all ``batchable``)."""
        return all(s.batchable for s in self.strategies)

    def end_session(self, session_id: str) -> None:
        """Nothing to forget: a session's state travels in its :class:`BatchItem` (``item.state``)."""

    @torch.no_grad()
    def predict_chunks(self, items: list["BatchItem"]) -> list[Chunk]:
        """Several sessions' chunks, their candidates sampled in one run (one denoiser call per step).

        ``item.state`` is the session's state as :meth:`export_session_state` returns it, its episode
        already started (None, for a lone item only: the state this policy holds now); on return it
        holds the session's state after its chunk, and this policy's own state is what it was before
        the call (several items without a state: ConfigError, they would draw the same noise). Each session's
        observation is prepared with its own history and its candidates drawn from its own noise
        stream, then every session's rows go through :meth:`Sampler.sample_runs`, where its strategies
        score and select among its own rows only. So chunk i is the chunk :meth:`predict_chunk` would
        return for item i alone, to float tolerance (a batched matrix product may round differently).

        Its info is predict_chunk's (``latency_ms`` is the whole call's) plus ``batch``: how many
        sessions shared the run. A strategy in force that is not ``batchable`` (then even for a lone
        item), or a context that cannot be stacked (``Context.shared``: a VLA's prefix KV cache is built
        per observation), runs every item alone through predict_chunk: ``batch`` 1 and ``alone`` saying why.
        """
        items = list(items)
        if len(items) > 1 and any(it.state is None for it in items):
            missing = [it.session for it in items if it.state is None]
            raise ConfigError(
                f"predict_chunks: sessions {missing} have no state (BatchItem.state); several sessions each need "
                "their own (export_session_state() after their start_episode), or they would draw the same noise"
            )
        t0 = time.perf_counter()
        live = self.export_session_state()
        try:
            why = None
            if not self.shares_runs:  # said even for a lone item: a batching server runs those one by one
                names = [s.name for s in self.strategies if not s.batchable]
                why = f"strategies {', '.join(names)} are not batchable"
            chunks = self._shared_run(items, t0) if len(items) > 1 and why is None else None
            if chunks is None:
                if why is None and len(items) > 1:
                    why = "the policy's context holds per-observation shared state (Context.shared) that cannot be stacked"
                chunks = [self._alone(it, why) for it in items]
            return chunks
        finally:
            self.import_session_state(live)

    def _alone(self, item: "BatchItem", why: str | None) -> Chunk:
        """One item through :meth:`predict_chunk` under its session's state."""
        if item.state is not None:
            self.import_session_state(item.state)
        chunk = self.predict_chunk(
            item.obs, prefix=item.prefix, start_step=item.start_step, prefix_start=item.prefix_start,
            prefix_committed=item.prefix_committed,
        )
        item.state = self.export_session_state()
        chunk.info["batch"] = 1
        if why is not None:
            chunk.info["alone"] = why
        return chunk

    def _shared_run(self, items: list["BatchItem"], t0: float) -> list[Chunk] | None:
        """Every item in one :meth:`Sampler.sample_runs` (None, nothing changed: the contexts cannot be stacked)."""
        policy, n = self.policy, self.candidates
        runs, states, prep_ms = [], [], []
        for it in items:  # each session under its own state: history, noise stream, context
            tp = time.perf_counter()
            if it.state is not None:
                self.import_session_state(it.state)
            obs = it.obs if self.task is None else {**it.obs, TASK: self.task}
            ctx = policy.expand(policy.prepare(obs), n)
            if ctx.shared:
                return None
            prep_ms.append((time.perf_counter() - tp) * 1e3)
            generator = torch.Generator(device=policy.device)
            generator.set_state(self.generator.get_state())
            noise = policy.make_noise(n, generator)
            step = int(obs.get(STEP, 0)) if it.start_step is None else int(it.start_step)
            prefix_t = None if it.prefix is None else self._prefix_tensor(it.prefix)
            offset = None if prefix_t is None or it.prefix_start is None else int(it.prefix_start) - step
            run = self.sampler.new_run(
                ctx, noise, self.strategies, generator=generator, prefix=prefix_t, obs=obs,
                prefix_offset=offset, prefix_committed=it.prefix_committed,
            )
            run.episode_states = [s.export_episode_state() for s in self.strategies]
            runs.append(run)
            states.append((step, self.policy.export_session_state(), self.context))
        first = runs[0].ctx
        stacked = replace(first, batch_size=sum(r.ctx.batch_size for r in runs),
                          tensors={k: torch.cat([r.ctx.tensors[k] for r in runs]) for k in first.tensors})
        results = self.sampler.sample_runs(stacked, runs)
        latency_ms = (time.perf_counter() - t0) * 1e3
        chunks = []
        for it, run, result, (step, policy_state, context), ms in zip(items, runs, results, states, prep_ms):
            for s, st in zip(self.strategies, run.episode_states):  # acted() reads the session's own state
                s.import_episode_state(st)
            chunks.append(self._chunk(result, step, t0, t0 + ms / 1e3))
            chunks[-1].info.update({"latency_ms": latency_ms, "batch": len(items)})
            it.state = {"policy": policy_state, "generator": run.generator.get_state(), "context": context,
                        "strategies": run.episode_states}
        return chunks

    def _prefix_tensor(self, prefix: np.ndarray) -> torch.Tensor:
        prefix = np.asarray(prefix, dtype=np.float32)
        a = self.policy.spec.action_dim
        if prefix.ndim != 2 or prefix.shape[1] != a:
            raise ValidationError(f"prefix must be [d, {a}], got shape {prefix.shape}")
        if not np.all(np.isfinite(prefix)):
            raise ValidationError("prefix contains non-finite values")
        t = torch.from_numpy(prefix).to(self.policy.device)
        return self.policy.normalize_actions(t)
