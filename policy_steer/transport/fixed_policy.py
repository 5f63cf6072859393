"""A policy that returns the same chunk for every observation: a tool for transport tests and benchmarks.

It is not a model and not a stand-in for lerobot: it implements the whole served-policy contract
(:class:`~policy_steer.transport.inference.ServedPolicy`, and :class:`~policy_steer.transport.inference.BatchPolicy`
for batching) so that only the transport is timed, and it can echo what reached it (sums of the arrays,
the task, the step, the episode context) so tests can check that the server delivered it intact.

Run a server with it (no torch import; starts in well under a second)::

    python -m policy_steer.transport.fixed_policy --bind tcp://127.0.0.1:5555 --state_dim 32 --cameras front:224x224

A chunk's cost can be made to depend on the settings a client chooses, as a real policy's does:
``--delay_per_candidate_s`` adds that much per ``candidates`` (or ``particles``) configured, and
``--busy torch`` spends the delay in torch matrix products instead of sleeping (a thread inside torch,
as a real policy's inference thread is; this imports torch).
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from policy_steer.config import StrList, parse_config
from policy_steer.errors import CONTEXT_MISMATCH, ConfigError, SteeringRefused
from policy_steer.transport.cli import ServerOptions
from policy_steer.types import (
    OBS_STATE,
    STEP,
    TASK,
    Chunk,
    EpisodeContext,
    FeatureSpec,
    Observation,
    PolicySpec,
    image_key,
)


def fixed_spec(
    state_dim: int = 32,
    cameras: dict[str, tuple[int, int]] | None = None,
    horizon: int = 16,
    action_dim: int = 7,
    control_hz: float = 10.0,
    n_action_steps: int = 8,
) -> PolicySpec:
    """A spec with a float32 state and uint8 [H, W, 3] cameras."""
    observation = {OBS_STATE: FeatureSpec("<f4", (state_dim,))}
    for cam, (h, w) in (cameras or {}).items():
        observation[image_key(cam)] = FeatureSpec("|u1", (h, w, 3))
    return PolicySpec(
        name="fixed-chunk",
        family="diffusion",
        horizon=horizon,
        action_dim=action_dim,
        n_action_steps=n_action_steps,
        num_steps=0,
        control_hz=control_hz,
        observation=observation,
    )


def context_summary(context: EpisodeContext | None) -> dict[str, Any] | None:
    """What the echo says about an episode context: its fields and the scene's object names and positions."""
    if context is None:
        return None
    scene = context.scene
    return {
        "instruction": context.instruction,
        "task": context.task,
        "variant": context.variant,
        "seed": context.seed,
        "stamp": context.stamp,
        "objects": None if scene is None else {o.name: list(o.position) for o in scene.objects},
        "robot": None if context.robot is None else context.robot.action_mode,
    }


