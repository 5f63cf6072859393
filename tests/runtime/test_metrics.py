"""The episode figures of the delay benchmark measure what issue 6 defines.

- seam jump: last executed action of the old chunk vs first executed action of the new one (held
  steps in between belong to neither); within-chunk jumps are kept apart;
- completion: reset to success or time-out, so an episode that does not succeed counts as the time-out;
- reaction on moving-goal: the first step at which the robot moves differently from the episode of the
  same seed in which the goal stays put; a policy that cannot see the goal never reacts.
"""

from __future__ import annotations

import numpy as np
import pytest

from policy_steer.bench.config import BenchConfig
from policy_steer.bench.results import run_entry
from policy_steer.runtime.sim_loop import RuntimeConfig, _play, run_episode
from policy_steer.steered_policy import SteeredPolicy
from tests.runtime.conftest import make_env


def _seams_from_records(records):
    seams, within, prev = [], [], None
    for s in records:
        if s.chunk_id is None:
            continue  # a hold: no chunk's action
        if prev is not None:
            jump = float(np.linalg.norm(np.subtract(s.action[:3], prev.action[:3])))
            (within if prev.chunk_id == s.chunk_id else seams).append(jump)
        prev = s
    return seams, within


@pytest.mark.parametrize("mode", ["sync", "async", "vlash"])
def test_seam_jump_compares_the_last_executed_action_of_the_old_chunk_with_the_first_of_the_new(push_policy, mode):
    env = make_env("push", "nominal", max_episode_steps=40)
    r = run_episode(env, SteeredPolicy(push_policy), RuntimeConfig(mode=mode, latency="3"), seed=2, record_steps=True)
    seams, within = _seams_from_records(r.records)
    n_run = len({s.chunk_id for s in r.records if s.chunk_id is not None})
    assert len(seams) == n_run - 1 >= 3  # one seam per change of the executing chunk
    assert r.seam_jump == pytest.approx(np.mean(seams))
    assert r.within_chunk_jump == pytest.approx(np.mean(within))
    if mode == "sync":
        # the robot holds between chunks; the held (zero) actions must not enter the seam jump
        assert r.stall_steps == 3 * sum(c.chunk_id is not None for c in r.chunks)
        held = [s for s in r.records if s.chunk_id is None]
        assert held and all(np.allclose(s.action, 0.0) for s in held)


def test_completion_counts_an_unsuccessful_episode_as_the_time_out(push_policy):
    env = make_env("push", "nominal", max_episode_steps=30)
    r = run_episode(env, SteeredPolicy(push_policy), RuntimeConfig(mode="sync", latency="2"), seed=0)
    assert not r.success and r.completion_steps == 30 == r.steps
    # an episode that ended early without success (a collision, say) counts as the time-out too
    eps = [
        {"seed": 0, "success": True, "failure": None, "steps": 50, "completion_steps": 50, "stall_steps": 10,
         "seam_jump": 0.01, "state_estimate_error": 0.0, "reaction_steps": None, "chunk_latency_ms": [1.0]},
        {"seed": 1, "success": False, "failure": "collision:table", "steps": 20, "completion_steps": 150,
         "stall_steps": 5, "seam_jump": 0.02, "state_estimate_error": 0.0, "reaction_steps": None,
         "chunk_latency_ms": [1.0]},
    ]
    from policy_steer.bench.cells import Cell

    entry = run_entry(Cell("push", "nominal", "p", "none", "sync", "4"), eps)
    assert entry["mean_completion_steps"] == 100.0 and entry["mean_episode_steps"] == 35.0
    assert entry["mean_success_steps"] == 50.0 and entry["mean_stall_steps"] == 7.5
    assert entry["reaction_censored"] is None  # not a moving-goal cell


