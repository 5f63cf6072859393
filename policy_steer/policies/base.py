"""The ``DenoisingPolicy`` contract: the only way the rest of policy-steer touches a frozen base policy.

An adapter wraps one family of lerobot policies and exposes its denoising loop piece by piece:

- ``spec``: horizon, action dim, family, default steps, control rate, observation features;
- ``prepare(obs) -> Context``: everything that depends on the observation only (encoders, the prefix
  KV cache of a VLA), computed once per chunk;
- ``expand(ctx, n) -> Context``: the same context for n candidates, without recomputing it;
- ``denoise(x_t, t, ctx)``: one call of the denoiser; eps / sample / velocity as ``schedule`` says;
- ``features(ctx)``: an embedding of the observation, for verifiers;
- ``denoise_with_features``: the denoiser output plus an internal per-candidate feature (TACO);
- ``normalize_actions`` / ``unnormalize_actions``: lerobot's processor statistics, differentiable.

``compute`` (:class:`policy_steer.policies.precision.Compute`) says how the network computes (dtype,
compiled denoiser, activation forms); whatever it says, ``denoise`` takes and returns float32 and
``denoise_with_features`` returns float32 features, so the sampler never sees another dtype.

All tensors on the sampling path are in the policy's *normalised* action space, [B, H, A], where H is
the model's full horizon (``model_horizon``) and A its action width (``model_action_dim``, which
may include padding the model carries); :meth:`DenoisingPolicy.chunk_slice` says which of those
actions form the chunk that is returned (lerobot drops the ones that belong to past observations).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import Tensor

from policy_steer.policies.precision import Compute
from policy_steer.schedules import Schedule
from policy_steer.types import Observation, PolicySpec


@dataclass
class Context:
    """Observation-dependent state for a batch of ``batch_size`` samples.

    ``tensors`` hold a leading batch dimension and are repeated by the default :meth:`DenoisingPolicy.expand`;
    ``shared`` holds anything that is the same for every row (or that the adapter expands itself,
    such as a KV cache).
    """

    batch_size: int
    tensors: dict[str, Tensor] = field(default_factory=dict)
    shared: dict[str, Any] = field(default_factory=dict)


class DenoisingPolicy(ABC):
    """A frozen diffusion or flow-matching policy, opened up for steering. See the module docstring."""

    spec: PolicySpec
    schedule: Schedule
    device: torch.device = torch.device("cpu")
    trained_task: str | None = None  # the task of its training data, when the checkpoint says (policy_steer.json)
    feature_dim: int | None = None  # width of ``features(ctx)`` when the adapter states it (else read off its layers)
    path: Any = None  # the local folder it was loaded from (pathlib.Path), when loaded from one
    meta: Any = None  # the checkpoint's policy_steer.json (policies.loading.CheckpointMeta), when loaded from a folder
    compute: Compute = Compute()  # dtype / compile / activations the network runs with (float32 eager by default)

    # --- sizes -------------------------------------------------------------------------------------
    @property
    def model_horizon(self) -> int:
        """H of the tensors the denoiser works on (>= spec.horizon)."""
        return self.spec.horizon

    @property
    def model_action_dim(self) -> int:
        """A of the tensors the denoiser works on (>= spec.action_dim; VLAs pad to their max_action_dim)."""
        return self.spec.action_dim

    @property
    def chunk_slice(self) -> slice:
        """Which model-horizon rows form the returned chunk (the first one runs at the chunk's start_step)."""
        return slice(0, self.spec.horizon)

    # --- the loop, piece by piece -----------------------------------------------------------------
    @abstractmethod
    def prepare(self, obs: Observation) -> Context:
        """Encode one observation (batch 1). Raw arrays in, as robots send them (uint8 HWC images)."""

    def expand(self, ctx: Context, n: int) -> Context:
        """Repeat each row of ``ctx`` n times (row-major: rows i*n .. i*n+n-1 come from row i)."""
        if n == 1:
            return ctx
        tensors = {k: v.repeat_interleave(n, dim=0) for k, v in ctx.tensors.items()}
        return replace(ctx, batch_size=ctx.batch_size * n, tensors=tensors)

    @abstractmethod
    def denoise(self, x_t: Tensor, t: Tensor, ctx: Context) -> Tensor:
        """One denoiser call. x_t [B, H, A] normalised; t [B] (diffusion: long timesteps, flow: float time)."""

    def denoise_with_features(self, x_t: Tensor, t: Tensor, ctx: Context) -> tuple[Tensor, Tensor]:
        """Denoiser output [B, H, A] and an internal feature [B, F] of each candidate (for TACO)."""
        raise NotImplementedError(f"{type(self).__name__} does not expose an internal feature")

    @abstractmethod
    def features(self, ctx: Context) -> Tensor:
        """[B, F] embedding of the observation (the conditioning the denoiser sees)."""

    def make_noise(self, batch_size: int, generator: torch.Generator | None = None) -> Tensor:
        """Initial sample [B, H, A] from the prior, drawn the way the lerobot policy draws it."""
        shape = (batch_size, self.model_horizon, self.model_action_dim)
        return torch.randn(shape, generator=generator, device=self.device, dtype=torch.float32)

    # --- units --------------------------------------------------------------------------------------
    @abstractmethod
    def unnormalize_actions(self, x: Tensor) -> Tensor:
        """Normalised [..., A] -> policy output units [..., A]; differentiable."""

    @abstractmethod
    def normalize_actions(self, a: Tensor) -> Tensor:
        """Policy output units [..., A] -> normalised [..., A]; differentiable."""

    def reset(self) -> None:
        """Forget observation history (call at episode start)."""

    def export_session_state(self) -> Any:
        """Per-episode state (the observation history), so one model can serve several robots."""
        history = getattr(self, "history", None)
        return None if history is None else history.export()

    def import_session_state(self, state: Any) -> None:
        history = getattr(self, "history", None)
        if history is not None:
            history.load(state)