class FixedChunkPolicy:
    """``predict_chunk`` returns ``actions`` (default: ``actions[i, j] = i + j / 100``) after ``delay_s``.

    ``echo``: put what arrived in ``info["echo"]`` (step, task, prefix rows, the sum of each array, the
    episode context). ``fail_task``: raise RuntimeError when the observation's task equals it (the
    server's ``internal`` path). ``trained_task``: an episode context for another task is refused
    ``context_mismatch``, as a checkpoint with a known task refuses it. It runs no strategies: every
    chunk says ``strategies: {}``.
    """

    def __init__(
        self,
        spec: PolicySpec,
        actions: np.ndarray | None = None,
        delay_s: float = 0.0,
        echo: bool = False,
        fail_task: str | None = None,
        trained_task: str | None = None,
        delay_per_candidate_s: float = 0.0,
        busy: str = "sleep",
    ) -> None:
        if busy not in ("sleep", "torch"):
            raise ConfigError(f"--busy must be sleep or torch, got {busy!r}")
        self.spec = spec
        self.delay_per_candidate_s = delay_per_candidate_s
        self.busy = busy
        self.wants_prefix = False
        if actions is None:
            h, a = spec.horizon, spec.action_dim
            actions = np.arange(h, dtype=np.float32)[:, None] + np.arange(a, dtype=np.float32)[None, :] / 100
        self.actions = np.ascontiguousarray(actions, dtype=np.float32)
        self.delay_s = delay_s
        self.echo = echo
        self.fail_task = fail_task
        self.calls = 0
        self.resets = 0
        self.batches: list[int] = []
        self.configure_calls = 0
        self.steer: dict[str, Any] = {}
        self.task: str | None = None
        self.trained_task = trained_task
        # per session (export_session_state / import_session_state)
        self.context: EpisodeContext | None = None
        self.episodes = 0
        self.ended_sessions: list[str] = []

    def predict_chunk(
        self,
        obs: Observation,
        prefix: np.ndarray | None = None,
        start_step: int | None = None,
        prefix_start: int | None = None,
        prefix_committed: int | None = None,
    ) -> Chunk:
        self.calls += 1
        self._spend()
        return self._chunk(obs, prefix, start_step)

    folder = None  # not loaded from a checkpoint

    @property
    def candidates(self) -> int:
        """Samples per observe as the settings in force say (``candidates`` or ``particles``; 1 without)."""
        n = 1
        for key in ("candidates", "particles"):
            try:
                n = max(n, int(self.steer.get(key) or 0))
            except (TypeError, ValueError, OverflowError):
                pass
        return n

    def _cost_s(self) -> float:
        """The delay of one chunk under the settings in force."""
        n = self.candidates if any(k in self.steer for k in ("candidates", "particles")) else 0
        return self.delay_s + self.delay_per_candidate_s * n

    def _spend(self) -> None:
        """Take the chunk's time: sleeping in short slices, or computing in torch (``busy``)."""
        end = time.monotonic() + self._cost_s()
        if self.busy == "torch":
            import torch

            x = torch.randn(256, 256)
            while time.monotonic() < end:
                x = torch.tanh(x @ x)  # each call releases the GIL for a few milliseconds
            return
        while (left := end - time.monotonic()) > 0:
            time.sleep(min(left, 0.02))

    shares_runs = True  # one delay for a whole batch, whatever the settings

    def predict_chunks(self, items: list[Any]) -> list[Chunk]:
        """The batched form (``BatchItem``s of several sessions): one delay for the whole batch."""
        self.calls += 1
        self.batches.append(len(items))
        self._spend()
        return [
            self._chunk(it.obs, it.prefix, it.start_step, new_episode=it.new_episode, context=it.context)
            for it in items
        ]

    def end_session(self, session_id: str) -> None:
        self.ended_sessions.append(session_id)

    def _chunk(
        self,
        obs: Observation,
        prefix: np.ndarray | None,
        start_step: int | None,
        new_episode: bool | None = None,
        context: EpisodeContext | None = None,
    ) -> Chunk:
        if self.fail_task is not None and obs.get(TASK) == self.fail_task:
            raise RuntimeError(f"fixed policy told to fail on task {self.fail_task!r}")
        step = int(obs.get(STEP, 0)) if start_step is None else int(start_step)
        info: dict[str, Any] = {"steer": {}, "strategies": {}}  # latency_ms: the server measures it
        if self.echo:
            info["echo"] = {
                "step": int(obs.get(STEP, -1)),
                "task": obs.get(TASK),
                "prefix_rows": None if prefix is None else int(prefix.shape[0]),
                "sums": {k: float(np.asarray(obs[k], dtype=np.float64).sum()) for k in self.spec.observation},
                "steer": dict(self.steer),
                "configured_task": self.task,
                "resets": self.resets,
                "configure_calls": self.configure_calls,
                "new_episode": new_episode,
                "context": context_summary(self.context if context is None else context),
                "episodes": self.episodes,
            }
        return Chunk(actions=self.actions.copy(), start_step=step, info=info)

    def configure(self, task: str | None = None, steer: dict[str, Any] | None = None) -> dict[str, Any]:
        """Accepts any settings except a key named ``invalid`` (to test the server's refusal path)."""
        self.configure_calls += 1
        if steer and "invalid" in steer:
            raise ValueError("steer setting 'invalid' is not accepted")
        self.task = task
        self.steer = dict(steer or {})
        return dict(self.steer)

    def start_episode(self, context: EpisodeContext | None = None, seed: int | None = None) -> dict[str, Any]:
        """A new episode; a context for a task other than ``trained_task`` is refused (nothing changes)."""
        context = context or EpisodeContext()
        if self.trained_task is not None and context.task is not None and context.task != self.trained_task:
            raise SteeringRefused(
                CONTEXT_MISMATCH,
                f"the context is for task {context.task!r}; this policy serves {self.trained_task!r}",
                strategy="policy",
            )
        self.resets += 1
        self.episodes += 1
        self.context = context
        return {"method": str(self.steer.get("method", "none")), "strategies": []}

    def update_context(self, context: EpisodeContext) -> None:
        if self.context is None:
            raise ConfigError("update_context before start_episode: no episode is running")
        self.context = context

    def export_session_state(self) -> Any:
        return {"context": self.context, "episodes": self.episodes}

    def import_session_state(self, state: Any) -> None:
        self.context, self.episodes = state["context"], state["episodes"]


