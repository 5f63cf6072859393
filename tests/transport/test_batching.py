"""Batching across robots: ``SteeredPolicy.predict_chunks`` and ``serve --max_batch``.

Real parts throughout: the shipped checkpoints/push-diffusion (and the tiny lerobot DiffusionPolicy
with a two-frame history and DDPM's stochastic steps), the real MuJoCo push task for observations,
an in-process PolicyServer reached by real ZeroMQ clients on loopback.

- batched chunks are the chunks each session gets alone (same seeds), unsteered and TACO (the same
  winner index), over several rounds (the noise stream and history carry on per session);
- a strategy's per-episode state, the context, the history and the noise stream never leak across
  the sessions of a batch, and the policy's own state is left as it was;
- a strategy that is not batchable makes each session run alone, flagged in its chunk's info;
- a server with --max_batch 2 gives two robots the chunks a --max_batch 1 server gives them;
- a lone robot never waits for the batching window (the worker's counters), and a robot that does
  wait is answered alone when nobody joins.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from policy_steer.steering.base import Strategy
from policy_steer.steering.registry import SteerMethod, SteerSetup, register
from policy_steer.transport import PolicyClient, PolicyServer, ServerConfig
from policy_steer.transport.inference import BatchItem
from policy_steer.types import EpisodeContext

REPO = Path(__file__).resolve().parents[2]
PUSH = REPO / "checkpoints" / "push-diffusion"
TOL = 1e-5  # float tolerance: a batched matrix product may round differently from batch-1 ones


class Tally(Strategy):
    """Batchable, with per-episode state: its episode's instruction and how many chunks it has scored.

    Every chunk's info says which instruction and count it saw, so a leak between sessions shows."""

    name = "tally"
    batchable = True

    def __init__(self) -> None:
        self.instruction: str | None = None
        self.count = 0

    def reset_episode(self, context: EpisodeContext) -> None:
        self.instruction, self.count = context.instruction, 0

    def export_episode_state(self) -> Any:
        return (self.instruction, self.count)

    def import_episode_state(self, state: Any) -> None:
        self.instruction, self.count = state if state is not None else (None, 0)

    def begin(self, run) -> None:
        self.count += 1
        run.info[self.name] = {"instruction": self.instruction, "count": self.count, "rows": run.batch_size}


class SoloTally(Tally):
    """The same, declared not batchable."""

    name = "solo_tally"
    batchable = False


register(SteerMethod("tally", (), lambda policy, settings: SteerSetup([Tally()])))
register(SteerMethod("solo_tally", (), lambda policy, settings: SteerSetup([SoloTally()])))


@pytest.fixture(scope="module")
def push_policy():
    from policy_steer.policies.loading import load_policy

    return load_policy(str(PUSH))


def push_observations(n: int, seed0: int = 0) -> list[dict[str, Any]]:
    """The real push task's first observation for n different episodes."""
    from policy_steer import envs

    out = []
    for i in range(n):
        env = envs.make("push", "nominal")
        obs, _ = env.reset(seed=seed0 + i)
        out.append({k: np.asarray(v) for k, v in obs.items() if k.startswith("observation.")})
        env.close()
    return out


def started(steered, contexts: list[EpisodeContext]) -> list[Any]:
    """Each session's state with its episode started (as the server hands it to predict_chunks)."""
    blank = steered.export_session_state()
    states = []
    for c in contexts:
        steered.import_session_state(blank)
        steered.start_episode(c)
        states.append(steered.export_session_state())
    steered.import_session_state(blank)
    return states


def solo_and_batched(steered, states: list[Any], rounds: list[list[dict]]) -> tuple[list, list, list, list]:
    """Per round: each session alone through predict_chunk vs all of them through predict_chunks;
    also each session's state after both."""
    solo_states, solo, batched = list(states), [], []
    items = [BatchItem(session=f"s{i}", obs={}, prefix=None, start_step=0, new_episode=False, state=st)
             for i, st in enumerate(states)]
    for r, observations in enumerate(rounds):
        row = []
        for i, obs in enumerate(observations):
            steered.import_session_state(solo_states[i])
            row.append(steered.predict_chunk({**obs, "step": r, "task": f"robot {i}"}, start_step=r))
            solo_states[i] = steered.export_session_state()
        solo.append(row)
        for i, obs in enumerate(observations):
            items[i].obs, items[i].start_step = {**obs, "step": r, "task": f"robot {i}"}, r
        live = steered.export_session_state()
        batched.append(steered.predict_chunks(items))
        now = steered.export_session_state()  # the policy's own state: what it was before the batch
        assert torch.equal(now["generator"], live["generator"]) and same_history(now["policy"] or [], live["policy"] or [])
        assert now["strategies"] == live["strategies"] and now["context"] is live["context"]
    return solo, batched, [it.state for it in items], solo_states


