"""The three modes on the virtual clock: identical at d = 0, and the timing each promises at d > 0."""

from __future__ import annotations

import pytest

from policy_steer.runtime.sim_loop import RuntimeConfig, run_episode
from policy_steer.steered_policy import SteeredPolicy
from tests.runtime.conftest import make_env

MODES = ("sync", "async", "vlash")


def _episode(policy, mode: str, latency: str, variant: str = "nominal", steps: int = 48, seed: int = 5, **kw):
    env = make_env("push", variant, max_episode_steps=steps)
    return run_episode(env, policy, RuntimeConfig(mode=mode, latency=latency, **kw), seed=seed, record_steps=True)


def _trace(r):
    return ([(s.step, s.chunk_id, s.index, tuple(s.action)) for s in r.records],
            [(c.obs_step, c.start_step, c.first_step, c.delivered_step) for c in r.chunks])


def _ran(r):
    """The chunks that were queued (not one still in flight when the episode ended)."""
    return [c for c in r.chunks if c.chunk_id is not None]


@pytest.mark.parametrize("steer", ["none", "rtc"])
def test_with_zero_delay_all_modes_give_identical_episodes(push_policy, steer):
    from policy_steer.steering.registry import build_steering

    runs = {}
    for mode in MODES:
        policy = SteeredPolicy(push_policy, build_steering(push_policy, steer, {}).strategies)
        runs[mode] = _episode(policy, mode, "0")
    ref = _trace(runs["sync"])
    assert len(ref[0]) == 48 and len(ref[1]) == 6
    for mode in ("async", "vlash"):
        assert _trace(runs[mode]) == ref, mode
        assert runs[mode].stall_steps == runs["sync"].stall_steps == 0


def test_timing_of_each_mode_at_fixed_delay(push_policy):
    d, k = 4, 8
    sync, naive, vlash = (_episode(SteeredPolicy(push_policy), m, str(d)) for m in MODES)
    # sync: the robot holds d steps for every chunk
    assert sync.stall_steps == d * len(_ran(sync))
    assert all(c.first_step == c.delivered_step == c.obs_step + d for c in _ran(sync))  # starts on arrival
    # vlash: after the first chunk, never a stall; each chunk starts exactly where the committed actions end
    assert vlash.stall_steps == d
    for c in _ran(vlash)[1:]:
        assert c.state_kind == "estimated" and c.committed == d
        assert c.start_step == c.first_step == c.obs_step + d == c.delivered_step
        assert c.first_index == 0
    # async: planned from the observation's step; the d rows that belong to the past are skipped
    assert naive.stall_steps == d
    for c in _ran(naive)[1:]:
        assert c.state_kind == "measured" and c.first_index == d and c.start_step == c.obs_step
        assert c.first_step == c.obs_step + d
    # every executed action: its own step, within the executed rows of its chunk
    for r in (sync, naive, vlash):
        starts = {c.chunk_id: c for c in _ran(r)}
        for s in r.records:
            if s.chunk_id is None:
                continue
            c = starts[s.chunk_id]
            assert s.step - c.first_step == s.index - c.first_index
            assert c.first_index <= s.index < c.first_index + k


def test_vlash_with_an_earlier_trigger_replans_more_often(push_policy):
    base = _episode(SteeredPolicy(push_policy), "vlash", "2")
    eager = _episode(SteeredPolicy(push_policy), "vlash", "2", trigger=6)
    assert len(_ran(eager)) > len(_ran(base))
    assert all(c.committed == 2 for c in _ran(eager)[1:])  # only what runs during the inference is committed


def test_first_reaction_chance_follows_its_definition(push_policy):
    env = make_env("push", "moving-goal", max_episode_steps=48)
    r = run_episode(env, SteeredPolicy(push_policy), RuntimeConfig(mode="vlash", latency="2"), seed=1, record_steps=True)
    j = r.goal_jump_step
    assert j is not None and r.reaction_opportunity_steps is not None
    by_id = {c.chunk_id: c for c in _ran(r)}
    first = next(s.step for s in r.records if s.chunk_id is not None and by_id[s.chunk_id].obs_step >= j)
    # at least the delay: a reacting chunk needs an observation after j
    assert r.reaction_opportunity_steps == first - j >= 2
    # the reaction itself (tests/runtime/test_metrics.py) is the robot's motion, one step later at the earliest
    assert r.reaction_steps is None or r.reaction_steps >= r.reaction_opportunity_steps + 1
    assert r.summary()["reaction_censored"] is (r.reaction_steps is None)


def test_quantized_chunks_run_fewer_control_steps(push_policy):
    r = _episode(SteeredPolicy(push_policy), "vlash", "2", quantize=2)
    per_chunk = [sum(1 for s in r.records if s.chunk_id == c.chunk_id) for c in _ran(r)[:-1]]
    assert set(per_chunk) == {4}  # 8 planned steps as 4 summed deltas
