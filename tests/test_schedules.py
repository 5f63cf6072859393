"""Flow plans on a toy problem whose velocity field is known in closed form.

Data x0 ~ N(m, s0^2) in one dimension, noise n ~ N(0, 1), x_t = a(t) x0 + s(t) n. Then x_t ~ N(a m,
a^2 s0^2 + s^2) and, with var = a^2 s0^2 + s^2,

    E[x0 | x_t] = m + a s0^2 (x_t - a m) / var,   E[n | x_t] = s (x_t - a m) / var,
    v(x_t, t) = a'(t) E[x0 | x_t] + s'(t) E[n | x_t]   (the exact flow-matching velocity).

Integrating v from the noise end must reproduce every marginal along the way, deterministically
(Euler) or stochastically (``flow_sde``, which adds Langevin noise with the same marginals). The
tolerances cover the Monte-Carlo error (100 k samples: 0.1% of a std) and the O(1/steps)
discretisation error of 200 Euler / Euler-Maruyama steps (measured below 1.5%).
"""

from __future__ import annotations

import math

import pytest
import torch

from policy_steer.errors import ConfigError
from policy_steer.schedules import PI0_PATH, FlowPath, FlowSchedule, dit_path

M, S0 = 0.7, 0.3
PATHS = {"pi0 (1 -> 0)": PI0_PATH, "dit (0 -> 1)": dit_path(0.0), "dit sigma_min=0.02": dit_path(0.02)}


def _velocity(path: FlowPath, x: torch.Tensor, t: float) -> torch.Tensor:
    a, s, da, ds = path.a(t), path.s(t), path.da(t), path.ds(t)
    var = a * a * S0 * S0 + s * s
    return da * (M + a * S0 * S0 * (x - a * M) / var) + ds * (s * (x - a * M) / var)


def _marginal(path: FlowPath, t: float) -> tuple[float, float]:
    a, s = path.a(t), path.s(t)
    return a * M, math.sqrt(a * a * S0 * S0 + s * s)


def _integrate(path, method, eta, steps=200, n=100_000, seed=0, check_every=None):
    """Run the plan on the analytic field; optionally check the marginal every few steps."""
    g = torch.Generator().manual_seed(seed)
    plan = FlowSchedule(path, steps, sde_noise=eta).plan(method)
    x = torch.randn(n, 1, 1, generator=g)  # [B, H=1, A=1]: the noise end of every path is N(0, 1)
    for k in range(plan.num_steps):
        x = plan.step(x, _velocity(path, x, plan.times[k]), k, g)
        if check_every and (k + 1) % check_every == 0 and k + 1 < plan.num_steps:
            mean, std = _marginal(path, plan.times[k + 1])
            assert abs(x.mean().item() - mean) < 0.02, (k, x.mean().item(), mean)
            assert abs(x.std().item() / std - 1) < 0.03, (k, x.std().item(), std)
    return x


@pytest.mark.parametrize("path", PATHS.values(), ids=PATHS.keys())
def test_flow_sde_without_noise_is_euler(path):
    euler = _integrate(path, "euler", 1.0, steps=20, n=1000)
    sde0 = _integrate(path, "flow_sde", 0.0, steps=20, n=1000)
    assert torch.equal(euler, sde0)


@pytest.mark.parametrize("path", PATHS.values(), ids=PATHS.keys())
@pytest.mark.parametrize("method,eta", [("euler", 0.0), ("flow_sde", 1.0), ("flow_sde", 3.0)])
def test_marginals_are_kept(path, method, eta):
    x = _integrate(path, method, eta, check_every=25)
    end = path.grid(200)[0][-1] + path.grid(200)[1][-1]
    mean, std = _marginal(path, end)
    assert abs(x.mean().item() - mean) < 0.01
    assert abs(x.std().item() / std - 1) < 0.025


def test_flow_sde_is_stochastic_per_sample():
    """Same start, same marginals, different paths: what particle methods need after resampling."""
    a = _integrate(PI0_PATH, "flow_sde", 1.0, steps=50, n=10_000, seed=0)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(10_000, 1, 1, generator=g)
    plan = FlowSchedule(PI0_PATH, 50, sde_noise=1.0).plan("flow_sde")
    g2 = torch.Generator().manual_seed(123)
    for k in range(plan.num_steps):
        x = plan.step(x, _velocity(PI0_PATH, x, plan.times[k]), k, g2)
    assert not torch.allclose(a, x)
    assert abs(a.std().item() - x.std().item()) < 0.01


@pytest.mark.parametrize("path", PATHS.values(), ids=PATHS.keys())
def test_x0_hat_and_noise_hat_are_the_posterior_means(path):
    plan = FlowSchedule(path, 10).plan("euler")
    x = torch.linspace(-2, 2, 9).reshape(9, 1, 1)
    for k in range(plan.num_steps):
        t = plan.times[k]
        a, s = path.a(t), path.s(t)
        var = a * a * S0 * S0 + s * s
        v = _velocity(path, x, t)
        torch.testing.assert_close(plan.x0_hat(x, v, k), M + a * S0 * S0 * (x - a * M) / var, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(plan.noise_hat(x, v, k), s * (x - a * M) / var, atol=1e-5, rtol=1e-5)
        assert plan.noise_level(k) == pytest.approx(s)


def test_grids_match_lerobot():
    """pi0-style: t_k = 1 + k dt, dt = -1/N (euler_integrate); DiT: linspace(0, 1, N + 1)."""
    times, dts = PI0_PATH.grid(10)
    assert times[0] == 1.0 and all(d == -0.1 for d in dts)
    assert times == [1.0 + k * (-1.0 / 10) for k in range(10)]
    times, dts = dit_path(0.0).grid(10)
    g = torch.linspace(0, 1, 11)
    assert times == [g[i].item() for i in range(10)] and dts == [(g[i + 1] - g[i]).item() for i in range(10)]


def test_unknown_method_is_refused():
    with pytest.raises(ConfigError, match="ddim"):
        FlowSchedule(PI0_PATH, 10).plan("ddim")
