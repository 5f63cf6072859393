"""RTC prefix inpainting: the chunk's first rows follow the committed prefix, for both families."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from policy_steer.policies import load_policy
from policy_steer.steered_policy import SteeredPolicy
from policy_steer.steering.inpainting import InpaintingConfig, PrefixInpainting, guidance_weight, prefix_weights
from policy_steer.steering.registry import build_steering


def _obs(policy, seed: int = 1) -> dict:
    rng = np.random.default_rng(seed)
    obs = {k: rng.standard_normal(f.shape).astype(np.float32) for k, f in policy.spec.observation.items()
           if not k.startswith("observation.images")}
    for k, f in policy.spec.observation.items():
        if k.startswith("observation.images"):
            obs[k] = rng.integers(0, 255, f.shape, dtype=np.uint8)
    return {**obs, "task": "push the block", "step": 0}


@pytest.fixture(scope="module", params=["diffusion", "flow"])
def policy(request, tiny_diffusion_dir, tmp_path_factory):
    torch.set_num_threads(1)
    if request.param == "diffusion":
        return load_policy(tiny_diffusion_dir)
    from tests.policies import flow_checkpoints as flow

    return load_policy(flow.build_tiny_dit(tmp_path_factory.mktemp("dit") / "ckpt"))


def _chunk(policy, strategies, **kw):
    return SteeredPolicy(policy, strategies, seed=0).predict_chunk(_obs(policy), start_step=0, **kw).actions


def _target(policy, rows: int) -> np.ndarray:
    """A prefix far from what the policy would do on its own (in policy units)."""
    base = _chunk(policy, [])
    return (base[:rows][::-1] + 0.5 * np.abs(base[:rows]).max() + 0.1).astype(np.float32)


def test_first_rows_follow_the_committed_prefix(policy):
    d = 4
    prefix = _target(policy, 8)
    n = len(prefix)
    base = _chunk(policy, [])
    vjp = _chunk(policy, [PrefixInpainting()], prefix=prefix, prefix_start=0, prefix_committed=d)
    cheap = _chunk(policy, [PrefixInpainting(InpaintingConfig(jacobian="cheap"))], prefix=prefix, prefix_start=0,
                   prefix_committed=d)
    gap = lambda a, rows: float(np.abs(a[rows] - prefix[rows]).mean())  # noqa: E731
    hard, soft = slice(0, d), slice(d, n)
    for guided in (vjp, cheap):
        assert gap(guided, hard) < 0.25 * gap(base, hard)  # committed rows pulled onto the prefix
        assert gap(guided, soft) < gap(base, soft)  # the overlap softly
    assert np.abs(vjp - cheap).max() > 1e-3  # the true VJP is not lerobot's dropped Jacobian


def test_without_a_prefix_or_overlap_nothing_changes(policy):
    base = _chunk(policy, [])
    assert np.array_equal(_chunk(policy, [PrefixInpainting()]), base)
    past = policy.chunk_slice.start  # model rows before the chunk (lerobot's n_obs_steps - 1)
    # VLASH: the committed actions run before the chunk; with nothing overlapping the model's rows, no guidance.
    prefix = _target(policy, 3)
    s = PrefixInpainting()
    chunk = SteeredPolicy(policy, [s], seed=0).predict_chunk(
        _obs(policy), start_step=3 + past, prefix=prefix, prefix_start=0, prefix_committed=3).actions
    assert np.array_equal(chunk, base)


def test_vlash_prefix_guides_only_the_overlap(policy):
    past = policy.chunk_slice.start
    committed, plan = 3, _target(policy, 8)
    sp = SteeredPolicy(policy, [PrefixInpainting()], seed=0)
    chunk = sp.predict_chunk(_obs(policy), start_step=committed, prefix=plan, prefix_start=0,
                             prefix_committed=committed)
    info = chunk.info["steer"]["rtc"]
    n = len(plan)  # the tiny flow policy's chunk is shorter than 8
    assert info["prefix_rows"] == n and info["committed_rows"] == 3
    assert info["guided_rows"] == n - committed + min(past, committed)  # the overlap (+ the model's past rows)
    base = _chunk(policy, [])
    overlap = plan[committed:]
    assert np.abs(chunk.actions[: len(overlap)] - overlap).mean() < np.abs(base[: len(overlap)] - overlap).mean()


def test_prefix_weights_and_guidance_weight():
    w = prefix_weights(8, 3, "exp")
    assert torch.equal(w[:3], torch.ones(3)) and bool((w[3:] > 0).all()) and bool((w[3:] < 1).all())
    assert bool((w[3:-1] > w[4:]).all())  # decays over the overlap
    c = (8 - torch.arange(3, 8.0)) / (8 - 3 + 1)
    torch.testing.assert_close(prefix_weights(8, 3, "linear")[3:], c)
    torch.testing.assert_close(w[3:], c * torch.expm1(c) / (math.e - 1))  # the paper's soft mask
    assert torch.equal(prefix_weights(8, 3, "hard"), torch.tensor([1.0] * 3 + [0.0] * 5))
    assert torch.equal(prefix_weights(8, 3, "ones", soft_rows=2), torch.tensor([1.0] * 5 + [0.0] * 3))
    assert prefix_weights(4, 9).tolist() == [1.0] * 4
    assert guidance_weight(0.0, 1.0, 5.0) == guidance_weight(1.0, 0.0, 5.0) == 5.0  # clipped at both ends
    assert guidance_weight(0.5, 0.5, 5.0) == pytest.approx(2.0)  # (a^2 + s^2) / (a s), the paper's tau = 0.5
    assert guidance_weight(0.5, 0.5, 5.0, "constant") == 5.0


def test_registered_methods(tiny_diffusion_dir):
    from policy_steer.errors import ConfigError

    base = load_policy(tiny_diffusion_dir)
    (vjp,) = build_steering(base, "rtc", {}).strategies
    (cheap,) = build_steering(base, "rtc-cheap", {"rtc_max_weight": 3}).strategies
    assert vjp.config.jacobian == "vjp" and vjp.wants_prefix and vjp.name == "rtc"
    assert cheap.config.jacobian == "cheap" and cheap.config.max_weight == 3 and cheap.name == "rtc-cheap"
    with pytest.raises(ConfigError, match="jacobian must be one of"):
        InpaintingConfig(jacobian="full")
