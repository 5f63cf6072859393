"""VLS across episodes: synthesis per episode, failures run unsteered (counted and flagged), an episode
without a scene or robot refused, stage updates from context updates, composition with TACO, the env
loop end to end, and the benchmark's runs entries."""

from __future__ import annotations

import copy
import dataclasses
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from policy_steer.bench.cells import Cell
from policy_steer.bench.results import compare_to_unsteered, run_entry
from policy_steer.errors import CONTEXT_REQUIRED, SteeringRefused
from policy_steer.policies import load_policy
from policy_steer.runtime.future_state import RobotDescription
from policy_steer.runtime.sim_loop import RuntimeConfig, run_episode
from policy_steer.steered_policy import SteeredPolicy
from policy_steer.steering.registry import build_steering
from policy_steer.steering.vls import FKConfig, VLSConfig, VLSStrategy, sampler_for
from policy_steer.types import EpisodeContext
from tests.vlm_rewards.scenes import push_scene

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROBOT = RobotDescription("delta", {"ee_pos": slice(0, 3), "gripper": slice(3, 4)}, 4, max_step=None)
SCENE = push_scene("obstacle")


@pytest.fixture(scope="module")
def policy(tiny_diffusion_dir):
    return load_policy(str(tiny_diffusion_dir))


def observation(policy, seed: int = 0, step: int = 0, ee=None) -> dict:
    rng = np.random.default_rng(seed)
    obs = {k: rng.standard_normal(f.shape).astype(np.float32) for k, f in policy.spec.observation.items()}
    obs["observation.state"][:3] = SCENE.ee_position if ee is None else ee
    obs["observation.state"][3] = 0.0
    return {**obs, "task": SCENE.instruction, "step": step}


def episode(scene=SCENE, **extra) -> EpisodeContext:
    fields = {"task": scene.task, "variant": scene.variant, "instruction": scene.instruction, "scene": scene,
              "robot": ROBOT, **extra}
    return EpisodeContext(**fields)


def vls(policy, seed: int = 0, **cfg) -> tuple[SteeredPolicy, VLSStrategy]:
    strategy = VLSStrategy(policy, VLSConfig(**cfg))
    return SteeredPolicy(policy, [strategy], sampler_for(policy, strategy.config.particles), seed=seed), strategy


# ------------------------------------------------------------------------------------------ synthesis


def test_a_failed_synthesis_runs_unsteered_and_is_counted(policy):
    broken = copy.deepcopy(SCENE)
    broken.objects = [o for o in broken.objects if o.kind != "target"]  # the offline rules need a target
    sp, strategy = vls(policy, 0, particles=1)
    sp.start_episode(episode(broken), seed=0)
    chunk = sp.predict_chunk(observation(policy))
    f = chunk.info["steer"]["vls"]
    assert f["steered"] == 0 and f["synthesis_failed"] == 1 and f["guided_steps"] == 0
    assert "synthesis failed" in f["unsteered_reason"]
    assert strategy.episode.stats.failed == 1 and strategy.episode.synthesizer.stats.failed == 1
    assert "scores" not in f and f["selected_by"] == "none"
    # unsteered means the policy's own chunk from the same seed
    plain = SteeredPolicy(policy, [], sampler_for(policy, 1), seed=0)
    plain.reset(seed=0)
    np.testing.assert_array_equal(chunk.actions, plain.predict_chunk(observation(policy)).actions)
    # the next episode synthesizes again, and steers
    sp.start_episode(episode(), seed=1)
    assert sp.predict_chunk(observation(policy)).info["steer"]["vls"]["steered"] == 1
    assert strategy.episode.stats.episodes == 2 and strategy.episode.stats.steered == 1


def test_an_episode_without_scene_or_robot_is_refused(policy):
    sp, strategy = vls(policy, 0, particles=2)
    sp.start_episode(episode(), seed=0)
    session = strategy.episode.session
    for ctx, why in ((EpisodeContext(task="push"), "no scene"), (EpisodeContext(scene=SCENE), "no robot"), (None, "no scene")):
        with pytest.raises(SteeringRefused) as e:
            sp.start_episode(ctx, seed=0)
        assert e.value.code == CONTEXT_REQUIRED and e.value.strategy == "vls" and why in e.value.reason
    # refused: nothing changed, the episode that was running goes on, steered
    assert strategy.episode.session is session and sp.context.scene is SCENE
    assert strategy.episode.stats.episodes == 1 and strategy.episode.stats.failed == 0
    assert sp.predict_chunk(observation(policy)).info["steer"]["vls"]["steered"] == 1


