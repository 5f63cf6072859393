"""VLS guidance on tiny real lerobot policies of both families: gradient, repulsion, FK, selection.

The tiny policies have random weights, so these tests check the mechanics on the policies' real
denoisers, schedules and normalisation: the guided chunk scores a higher reward than the unguided
one from the same noise, the two gradient paths differ and are finite, FK resampling fires (counted)
on both families, repulsion spreads the particles, the reward's argmax is executed.
"""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch

from policy_steer.errors import ConfigError
from policy_steer.policies import load_policy
from policy_steer.runtime.future_state import RobotDescription
from policy_steer.sampler import SamplerConfig
from policy_steer.steered_policy import SteeredPolicy
from policy_steer.steering.base import Strategy
from policy_steer.steering.registry import build_steering, get_method
from policy_steer.steering.vls import (
    EpisodeReward,
    FKConfig,
    RepulsionConfig,
    StrengthConfig,
    VLSConfig,
    VLSStrategy,
    sampler_for,
)
from policy_steer.steering.vls.guidance import normalize_gradient, reward_gradient
from policy_steer.steering.vls.repulsion import rbf_repulsion, spread
from policy_steer.steering.vls.resampling import (
    FeynmanKac,
    FKState,
    effective_sample_size,
    reward_spread,
    systematic_indices,
)
from policy_steer.types import EpisodeContext
from policy_steer.vlm_rewards import RewardSession, make_synthesizer, SynthesisConfig
from tests.vlm_rewards.scenes import push_scene

os.environ.setdefault("HF_HUB_OFFLINE", "1")

# The tiny policies' action statistics span +-2 per step: the env's 3 cm clip would saturate every
# component, so these robots do not clip (the clip is tested in test_vls_episode.py on a real env).
ROBOT = RobotDescription("delta", {"ee_pos": slice(0, 3)}, 3, max_step=None)
SCENE = push_scene("obstacle")


@pytest.fixture(scope="module")
def diffusion(tiny_diffusion_dir):
    return load_policy(str(tiny_diffusion_dir))


@pytest.fixture(scope="module")
def flow(tmp_path_factory):
    from tests.policies.flow_checkpoints import build_tiny_dit

    return load_policy(str(build_tiny_dit(tmp_path_factory.mktemp("vls_dit") / "ckpt")))


@pytest.fixture(params=["diffusion", "flow"])
def policy(request):
    return request.getfixturevalue(request.param)


