"""The lerobot policy configurations of the shipped reference policies.

Small on purpose: the tasks are low-dimensional, checkpoints ship in the repository (all together
<= 30 MB), and every benchmark episode runs the denoiser on a CPU. Input and output features are
filled in from the dataset by lerobot's ``make_policy`` unless set here.

Families (``policy-steer train-reference --family``):

- ``diffusion``: lerobot's DiffusionPolicy (1-D UNet) on the state;
- ``flow``: lerobot's multi_task_dit, flow matching, on the state (and the frozen tiny CLIP text tower);
- ``image-diffusion``: lerobot's multi_task_dit, diffusion objective (DDPM training, DDIM sampling),
  on the state and one camera through a tiny CLIP vision tower (83 k parameters; 0.9 M in all,
  a 2.6 MB checkpoint with float16 weights);
- ``image-diffusion-resnet``: lerobot's DiffusionPolicy on the state and one camera (ResNet-18 from
  scratch); available, but too large to ship (22 MB in float16) and slow on a CPU.
"""

from __future__ import annotations

from lerobot.configs.types import FeatureType, PolicyFeature

from policy_steer.errors import ConfigError

FAMILIES = ("diffusion", "flow", "image-diffusion", "image-diffusion-resnet")
IMAGE_FAMILIES = ("image-diffusion", "image-diffusion-resnet")  # record and read a camera


def diffusion_config(lr: float | None = None):
    """State-based DiffusionPolicy: 1-D UNet (64, 128), 1.1 M parameters, DDIM with 10 steps at inference."""
    from lerobot.policies.diffusion.configuration_diffusion import DiffusionConfig

    cfg = DiffusionConfig(
        n_obs_steps=1, horizon=16, n_action_steps=12,
        down_dims=(64, 128), kernel_size=5, n_groups=8, diffusion_step_embed_dim=64,
        noise_scheduler_type="DDIM", num_train_timesteps=100, num_inference_steps=10,
        device="cpu", push_to_hub=False,
    )
    if lr is not None:
        cfg.optimizer_lr = lr
    return cfg


def resnet_image_diffusion_config(camera: str, lr: float | None = None):
    """DiffusionPolicy on the robot state and one camera (ResNet-18 from scratch, no pretrained weights).

    Family ``image-diffusion-resnet``. Not shipped: the ResNet-18 alone is 22 MB in float16 (the shipped
    checkpoints share 30 MB) and slow on a CPU; ``image-diffusion`` is the small image policy.
    """
    cfg = diffusion_config(lr)
    cfg.pretrained_backbone_weights = None
    cfg.use_group_norm = True
    cfg.crop_shape = None
    cfg.spatial_softmax_num_keypoints = 32
    return cfg


# The tiny CLIP of the image-diffusion family (text and vision towers share these sizes; the text
# tower is frozen and sees one instruction, the vision tower is trained from scratch).
IMAGE_CLIP = {"hidden_size": 64, "num_layers": 2, "num_heads": 4, "intermediate_size": 128, "patch_size": 8}


def image_crop_side(height: int, width: int, patch: int = IMAGE_CLIP["patch_size"]) -> int:
    """Side of the square crop the image policy sees: about 7/8 of the image, a multiple of ``patch``.

    lerobot's multi_task_dit crops at random while training (augmentation) and at the centre at
    inference; the CLIP vision tower is built for exactly this side (64x64 camera -> 56, 7x7 patches).
    """
    side = (min(height, width) * 7 // 8) // patch * patch
    if side < patch:
        raise ConfigError(f"camera images of {height}x{width} are too small for {patch}-pixel patches")
    return side


def image_multi_task_dit_config(state_dim: int, action_dim: int, camera_key: str, image_chw: tuple[int, int, int],
                                lr: float | None = None, clip_dir=None):
    """multi_task_dit, diffusion objective, on the robot state and one camera (family ``image-diffusion``).

    The denoiser is the flow family's (DiT width 96, 3 blocks, 16 actions, 12 executed, one
    observation step), trained with lerobot's DDPM loss (100 timesteps, epsilon) and sampled with
    DDIM in 10 steps. The camera goes through lerobot's own path: dataset mean/std normalisation,
    random crop (centre crop at inference, :func:`image_crop_side`), and the CLS token of a tiny CLIP
    vision tower (:data:`IMAGE_CLIP`, built locally by ``build_tiny_clip`` and shipped inside the
    checkpoint). lerobot trains that tower at ``vision_encoder_lr_multiplier`` x the lr (0.1 by
    default, meant for a pretrained CLIP); ours starts from random weights, so the multiplier is 1.
    """
    import tempfile
    from pathlib import Path

    from policy_steer.policies.tiny_backbones import build_tiny_clip, multi_task_dit_config

    c, h, w = (int(d) for d in image_chw)
    side = image_crop_side(h, w)
    if clip_dir is None:
        clip_dir = build_tiny_clip(Path(tempfile.mkdtemp(prefix="policy-steer-")) / "tiny_clip", image_size=side, **IMAGE_CLIP)
    cfg = multi_task_dit_config(
        state_dim=state_dim, action_dim=action_dim, clip_dir=clip_dir, objective="diffusion",
        lr=FLOW_LR if lr is None else lr, n_obs_steps=1, hidden_dim=96, n_action_steps=12,
        image_crop_shape=(side, side), image_crop_is_random=True, vision_encoder_lr_multiplier=1.0,
    )
    cfg.input_features[camera_key] = PolicyFeature(FeatureType.VISUAL, (c, h, w))
    return cfg


FLOW_LR = 2e-4


def policy_config(family: str, dataset_features: dict, lr: float | None = None, camera: str = "front"):
    """The lerobot config for ``family``, with input features chosen from the dataset's features."""
    if family == "diffusion":
        return diffusion_config(lr)
    if family in IMAGE_FAMILIES:
        key = f"observation.images.{camera}"
        if key not in dataset_features:
            raise ConfigError(f"{family} needs camera {key!r} in the dataset (record with --cameras {camera})")
        h, w, c = dataset_features[key]["shape"]
        state_dim = int(dataset_features["observation.state"]["shape"][0])
        if family == "image-diffusion":
            return image_multi_task_dit_config(state_dim, int(dataset_features["action"]["shape"][0]), key, (c, h, w), lr=lr)
        cfg = resnet_image_diffusion_config(camera, lr)
        cfg.input_features = {
            "observation.state": PolicyFeature(FeatureType.STATE, (state_dim,)),
            key: PolicyFeature(FeatureType.VISUAL, (c, h, w)),
        }
        return cfg
    if family == "flow":
        from policy_steer.policies.tiny_backbones import multi_task_dit_config

        # One observation step (like the diffusion policies, so the future state of VLASH is one
        # state), 12 of 16 actions executed per chunk (as the diffusion policies), and width 96. lerobot's preset lr (2e-5) is meant for
        # fine-tuning large DiTs; from scratch at this size it had not learned push after 6k steps
        # (5% success), so reference training uses 2e-4 unless --lr says otherwise.
        return multi_task_dit_config(
            state_dim=int(dataset_features["observation.state"]["shape"][0]),
            action_dim=int(dataset_features["action"]["shape"][0]),
            lr=FLOW_LR if lr is None else lr, n_obs_steps=1, hidden_dim=96, n_action_steps=12,
        )
    raise ConfigError(f"unknown policy family {family!r}; use one of {FAMILIES}")
