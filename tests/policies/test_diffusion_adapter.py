"""The DiffusionPolicy adapter against lerobot's own sampling loop, and its loading path."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from policy_steer.errors import CheckpointError, ValidationError
from policy_steer.policies import load_policy
from policy_steer.sampler import Sampler, SamplerConfig
from policy_steer.steered_policy import SteeredPolicy
from tests.fixtures.tiny_policies import ACTION_DIM, ENV_DIM, STATE_DIM, build_tiny_diffusion


def _obs(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "observation.state": rng.standard_normal(STATE_DIM).astype(np.float32),
        "observation.environment_state": rng.standard_normal(ENV_DIM).astype(np.float32),
        "task": "push the block",
        "step": 0,
    }


def _lerobot_chunk(adapter, obs, noise, rng_seed):
    """lerobot's own path: preprocessor -> predict_action_chunk(noise=...) -> postprocessor."""
    policy = adapter.policy
    policy.reset()
    batch = adapter.preprocessor({
        "observation.state": torch.from_numpy(obs["observation.state"]),
        "observation.environment_state": torch.from_numpy(obs["observation.environment_state"]),
        "task": obs["task"],
    })
    n = adapter.config.n_obs_steps
    batch = {k: torch.stack([batch[k]] * n, dim=1) for k in ("observation.state", "observation.environment_state")}
    torch.manual_seed(rng_seed)
    with torch.no_grad():
        actions = policy.predict_action_chunk(batch, noise=noise)
    return adapter.postprocessor(actions)[0]


@pytest.mark.parametrize("scheduler,n_obs", [("DDIM", 1), ("DDPM", 2)])
def test_sampler_matches_lerobot(tmp_path, scheduler, n_obs):
    folder = build_tiny_diffusion(tmp_path / "ckpt", scheduler=scheduler, n_obs_steps=n_obs)
    adapter = load_policy(folder)
    obs = _obs()
    noise = torch.randn(1, adapter.model_horizon, ACTION_DIM, generator=torch.Generator().manual_seed(3))
    ref = _lerobot_chunk(adapter, obs, noise.clone(), rng_seed=7)

    adapter.reset()
    ctx = adapter.prepare(obs)
    torch.manual_seed(7)  # DDPM draws its step noise from the global generator, as lerobot does
    res = Sampler(adapter).sample(ctx, noise.clone())
    ours = adapter.unnormalize_actions(res.x0[0, adapter.chunk_slice])[: adapter.spec.n_action_steps]
    assert ours.shape == ref.shape == (8, ACTION_DIM)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)
    assert adapter.spec.horizon == 16 - n_obs + 1


def test_differentiable_unnormalize_matches_postprocessor(tiny_diffusion_dir):
    adapter = load_policy(tiny_diffusion_dir)
    x = torch.randn(2, 16, ACTION_DIM, requires_grad=True)
    y = adapter.unnormalize_actions(x)
    torch.testing.assert_close(y.detach(), adapter.postprocessor(x.detach()))
    y.sum().backward()
    assert x.grad is not None and torch.all(x.grad != 0)
    torch.testing.assert_close(adapter.normalize_actions(y.detach()), x.detach(), atol=1e-5, rtol=1e-5)


def test_steered_policy_returns_chunk_and_is_reproducible(tiny_diffusion_dir):
    adapter = load_policy(tiny_diffusion_dir)
    a = SteeredPolicy(adapter, seed=5).predict_chunk(_obs(), start_step=12)
    b = SteeredPolicy(adapter, seed=5).predict_chunk(_obs(), start_step=12)
    c = SteeredPolicy(adapter, seed=6).predict_chunk(_obs(), start_step=12)
    assert a.actions.shape == (adapter.spec.horizon, ACTION_DIM) and a.actions.dtype == np.float32
    assert a.start_step == 12 and a.info["latency_ms"] > 0
    np.testing.assert_array_equal(a.actions, b.actions)
    assert not np.allclose(a.actions, c.actions)


def test_bad_observations_are_refused_with_the_key_named(tiny_diffusion_dir):
    sp = SteeredPolicy(load_policy(tiny_diffusion_dir), seed=0)
    obs = _obs()
    with pytest.raises(ValidationError, match="observation.environment_state"):
        sp.predict_chunk({k: v for k, v in obs.items() if k != "observation.environment_state"})
    with pytest.raises(ValidationError, match="shape"):
        sp.predict_chunk({**obs, "observation.state": np.zeros(STATE_DIM + 1, np.float32)})
    bad = obs["observation.state"].copy()
    bad[2] = np.nan
    with pytest.raises(ValidationError, match="non-finite"):
        sp.predict_chunk({**obs, "observation.state": bad})


def test_loading_errors_name_the_problem(tmp_path, tiny_diffusion_dir, monkeypatch):
    with pytest.raises(CheckpointError, match="not found"):
        load_policy(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="missing config.json"):
        load_policy(tmp_path / "empty")
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in tiny_diffusion_dir.iterdir():
        if f.name != "model.safetensors":
            (broken / f.name).write_bytes(f.read_bytes())
    with pytest.raises(CheckpointError, match="model.safetensors"):
        load_policy(broken)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CheckpointError, match="hub"):
        load_policy("someone/not-a-local-folder")
