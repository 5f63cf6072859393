"""The multi_task_dit adapter against lerobot's own sampling (flow matching and diffusion).

lerobot draws multi_task_dit's initial noise (and DDPM's per-step noise) from the global torch RNG,
so the fidelity test seeds the global RNG identically before both runs. Comparisons are bit for bit
(``torch.equal``): the same modules run in the same order on the same tensors.
"""

from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from policy_steer.policies import load_policy
from policy_steer.policies.multi_task_dit import MultiTaskDiTAdapter
from policy_steer.policies.observation import to_policy_inputs
from policy_steer.policies.tiny_backbones import build_tiny_clip, make_self_contained, multi_task_dit_config
from policy_steer.sampler import Sampler
from policy_steer.schedules import DiffusionSchedule, FlowSchedule
from policy_steer.steered_policy import SteeredPolicy
from tests.policies.flow_checkpoints import ACTION_DIM, CHUNK, STATE_DIM, make_obs

KINDS = ["dit-flow", "dit-flow-camera", "dit-ddpm", "dit-ddim", "dit-ddim-camera"]
N_OBS = 2


@pytest.fixture(scope="module")
def adapters(flow_checkpoint):
    cache: dict[str, MultiTaskDiTAdapter] = {}

    def get(kind: str) -> MultiTaskDiTAdapter:
        if kind not in cache:
            cache[kind] = load_policy(flow_checkpoint(kind))
        return cache[kind]

    return get


def _lerobot_chunk(a: MultiTaskDiTAdapter, observations: list[dict], seed: int) -> torch.Tensor:
    """lerobot's select_action path (queues over n_obs_steps) -> predict_action_chunk, normalised."""
    from lerobot.policies.utils import populate_queues

    policy = a.policy
    policy.reset()
    for obs in observations:
        batch = a.preprocessor(to_policy_inputs(obs, a.spec.observation, a.device))
        batch = policy._prepare_batch({k: v for k, v in batch.items() if k.startswith("observation.")})
        policy._queues = populate_queues(policy._queues, batch)
    torch.manual_seed(seed)
    return policy.predict_action_chunk(batch)


def _ours(a: MultiTaskDiTAdapter, observations: list[dict], seed: int) -> torch.Tensor:
    a.reset()
    for obs in observations:
        ctx = a.prepare(obs)
    torch.manual_seed(seed)
    return Sampler(a).sample(ctx, a.make_noise(1)).x0


@pytest.mark.parametrize("kind", KINDS)
def test_sampler_matches_lerobot_bit_for_bit(adapters, kind):
    a = adapters(kind)
    history = [make_obs(a.spec, seed=1, step=0), make_obs(a.spec, seed=2, step=1)]
    for observations in (history[:1], history):  # a fresh history (padded) and a full one
        ours = _ours(a, observations, seed=21)
        ref = _lerobot_chunk(a, observations, seed=21)
        assert ours.shape == (1, CHUNK, ACTION_DIM)
        assert ref.shape == (1, a.spec.n_action_steps, ACTION_DIM)
        assert torch.equal(ours[:, a.chunk_slice][:, : a.spec.n_action_steps], ref)
    # the whole horizon against the objective's own sampler
    cond = a.prepare(history[-1]).tensors["cond"]
    torch.manual_seed(4)
    full = a.policy.objective.conditional_sample(a.net, 1, cond)
    torch.manual_seed(4)
    assert torch.equal(Sampler(a).sample(a.prepare(history[-1]), a.make_noise(1)).x0, full)


@pytest.mark.parametrize("kind", KINDS)
def test_spec_and_schedule(adapters, kind):
    a = adapters(kind)
    flow = kind.startswith("dit-flow")
    assert a.spec.family == ("flow" if flow else "diffusion")
    assert isinstance(a.schedule, FlowSchedule if flow else DiffusionSchedule)
    assert a.spec.horizon == CHUNK - N_OBS + 1 and a.chunk_slice == slice(N_OBS - 1, CHUNK)
    assert a.spec.action_dim == a.model_action_dim == ACTION_DIM and a.spec.n_obs_steps == N_OBS
    if kind == "dit-ddpm":
        assert a.schedule.default_method == "ddpm"
    if kind == "dit-flow":
        assert list(a.spec.observation) == ["observation.state"]


@pytest.mark.parametrize("kind", ["dit-flow", "dit-flow-camera", "dit-ddim-camera"])
def test_expand_encodes_once_and_features(adapters, kind, monkeypatch):
    a = adapters(kind)
    calls = [0]
    encode = a.encoder.encode

    def counted(batch):
        calls[0] += 1
        return encode(batch)

    monkeypatch.setattr(a.encoder, "encode", counted)
    a.reset()
    ctx = a.expand(a.prepare(make_obs(a.spec, seed=3)), 5)
    noise = a.make_noise(5, torch.Generator().manual_seed(0))
    x0 = Sampler(a).sample(ctx, noise).x0
    assert calls[0] == 1 and x0.shape == (5, CHUNK, ACTION_DIM)
    assert a.features(ctx).shape == (5, a.encoder.conditioning_dim)
    x = noise.clone()
    t = torch.full((5,), 0.3)
    with torch.no_grad():
        out, feat = a.denoise_with_features(x, t, ctx)
    assert out.shape == (5, CHUNK, ACTION_DIM) and feat.shape == (5, a.config.hidden_dim)
    # the feature is the last block's hidden state at the chunk's first action: it gives that row
    start = a.chunk_slice.start
    torch.testing.assert_close(a.net.output_proj(feat), out[:, start], atol=1e-6, rtol=1e-6)