def same_history(a: list, b: list) -> bool:
    """Two exported observation histories (frames of named tensors) hold the same frames."""
    return len(a) == len(b) and all(
        fa[0] == fb[0] and fa[1].keys() == fb[1].keys() and all(torch.equal(fa[1][k], fb[1][k]) for k in fa[1])
        for fa, fb in zip(a, b)
    )


@pytest.mark.parametrize("method,settings", [("none", {}), ("taco", {"candidates": 8})])
def test_batched_chunks_equal_each_sessions_own_chunks(push_policy, method, settings):
    from policy_steer.steered_policy import SteeredPolicy

    steered = SteeredPolicy.from_method(push_policy, method, settings, seed=0)
    states = started(steered, [EpisodeContext(seed=10 + i) for i in range(3)])
    obs = push_observations(3)
    rounds = [obs, [{k: v + 0.01 for k, v in o.items()} for o in obs]]
    solo, batched, _, _ = solo_and_batched(steered, states, rounds)
    for solo_row, batch_row in zip(solo, batched):
        for a, b in zip(solo_row, batch_row):
            np.testing.assert_allclose(b.actions, a.actions, atol=TOL)
            assert b.info["winner"] == a.info["winner"]
            assert b.info["batch"] == 3 and "alone" not in b.info
            assert set(b.info) == set(a.info) | {"batch"}
            assert b.info["strategies"] == a.info["strategies"] and b.info["candidates"] == a.info["candidates"]
            if method == "taco":
                np.testing.assert_allclose(b.info["steer"]["taco"]["scores"], a.info["steer"]["taco"]["scores"],
                                           rtol=1e-4, atol=1e-6)
    # three sessions seeded differently drew different chunks (the check above is not vacuous)
    assert not np.allclose(batched[0][0].actions, batched[0][1].actions)
    if method == "taco":  # several winners among the chunks, not always row 0
        assert len({c.info["winner"] for row in batched for c in row}) > 1


def test_history_and_stochastic_steps_stay_per_session(tiny_diffusion_checkpoint):
    """A two-frame history and DDPM's step noise: each session's own, batched or not."""
    from policy_steer.policies.loading import load_policy
    from policy_steer.steered_policy import SteeredPolicy

    steered = SteeredPolicy.from_method(load_policy(str(tiny_diffusion_checkpoint)), "none", seed=0)
    states = started(steered, [EpisodeContext(seed=1), EpisodeContext(seed=2)])
    rng = np.random.default_rng(0)

    def obs() -> dict:
        return {"observation.state": rng.standard_normal(10).astype(np.float32),
                "observation.environment_state": rng.standard_normal(6).astype(np.float32)}

    rounds = [[obs(), obs()] for _ in range(3)]
    solo, batched, after, solo_after = solo_and_batched(steered, states, rounds)
    for solo_row, batch_row in zip(solo, batched):
        for a, b in zip(solo_row, batch_row):
            np.testing.assert_allclose(b.actions, a.actions, atol=TOL)
    # each session's history (its own last two observations) and noise stream, as if it ran alone
    for mine, alone in zip(after, solo_after):
        assert len(mine["policy"]) == 2 and same_history(mine["policy"], alone["policy"])
        assert torch.equal(mine["generator"], alone["generator"])
    assert not same_history(after[0]["policy"], after[1]["policy"])
    assert not torch.equal(after[0]["generator"], after[1]["generator"])


