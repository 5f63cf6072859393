"""The planner's rules for arriving chunks: stale ones are dropped, late ones go in where they belong."""

from __future__ import annotations

import numpy as np

from policy_steer.runtime.future_state import RobotDescription
from policy_steer.runtime.planner import ChunkPlanner
from policy_steer.types import Chunk

A, H = 3, 16
ROBOT = RobotDescription(action_mode="delta", state_layout={"ee_pos": slice(0, 3), "gripper": slice(3, 4)},
                         robot_state_dim=4, max_step=1.0)


def _obs(x: float = 0.0) -> dict:
    return {"observation.state": np.array([x, 0, 0, 1, 7], np.float32)}


def _chunk(tag: float) -> Chunk:
    a = np.zeros((H, A), np.float32)
    a[:, 0] = tag
    a[:, 1] = np.arange(H)
    return Chunk(a, 0)


def _planner(mode: str, **kw) -> ChunkPlanner:
    return ChunkPlanner(mode=mode, robot=ROBOT, action_dim=A, n_execute=8, estimator="delta", **kw)


def test_stale_chunks_are_dropped():
    p = _planner("vlash")
    old = p.request(_obs(), 0, 2)
    p.reset()  # a new episode: whatever was asked before is stale
    assert p.deliver(_chunk(1), old, now=2).reason == "stale:epoch"
    assert p.queue.remaining(0) == 0
    r1, r2 = p.request(_obs(), 0, 2), p.request(_obs(), 3, 2)
    assert p.deliver(_chunk(2), r2, now=4).accepted
    assert p.deliver(_chunk(1), r1, now=5).reason == "stale:older"  # conditioned on an older observation
    assert int(p.pop(5).action[0]) == 2
    q = _planner("async")
    r = q.request(_obs(), 0, 2)
    assert q.deliver(_chunk(3), r, now=H).reason == "stale:past"  # every row belongs to the past


def test_vlash_commits_what_runs_during_the_inference_and_starts_there():
    p = _planner("vlash")
    p.deliver(_chunk(1), p.request(_obs(), 0, 0), now=0)  # rows 0..7 at steps 0..7
    for s in range(5):
        p.pop(s)
    req = p.request(_obs(0.5), 5, delay_estimate=2)
    assert req.committed == 2 and req.start_step == 7 and req.state_kind == "estimated"
    assert req.obs["observation.state"][0] == 0.5 + 2 * 1.0  # delta estimator: two pending deltas of 1.0
    assert req.obs["observation.state"][4] == 7  # the task part stays measured
    got = p.deliver(_chunk(2), req, now=7)
    assert (got.first_step, got.first_index) == (7, 0)
    assert [int(p.pop(s).action[0]) for s in (5, 6, 7)] == [1, 1, 2]


def test_late_vlash_chunk_shifts_if_the_robot_held_and_skips_if_it_moved():
    held = _planner("vlash")
    held.deliver(_chunk(1), held.request(_obs(), 0, 0), now=0)
    for s in range(6):
        held.pop(s)
    req = held.request(_obs(), 6, 2)  # commits rows 6, 7 -> start 8
    for s in range(6, 11):
        held.pop(s)  # 8, 9, 10: nothing queued, the robot held at the estimated state
    got = held.deliver(_chunk(2), req, now=11)
    assert (got.first_step, got.first_index) == (11, 0)
    moved = _planner("vlash")
    moved.deliver(_chunk(1), moved.request(_obs(), 0, 0), now=0)
    req = moved.request(_obs(), 2, 2)  # trigger earlier than needed: commits rows 2, 3 -> start 4; 4..7 stay queued
    assert req.start_step == 4
    for s in range(2, 7):
        assert moved.pop(s) is not None  # 4, 5, 6 ran older actions: the robot moved on
    got = moved.deliver(_chunk(2), req, now=7)
    assert (got.first_step, got.first_index) == (7, 3)  # rows for 4, 5, 6 are in the past
    assert moved.pop(7).index == 3


def test_prefix_is_the_previous_plan_with_its_committed_rows():
    p = _planner("vlash", send_prefix=True)
    first = p.request(_obs(), 0, 2)
    assert len(first.prefix) == 0 and first.prefix_committed == 0
    p.deliver(_chunk(1), first, now=0)
    for s in range(6):
        p.pop(s)
    req = p.request(_obs(), 6, 2)
    assert req.prefix_start == 6 and req.prefix_committed == 2
    np.testing.assert_array_equal(req.prefix[:, 1], np.arange(6, H))  # queued rows 6, 7 then the unqueued plan
    a = _planner("async", send_prefix=True)
    a.deliver(_chunk(1), a.request(_obs(), 0, 2), now=0)
    req = a.request(_obs(), 5, 2)
    assert req.start_step == 5 and req.prefix_start == 5 and req.prefix_committed == 2
