"""The warm start (RTI-DP) and VLS's cheaper paths, on the shipped push policy and the real push task.

- the warm start without a previous plan (or from progress 0) is the plain sampler bit for bit, alone
  and composed with VLS;
- with a previous plan it runs only the last steps (denoiser calls counted) and the chunk's head
  follows the plan's tail; it composes with VLS and TACO (their steps are the ones that run);
- in a real sync episode the runtime sends the plan, so every chunk after the first is warm;
- ``vls_through=x0_hat`` builds no step with autograd (no backward through the denoiser) and still
  raises the reward; ``vls_guide_from`` guides only the last steps;
- bad settings are refused naming the setting.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from policy_steer.bench.cells import expand_cells, parse_steer_options
from policy_steer.bench.config import BenchConfig
from policy_steer.config import StrList
from policy_steer.errors import ConfigError
from policy_steer.policies import load_policy
from policy_steer.steered_policy import SteeredPolicy
from policy_steer.steering.registry import build_steering, check_settings
from policy_steer.steering.warm_start import WarmStart, WarmStartConfig

REPO = Path(__file__).resolve().parents[2]
PUSH = REPO / "checkpoints" / "push-diffusion"


class Counted:
    """Counts the denoiser calls of a policy, and those built with autograd (a backward may follow)."""

    def __init__(self, policy) -> None:
        self.calls = self.with_grad = 0
        for name in ("denoise", "denoise_with_features"):
            original = getattr(type(policy), name)

            def counted(*args, _original=original, **kwargs):
                self.calls += 1
                self.with_grad += int(torch.is_grad_enabled() and args[0].requires_grad)
                return _original(policy, *args, **kwargs)

            setattr(policy, name, counted)

    def take(self) -> tuple[int, int]:
        out = (self.calls, self.with_grad)
        self.calls = self.with_grad = 0
        return out


@pytest.fixture(scope="module")
def push():
    policy = load_policy(str(PUSH))
    return policy, Counted(policy)


@pytest.fixture(scope="module")
def start():
    """(observation, episode context) of a real push obstacle episode's first step."""
    from policy_steer.envs import make

    env = make("push", "obstacle")
    env.reset(seed=1000)
    u = env.unwrapped
    obs = {**u.observe(), "task": u.instruction, "step": 0}
    return obs, u.episode_context(1000)


def steered(policy, steer: str, settings: dict | None = None, seed: int = 0, context=None) -> SteeredPolicy:
    sp = SteeredPolicy.from_method(policy, steer, settings or {}, seed=seed)
    sp.start_episode(context, seed=seed)
    return sp


def previous_plan(policy, obs, seed: int = 5, shift: float = 0.0) -> np.ndarray:
    """The unexecuted tail of an unsteered chunk (what a sync runtime sends), optionally moved by ``shift``."""
    chunk = SteeredPolicy(policy, seed=seed).predict_chunk(obs)
    return chunk.actions[policy.spec.n_action_steps:] + np.float32(shift)


# ------------------------------------------------------------------------------------ the warm start


def test_without_a_prefix_or_from_pure_noise_the_warm_start_is_the_plain_sampler(push, start):
    policy, _ = push
    obs, context = start
    prefix = previous_plan(policy, obs)
    for seed in (0, 1):
        plain = steered(policy, "none", seed=seed).predict_chunk(obs).actions
        warm = steered(policy, "warm", {"warm_from": 0.7}, seed=seed).predict_chunk(obs)
        assert np.array_equal(warm.actions, plain)  # no previous plan (an episode's first chunk): bit for bit
        assert warm.info["steer"]["warm"]["warm"] == 0 and not warm.info["strategies"]["warm"]
        zero = steered(policy, "warm", {"warm_from": 0.0}, seed=seed).predict_chunk(obs, prefix=prefix, prefix_start=0)
        assert np.array_equal(zero.actions, plain)  # progress 0: pure noise, every step
    # composed with VLS: the same chunk as VLS alone from the same noise stream
    vls = steered(policy, "vls", seed=3, context=context).predict_chunk(obs)
    warm_vls = steered(policy, "warm+vls", {"warm_from": 0.5}, seed=3, context=context).predict_chunk(obs)
    assert np.array_equal(warm_vls.actions, vls.actions)
    assert warm_vls.info["steer"]["vls"]["guided_steps"] == vls.info["steer"]["vls"]["guided_steps"] == 10