def test_strategy_state_never_leaks_across_sessions(push_policy):
    from policy_steer.steered_policy import SteeredPolicy

    steered = SteeredPolicy.from_method(push_policy, "tally", seed=0)
    states = started(steered, [EpisodeContext(instruction="push left", seed=1),
                               EpisodeContext(instruction="push right", seed=2)])
    obs = push_observations(2)
    # session 0 is two chunks into its episode already; session 1 starts
    items = [BatchItem(session="a", obs={**obs[0], "step": 0}, prefix=None, start_step=0, new_episode=True,
                       state=states[0])]
    steered.predict_chunks(items)
    steered.predict_chunks(items)
    assert items[0].state["strategies"] == [("push left", 2)]
    both = [items[0], BatchItem(session="b", obs={**obs[1], "step": 0}, prefix=None, start_step=0,
                                new_episode=True, state=states[1])]
    chunks = steered.predict_chunks(both)
    assert [c.info["batch"] for c in chunks] == [2, 2]
    assert chunks[0].info["steer"]["tally"] == {"instruction": "push left", "count": 3, "rows": 1}
    assert chunks[1].info["steer"]["tally"] == {"instruction": "push right", "count": 1, "rows": 1}
    assert [it.state["strategies"] for it in both] == [[("push left", 3)], [("push right", 1)]]
    assert [it.state["context"].instruction for it in both] == ["push left", "push right"]
    assert steered.strategies[0].export_episode_state() == (None, 0)  # the policy's own: untouched


def test_a_strategy_that_cannot_batch_runs_each_session_alone(push_policy):
    from policy_steer.sampler import Sampler
    from policy_steer.steered_policy import SteeredPolicy

    steered = SteeredPolicy.from_method(push_policy, "solo_tally", seed=0)
    assert not steered.shares_runs and SteeredPolicy.from_method(push_policy, "tally").shares_runs
    states = started(steered, [EpisodeContext(instruction=f"robot {i}", seed=i) for i in range(2)])
    solo, batched, after, _ = solo_and_batched(steered, states, [push_observations(2)])
    for a, b in zip(solo[0], batched[0]):
        np.testing.assert_allclose(b.actions, a.actions, atol=0)  # the same code path: bit for bit
        assert b.info["batch"] == 1 and "solo_tally" in b.info["alone"]
    assert [s["strategies"] for s in after] == [[("robot 0", 1)], [("robot 1", 1)]]
    # the loop itself refuses to share a run with it
    sampler = Sampler(push_policy)
    ctx = push_policy.prepare({**push_observations(1)[0], "step": 0})
    runs = [sampler.new_run(ctx, push_policy.make_noise(1), [SoloTally()]) for _ in range(2)]
    for r in runs:
        r.episode_states = [None]
    from dataclasses import replace

    stacked = replace(ctx, batch_size=2, tensors={k: torch.cat([v, v]) for k, v in ctx.tensors.items()})
    with pytest.raises(ValueError, match="solo_tally"):
        sampler.sample_runs(stacked, runs)


# --- the server -------------------------------------------------------------------------------------


def serve(policy, max_batch: int, window_ms: float) -> PolicyServer:
    return PolicyServer(policy, ServerConfig(bind="tcp://127.0.0.1:*", max_batch=max_batch,
                                             batch_window_ms=window_ms))


