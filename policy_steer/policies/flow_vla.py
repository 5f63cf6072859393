"""Adapters for lerobot's prefix-then-denoise flow-matching VLAs: pi0, pi05 and SmolVLA.

All three encode the observation once into a prefix (image tokens, language tokens, and for SmolVLA
the state token), run the VLM over it to fill a KV cache, and then integrate a velocity field with
an action expert that attends to that cache (``euler_integrate``: time 1 = noise -> 0 = actions,
``x += dt * v`` with ``dt = -1 / num_steps``; :data:`policy_steer.schedules.PI0_PATH`).

- ``prepare``: the policy's own pre-processor (normalisation, tokenisation; pi05 writes the
  discretised state into the prompt), the policy's own image / state preparation, ``embed_prefix``
  and one VLM forward with ``use_cache=True``: the prefix KV cache, computed **once** per chunk.
- ``expand(ctx, n)``: repeats each layer's cached keys / values, the prefix pad mask and (pi0) the
  padded state along the batch; nothing is recomputed.
- ``denoise(x_t, t, ctx)``: one ``denoise_step`` of the lerobot model (the action expert over the
  suffix, attending to the cache): the velocity v [B, H, A_model], t [B] float in (0, 1].
- ``features(ctx)``: the VLM's last hidden layer over the prefix, averaged over the valid (unpadded)
  prefix tokens: [B, vlm_width].
- ``denoise_with_features``: also returns TACO's feature, the first action token of the action
  expert's last hidden layer at that step (after the expert's final norm, exactly what
  ``action_out_proj`` reads): [B, expert_width]. Taken with a forward pre-hook on ``action_out_proj``.

**Compute.** ``--dtype bfloat16`` is lerobot's own ``dtype`` for pi0 / pi05 (set on the config
before the model is built by :func:`policy_steer.policies.loading.load_policy`: bfloat16 weights except
the parameters lerobot keeps in float32); the velocity and the feature come back as float32.
SmolVLA has no such option and ``--compile`` is not offered for these adapters yet: both are refused
by name when loading.

**Padding.** lerobot pads actions to ``max_action_dim`` inside the model and integrates all padded
dimensions (the padded noise dimensions feed the expert), so the sampler's tensors here are padded:
[B, chunk_size, max_action_dim] (``model_action_dim``), and ``make_noise`` draws that shape exactly as
lerobot's ``sample_noise`` does. ``spec.action_dim`` is the real action dimension.
``unnormalize_actions`` accepts [..., max_action_dim] (and slices off the padding) or
[..., action_dim]; ``normalize_actions`` returns [..., max_action_dim] with zeros in the padded
dimensions (what the model was trained on: lerobot pads training actions with zeros). The state is
padded to ``max_state_dim`` by the policy's own ``prepare_state`` (pi0, SmolVLA) or tokenised (pi05);
robots send the real state.

Cameras named ``empty_camera_*`` (lerobot's ``empty_cameras`` option) are not asked of robots: the
policy fills them itself, as lerobot does.
"""

from __future__ import annotations

import logging

import torch
from torch import Tensor

from policy_steer.errors import CheckpointError
from policy_steer.policies.base import Context, DenoisingPolicy
from policy_steer.policies.normalization import ActionNormalizer
from policy_steer.policies.observation import spec_features_from_lerobot, to_policy_inputs
from policy_steer.policies.precision import Compute
from policy_steer.schedules import PI0_PATH, FlowSchedule
from policy_steer.types import Observation, PolicySpec

log = logging.getLogger(__name__)

LANG_TOKENS = "observation.language.tokens"
LANG_MASK = "observation.language.attention_mask"
CACHE = "past_key_values"


def repeat_cache(cache, n: int):
    """A new ``DynamicCache`` whose every layer's keys / values are repeated n times along the batch.

    The original is left untouched (the constructor copies); ``n = 1`` gives a private copy, which
    SmolVLA's ``denoise_step`` may extend and crop in place without touching the context's cache.
    """
    if cache is None:
        return None
    from transformers import DynamicCache

    layers = tuple(
        (k.repeat_interleave(n, dim=0) if n > 1 else k, v.repeat_interleave(n, dim=0) if n > 1 else v, sw)
        for k, v, sw in cache
    )
    return DynamicCache(layers)