def test_with_a_prefix_it_runs_only_the_last_steps_and_the_head_follows_the_prefix(push, start):
    policy, counter = push
    obs, _ = start
    steps = policy.spec.num_steps
    prefix = previous_plan(policy, obs, shift=0.01)  # a plan this chunk would not draw by itself (1 cm per step off)
    p = prefix.shape[0]
    warm_gaps, plain_gaps = [], []
    for seed in range(3):
        counter.take()
        chunk = steered(policy, "warm", {"warm_from": 0.8}, seed=seed).predict_chunk(obs, prefix=prefix, prefix_start=0)
        calls, with_grad = counter.take()
        assert (calls, with_grad) == (steps - 8, 0)
        f = chunk.info["steer"]["warm"]
        assert f == {"warm": 1, "start_step": 8, "steps_run": steps - 8, "prefix_rows_used": p}
        plain = steered(policy, "none", seed=seed).predict_chunk(obs)
        assert counter.take()[0] == steps
        warm_gaps.append(np.abs(chunk.actions[:p] - prefix).mean())
        plain_gaps.append(np.abs(plain.actions[:p] - prefix).mean())
    # the model pulls the guess back toward its own data (the noise left at step 8 is 0.33): it follows, not copies
    assert max(warm_gaps) < 0.6 * min(plain_gaps), (warm_gaps, plain_gaps)
    # half-way: half the steps
    steered(policy, "warm", {"warm_from": 0.5}).predict_chunk(obs, prefix=prefix, prefix_start=0)
    assert counter.take()[0] == steps - 5


def test_the_prefix_is_placed_where_it_runs(push, start):
    policy, _ = push
    obs, _ = start
    prefix = previous_plan(policy, obs)
    sp = steered(policy, "warm", {"warm_from": 0.5})
    # the whole plan committed before the chunk starts (offset -P): nothing of it lies in this chunk
    cold = sp.predict_chunk(obs, prefix=prefix)
    assert cold.info["steer"]["warm"]["warm"] == 0
    # its last two rows run as the chunk's first two
    warm = sp.predict_chunk(obs, prefix=prefix, start_step=0, prefix_start=-(prefix.shape[0] - 2))
    assert warm.info["steer"]["warm"]["prefix_rows_used"] == 2


def test_it_composes_with_vls_and_taco(push, start):
    policy, counter = push
    obs, context = start
    steps = policy.spec.num_steps
    prefix = previous_plan(policy, obs)
    counter.take()
    chunk = steered(policy, "warm+vls", {"warm_from": 0.5}, context=context).predict_chunk(obs, prefix=prefix, prefix_start=0)
    calls, with_grad = counter.take()
    vls = chunk.info["steer"]["vls"]
    assert chunk.info["strategies"] == {"warm": True, "vls": True}
    assert (calls, with_grad) == (steps - 5, steps - 5) and vls["guided_steps"] == steps - 5 and vls["particles"] == 4
    assert vls["fk_evaluations"] > 0  # FK counts from half-way: every step that runs
    steered(policy, "taco", {"candidates": 4}).predict_chunk(obs, prefix=prefix, prefix_start=0)
    taco_calls = counter.take()[0]  # the sampling steps, plus whatever the verifier reads
    chunk = steered(policy, "warm+taco", {"warm_from": 0.5, "candidates": 4}).predict_chunk(obs, prefix=prefix, prefix_start=0)
    assert counter.take()[0] == taco_calls - 5
    assert len(chunk.info["steer"]["taco"]["scores"]) == 4 and chunk.info["strategies"]["warm"]


def test_a_real_sync_episode_sends_the_plan_and_every_later_chunk_is_warm(push):
    from policy_steer.envs import make
    from policy_steer.runtime.sim_loop import RuntimeConfig, run_episode

    policy, _ = push
    sp = steered(policy, "warm", {"warm_from": 0.5})
    assert sp.wants_prefix
    chunks = []
    sp_predict = sp.predict_chunk

    def recording(*args, **kwargs):
        chunk = sp_predict(*args, **kwargs)
        chunks.append(chunk.info["steer"]["warm"])
        return chunk

    sp.predict_chunk = recording
    result = run_episode(make("push", "nominal"), sp, RuntimeConfig(mode="sync"), seed=1000, record_steps=False)
    assert result.success and len(chunks) >= 3
    assert chunks[0]["warm"] == 0 and all(c["warm"] == 1 and c["steps_run"] == 5 for c in chunks[1:])


def test_bad_warm_settings_are_refused_by_name(push):
    policy, _ = push
    for bad in (1.0, -0.1, 2, "half", float("nan")):
        with pytest.raises(ConfigError, match="warm_from"):
            build_steering(policy, "warm", {"warm_from": bad})
    with pytest.raises(ConfigError, match="warm_from"):
        WarmStartConfig(warm_from=1.5)
    with pytest.raises(ConfigError, match="warm_frm"):
        check_settings("warm+vls", {"warm_frm": 0.5})
    assert isinstance(build_steering(policy, "warm+vls", {}).strategies[0], WarmStart)