def test_stage_follows_the_scene_of_each_context_update(policy):
    sp, strategy = vls(policy, 0, particles=1, fk=FKConfig(enabled=False))
    ctx = episode()
    sp.start_episode(ctx, seed=0)
    session = strategy.episode.session
    assert session.stage.name == "approach"
    sp.update_context(ctx.with_scene(SCENE, stamp=0.0))
    sp.predict_chunk(observation(policy))
    assert session.stage_index == 0
    # the end effector arrives at the push point (the approach goal): the stage moves on to "push",
    # read from the scene of the update (the observation below still has the ee where it started)
    goal = session.reward.terms[0].args["point"] + session.reward.terms[0].args["offset"]
    sp.update_context(ctx.with_scene(dataclasses.replace(SCENE, ee_position=[float(v) for v in goal]), stamp=0.8))
    f = sp.predict_chunk(observation(policy, step=8)).info["steer"]["vls"]
    assert session.stage.name == "push" and f["stage"] == 1 and f["stage_switches"] == 1
    assert strategy.episode.stats.stage_switches == 1
    assert session.scene.ee_position == pytest.approx([float(v) for v in goal])


def test_an_update_moves_the_keypoints(policy):
    sp, strategy = vls(policy, 0, particles=1, fk=FKConfig(enabled=False))
    ctx = episode()
    sp.start_episode(ctx, seed=0)
    block = SCENE.object("block")
    moved = dataclasses.replace(block, position=[block.position[0] + 0.05, *block.position[1:]])
    scene = dataclasses.replace(SCENE, objects=[moved if o.name == "block" else o for o in SCENE.objects])
    sp.update_context(ctx.with_scene(scene, stamp=0.5))
    sp.predict_chunk(observation(policy))
    assert strategy.episode.session.scene.object("block").position == pytest.approx(moved.position)
    assert sp.context.stamp == 0.5


def test_without_updates_keypoints_stay_and_the_ee_comes_from_the_observation(policy):
    sp, strategy = vls(policy, 0, particles=1, fk=FKConfig(enabled=False))
    sp.start_episode(episode(), seed=0)
    session = strategy.episode.session
    goal = session.reward.terms[0].args["point"] + session.reward.terms[0].args["offset"]
    sp.predict_chunk(observation(policy, ee=goal.numpy()))
    assert session.stage.name == "push"
    assert session.scene.object("block").position == SCENE.object("block").position


# ------------------------------------------------------------------------------------------ with TACO


@pytest.mark.parametrize("steer, decider", [("taco+vls", "taco"), ("vls+taco", "vls")])
def test_taco_and_vls_both_record_and_the_first_named_selects(policy, steer, decider):
    settings = {"candidates": 4, "verifier": "random", "particles": 4, "fk": "on", "gradient": "on"}
    setup = build_steering(policy, steer, settings)
    sp = SteeredPolicy(policy, setup.strategies, setup.sampler, seed=0)
    sp.start_episode(episode(), seed=0)
    chunk = sp.predict_chunk(observation(policy))
    taco, v = chunk.info["steer"]["taco"], chunk.info["steer"]["vls"]
    assert len(taco["scores"]) == len(v["scores"]) == 4
    winner = chunk.info["winner"]
    assert winner == int(np.argmax(taco["scores"] if decider == "taco" else v["scores"]))
    assert v["selected_by"] == decider and v["reward_selects"] == int(decider == "vls")
    assert v["reward_executed"] == pytest.approx(v["scores"][winner])


# ------------------------------------------------------------------------------------------ env loop


@pytest.fixture(scope="module")
def push_policy(tmp_path_factory) -> Path:
    """A tiny random DiffusionPolicy with the push env's features (state 19, environment state 10)."""
    from tests.fixtures.tiny_policies import build_tiny_diffusion

    return build_tiny_diffusion(tmp_path_factory.mktemp("vls_push"), state_dim=19, env_state_dim=10, action_dim=3,
                                n_obs_steps=1)