class FlowVLAAdapter(DenoisingPolicy):
    """Shared machinery; :class:`PI0Adapter`, :class:`PI05Adapter` and :class:`SmolVLAAdapter` say
    how their model's prefix and denoising step are called."""

    policy_type: str = ""
    _denoise_needs_state = False  # pi0 feeds the state to every denoising step

    def __init__(self, policy, preprocessor, postprocessor, control_hz: float = 10.0, name: str | None = None,
                 compute: Compute | None = None) -> None:
        policy.eval()
        policy.requires_grad_(False)  # frozen: guidance differentiates w.r.t. the sample, never the weights
        self.compute = compute or Compute()  # the dtype is lerobot's config.dtype, already applied
        self.policy = policy
        self.model = policy.model
        self.feature_dim = int(self.model.action_out_proj.in_features)  # features(): the action expert's last hidden
        self.config = cfg = policy.config
        self.preprocessor = preprocessor
        self.postprocessor = postprocessor
        self._check_supported(cfg)
        self.normalizer = ActionNormalizer(postprocessor)
        self.device = next(policy.parameters()).device
        self.max_action_dim = int(cfg.max_action_dim)
        observation = {
            k: v for k, v in spec_features_from_lerobot(cfg.input_features).items() if ".empty_camera_" not in k
        }
        self.spec = PolicySpec(
            name=name or self.policy_type,
            family="flow",
            horizon=int(cfg.chunk_size),
            action_dim=int(cfg.output_features["action"].shape[0]),
            n_action_steps=int(cfg.n_action_steps),
            num_steps=self._num_steps(cfg),
            control_hz=float(control_hz),
            observation=observation,
            n_obs_steps=int(cfg.n_obs_steps),
        )
        self.schedule = FlowSchedule(PI0_PATH, default_steps=self.spec.num_steps)
        self.prefix_calls = 0  # how many prefix forwards ran (one per prepare)
        self._first_action_token: Tensor | None = None
        self.model.action_out_proj.register_forward_pre_hook(self._keep_first_action_token)

    # --- per-policy pieces ---------------------------------------------------------------------------
    def _num_steps(self, cfg) -> int:
        return int(cfg.num_inference_steps)

    def _check_supported(self, cfg) -> None:
        if getattr(cfg, "use_relative_actions", False):
            raise CheckpointError(
                f"{self.policy_type} checkpoints with use_relative_actions=True are not supported: their "
                "post-processor adds the state back, which the differentiable action transform does not"
            )
        rtc = getattr(cfg, "rtc_config", None)
        if rtc is not None and rtc.enabled:
            log.warning("%s: lerobot's RTC is enabled in the config; policy-steer samples without it", self.policy_type)

    def _model_inputs(self, batch: dict) -> dict[str, Tensor]:
        """Pre-processed batch -> the tensors the model's prefix needs (images, masks, tokens, state)."""
        raise NotImplementedError

    def _prefix(self, inputs: dict[str, Tensor]) -> tuple[Tensor, Tensor, object]:
        """-> (prefix output [B, L, W], prefix pad mask [B, L], KV cache)."""
        raise NotImplementedError

    def _denoise_step(self, x_t: Tensor, t: Tensor, ctx: Context) -> Tensor:
        raise NotImplementedError

    # --- sizes ---------------------------------------------------------------------------------------
    @property
    def model_action_dim(self) -> int:
        return self.max_action_dim

    def make_noise(self, batch_size: int, generator: torch.Generator | None = None) -> Tensor:
        """[B, chunk_size, max_action_dim], drawn like lerobot's ``sample_noise`` (torch.normal, float32)."""
        shape = (batch_size, self.model_horizon, self.model_action_dim)
        return torch.normal(0.0, 1.0, size=shape, generator=generator, dtype=torch.float32, device=self.device)

    # --- the loop ------------------------------------------------------------------------------------
    @torch.no_grad()
    def prepare(self, obs: Observation) -> Context:
        batch = self.preprocessor(to_policy_inputs(obs, self.spec.observation, self.device))
        inputs = self._model_inputs(batch)
        prefix_out, prefix_pad_masks, cache = self._prefix(inputs)
        self.prefix_calls += 1
        mask = prefix_pad_masks.float().unsqueeze(-1)  # mean over valid tokens, in float32 (bf16 models too)
        pooled = (prefix_out.float() * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1.0)
        tensors = {"prefix_pad_masks": prefix_pad_masks, "obs_feature": pooled}
        if "state" in inputs and self._denoise_needs_state:
            tensors["state"] = inputs["state"]
        return Context(batch_size=int(prefix_pad_masks.shape[0]), tensors=tensors, shared={CACHE: cache})

    def expand(self, ctx: Context, n: int) -> Context:
        if n == 1:
            return ctx
        out = super().expand(ctx, n)
        out.shared = {**ctx.shared, CACHE: repeat_cache(ctx.shared[CACHE], n)}
        return out

    def denoise(self, x_t: Tensor, t: Tensor, ctx: Context) -> Tensor:
        return self._denoise_step(x_t, t, ctx).float()

    def denoise_with_features(self, x_t: Tensor, t: Tensor, ctx: Context) -> tuple[Tensor, Tensor]:
        self._first_action_token = None
        out = self.denoise(x_t, t, ctx)
        feature = self._first_action_token
        return out, None if feature is None else feature.float()

    def _keep_first_action_token(self, module, inputs) -> None:
        # the expert's last hidden layer over the action tokens, [B, chunk, W]; row 0 is the first action
        self._first_action_token = inputs[0][:, 0]

    def features(self, ctx: Context) -> Tensor:
        return ctx.tensors["obs_feature"]

    # --- units ---------------------------------------------------------------------------------------
    def unnormalize_actions(self, x: Tensor) -> Tensor:
        """Normalised [..., max_action_dim] or [..., action_dim] -> output units [..., action_dim]."""
        a = self.spec.action_dim
        if x.shape[-1] not in (a, self.max_action_dim):
            raise ValueError(f"expected [..., {self.max_action_dim}] or [..., {a}] actions, got {tuple(x.shape)}")
        return self.normalizer.unnormalize(x[..., :a])

    def normalize_actions(self, a: Tensor) -> Tensor:
        """Output units [..., action_dim] -> normalised [..., max_action_dim], zeros in the padding."""
        x = self.normalizer.normalize(a)
        pad = self.max_action_dim - x.shape[-1]
        return torch.nn.functional.pad(x, (0, pad)) if pad > 0 else x