# ------------------------------------------------------------------------------------ VLS's cheaper paths


@pytest.mark.parametrize("through", ["x0_hat", "x0_hat_scaled"])
def test_gradient_through_x0_hat_never_backpropagates_through_the_denoiser_and_raises_the_reward(push, start, through):
    policy, counter = push
    obs, context = start
    steps = policy.spec.num_steps
    gains = []
    for seed in range(3):
        # B = 1, FK off: the gradient alone decides what changes
        settings = {"particles": 1, "fk": "off", "vls_through": through}
        counter.take()
        guided = steered(policy, "vls", settings, seed=seed, context=context).predict_chunk(obs)
        assert counter.take() == (steps, 0)  # no step built with autograd: no backward through the model
        plain = steered(policy, "vls", {**settings, "gradient": "off"}, seed=seed, context=context).predict_chunk(obs)
        g, p = guided.info["steer"]["vls"], plain.info["steer"]["vls"]
        assert g["guided_steps"] == steps and p["guided_steps"] == 0
        gains.append(g["reward_executed"] - p["reward_executed"])
    assert all(x > 0 for x in gains), gains
    # today's default builds every guided step with autograd
    counter.take()
    steered(policy, "vls", {"particles": 1, "fk": "off"}, context=context).predict_chunk(obs)
    assert counter.take() == (steps, steps)


def test_the_scaled_x0_hat_gradient_is_the_plain_one_times_the_step_slope(push):
    from policy_steer.steering.vls.guidance import x0_hat_slope

    policy, _ = push
    plan = policy.schedule.plan("ddpm")
    slopes = [x0_hat_slope(plan, k) for k in range(plan.num_steps)]
    # epsilon prediction: x0_hat = (x_t - sqrt(1 - abar) eps) / sqrt(abar), so the slope is 1 / sqrt(abar)
    assert slopes == pytest.approx([1.0 / (1.0 - plan.noise_level(k) ** 2) ** 0.5 for k in range(plan.num_steps)], rel=1e-5)
    assert slopes[0] > slopes[-1] >= 1.0


def test_the_guidance_window_guides_only_its_steps(push, start):
    policy, counter = push
    obs, context = start
    counter.take()
    chunk = steered(policy, "vls", {"vls_guide_from": 0.7}, context=context).predict_chunk(obs)
    assert counter.take() == (10, 3) and chunk.info["steer"]["vls"]["guided_steps"] == 3
    chunk = steered(policy, "vls", {"vls_guide_from": 0.2, "vls_guide_until": 0.8}, context=context).predict_chunk(obs)
    assert counter.take() == (10, 6) and chunk.info["steer"]["vls"]["guided_steps"] == 6
    for bad in (1.0, -0.5, "late"):
        with pytest.raises(ConfigError, match="vls_guide_from"):
            build_steering(policy, "vls", {"vls_guide_from": bad})
    for bad in (1.5, "soon"):
        with pytest.raises(ConfigError, match="vls_guide_until"):
            build_steering(policy, "vls", {"vls_guide_until": bad})
    with pytest.raises(ConfigError, match="vls_guide_from .* below vls_guide_until"):
        build_steering(policy, "vls", {"vls_guide_from": 0.6, "vls_guide_until": 0.4})
    with pytest.raises(ConfigError, match="through"):
        build_steering(policy, "vls", {"vls_through": "nowhere"})


def test_bench_steer_options_go_to_the_methods_that_read_them():
    assert parse_steer_options("vls_through=x0_hat; warm_from=0.5", ["none", "warm+vls"]) == {
        "vls_through": "x0_hat", "warm_from": "0.5"}
    with pytest.raises(ConfigError, match="warm_from"):
        parse_steer_options("warm_from=0.5", ["vls"])  # no method of the run reads it
    with pytest.raises(ConfigError, match="name=value"):
        parse_steer_options("vls_through", ["vls"])
    with pytest.raises(ConfigError, match="--particles"):
        parse_steer_options("particles=8", ["vls"])  # an axis has its own bench option
    cfg = BenchConfig(task=StrList(["push"]), variant=StrList(["obstacle"]), steer=StrList(["none", "vls", "warm+vls"]),
                      steer_options="warm_from=0.7;vls_through=x0_hat", episodes=1)
    cells = {c.steer: c.settings_dict for c in expand_cells(cfg)}
    assert "warm_from" not in cells["none"] and "vls_through" not in cells["none"]  # the unsteered cell stays plain
    assert cells["vls"]["vls_through"] == "x0_hat" and "warm_from" not in cells["vls"]
    assert (cells["warm+vls"]["warm_from"], cells["warm+vls"]["vls_through"]) == ("0.7", "x0_hat")
