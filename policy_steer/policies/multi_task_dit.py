"""Adapter for lerobot's ``multi_task_dit`` (a DiT over the action chunk, AdaLN-conditioned).

The observation encoder concatenates, for each of the last ``n_obs_steps`` frames, the normalised
state, the CLIP-vision CLS token of each camera (when the policy has cameras) and a learned
projection of the frozen CLIP text encoder's pooled instruction; the transformer denoises the whole
horizon with that vector (plus a time embedding) as AdaLN conditioning. Both objectives work:

- ``objective="flow_matching"``: velocity prediction on lerobot's path x_t = t x0 + (1 - (1 -
  sigma_min) t) n, time 0 = noise -> 1 = data on a ``linspace`` grid
  (:func:`policy_steer.schedules.dit_path`); the sampler's Euler plan is lerobot's ``_euler_integrate``.
  lerobot's ``rk4`` integrator has no sampler plan: such a checkpoint is sampled with Euler (a
  warning says so) and does not match lerobot's chunks.
- ``objective="diffusion"``: eps or sample prediction with the policy's own diffusers DDPM/DDIM
  scheduler (:class:`policy_steer.schedules.DiffusionSchedule`).

- ``prepare``: pre-processor (tokenise, normalise) -> observation history (``n_obs_steps`` frames,
  padded with the first one like lerobot's queues) -> ``observation_encoder.encode``: [1, G].
- ``denoise``: one ``noise_predictor`` call on [B, horizon, A] (no padding: A = the action dim).
- ``features(ctx)``: the conditioning vector [B, G].
- ``denoise_with_features``: also returns the last transformer block's hidden state at the token of
  the chunk's first action (row ``n_obs_steps - 1``): [B, hidden_dim], our reading of TACO's "first
  action token of the last layer" for a DiT.
- ``compute`` (dtype, compiled transformer, sigmoid activations): :mod:`policy_steer.policies.precision`;
  the conditioning vector is kept in float32 in the context, outputs and features are float32.
- chunks start at model row ``n_obs_steps - 1``, so ``spec.horizon = horizon - n_obs_steps + 1``.
"""

from __future__ import annotations

import logging
import torch
from torch import Tensor

from policy_steer.policies.base import Context, DenoisingPolicy
from policy_steer.policies.history import ObservationHistory
from policy_steer.policies.normalization import ActionNormalizer
from policy_steer.policies.observation import spec_features_from_lerobot, to_policy_inputs
from policy_steer.policies.precision import Compute, apply_compute
from policy_steer.schedules import DiffusionSchedule, FlowSchedule, dit_path
from policy_steer.types import OBS_IMAGES, OBS_STATE, STEP, Observation, PolicySpec

log = logging.getLogger(__name__)

LANG_KEYS = ("observation.language.tokens", "observation.language.attention_mask")


class MultiTaskDiTAdapter(DenoisingPolicy):
    def __init__(self, policy, preprocessor, postprocessor, control_hz: float = 10.0, name: str = "multi_task_dit",
                 compute: Compute | None = None) -> None:
        policy.eval()
        policy.requires_grad_(False)  # frozen: guidance differentiates w.r.t. the sample, never the weights
        self.policy = policy
        self.config = cfg = policy.config
        self.preprocessor = preprocessor
        self.postprocessor = postprocessor
        self.normalizer = ActionNormalizer(postprocessor)
        self.device = next(policy.parameters()).device
        self.net = policy.noise_predictor
        self.feature_dim = int(cfg.hidden_dim)  # features(): the transformer's hidden state
        self.encoder = policy.observation_encoder
        objective = policy.objective
        if cfg.is_flow_matching:
            if cfg.integration_method != "euler":
                log.warning(
                    "%s: lerobot integrates this policy with %r; policy-steer's sampler uses Euler (chunks will "
                    "differ from lerobot's)", name, cfg.integration_method,
                )
            num_steps = int(cfg.num_integration_steps)
            self.schedule = FlowSchedule(dit_path(float(cfg.sigma_min)), default_steps=num_steps)
        else:
            num_steps = int(objective.num_inference_steps)
            self.schedule = DiffusionSchedule(objective.noise_scheduler, default_steps=num_steps)
        self.spec = PolicySpec(
            name=name,
            family="flow" if cfg.is_flow_matching else "diffusion",
            horizon=cfg.horizon - cfg.n_obs_steps + 1,
            action_dim=int(cfg.action_feature.shape[0]),
            n_action_steps=int(cfg.n_action_steps),
            num_steps=num_steps,
            control_hz=float(control_hz),
            observation=spec_features_from_lerobot(cfg.input_features),
            n_obs_steps=int(cfg.n_obs_steps),
        )
        self.encode_calls = 0  # observation encoder runs (one per prepare)
        self.history = ObservationHistory(cfg.n_obs_steps)
        self._last_hidden: Tensor | None = None
        self.net.transformer_blocks[-1].register_forward_hook(self._keep_last_hidden)
        self.compute = compute or Compute()
        self._net = apply_compute(self.compute, policy, self.net)  # the transformer as called (compiled or not)

    @property
    def model_horizon(self) -> int:
        return self.config.horizon

    @property
    def chunk_slice(self) -> slice:
        start = self.config.n_obs_steps - 1
        return slice(start, start + self.spec.horizon)

    def reset(self) -> None:
        self.history.clear()

    def _keep_last_hidden(self, module, inputs, output) -> None:
        self._last_hidden = output  # [B, horizon, hidden_dim]

    @torch.no_grad()
    def prepare(self, obs: Observation) -> Context:
        batch = self.preprocessor(to_policy_inputs(obs, self.spec.observation, self.device))
        frame = {OBS_STATE: batch[OBS_STATE]}
        if self.config.image_features:  # [1, n_cam, C, H, W], as lerobot's _prepare_batch stacks them
            frame[OBS_IMAGES] = torch.stack([batch[k] for k in self.config.image_features], dim=-4)
        self.history.push(obs.get(STEP), frame)
        stacked = self.history.stacked()  # [1, n_obs, ...]
        stacked.update({k: batch[k] for k in LANG_KEYS if k in batch})
        with self.compute.autocast(self.device):
            cond = self.encoder.encode(stacked)
        self.encode_calls += 1
        return Context(batch_size=1, tensors={"cond": cond.float()})

    def denoise(self, x_t: Tensor, t: Tensor, ctx: Context) -> Tensor:
        with self.compute.autocast(self.device):
            out = self._net(x_t, t, conditioning_vec=ctx.tensors["cond"])
        return out.float()

    def denoise_with_features(self, x_t: Tensor, t: Tensor, ctx: Context) -> tuple[Tensor, Tensor]:
        out = self.denoise(x_t, t, ctx)
        return out, self._last_hidden[:, self.chunk_slice.start].float()

    def features(self, ctx: Context) -> Tensor:
        return ctx.tensors["cond"]

    def unnormalize_actions(self, x: Tensor) -> Tensor:
        return self.normalizer.unnormalize(x)

    def normalize_actions(self, a: Tensor) -> Tensor:
        return self.normalizer.normalize(a)