def two_robots(server: PolicyServer, rounds: int) -> list[list]:
    """Two real clients, each in its own thread and seeded episode, asking for chunks at once."""
    obs = push_observations(2)
    out: list[list] = [[], []]
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def robot(i: int) -> None:
        try:
            with PolicyClient(endpoint=server.endpoint, timeout_s=60.0) as c:
                c.connect()
                c.start_episode(EpisodeContext(instruction="push the block", seed=100 + i))
                for r in range(rounds):
                    barrier.wait(timeout=60)
                    o = {k: v + 0.01 * r for k, v in obs[i].items()}
                    out[i].append(c.request_chunk(o, step=r))
        except BaseException as e:  # noqa: BLE001 - reported by the test
            errors.append(e)
            barrier.abort()

    threads = [threading.Thread(target=robot, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    return out


def test_a_batching_server_gives_each_robot_the_chunks_of_an_unbatched_one(push_policy):
    from policy_steer.steered_policy import SteeredPolicy

    got = {}
    for max_batch in (1, 2):
        policy = SteeredPolicy.from_method(push_policy, "taco", {"candidates": 4}, seed=0)
        # a wide window: the first robot's observe waits for the second's, which ends the wait at once
        with serve(policy, max_batch, window_ms=20000.0) as server:
            got[max_batch] = two_robots(server, rounds=3)
            sizes = list(server.worker.batch_sizes)
            counters = server.worker.window
        if max_batch == 1:
            assert sizes == [] and all("batch" not in c.info for row in got[1] for c in row)
        else:
            assert sizes == [2, 2, 2] and counters.waited == counters.filled  # every wait ended with both
            assert all(c.info["batch"] == 2 for row in got[2] for c in row)
    for one, two in zip(got[1], got[2]):
        for a, b in zip(one, two):
            np.testing.assert_allclose(b.actions, a.actions, atol=TOL)
            assert b.info["winner"] == a.info["winner"] and b.start_step == a.start_step
    assert not np.allclose(got[2][0][0].actions, got[2][1][0].actions)  # two robots, two noise streams


def test_a_lone_robot_never_waits_for_the_batching_window(push_policy):
    from policy_steer.steered_policy import SteeredPolicy

    obs = push_observations(1)[0]
    policy = SteeredPolicy.from_method(push_policy, "none", seed=0)
    # A window of 10 minutes: were a lone robot made to wait, this test would time out (60 s).
    with serve(policy, max_batch=4, window_ms=600_000.0) as server:
        with PolicyClient(endpoint=server.endpoint, timeout_s=60.0) as c:
            c.connect()
            chunks = [c.request_chunk(obs, step=r) for r in range(3)]
        w = server.worker.window
        assert (w.alone, w.waited, w.filled) == (3, 0, 0)
        assert server.worker.batch_sizes == [1, 1, 1] and [ch.info["batch"] for ch in chunks] == [1, 1, 1]
    # Another robot is connected but does not observe: the first waits (a short window), nobody
    # joins, and it is answered alone.
    policy = SteeredPolicy.from_method(push_policy, "none", seed=0)
    with serve(policy, max_batch=4, window_ms=30.0) as server:
        with PolicyClient(endpoint=server.endpoint, timeout_s=60.0) as c, \
                PolicyClient(endpoint=server.endpoint, timeout_s=60.0) as idle:
            c.connect()
            idle.connect()
            for r in range(2):
                c.request_chunk(obs, step=r)
        w = server.worker.window
        assert (w.alone, w.waited, w.filled) == (0, 2, 0)
        assert server.worker.batch_sizes == [1, 1]


def test_a_strategy_that_cannot_batch_makes_the_server_skip_the_window(push_policy):
    from policy_steer.steered_policy import SteeredPolicy

    policy = SteeredPolicy.from_method(push_policy, "solo_tally", seed=0)
    with serve(policy, max_batch=4, window_ms=600_000.0) as server:
        with PolicyClient(endpoint=server.endpoint, timeout_s=60.0) as c, \
                PolicyClient(endpoint=server.endpoint, timeout_s=60.0) as idle:
            c.connect()
            idle.connect()
            chunk = c.request_chunk(push_observations(1)[0], step=0)
        assert server.worker.window.unshared == 1 and server.worker.window.waited == 0
        assert chunk.info["batch"] == 1 and "solo_tally" in chunk.info["alone"]


def test_a_context_that_cannot_be_stacked_runs_each_session_alone(tmp_path):
    """pi0's context holds its prefix KV cache (Context.shared), built per observation: a batch of its
    sessions is computed one by one, flagged, with each session's own chunk."""
    from policy_steer.policies.loading import load_policy
    from policy_steer.steered_policy import SteeredPolicy
    from tests.policies.flow_checkpoints import build_tiny_pi, make_obs

    base = load_policy(str(build_tiny_pi(tmp_path / "pi0", "pi0")))
    steered = SteeredPolicy.from_method(base, "none", seed=0)
    assert steered.shares_runs  # the strategies could share; the policy's context cannot
    states = started(steered, [EpisodeContext(seed=1), EpisodeContext(seed=2)])
    rounds = [[make_obs(base.spec, seed=i) for i in range(2)]]
    solo, batched, _, _ = solo_and_batched(steered, states, rounds)
    for a, b in zip(solo[0], batched[0]):
        np.testing.assert_allclose(b.actions, a.actions, atol=0)
        assert b.info["batch"] == 1 and "Context.shared" in b.info["alone"]
    assert not np.allclose(batched[0][0].actions, batched[0][1].actions)