class _PaliGemmaAdapter(FlowVLAAdapter):
    """pi0 and pi05 share the PaliGemma prefix (images, then language tokens)."""

    def _model_inputs(self, batch: dict) -> dict[str, Tensor]:
        images, img_masks = self.policy._preprocess_images(batch)
        return {"images": images, "img_masks": img_masks, "tokens": batch[LANG_TOKENS], "masks": batch[LANG_MASK]}

    def _prefix(self, inputs: dict) -> tuple[Tensor, Tensor, object]:
        from lerobot.policies.common.vla_utils import make_att_2d_masks, prepare_attention_masks_4d

        m = self.model
        embs, pad_masks, att_masks = m.embed_prefix(inputs["images"], inputs["img_masks"], inputs["tokens"], inputs["masks"])
        att_4d = prepare_attention_masks_4d(make_att_2d_masks(pad_masks, att_masks))
        position_ids = torch.cumsum(pad_masks, dim=1) - 1
        m.paligemma_with_expert.paligemma.model.language_model.config._attn_implementation = "eager"  # as lerobot
        (prefix_out, _), cache = m.paligemma_with_expert.forward(
            attention_mask=att_4d,
            position_ids=position_ids,
            past_key_values=None,
            inputs_embeds=[embs, None],
            use_cache=True,
        )
        return prefix_out, pad_masks, cache


