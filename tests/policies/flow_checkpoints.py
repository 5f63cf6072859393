"""Tiny, randomly initialised but real flow-matching lerobot checkpoints, built locally (no hub).

Each builder writes a self-contained checkpoint folder (policy, pre/post-processors, and the tiny
backbone / tokenizer folders it names) that ``load_policy`` opens offline. Action and state are
smaller than the VLAs' ``max_action_dim`` / ``max_state_dim`` so that the padding paths run.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import torch

STATE_DIM, ACTION_DIM = 6, 4
MAX_DIM = 8  # max_state_dim = max_action_dim of the VLAs: padding is exercised
CHUNK = 8
CAMERA = "observation.images.front"
IMAGE = 32  # square camera images, pixels
NUM_STEPS = 3


def _stats(features: dict[str, int], seed: int = 0, image_keys: tuple[str, ...] = ()) -> dict:
    """Dataset statistics with every key any normalisation mode reads (mean/std, min/max, quantiles)."""
    g = torch.Generator().manual_seed(seed)
    stats: dict[str, dict[str, torch.Tensor]] = {}
    for key, d in features.items():
        mean = torch.randn(d, generator=g) * 0.3
        std = torch.rand(d, generator=g) + 0.5
        stats[key] = {
            "mean": mean, "std": std, "min": mean - 2 * std, "max": mean + 2 * std,
            "q01": mean - 1.8 * std, "q99": mean + 1.8 * std, "q10": mean - std, "q90": mean + std,
        }
    for key in image_keys:
        stats[key] = {"mean": torch.full((3, 1, 1), 0.5), "std": torch.full((3, 1, 1), 0.25)}
    return stats


def vla_features(camera: bool = True) -> tuple[dict, dict]:
    from lerobot.configs.types import FeatureType, PolicyFeature

    inputs = {"observation.state": PolicyFeature(FeatureType.STATE, (STATE_DIM,))}
    if camera:
        inputs[CAMERA] = PolicyFeature(FeatureType.VISUAL, (3, IMAGE, IMAGE))
    return inputs, {"action": PolicyFeature(FeatureType.ACTION, (ACTION_DIM,))}


def build_tiny_pi(folder: str | Path, kind: str = "pi0", seed: int = 0) -> Path:
    """A pi0 / pi05 checkpoint on the tiny PaliGemma + Gemma expert (~0.19 M parameters)."""
    from lerobot.policies.factory import get_policy_class, make_policy_config, make_pre_post_processors

    from policy_steer.policies.tiny_backbones import TinyPiBackbone, build_paligemma_tokenizer
    from policy_steer.policies.tiny_backbones import save_self_contained, tiny_pi_backbone

    folder = Path(folder)
    work = folder.parent / f"{folder.name}-backbones"
    tok = work / "paligemma_tokenizer"
    build_paligemma_tokenizer(tok)
    inputs, outputs = vla_features()
    cfg = make_policy_config(
        kind, input_features=inputs, output_features=outputs, chunk_size=CHUNK, n_action_steps=CHUNK // 2,
        max_state_dim=MAX_DIM, max_action_dim=MAX_DIM, image_resolution=(IMAGE, IMAGE),
        num_inference_steps=NUM_STEPS, tokenizer_max_length=48 if kind == "pi05" else 16,
        device="cpu", push_to_hub=False,
    )
    spec = TinyPiBackbone()
    spec.configure(cfg)
    torch.manual_seed(seed)
    with tiny_pi_backbone(spec, tokenizer_dir=tok):
        policy = get_policy_class(kind)(cfg)
        pre, post = make_pre_post_processors(cfg, dataset_stats=_stats({"observation.state": STATE_DIM, "action": ACTION_DIM}, seed))
    save_self_contained(folder, policy, pre, post, tiny_pi=spec)
    shutil.rmtree(work)  # the checkpoint must not need it
    return folder


def build_tiny_smolvla(folder: str | Path, seed: int = 0) -> Path:
    """A smolvla checkpoint on a tiny SmolVLM (4 layers, width 64; expert width 48)."""
    from lerobot.policies.factory import make_pre_post_processors
    from lerobot.policies.smolvla.configuration_smolvla import SmolVLAConfig
    from lerobot.policies.smolvla.modeling_smolvla import SmolVLAPolicy

    from policy_steer.policies.tiny_backbones import build_tiny_smolvlm, save_self_contained

    folder = Path(folder)
    work = folder.parent / f"{folder.name}-backbones"
    vlm = build_tiny_smolvlm(work / "tiny_smolvlm", image_size=IMAGE)
    inputs, outputs = vla_features()
    cfg = SmolVLAConfig(
        input_features=inputs, output_features=outputs, chunk_size=CHUNK, n_action_steps=CHUNK // 2,
        max_state_dim=MAX_DIM, max_action_dim=MAX_DIM, resize_imgs_with_padding=(IMAGE, IMAGE),
        num_steps=NUM_STEPS, tokenizer_max_length=16, vlm_model_name=str(vlm), load_vlm_weights=False,
        num_vlm_layers=4, self_attn_every_n_layers=2, device="cpu", push_to_hub=False,
    )
    torch.manual_seed(seed)
    policy = SmolVLAPolicy(cfg)
    pre, post = make_pre_post_processors(cfg, dataset_stats=_stats({"observation.state": STATE_DIM, "action": ACTION_DIM}, seed))
    save_self_contained(folder, policy, pre, post)
    shutil.rmtree(work)
    return folder


def build_tiny_dit(
    folder: str | Path, objective: str = "flow_matching", camera: bool = False, seed: int = 0,
    crop: int | None = None, **overrides
) -> Path:
    """A multi_task_dit checkpoint (tiny CLIP text encoder; CLIP vision too with ``camera``).

    With ``crop``, images are cropped to ``crop`` x ``crop`` (random while training, centre at
    inference) and the CLIP vision tower is built for that side, as the ``image-diffusion`` family does.
    """
    from lerobot.configs.types import FeatureType, PolicyFeature
    from lerobot.policies.factory import make_pre_post_processors
    from lerobot.policies.multi_task_dit.modeling_multi_task_dit import MultiTaskDiTPolicy

    from policy_steer.policies.tiny_backbones import build_tiny_clip, multi_task_dit_config, save_self_contained

    folder = Path(folder)
    work = folder.parent / f"{folder.name}-backbones"
    clip = build_tiny_clip(work / "tiny_clip", image_size=crop or IMAGE)
    kw = dict(
        objective=objective, horizon=CHUNK, n_obs_steps=2, n_action_steps=CHUNK // 2, hidden_dim=32, num_layers=2,
        num_heads=2, timestep_embed_dim=16, num_integration_steps=NUM_STEPS + 2, num_inference_steps=NUM_STEPS + 2,
    )
    if crop:
        kw.update(image_crop_shape=(crop, crop), image_crop_is_random=True)
    kw.update(overrides)
    cfg = multi_task_dit_config(STATE_DIM, ACTION_DIM, clip, **kw)
    image_keys: tuple[str, ...] = ()
    if camera:
        cfg.input_features[CAMERA] = PolicyFeature(FeatureType.VISUAL, (3, IMAGE, IMAGE))
        image_keys = (CAMERA,)
    torch.manual_seed(seed)
    policy = MultiTaskDiTPolicy(cfg)
    stats = _stats({"observation.state": STATE_DIM, "action": ACTION_DIM}, seed, image_keys)
    pre, post = make_pre_post_processors(cfg, dataset_stats=stats)
    save_self_contained(folder, policy, pre, post)
    shutil.rmtree(work)
    return folder


def make_obs(spec, seed: int = 0, task: str = "push the block to the target", step: int = 0) -> dict:
    """A raw observation as a robot sends it, for ``spec``'s features."""
    rng = np.random.default_rng(seed)
    obs: dict = {"task": task, "step": step}
    for key, feat in spec.observation.items():
        if feat.dtype == "|u1":
            obs[key] = rng.integers(0, 256, size=feat.shape, dtype=np.uint8)
        else:
            obs[key] = rng.standard_normal(feat.shape).astype(np.float32)
    return obs