@dataclass
class FixedServeConfig(ServerOptions):
    """``python -m policy_steer.transport.fixed_policy``: a server around :class:`FixedChunkPolicy`
    (the server options are ``serve``'s own)."""

    state_dim: int = 32
    cameras: StrList = field(default_factory=StrList)  # name:HxW, e.g. front:224x224,wrist:480x640
    horizon: int = 16
    action_dim: int = 7
    control_hz: float = 10.0
    delay_s: float = 0.0
    echo: bool = False
    fail_task: str | None = None
    trained_task: str | None = None  # an episode context for another task is refused context_mismatch
    delay_per_candidate_s: float = 0.0  # added to delay_s per configured candidate (or particle)
    busy: str = "sleep"  # sleep | torch: how a chunk's delay is spent


def _parse_cameras(items: list[str]) -> dict[str, tuple[int, int]]:
    cams = {}
    for item in items:
        name, _, size = item.partition(":")
        h, _, w = size.partition("x")
        cams[name] = (int(h), int(w))
    return cams


def main(argv: list[str] | None = None) -> int:
    from policy_steer.errors import PolicySteerError
    from policy_steer.transport.cli import Interrupted, StopSignals, serve_until_signal, server_config
    from policy_steer.transport.server import PolicyServer

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    with StopSignals() as signals:
        try:
            cfg = parse_config(FixedServeConfig, list(sys.argv[1:] if argv is None else argv))
            spec = fixed_spec(cfg.state_dim, _parse_cameras(cfg.cameras), cfg.horizon, cfg.action_dim, cfg.control_hz)
            policy = FixedChunkPolicy(
                spec, delay_s=cfg.delay_s, echo=cfg.echo, fail_task=cfg.fail_task, trained_task=cfg.trained_task,
                delay_per_candidate_s=cfg.delay_per_candidate_s, busy=cfg.busy,
            )
            if cfg.busy == "torch":
                import torch  # noqa: F401  (imported before serving, not in the first chunk)
            server = PolicyServer(policy, server_config(cfg, policy))
            signals.serving()
        except PolicySteerError as e:
            print(f"fixed_policy: error: {e}", file=sys.stderr)
            return 2
        except Interrupted:
            return 0
        try:
            serve_until_signal(
                server, signals, announce=lambda srv: f"ready {srv.endpoint} telemetry={srv.telemetry_endpoint}"
            )
        except PolicySteerError as e:  # e.g. the bind was refused
            print(f"fixed_policy: error: {e}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