def test_camera_image_conditions_the_chunk(adapters):
    """The image reaches the conditioning (so the fidelity test above also covers the image path)."""
    a = adapters("dit-ddim-camera")
    assert a.config.image_crop_shape == (24, 24) and a.spec.observation["observation.images.front"].shape == (32, 32, 3)
    obs = make_obs(a.spec, seed=1)
    other = {**obs, "observation.images.front": make_obs(a.spec, seed=2)["observation.images.front"]}
    a.reset()
    c1 = a.prepare(obs).tensors["cond"]
    a.reset()
    c2 = a.prepare(other).tensors["cond"]
    assert not torch.allclose(c1, c2)
    state = a.spec.observation["observation.state"].shape[0]
    torch.testing.assert_close(c1[:, :state], c2[:, :state])  # only the image part differs


def test_units_match_the_postprocessor(adapters):
    a = adapters("dit-flow")
    x = torch.randn(3, CHUNK, ACTION_DIM, requires_grad=True)
    y = a.unnormalize_actions(x)
    torch.testing.assert_close(y.detach(), a.postprocessor(x.detach()))
    y.sum().backward()
    assert torch.all(x.grad != 0)
    torch.testing.assert_close(a.normalize_actions(y.detach()), x.detach(), atol=1e-5, rtol=1e-5)


def test_steered_policy_chunk(adapters):
    a = adapters("dit-flow")
    sp = SteeredPolicy(a, seed=0)
    sp.reset()
    chunk = sp.predict_chunk(make_obs(a.spec, seed=5, step=0))
    assert chunk.actions.shape == (CHUNK - N_OBS + 1, ACTION_DIM) and np.all(np.isfinite(chunk.actions))


def test_loads_from_a_copied_folder_and_any_cwd(flow_checkpoint, tmp_path, monkeypatch):
    src = flow_checkpoint("dit-flow")
    cfg = json.loads((src / "config.json").read_text())
    assert cfg["text_encoder_name"] == "tiny_clip" and (src / "tiny_clip").is_dir()
    steps = json.loads((src / "policy_preprocessor.json").read_text())["steps"]
    assert [s["config"]["tokenizer_name"] for s in steps if "tokenizer_name" in s.get("config", {})] == ["tiny_clip"]
    dst = tmp_path / "clone" / "checkpoints" / "push-flow"
    shutil.copytree(src, dst)
    monkeypatch.chdir(tmp_path / "clone")
    a = load_policy("checkpoints/push-flow")
    saved = load_file(str(dst / "model.safetensors"))
    state = a.policy.state_dict()
    assert all(torch.equal(state[k], v) for k, v in saved.items())


def _train_like_checkpoint(tmp_path):
    """What lerobot's training writes for our config: names pointing at an absolute CLIP folder."""
    from lerobot.policies.factory import make_pre_post_processors
    from lerobot.policies.multi_task_dit.modeling_multi_task_dit import MultiTaskDiTPolicy

    clip = build_tiny_clip(tmp_path / "train-machine" / "tiny_clip")
    cfg = multi_task_dit_config(STATE_DIM, ACTION_DIM, clip, hidden_dim=32, num_layers=1, num_heads=2)
    policy = MultiTaskDiTPolicy(cfg)
    stats = {k: {"min": -torch.ones(d), "max": torch.ones(d)} for k, d in (("observation.state", STATE_DIM), ("action", ACTION_DIM))}
    pre, post = make_pre_post_processors(cfg, dataset_stats=stats)
    out = tmp_path / "pretrained_model"
    for obj in (policy, pre, post):
        obj.save_pretrained(out)
    assert json.loads((out / "config.json").read_text())["text_encoder_name"] == str(clip.resolve())
    return out, clip, cfg


def test_make_self_contained_after_training(tmp_path, monkeypatch):
    out, clip, cfg = _train_like_checkpoint(tmp_path)
    assert cfg.extra_folders() == [str(clip.resolve())]
    assert make_self_contained(out) == ["tiny_clip"]
    assert json.loads((out / "config.json").read_text())["text_encoder_name"] == "tiny_clip"
    shutil.rmtree(clip.parent)  # the training machine's folder is gone
    monkeypatch.chdir(tmp_path)
    assert isinstance(load_policy(out), MultiTaskDiTAdapter)


def test_absolute_backbone_name_falls_back_to_the_folder_inside(tmp_path):
    """A checkpoint that carries the CLIP folder but still names the training machine's path loads."""
    out, clip, _ = _train_like_checkpoint(tmp_path)
    shutil.copytree(clip, out / "tiny_clip")
    shutil.rmtree(clip.parent)
    assert isinstance(load_policy(out), MultiTaskDiTAdapter)


def test_reference_config_is_small():
    """The config the project trains its reference flow policies on (the trainer's call signature)."""
    from lerobot.policies.multi_task_dit.modeling_multi_task_dit import MultiTaskDiTPolicy

    cfg = multi_task_dit_config(state_dim=20, action_dim=3, lr=3e-4)
    assert cfg.optimizer_lr == 3e-4 and cfg.objective == "flow_matching" and "tiny_clip" in cfg.text_encoder_name
    policy = MultiTaskDiTPolicy(cfg)
    trainable = sum(p.numel() for p in policy.parameters() if p.requires_grad)
    total = sum(p.numel() for p in policy.parameters())
    assert trainable < 1_500_000 and total - trainable < 50_000


def test_rk4_checkpoints_warn(adapters, caplog):
    a = adapters("dit-flow")
    a.config.integration_method = "rk4"
    try:
        with caplog.at_level(logging.WARNING):
            MultiTaskDiTAdapter(a.policy, a.preprocessor, a.postprocessor)
    finally:
        a.config.integration_method = "euler"
    assert "rk4" in caplog.text