class PI0Adapter(_PaliGemmaAdapter):
    """lerobot ``pi0``: the (padded, normalised) state is a suffix token, so the context keeps it."""

    policy_type = "pi0"
    _denoise_needs_state = True

    def _model_inputs(self, batch: dict) -> dict[str, Tensor]:
        return {**super()._model_inputs(batch), "state": self.policy.prepare_state(batch)}

    def _denoise_step(self, x_t: Tensor, t: Tensor, ctx: Context) -> Tensor:
        # denoise_step clones the cache itself before the expert appends the suffix to it
        return self.model.denoise_step(
            state=ctx.tensors["state"],
            prefix_pad_masks=ctx.tensors["prefix_pad_masks"],
            past_key_values=ctx.shared[CACHE],
            x_t=x_t,
            timestep=t,
        )


class PI05Adapter(_PaliGemmaAdapter):
    """lerobot ``pi05``: the state is discretised into the prompt by the pre-processor; the expert uses adaRMS on time."""

    policy_type = "pi05"

    def _denoise_step(self, x_t: Tensor, t: Tensor, ctx: Context) -> Tensor:
        return self.model.denoise_step(
            prefix_pad_masks=ctx.tensors["prefix_pad_masks"],
            past_key_values=ctx.shared[CACHE],
            x_t=x_t,
            timestep=t,
        )


class SmolVLAAdapter(FlowVLAAdapter):
    """lerobot ``smolvla``: the state is the last prefix token; the expert cross-attends to the cache."""

    policy_type = "smolvla"

    def _num_steps(self, cfg) -> int:
        return int(cfg.num_steps)

    def _check_supported(self, cfg) -> None:
        super()._check_supported(cfg)
        if cfg.adapt_to_pi_aloha:
            raise CheckpointError("smolvla checkpoints with adapt_to_pi_aloha=True are not supported")

    def _model_inputs(self, batch: dict) -> dict[str, Tensor]:
        batch = self.policy._prepare_batch(batch)
        images, img_masks = self.policy.prepare_images(batch)
        return {
            "images": images,
            "img_masks": img_masks,
            "tokens": batch[LANG_TOKENS],
            "masks": batch[LANG_MASK],
            "state": self.policy.prepare_state(batch),
        }

    def _prefix(self, inputs: dict) -> tuple[Tensor, Tensor, object]:
        from lerobot.policies.common.vla_utils import make_att_2d_masks

        m = self.model
        embs, pad_masks, att_masks = m.embed_prefix(
            inputs["images"], inputs["img_masks"], inputs["tokens"], inputs["masks"], state=inputs["state"]
        )
        position_ids = torch.cumsum(pad_masks, dim=1) - 1
        (prefix_out, _), cache = m.vlm_with_expert.forward(
            attention_mask=make_att_2d_masks(pad_masks, att_masks),
            position_ids=position_ids,
            past_key_values=None,
            inputs_embeds=[embs, None],
            use_cache=self.config.use_cache,
        )
        return prefix_out, pad_masks, cache

    def _denoise_step(self, x_t: Tensor, t: Tensor, ctx: Context) -> Tensor:
        # SmolVLA's denoise_step appends the suffix keys / values to the cache and crops them off
        # again; give it a private copy so the context's cache stays untouched (and free of any
        # autograd history when guidance differentiates through the step).
        return self.model.denoise_step(
            prefix_pad_masks=ctx.tensors["prefix_pad_masks"],
            past_key_values=repeat_cache(ctx.shared[CACHE], 1),
            x_t=x_t,
            timestep=t,
        )


ADAPTERS: dict[str, type[FlowVLAAdapter]] = {"pi0": PI0Adapter, "pi05": PI05Adapter, "smolvla": SmolVLAAdapter}


def make_vla_adapter(policy, preprocessor, postprocessor, control_hz: float = 10.0, name: str | None = None,
                     compute: Compute | None = None) -> FlowVLAAdapter:
    """The adapter for a lerobot pi0 / pi05 / smolvla policy (chosen by its config's ``type``)."""
    policy_type = policy.config.type
    if policy_type not in ADAPTERS:
        raise CheckpointError(f"no flow-VLA adapter for policy type {policy_type!r} (pi0, pi05, smolvla)")
    return ADAPTERS[policy_type](policy, preprocessor, postprocessor, control_hz=control_hz, name=name, compute=compute)
