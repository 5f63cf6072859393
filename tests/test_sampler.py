"""The sampler's hooks: called with the right shapes, able to change the update, resample and select."""

from __future__ import annotations

import numpy as np
import torch

from policy_steer.policies import load_policy
from policy_steer.sampler import Sampler, SamplerConfig
from policy_steer.steered_policy import SteeredPolicy
from policy_steer.steering.base import Strategy
from tests.fixtures.tiny_policies import ACTION_DIM, ENV_DIM, STATE_DIM


def _obs():
    rng = np.random.default_rng(1)
    return {
        "observation.state": rng.standard_normal(STATE_DIM).astype(np.float32),
        "observation.environment_state": rng.standard_normal(ENV_DIM).astype(np.float32),
        "task": "t",
    }


class Recorder(Strategy):
    name = "recorder"
    candidates = 4
    wants_features = True
    selects = True

    def __init__(self):
        self.calls = []
        self.resampled = 0

    def needs_grad(self, k):
        return k == 0

    def begin(self, run):
        self.calls.append(("begin", tuple(run.x.shape)))

    def guide(self, view):
        self.calls.append(("guide", view.k, tuple(view.x_t.shape), tuple(view.t.shape), tuple(view.x0_hat.shape),
                           view.x_t.requires_grad, view.out.requires_grad))

    def after_step(self, run, view):
        if view.k == 1:
            run.resample(torch.tensor([3, 3, 0, 1]))

    def on_resample(self, indices):
        self.resampled += 1

    def score(self, run, x0):
        self.features_shape = tuple(run.features.shape)
        return -x0.pow(2).sum(dim=(1, 2))  # prefer the smallest chunk


def test_hooks_see_shapes_and_can_resample_and_select(tiny_diffusion_dir):
    adapter = load_policy(tiny_diffusion_dir)
    rec = Recorder()
    ctx = adapter.expand(adapter.prepare(_obs()), 4)
    noise = adapter.make_noise(4, torch.Generator().manual_seed(0))
    res = Sampler(adapter).sample(ctx, noise, [rec])
    steps = adapter.spec.num_steps
    guides = [c for c in rec.calls if c[0] == "guide"]
    assert rec.calls[0] == ("begin", (4, 16, ACTION_DIM))
    assert len(guides) == steps
    for k, c in enumerate(guides):
        assert c[1] == k and c[2] == (4, 16, ACTION_DIM) and c[3] == (4,) and c[4] == (4, 16, ACTION_DIM)
        assert c[5] == (k == 0) and c[6] == (k == 0)  # autograd only where the strategy asked for it
    assert rec.resampled == 1 and res.ancestry == [3, 3, 0, 1]
    assert rec.features_shape[0] == 4
    norms = res.x0.pow(2).sum(dim=(1, 2))
    assert res.winner == int(torch.argmax(-norms)) and res.scores["recorder"][res.winner] == max(res.scores["recorder"])


class ZeroGuide(Strategy):
    """Replaces the model output: the update must follow it."""

    name = "zero"

    def guide(self, view):
        view.out = torch.zeros_like(view.out)


def test_guidance_changes_the_update(tiny_diffusion_dir):
    adapter = load_policy(tiny_diffusion_dir)
    ctx = adapter.prepare(_obs())
    noise = adapter.make_noise(1, torch.Generator().manual_seed(0))
    plain = Sampler(adapter).sample(ctx, noise.clone()).x0
    zero = Sampler(adapter, SamplerConfig(method="ddim")).sample(ctx, noise.clone(), [ZeroGuide()]).x0
    assert not torch.allclose(plain, zero)
    # DDIM with eps = 0 keeps x/sqrt(abar) constant: x0 = noise * sqrt(abar_final / abar_first) (clipped to 1)
    assert torch.all(zero.abs() <= 1.0 + 1e-6)


def test_candidates_share_one_prepare_and_differ(tiny_diffusion_dir):
    adapter = load_policy(tiny_diffusion_dir)
    calls = {"n": 0}
    orig = adapter.prepare

    def counting(obs):
        calls["n"] += 1
        return orig(obs)

    adapter.prepare = counting

    class Smallest(Strategy):
        name = "smallest"
        candidates = 4
        selects = True

        def score(self, run, x0):
            return -x0.pow(2).sum(dim=(1, 2))

    chunk = SteeredPolicy(adapter, [Smallest()], seed=0).predict_chunk(_obs())
    scores = chunk.info["steer"]["smallest"]["scores"]
    assert calls["n"] == 1 and chunk.info["candidates"] == 4
    assert len(set(scores)) == 4  # fresh noise per candidate: four different chunks
    assert chunk.info["winner"] == int(np.argmax(scores))
