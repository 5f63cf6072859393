"""Fixtures of the runtime tests: real task envs and a tiny random DiffusionPolicy that fits them.

The checkpoint is built here (not with tests/fixtures) so that its shapes follow the env: the same
lerobot DiffusionPolicy layout as the shipped reference policies (n_obs_steps 1, horizon 16, 8
executed actions, DDIM with 10 steps), only smaller and untrained.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MUJOCO_GL", "egl")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

# One intra-op thread: these machines are shared, and spinning OpenMP threads under contention cost
# far more than they gain on the tiny test policies.
torch.set_num_threads(1)


def build_env_policy(out: Path, state_dim: int, env_dim: int, action_dim: int, max_step: float, seed: int = 0) -> Path:
    """A tiny lerobot DiffusionPolicy checkpoint for a task env with these dims (random weights)."""
    import torch
    from lerobot.configs.types import FeatureType, PolicyFeature
    from lerobot.policies.diffusion.configuration_diffusion import DiffusionConfig
    from lerobot.policies.diffusion.modeling_diffusion import DiffusionPolicy
    from lerobot.policies.factory import make_pre_post_processors

    torch.manual_seed(seed)
    cfg = DiffusionConfig(
        input_features={
            "observation.state": PolicyFeature(FeatureType.STATE, (state_dim,)),
            "observation.environment_state": PolicyFeature(FeatureType.ENV, (env_dim,)),
        },
        output_features={"action": PolicyFeature(FeatureType.ACTION, (action_dim,))},
        n_obs_steps=1, horizon=16, n_action_steps=8, down_dims=(32, 64), kernel_size=3, n_groups=8,
        diffusion_step_embed_dim=32, noise_scheduler_type="DDIM", num_train_timesteps=100,
        num_inference_steps=10, device="cpu", push_to_hub=False,
    )
    g = torch.Generator().manual_seed(seed)
    stats = {
        key: {"mean": torch.randn(d, generator=g), "std": torch.rand(d, generator=g) + 0.5,
              "min": -lim * torch.ones(d), "max": lim * torch.ones(d)}
        for key, d, lim in (("observation.state", state_dim, 1.0), ("observation.environment_state", env_dim, 1.0),
                            ("action", action_dim, max_step))
    }
    policy = DiffusionPolicy(cfg)
    pre, post = make_pre_post_processors(cfg, dataset_stats=stats)
    out.mkdir(parents=True, exist_ok=True)
    policy.save_pretrained(out)
    pre.save_pretrained(out)
    post.save_pretrained(out)
    return out


def make_env(task: str = "push", variant: str = "nominal", **kwargs):
    from policy_steer import envs

    return envs.make(task, variant, **kwargs)


@pytest.fixture(scope="session")
def push_policy_dir(tmp_path_factory) -> Path:
    """A tiny random DiffusionPolicy whose shapes fit ``push`` (delta actions)."""
    env = make_env("push")
    u = env.unwrapped
    return build_env_policy(tmp_path_factory.mktemp("push_policy"), u.state_dim, u.state_dim - u.robot_state_dim,
                            u.action_dim, u.max_step)


@pytest.fixture(scope="session")
def push_policy(push_policy_dir):
    from policy_steer.policies import load_policy

    return load_policy(push_policy_dir)
