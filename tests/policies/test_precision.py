"""Compute settings of a loaded policy (policies/precision.py): bfloat16 within its stated bound, the
sigmoid activations and torch.compile giving the same chunks and the same TACO choice, and every
unsupported combination refused by name. Real shipped checkpoints, real env observations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from policy_steer.errors import ConfigError
from policy_steer.policies import load_policy
from policy_steer.policies import precision
from policy_steer.policies.precision import Compute, SigmoidGelu, SigmoidMish, check_compute, parse_dtype
from policy_steer.steered_policy import SteeredPolicy
from policy_steer.steering.taco import TacoSelection, load_verifier

# The stated bfloat16 bound (README, docs/results/taco_cost/): over seeded unsteered chunks of the shipped
# push policies, max |action difference| against float32 in policy units (push: delta metres per step, the
# largest |action| of those chunks is ~0.01). Measured max over 50 chunks (benchmarks/taco_cost.py): 6.9e-5
# (push-diffusion), 4.8e-4 (push-flow); the bound leaves 2x room over the worst of them.
BF16_BOUND = 1e-3
POLICIES = ("checkpoints/push-diffusion", "checkpoints/push-flow")


def _observations(n: int) -> list[dict]:
    from policy_steer.envs import make

    env = make("push", "nominal")
    out = []
    for seed in range(n):
        obs, _ = env.reset(seed=seed)
        out.append({**obs, "task": env.unwrapped.instruction, "step": 0})
    env.close()
    return out


def _chunks(adapter, observations: list[dict], m: int = 1):
    """One chunk per observation, each from a fresh episode seeded with its index (the same noise for
    every adapter of the same checkpoint); TACO with the policy's fitted CFN when m > 1."""
    strategies = [TacoSelection(load_verifier("cfn", adapter), m)] if m > 1 else []
    sp = SteeredPolicy(adapter, strategies, seed=0)
    out = []
    for i, obs in enumerate(observations):
        sp.start_episode(None, seed=i)
        out.append(sp.predict_chunk(obs))
    return out


@pytest.fixture(scope="module")
def observations():
    return _observations(4)


@pytest.mark.parametrize("path", POLICIES)
def test_bfloat16_chunks_stay_within_the_stated_bound(path, observations):
    fp32 = _chunks(load_policy(path), observations)
    bf16_policy = load_policy(path, dtype="bfloat16")
    assert bf16_policy.compute.dtype == "bfloat16"
    assert {p.dtype for p in bf16_policy.policy.parameters()} == {torch.bfloat16}  # weights converted
    bf16 = _chunks(bf16_policy, observations)
    diffs = [float(np.abs(a.actions - b.actions).max()) for a, b in zip(fp32, bf16)]
    assert all(c.actions.dtype == np.float32 for c in bf16)
    assert 0.0 < max(diffs) <= BF16_BOUND  # computed in bfloat16 (not equal), within the bound


@pytest.mark.parametrize("path", POLICIES)
def test_sigmoid_activations_give_the_same_chunks_and_the_same_taco_choice(path, observations):
    exact, fast = load_policy(path), load_policy(path, activations="sigmoid")
    assert not any(isinstance(m, (SigmoidMish, SigmoidGelu)) for m in exact.policy.modules())
    assert any(isinstance(m, (SigmoidMish, SigmoidGelu)) for m in fast.policy.modules())
    a, b = _chunks(exact, observations, m=16), _chunks(fast, observations, m=16)
    assert [c.info["winner"] for c in a] == [c.info["winner"] for c in b]
    for x, y in zip(a, b):
        np.testing.assert_allclose(y.actions, x.actions, rtol=0, atol=1e-6)
        np.testing.assert_allclose(y.info["steer"]["taco"]["scores"], x.info["steer"]["taco"]["scores"], rtol=1e-4)


def test_the_sigmoid_forms_equal_the_activations():
    x = torch.linspace(-30, 30, 200001)
    torch.testing.assert_close(SigmoidMish()(x), torch.nn.functional.mish(x), rtol=0, atol=3e-6)
    torch.testing.assert_close(SigmoidGelu()(x), torch.nn.functional.gelu(x, approximate="tanh"), rtol=0, atol=1e-6)


def test_bad_names_and_unsupported_combinations_are_refused_by_name(monkeypatch):
    for bad in ("float16", "bf17", ""):
        with pytest.raises(ConfigError, match="--dtype"):
            parse_dtype(bad)
    with pytest.raises(ConfigError, match="--dtype 'half'"):
        load_policy("checkpoints/push-diffusion", dtype="half")
    with pytest.raises(ConfigError, match="--activations"):
        load_policy("checkpoints/push-diffusion", activations="fast")
    assert parse_dtype("bf16") == "bfloat16" and parse_dtype("FP32") == "float32"

    from policy_steer.bench.config import BenchConfig
    from policy_steer.transport.cli import ServeConfig, build_served_policy

    with pytest.raises(ConfigError, match="--dtype"):
        BenchConfig(dtype="int8")
    with pytest.raises(ConfigError, match="--dtype"):
        build_served_policy(ServeConfig(policy="checkpoints/push-diffusion", dtype="float64"))

    monkeypatch.setattr(precision, "bf16_supported", lambda device: False)  # a device without bf16 kernels
    with pytest.raises(ConfigError, match="--dtype bfloat16: the cpu device has no bfloat16"):
        check_compute(Compute(dtype="bfloat16"), "cpu")
    monkeypatch.setattr(precision, "compile_unavailable", lambda device: "no compiler here")
    with pytest.raises(ConfigError, match="--compile true: no compiler here"):
        load_policy("checkpoints/push-diffusion", compile=True)


def test_vlas_refuse_what_their_adapter_does_not_offer(flow_checkpoint):
    pi0 = flow_checkpoint("pi0")
    with pytest.raises(ConfigError, match="--compile true is not offered for pi0"):
        load_policy(pi0, compile=True)
    with pytest.raises(ConfigError, match="--activations sigmoid is not offered for pi0"):
        load_policy(pi0, activations="sigmoid")


def test_a_bfloat16_pi0_uses_lerobots_own_dtype_and_returns_float32(flow_checkpoint):
    pi0 = load_policy(flow_checkpoint("pi0"), dtype="bfloat16")
    assert pi0.config.dtype == "bfloat16"
    dtypes = {p.dtype for p in pi0.policy.parameters()}
    assert torch.bfloat16 in dtypes  # lerobot keeps some parameters in float32
    obs = {k: (np.zeros(f.shape, np.uint8) if f.dtype == "|u1" else np.zeros(f.shape, np.float32))
           for k, f in pi0.spec.observation.items()}
    chunk = SteeredPolicy(pi0, seed=0).predict_chunk({**obs, "task": "push", "step": 0})
    assert chunk.actions.dtype == np.float32 and np.all(np.isfinite(chunk.actions))


@pytest.mark.slow
@pytest.mark.parametrize("path", POLICIES)
def test_a_compiled_denoiser_gives_the_same_chunks_and_taco_choice(path, observations):
    eager, comp = load_policy(path), load_policy(path, compile=True)
    assert comp.compute.compile
    for m in (1, 16):
        a, b = _chunks(eager, observations[:2], m), _chunks(comp, observations[:2], m)
        assert [c.info["winner"] for c in a] == [c.info["winner"] for c in b]
        for x, y in zip(a, b):
            np.testing.assert_allclose(y.actions, x.actions, rtol=0, atol=1e-5)
