"""pi0, pi05 and SmolVLA adapters against lerobot's own sampling, on tiny local backbones.

Fidelity is checked bit for bit (``torch.equal``): the adapter calls the same lerobot functions in
the same order on the same float32 tensors (prefix forward once, then ``denoise_step`` and
``x + dt * v`` per step, with the same time grid), so there is no reason for any rounding difference
on one machine. Comparisons across batch sizes (``expand``) use 1e-5, because a batched matmul may
take a different kernel path than a batch of one.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from policy_steer.policies import load_policy
from policy_steer.policies.flow_vla import FlowVLAAdapter
from policy_steer.policies.observation import to_policy_inputs
from policy_steer.sampler import Sampler, SamplerConfig
from policy_steer.steered_policy import SteeredPolicy
from tests.policies.flow_checkpoints import ACTION_DIM, CHUNK, MAX_DIM, NUM_STEPS, make_obs

KINDS = ["pi0", "pi05", "smolvla"]


@pytest.fixture(scope="module")
def adapters(flow_checkpoint):
    cache: dict[str, FlowVLAAdapter] = {}

    def get(kind: str) -> FlowVLAAdapter:
        if kind not in cache:
            cache[kind] = load_policy(flow_checkpoint(kind))
        return cache[kind]

    return get


def _lerobot_chunk(adapter: FlowVLAAdapter, obs: dict, noise: torch.Tensor | None) -> torch.Tensor:
    """lerobot's own path: pre-processor -> predict_action_chunk (normalised, unpadded [1, H, A])."""
    batch = adapter.preprocessor(to_policy_inputs(obs, adapter.spec.observation, adapter.device))
    adapter.policy.reset()
    kwargs = {} if noise is None else {"noise": noise.clone()}
    return adapter.policy.predict_action_chunk(batch, **kwargs)


def _count_calls(monkeypatch, obj, name: str) -> list[int]:
    calls = [0]
    original = getattr(obj, name)

    def counted(*args, **kwargs):
        calls[0] += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(obj, name, counted)
    return calls


@pytest.mark.parametrize("kind", KINDS)
def test_spec_and_padding(adapters, kind):
    a = adapters(kind)
    assert a.spec.family == "flow" and a.spec.horizon == CHUNK and a.spec.action_dim == ACTION_DIM
    assert a.spec.num_steps == NUM_STEPS and a.spec.n_action_steps == CHUNK // 2
    assert a.model_horizon == CHUNK and a.model_action_dim == MAX_DIM
    assert a.make_noise(3).shape == (3, CHUNK, MAX_DIM)
    assert set(a.spec.observation) == {"observation.state", "observation.images.front"}