@pytest.mark.parametrize("mode,latency", [("sync", "3"), ("vlash", "3"), ("async", "2")])
def test_reaction_is_the_first_departure_from_the_episode_without_the_jump(push_policy, mode, latency):
    env = make_env("push", "moving-goal", max_episode_steps=60)
    policy = SteeredPolicy(push_policy)
    # the tiny untrained policy barely looks at the goal: a 1 mm threshold (5 mm for trained ones)
    cfg = RuntimeConfig(mode=mode, latency=latency, reaction_departure=0.001)
    r = run_episode(env, policy, cfg, seed=3, record_steps=True)
    j = r.goal_jump_step
    assert j is not None and r.reaction_steps is not None and not r.reaction_censored
    k = j + r.reaction_steps
    # the counterfactual episode: same seed, the goal never moves
    cf, cf_ee = _play(env, policy, cfg, seed=3, record_steps=True, suppress_jump=True)
    assert cf.goal_jump_step is None
    ee = [s.ee for s in r.records]
    dist = [float(np.linalg.norm(np.subtract(ee[i], cf_ee[i]))) for i in range(min(len(ee), len(cf_ee)))]
    assert all(x == 0.0 for x in dist[: j + 1])  # identical until the new goal is seen
    assert all(x <= 0.001 for x in dist[:k]) and dist[k] > 0.001
    # no reaction before a chunk that saw the new goal has run, nor before the delay has passed
    assert r.reaction_steps >= r.reaction_opportunity_steps + 1
    assert r.reaction_opportunity_steps >= int(latency)
    by_id = {c.chunk_id: c for c in r.chunks}
    first = next(s.step for s in r.records if s.chunk_id is not None and by_id[s.chunk_id].obs_step >= j)
    assert r.reaction_opportunity_steps == first - j


class _GoalBlind:
    """A policy wrapper that cannot see the goal: the target slice of the state is pinned to zeros."""

    def __init__(self, policy, target: slice, env_offset: int):
        self.policy, self.target, self.env_offset = policy, target, env_offset

    def __getattr__(self, name):
        return getattr(self.policy, name)

    def predict_chunk(self, obs, **kw):
        obs = dict(obs)
        state = np.array(obs["observation.state"], copy=True)
        state[self.target] = 0.0
        obs["observation.state"] = state
        if "observation.environment_state" in obs:
            obs["observation.environment_state"] = state[self.env_offset:].copy()
        return self.policy.predict_chunk(obs, **kw)


def test_a_policy_that_ignores_the_goal_never_reacts(push_policy):
    env = make_env("push", "moving-goal", max_episode_steps=60)
    u = env.unwrapped
    blind = _GoalBlind(SteeredPolicy(push_policy), u.state_layout["target"], u.robot_state_dim)
    r = run_episode(env, blind, RuntimeConfig(mode="vlash", latency="2", reaction_departure=0.001), seed=3)
    assert r.goal_jump_step is not None
    assert r.reaction_opportunity_steps is not None  # it had its chances...
    assert r.reaction_steps is None and r.reaction_censored  # ...but never moved differently


def test_zero_delay_cells_share_their_episodes_only_when_they_are_identical():
    from policy_steer.bench.cells import Cell
    from policy_steer.bench.runner import episode_key

    cells = [Cell("push", "nominal", "p", "none", m, lat) for m in ("sync", "async", "vlash") for lat in ("0", "4")]
    cfg = BenchConfig()
    keys = {(c.mode, c.latency): episode_key(c, cfg) for c in cells}
    assert keys[("sync", "0")] == keys[("async", "0")] == keys[("vlash", "0")]
    assert len({keys[(m, "4")] for m in ("sync", "async", "vlash")}) == 3
    cfg.trigger = 3  # an earlier trigger makes async and vlash re-plan before the queue runs dry
    assert len({episode_key(c, cfg) for c in cells if c.latency == "0"}) == 3