def observation(policy, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    obs: dict = {"task": "push the block into the target region", "step": 0}
    for key, feat in policy.spec.observation.items():
        if feat.dtype == "|u1":
            obs[key] = rng.integers(0, 256, size=feat.shape, dtype=np.uint8)
        else:
            obs[key] = rng.standard_normal(feat.shape).astype(np.float32)
    obs["observation.state"][:3] = SCENE.ee_position
    return obs


def episode() -> EpisodeContext:
    return EpisodeContext(task="push", variant="obstacle", instruction=SCENE.instruction, scene=SCENE, robot=ROBOT)


def steered(policy, seed: int = 0, sampler: SamplerConfig | None = None, **cfg) -> tuple[SteeredPolicy, VLSStrategy]:
    strategy = VLSStrategy(policy, VLSConfig(**cfg))
    sp = SteeredPolicy(policy, [strategy], sampler or sampler_for(policy, strategy.config.particles), seed=seed)
    sp.start_episode(episode(), seed=seed)
    return sp, strategy


def figures(chunk) -> dict:
    return chunk.info["steer"]["vls"]


# ------------------------------------------------------------------------------------------ guidance


def test_guidance_raises_the_reward_of_the_executed_chunk_on_the_same_noise(policy):
    fk_off = FKConfig(enabled=False)
    gains = []
    for seed in range(3):
        guided, _ = steered(policy, seed, particles=1, fk=fk_off, strength=StrengthConfig(scale=0.5))
        plain, _ = steered(policy, seed, particles=1, fk=fk_off, gradient=False)
        obs = observation(policy, seed)
        g, p = figures(guided.predict_chunk(obs)), figures(plain.predict_chunk(obs))
        assert g["guided_steps"] > 0 and p["guided_steps"] == 0
        gains.append(g["reward_executed"] - p["reward_executed"])
    assert all(x > 0 for x in gains), gains


def test_gradient_through_the_denoiser_differs_from_through_x0_hat_and_both_are_finite(policy):
    er = EpisodeReward(policy)
    er.set_session(RewardSession.start(make_synthesizer(SynthesisConfig()), SCENE), ROBOT)
    obs = observation(policy)
    reward = er.for_chunk(obs)

    class Probe(Strategy):
        name = "probe"

        def __init__(self) -> None:
            self.grads: list[tuple[torch.Tensor, torch.Tensor]] = []

        def needs_grad(self, k: int) -> bool:
            return True

        def guide(self, view) -> None:
            mask = reward.mask(view.x_t)
            g_d, r_d = reward_gradient(view, reward, "denoiser", mask)
            g_x, r_x = reward_gradient(view, reward, "x0_hat", mask)
            assert torch.allclose(r_d, r_x)  # the same reward, two gradients
            self.grads.append((g_d, g_x))

    probe = Probe()
    sp = SteeredPolicy(policy, [probe], seed=0)
    sp.predict_chunk(obs)
    assert len(probe.grads) == policy.schedule.plan().num_steps
    cosines = []
    for g_d, g_x in probe.grads:
        assert torch.isfinite(g_d).all() and torch.isfinite(g_x).all()
        assert g_d.abs().sum() > 0 and g_x.abs().sum() > 0
        assert (g_d[..., 3:] == 0).all() and (g_x[..., 3:] == 0).all()  # xyz only
        assert not torch.allclose(g_d, g_x, rtol=1e-3, atol=0.0)
        cosines.append(float(torch.nn.functional.cosine_similarity(g_d.flatten(), g_x.flatten(), dim=0)))
    assert min(cosines) < 0.999, cosines  # the denoiser's Jacobian turns the direction, not only its length
    # rows outside the returned chunk get no gradient through x0_hat, but do through the denoiser
    outside = [r for r in range(policy.model_horizon) if not (policy.chunk_slice.start <= r < policy.chunk_slice.stop)]
    if outside:
        assert all((g_x[:, outside] == 0).all() for _, g_x in probe.grads)


def test_unit_normalisation_gives_unit_rms_per_particle():
    g = torch.randn(3, 5, 4)
    mask = torch.tensor([1.0, 1.0, 1.0, 0.0]).reshape(1, 1, 4)
    g = g * mask
    n = normalize_gradient(g, mask, "unit")
    rms = n.flatten(1).norm(dim=1) / math.sqrt(5 * 3)
    assert torch.allclose(rms, torch.ones(3), atol=1e-5)
    assert torch.equal(normalize_gradient(g, mask, "raw"), g)


def test_strength_schedules():
    s = StrengthConfig(scale=4.0, schedule="sigmoid", midpoint=0.3, steepness=12.0)
    assert s.at(0.3) == pytest.approx(2.0)
    assert s.at(0.0) < s.at(0.3) < s.at(0.9) < 4.0
    assert StrengthConfig(scale=2.0, schedule="constant", start=0.2).at(0.1) == 0.0
    assert StrengthConfig(scale=2.0, schedule="linear").at(0.5) == pytest.approx(1.0)
    with pytest.raises(ConfigError):
        StrengthConfig(schedule="cosine")


# ------------------------------------------------------------------------------------------ particles


def test_fk_resampling_fires_and_is_counted(policy):
    # gradient off: the resampling alone has to act; a sharp potential so that ESS drops
    sp, strategy = steered(policy, 0, particles=8, gradient=False, fk=FKConfig(potential="max", lam=4.0))
    assert sp.sampler.plan.method in ("ddpm", "flow_sde")  # stochastic: duplicates diverge again
    fired = 0
    for step in range(3):
        f = figures(sp.predict_chunk({**observation(policy, step), "step": step}))
        assert f["fk_evaluations"] == sp.sampler.plan.num_steps - 1  # every step but the last
        fired += f["fk_resamples"]
        if f["fk_resamples"]:
            assert f["unique_ancestors"] < 8 and f["ess_min"] < 0.5
    assert fired > 0


@pytest.mark.parametrize("potential", ["difference", "max", "sum"])
def test_fk_potentials_and_ess_trigger(potential):
    fk = FeynmanKac(FKConfig(potential=potential, lam=1.0, reward_scale="raw", ess_threshold=0.5))
    state = FKState.fresh(4, torch.device("cpu"))
    assert not fk.update(state, torch.zeros(4))  # equal rewards: ESS = B
    assert state.ess[-1] == pytest.approx(1.0)
    fire = fk.update(state, torch.tensor([0.0, 0.0, 0.0, 6.0]))  # one particle far better
    assert fire and state.ess[-1] < 0.5
    idx = systematic_indices(state.log_w, torch.Generator().manual_seed(0))
    assert (idx == 3).sum() >= 3  # the good particle takes (almost) every slot
    state.reindex(idx)
    assert torch.equal(state.log_w, torch.zeros(4))
    assert torch.equal(state.prev, torch.tensor([0.0, 0.0, 0.0, 6.0], dtype=torch.float64)[idx])  # per-particle state follows


def test_ess_and_systematic_resampling_match_the_weights():
    log_w = torch.log(torch.tensor([0.1, 0.2, 0.3, 0.4]))
    assert effective_sample_size(log_w) == pytest.approx(1 / (0.01 + 0.04 + 0.09 + 0.16))
    counts = torch.zeros(4)
    g = torch.Generator().manual_seed(0)
    for _ in range(200):
        counts += torch.bincount(systematic_indices(log_w, g), minlength=4)
    assert torch.allclose(counts / counts.sum(), torch.tensor([0.1, 0.2, 0.3, 0.4]), atol=0.02)


def test_mad_scale_is_not_inflated_by_one_far_off_particle():
    r = torch.tensor([-1.0, -1.1, -0.9, -1.05, -50.0], dtype=torch.float64)  # one chunk through an obstacle
    assert float(reward_spread(r, "mad")) < 0.2 < float(reward_spread(r, "std"))
    fk = FeynmanKac(FKConfig(potential="difference", lam=1.0))
    state = FKState.fresh(5, torch.device("cpu"))
    fk.update(state, r)
    w = torch.softmax(state.log_w, 0)
    assert w[4] < 1e-6 and w[:4].max() / w[:4].min() > 2  # the outlier is gone and the rest still compete
    assert float(reward_spread(torch.zeros(4), "mad")) > 0  # ties: never divide by zero


def test_fk_never_resamples_on_the_last_step_or_with_one_particle():
    fk = FeynmanKac(FKConfig())
    assert not fk.wants(9, 10, 1.0)
    assert fk.wants(3, 10, 0.4)
    state = FKState.fresh(1, torch.device("cpu"))
    assert not fk.update(state, torch.tensor([5.0]))


def test_repulsion_increases_particle_spread_early(policy):
    class Spread(Strategy):
        name = "spread"

        def __init__(self) -> None:
            self.values: list[float] = []

        def after_step(self, run, view) -> None:
            self.values.append(spread(run.x, policy.chunk_slice))

    until = 0.5
    results = {}
    for scale in (0.0, 2.0):
        probe = Spread()
        strategy = VLSStrategy(policy, VLSConfig(particles=6, gradient=False, fk=FKConfig(enabled=False),
                                                 repulsion=RepulsionConfig(scale=scale, until=until)))
        sp = SteeredPolicy(policy, [strategy, probe], sampler_for(policy, 6), seed=0)
        sp.start_episode(episode(), seed=0)
        f = figures(sp.predict_chunk(observation(policy)))
        results[scale] = (probe.values, f["repulsion_steps"])
    n_early = results[2.0][1]
    assert results[0.0][1] == 0 and n_early > 0
    # same noise and sampler noise: the only difference is the repulsion
    assert results[2.0][0][n_early - 1] > results[0.0][0][n_early - 1]


def test_rbf_repulsion_pushes_particles_apart():
    pair = torch.tensor([[0.0, 0.0], [0.1, 0.0]])
    phi = rbf_repulsion(pair)
    assert phi[0, 0] < 0 < phi[1, 0] and phi[:, 1].abs().sum() == 0  # apart along the line joining them
    cloud = torch.randn(7, 12, generator=torch.Generator().manual_seed(0))
    step = 1e-2 * rbf_repulsion(cloud)
    x = cloud.reshape(7, 4, 3)
    assert spread(x + step.reshape(7, 4, 3), slice(0, 4)) > spread(x, slice(0, 4))
    assert rbf_repulsion(pair[:1]).abs().sum() == 0


def test_selection_executes_the_argmax_reward(policy):
    sp, _ = steered(policy, 1, particles=6)
    chunk = sp.predict_chunk(observation(policy, 1))
    f = figures(chunk)
    scores = f["scores"]
    assert len(scores) == 6
    assert chunk.info["winner"] == int(np.argmax(scores))
    assert f["reward_executed"] == pytest.approx(max(scores)) == pytest.approx(f["reward_best"])
    assert f["selected_by"] == "vls" and f["reward_selects"] == 1


# ------------------------------------------------------------------------------------------ builder


def test_registry_builds_the_sampler_of_the_family(policy):
    assert get_method("vls").axes == ("particles", "fk", "gradient")
    setup = build_steering(policy, "vls", {"particles": 4, "fk": "on", "gradient": "off"})
    family = policy.schedule.family
    assert setup.sampler.method == {"diffusion": "ddpm", "flow": "flow_sde"}[family]
    assert setup.strategies[0].candidates == 4 and not setup.strategies[0].config.gradient
    one = build_steering(policy, "vls", {"particles": 1, "fk": "off", "gradient": "on", "guidance_scale": 3.0,
                                         "vls_through": "x0_hat"})
    assert one.sampler is None  # the policy's own sampler
    cfg = one.strategies[0].config
    assert cfg.strength.scale == 3.0 and cfg.grad.through == "x0_hat" and not cfg.fk.enabled
    with pytest.raises(ConfigError):
        build_steering(policy, "vls", {"particles": 2, "fk": "maybe"})
    with pytest.raises(ConfigError):
        build_steering(policy, "vls", {"particles": 0})


def test_velocity_form_is_refused_for_diffusion(diffusion):
    sp, _ = steered(diffusion, 0, particles=1)
    sp.strategies[0].config.grad.form = "velocity"
    with pytest.raises(ConfigError):
        sp.predict_chunk(observation(diffusion))


def test_bench_defaults_are_raw_capped_gradients(policy):
    # "unit" gradients pushed every particle at full strength along the goal terms' slope (the detour
    # round the block bent into a straight line: push obstacle 0.50 -> 0.00); the bench path now takes
    # raw gradients (vanishing where the program's constraints hold), capped, unless told otherwise.
    from policy_steer.steering.vls import DEFAULT_CAP, DEFAULT_FK_START, DEFAULT_SCALE, UNIT_SCALE, config_from_settings

    family = policy.schedule.family
    cfg = config_from_settings(policy, {"particles": 4, "guidance_scale": None})
    assert cfg.grad.normalize == "raw" and cfg.grad.cap == DEFAULT_CAP
    assert cfg.strength.scale == DEFAULT_SCALE[family]
    unit = config_from_settings(policy, {"vls_normalize": "unit"})
    assert unit.grad.cap is None and unit.strength.scale == UNIT_SCALE[family]
    assert config_from_settings(policy, {"vls_cap": "none"}).grad.cap is None
    assert config_from_settings(policy, {"guidance_scale": 5.0}).strength.scale == 5.0
    assert cfg.fk.start == DEFAULT_FK_START == 0.5
    assert config_from_settings(policy, {"vls_fk_start": 0.0}).fk.start == 0.0
