"""The lerobot policy configurations of the shipped reference policies.

Small on purpose: the tasks are low-dimensional, checkpoints ship in the repository (all together
<= 30 MB), and every benchmark episode runs the denoiser on a CPU. Input and output features are
filled in from the dataset by lerobot's ``make_policy`` unless set here.
"""

from __future__ import annotations

from lerobot.configs.types import FeatureType, PolicyFeature

from policy_steer.errors import ConfigError

FAMILIES = ("diffusion", "flow", "image-diffusion")


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


def image_diffusion_config(camera: str, lr: float | None = None):
    """DiffusionPolicy on the robot state and one camera (ResNet-18 from scratch, no pretrained weights)."""
    cfg = diffusion_config(lr)
    cfg.pretrained_backbone_weights = None
    cfg.use_group_norm = True
    cfg.crop_shape = None
    cfg.spatial_softmax_num_keypoints = 32
    cfg.camera = camera  # read by policy_config below, not by lerobot
    return cfg


FLOW_LR = 2e-4


def policy_config(family: str, dataset_features: dict, lr: float | None = None, camera: str = "front"):
    """The lerobot config for ``family``, with input features chosen from the dataset's features."""
    if family == "diffusion":
        return diffusion_config(lr)
    if family == "image-diffusion":
        key = f"observation.images.{camera}"
        if key not in dataset_features:
            raise ConfigError(f"image-diffusion needs camera {key!r} in the dataset (record with --cameras {camera})")
        cfg = image_diffusion_config(camera, lr)
        h, w, c = dataset_features[key]["shape"]
        cfg.input_features = {
            "observation.state": PolicyFeature(FeatureType.STATE, tuple(dataset_features["observation.state"]["shape"])),
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