def test_vls_runs_inside_run_episode_on_push_obstacle(push_policy):
    from policy_steer.envs import make

    env = make("push", "obstacle", max_episode_steps=40)
    base = load_policy(str(push_policy))
    setup = build_steering(base, "vls", {"particles": 3, "fk": "on", "gradient": "on", "reward_backend": "offline"})
    sp = SteeredPolicy(base, setup.strategies, setup.sampler)
    result = run_episode(env, sp, RuntimeConfig(), seed=3)
    strategy = setup.strategies[0]
    assert strategy.episode.stats.steered == 1 and strategy.episode.session.scene.variant == "obstacle"
    assert result.chunks and all(c.info["steer"]["vls"]["steered"] == 1 for c in result.chunks)
    f = result.chunks[0].info["steer"]["vls"]
    assert f["guided_steps"] > 0 and f["fk_evaluations"] > 0 and len(f["scores"]) == 3
    # the env's 3 cm step clip is in the reward's trajectory map (straight-through for the gradient)
    reward = strategy.episode.for_chunk(env.unwrapped.observe())
    assert reward.clip == pytest.approx(env.unwrapped.max_step)
    x = torch.full((1, base.model_horizon, 3), 1.0, requires_grad=True)
    traj, _ = reward.trajectory(x)
    steps = (traj[0, 1:] - traj[0, :-1]).detach().abs()
    assert float(steps.max()) <= env.unwrapped.max_step + 1e-6
    (g,) = torch.autograd.grad(reward(x).sum(), x)
    assert g.abs().sum() > 0  # saturated components still pass a gradient
    env.close()


# ------------------------------------------------------------------------------------------ results


def test_runs_entries_record_the_vls_axes_backend_and_the_comparison_to_unsteered():
    opts = (("fixed_noise", False), ("guidance_scale", None), ("reward_backend", "offline"), ("verifier_path", None))
    none = Cell("push", "obstacle", "ckpt", "none", "sync", "0", opts)
    cell = Cell("push", "obstacle", "ckpt", "vls", "sync", "0",
                tuple(sorted((("fk", "on"), ("gradient", "on"), ("particles", 4)))) + opts)
    eps = [{"seed": s, "success": s % 2 == 0, "failure": None, "steps": 10, "stall_steps": 0, "seam_jump": None,
            "state_estimate_error": None, "reaction_steps": None, "chunk_latency_ms": [10.0],
            "steer_info": {"vls.fk_resamples": 1.0}} for s in range(4)]
    base_eps = [{**e, "success": False, "chunk_latency_ms": [2.0], "steer_info": {}} for e in eps]
    runs = [run_entry(none, base_eps), run_entry(cell, eps)]
    v = runs[1]
    assert (v["steer"], v["particles"], v["fk"], v["gradient"], v["reward_backend"]) == ("vls", 4, "on", "on", "offline")
    assert "reward_backend" not in runs[0]
    assert v["steer_figures"]["vls.fk_resamples"] == 1.0
    compare_to_unsteered(runs)
    assert v["vs_unsteered"]["success_points"] == pytest.approx(50.0)
    assert v["vs_unsteered"]["latency_ratio_p50"] == pytest.approx(5.0) and v["vs_unsteered"]["same_seeds"]


# ------------------------------------------------------------------------------------------ reference policy

REFERENCE = Path(__file__).resolve().parents[2] / "checkpoints" / "push-diffusion"


@pytest.mark.slow
def test_vls_steers_the_reference_push_policy_through_whole_episodes():
    from policy_steer.envs import make

    env = make("push", "obstacle")
    base = load_policy(str(REFERENCE))
    setup = build_steering(base, "vls", {"particles": 4, "fk": "on", "gradient": "on"})
    sp = SteeredPolicy(base, setup.strategies, setup.sampler)
    strategy = setup.strategies[0]
    results = [run_episode(env, sp, RuntimeConfig(), seed) for seed in range(3)]
    chunks = [c for r in results for c in r.chunks]
    assert strategy.episode.stats.steered == 3 and strategy.episode.stats.failed == 0
    assert all(c.info["steer"]["vls"]["guided_steps"] > 0 for c in chunks)
    assert sum(c.info["steer"]["vls"]["fk_resamples"] for c in chunks) > 0
    assert strategy.episode.stats.stage_switches > 0  # the tip got behind the block at least once
    env.close()