def test_vlash_targets_reads_a_benchmark_and_flags_each_target():
    from policy_steer.bench.vlash_targets import targets

    def run(mode, d, success, completion, stall, seam, reaction=None):
        return {"task": "push", "variant": "moving-goal", "policy": "p", "steer": "none", "mode": mode,
                "latency_steps": d, "episodes": 2, "success_rate": success, "ci95": [0.0, 1.0],
                "mean_completion_steps": completion, "mean_stall_steps": stall, "seam_jump": seam,
                "within_chunk_jump": 0.002, "state_estimate_error": 0.0, "reaction_steps": reaction,
                "reaction_opportunity_steps": None, "reaction_censored": 0, "seeds": [0, 1],
                "per_episode_success": [True, success > 0.5], "per_episode_completion_steps": [60, completion],
                "per_episode_stall_steps": [20, stall]}

    runs = [run("sync", 0, 1.0, 60, 0, 0.006, 6), run("sync", 4, 1.0, 90, 30, 0.006, 15),
            run("async", 4, 0.5, 70, 4, 0.012, 10), run("vlash", 4, 1.0, 64, 4, 0.005, 5)]
    md, rows = targets(runs, 4)
    (row,) = rows
    assert row["success"]["met"] and row["completion"]["met"] and row["seam_jump"]["met"] and row["reaction"]["met"]
    assert row["completion"]["ideal"] == 60 and row["completion"]["d0"] == 60
    runs[-1] = run("vlash", 4, 0.5, 80, 4, 0.008, 9)
    _, (row,) = targets(runs, 4)
    assert not any(row[k]["met"] for k in ("success", "completion", "seam_jump", "reaction"))
    assert "push / moving-goal / p" in md
    # a vlash cell run with rtc is compared with the unsteered sync/async cells (none ran with rtc)
    steered = dict(run("vlash", 4, 1.0, 62, 4, 0.004, 5), steer="rtc")
    md, rows = targets(runs + [steered], 4)
    by_steer = {r["steer"]: r for r in rows}
    assert set(by_steer) == {"none", "rtc"}
    assert by_steer["rtc"]["seam_jump"]["async"] == 0.012 and by_steer["rtc"]["seam_jump"]["met"]
    assert by_steer["rtc"]["completion"]["ideal"] == 60 and not by_steer["none"]["seam_jump"]["met"]
    assert "push / moving-goal / p / rtc" in md
    # the reaction floor: d + 1 + (reaction - first chance)
    runs[-1] = dict(run("vlash", 4, 1.0, 64, 4, 0.005, 9), reaction_opportunity_steps=6)
    _, (row,) = targets(runs, 4)
    assert row["reaction"]["best_reachable"] == 4 + 1 + 3 and row["reaction"]["best_reachable_ratio"] == 8 / 15


def test_runs_of_one_cell_on_disjoint_seeds_pool_into_one():
    from policy_steer.bench.results import pool_runs

    def run(seeds, successes, completion, reaction, censored):
        n = len(seeds)
        return {"task": "push", "variant": "moving-goal", "policy": "p", "steer": "none", "mode": "vlash",
                "latency": "4", "latency_steps": 4, "episodes": n, "successes": successes,
                "success_rate": successes / n, "ci95": [0, 1], "mean_completion_steps": completion,
                "mean_stall_steps": 4.0, "seam_jump": 0.01, "reaction_steps": reaction,
                "reaction_censored": censored, "seeds": seeds, "per_episode_success": [True] * successes + [False] * (n - successes)}

    (p,) = pool_runs([run([0, 1], 1, 100.0, 10.0, 0), run([2, 3, 4, 5], 4, 70.0, 4.0, 2)])
    assert p["episodes"] == 6 and p["successes"] == 5 and p["seeds"] == [0, 1, 2, 3, 4, 5]
    assert p["mean_completion_steps"] == pytest.approx(80.0) and p["reaction_steps"] == pytest.approx(7.0)
    assert p["reaction_censored"] == 2 and len(p["per_episode_success"]) == 6
    with pytest.raises(ValueError, match="overlap"):
        pool_runs([run([0, 1], 1, 100.0, 10.0, 0), run([1, 2], 1, 100.0, 10.0, 0)])


def test_bench_rtc_options_reach_the_strategy_and_the_runs_entry(push_policy):
    from policy_steer.bench.cells import expand_cells
    from policy_steer.steering.registry import build_steering

    cfg = BenchConfig(steer=["none", "rtc"], mode=["vlash"], latency=["4"], rtc_soft_mask="ones", rtc_max_weight=2.0)
    none, rtc = expand_cells(cfg)
    (strategy,) = build_steering(push_policy, rtc.steer, rtc.settings_dict).strategies
    assert (strategy.config.soft_mask, strategy.config.max_weight) == ("ones", 2.0)
    eps = [{"seed": 0, "success": True, "failure": None, "steps": 10, "stall_steps": 4, "seam_jump": 0.002,
            "state_estimate_error": 0.0, "reaction_steps": None, "chunk_latency_ms": [10.0]}]
    entry = run_entry(rtc, eps)
    assert (entry["rtc_soft_mask"], entry["rtc_max_weight"], entry["rtc_soft_rows"]) == ("ones", 2.0, None)
    assert "rtc_soft_mask" not in run_entry(none, eps)