@pytest.mark.parametrize("kind", KINDS)
def test_sampler_matches_lerobot_bit_for_bit(adapters, kind):
    a = adapters(kind)
    obs = make_obs(a.spec, seed=1)
    noise = a.make_noise(1, torch.Generator().manual_seed(3))
    ours = Sampler(a).sample(a.prepare(obs), noise.clone()).x0
    ref = _lerobot_chunk(a, obs, noise)
    assert ours.shape == (1, CHUNK, MAX_DIM) and ref.shape == (1, CHUNK, ACTION_DIM)
    assert torch.equal(ours[..., :ACTION_DIM], ref)
    # and in output units, through the differentiable transform vs lerobot's post-processor
    torch.testing.assert_close(a.unnormalize_actions(ours[0]), a.postprocessor(ref)[0], atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("kind", KINDS)
def test_noise_is_drawn_like_lerobot(adapters, kind):
    """With the same global seed, our prior draw + loop equals lerobot drawing its own noise."""
    a = adapters(kind)
    obs = make_obs(a.spec, seed=2)
    torch.manual_seed(11)
    ref = _lerobot_chunk(a, obs, None)
    ctx = a.prepare(obs)
    torch.manual_seed(11)
    ours = Sampler(a).sample(ctx, a.make_noise(1)).x0
    assert torch.equal(ours[..., :ACTION_DIM], ref)


@pytest.mark.parametrize("kind", KINDS)
def test_loads_offline_from_a_copied_folder_and_any_cwd(flow_checkpoint, kind, tmp_path, monkeypatch):
    src = flow_checkpoint(kind)
    dst = tmp_path / "fresh-clone" / "checkpoints" / f"{kind}-flow"
    shutil.copytree(src, dst)
    monkeypatch.chdir(tmp_path)
    a = load_policy(dst.relative_to(tmp_path))
    assert isinstance(a, FlowVLAAdapter) and a.spec.name == f"{kind}-flow"
    # every saved weight was loaded (pi0 / pi05 fall back to random weights silently on failure)
    saved = load_file(str(dst / "model.safetensors"))
    state = a.policy.state_dict()
    assert saved and all(torch.equal(state[k], v) for k, v in saved.items())


@pytest.mark.parametrize("kind", KINDS)
def test_expand_repeats_the_prefix_without_recomputing_it(adapters, kind, monkeypatch):
    a = adapters(kind)
    prefix_calls = _count_calls(monkeypatch, a.model, "embed_prefix")
    step_calls = _count_calls(monkeypatch, a.model, "denoise_step")
    obs = make_obs(a.spec, seed=4)
    ctx1 = a.prepare(obs)
    noise = a.make_noise(1, torch.Generator().manual_seed(5))
    one = Sampler(a).sample(ctx1, noise.clone()).x0
    ctx4 = a.expand(ctx1, 4)
    assert ctx4.batch_size == 4 and ctx4.tensors["prefix_pad_masks"].shape[0] == 4
    assert all(k.shape[0] == 4 and v.shape[0] == 4 for k, v, _ in ctx4.shared["past_key_values"])
    four = Sampler(a).sample(ctx4, noise.repeat(4, 1, 1)).x0
    assert prefix_calls[0] == 1  # one prefix for one observation, whatever the batch
    assert step_calls[0] == 2 * NUM_STEPS
    for i in range(1, 4):
        assert torch.equal(four[i], four[0])
    torch.testing.assert_close(four[:1], one, atol=1e-5, rtol=1e-5)
    # the context's cache is untouched by sampling (SmolVLA's step extends and crops a cache)
    assert all(k.shape[0] == 1 for k, _, _ in ctx1.shared["past_key_values"])
    assert torch.equal(Sampler(a).sample(ctx1, noise.clone()).x0, one)


@pytest.mark.parametrize("kind", KINDS)
def test_features(adapters, kind):
    a = adapters(kind)
    ctx = a.expand(a.prepare(make_obs(a.spec, seed=6)), 3)
    obs_feat = a.features(ctx)
    assert obs_feat.ndim == 2 and obs_feat.shape[0] == 3 and torch.isfinite(obs_feat).all()
    x = a.make_noise(3, torch.Generator().manual_seed(0))
    t = torch.full((3,), 0.5)
    with torch.no_grad():
        out, feat = a.denoise_with_features(x, t, ctx)
        plain = a.denoise(x, t, ctx)
    width = a.model.action_out_proj.in_features
    assert out.shape == (3, CHUNK, MAX_DIM) and feat.shape == (3, width)
    assert torch.equal(out, plain)
    # the feature is the first action token of the expert's last hidden layer: it alone gives row 0
    torch.testing.assert_close(a.model.action_out_proj(feat), out[:, 0], atol=1e-6, rtol=1e-6)
    assert not torch.allclose(feat[0], feat[1])  # different candidates, different features


@pytest.mark.parametrize("kind", KINDS)
def test_gradients_flow_through_consecutive_steps(adapters, kind):
    """Guidance differentiates every step; the cached prefix must not chain steps' graphs."""
    a = adapters(kind)
    ctx = a.expand(a.prepare(make_obs(a.spec, seed=7)), 2)
    x = a.make_noise(2, torch.Generator().manual_seed(1))
    for time in (1.0, 0.5):
        x_t = x.detach().requires_grad_(True)
        out = a.denoise(x_t, torch.full((2,), time), ctx)
        (grad,) = torch.autograd.grad(a.unnormalize_actions(out).sum(), x_t)
        assert grad.shape == x.shape and torch.isfinite(grad).all() and grad.abs().sum() > 0
        x = x + (-0.5) * out.detach()


@pytest.mark.parametrize("kind", KINDS)
def test_action_units_and_padding(adapters, kind):
    a = adapters(kind)
    x = torch.randn(2, CHUNK, MAX_DIM, requires_grad=True)
    y = a.unnormalize_actions(x)
    assert y.shape == (2, CHUNK, ACTION_DIM)
    torch.testing.assert_close(y.detach(), a.postprocessor(x.detach()[..., :ACTION_DIM]))
    y.sum().backward()
    assert torch.all(x.grad[..., ACTION_DIM:] == 0) and torch.all(x.grad[..., :ACTION_DIM] != 0)
    back = a.normalize_actions(y.detach())
    assert back.shape == (2, CHUNK, MAX_DIM) and torch.all(back[..., ACTION_DIM:] == 0)
    torch.testing.assert_close(back[..., :ACTION_DIM], x.detach()[..., :ACTION_DIM], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(a.unnormalize_actions(x.detach()[..., :ACTION_DIM]), y.detach())
    with pytest.raises(ValueError, match="expected"):
        a.unnormalize_actions(torch.zeros(2, CHUNK, ACTION_DIM + 1))


@pytest.mark.parametrize("kind", KINDS)
def test_steered_policy_chunk_with_prefix(adapters, kind):
    a = adapters(kind)
    sp = SteeredPolicy(a, seed=3)
    obs = make_obs(a.spec, seed=8)
    chunk = sp.predict_chunk(obs, prefix=np.zeros((2, ACTION_DIM), np.float32), start_step=5)
    assert chunk.actions.shape == (CHUNK, ACTION_DIM) and np.all(np.isfinite(chunk.actions))
    again = SteeredPolicy(a, seed=3).predict_chunk(obs, start_step=5)
    np.testing.assert_array_equal(chunk.actions, again.actions)


def test_flow_sde_without_noise_is_euler_and_with_noise_differs(adapters):
    a = adapters("pi0")
    ctx = a.prepare(make_obs(a.spec, seed=9))
    noise = a.make_noise(1, torch.Generator().manual_seed(2))
    euler = Sampler(a, SamplerConfig(method="euler")).sample(ctx, noise.clone()).x0
    old = a.schedule.sde_noise
    try:
        a.schedule.sde_noise = 0.0
        sde0 = Sampler(a, SamplerConfig(method="flow_sde")).sample(ctx, noise.clone()).x0
        a.schedule.sde_noise = 1.0
        sde1 = Sampler(a, SamplerConfig(method="flow_sde")).sample(
            ctx, noise.clone(), generator=torch.Generator().manual_seed(0)
        ).x0
    finally:
        a.schedule.sde_noise = old
    assert torch.equal(sde0, euler)
    assert torch.isfinite(sde1).all() and not torch.allclose(sde1, euler)
