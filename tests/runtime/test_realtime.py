"""The wall-clock loop: a slow policy makes the robot hold, never run on stale or out-of-chunk actions.

No timing is asserted (these machines are shared); the invariants hold however late things are.
"""

from __future__ import annotations

import numpy as np
import pytest

from policy_steer.runtime.chunk_source import ClientChunkSource, LocalChunkSource
from policy_steer.runtime.realtime import RealtimeConfig, run_realtime

from tests.runtime.doubles import K, PointRobot, TaggedPolicy


@pytest.mark.parametrize("mode", ["sync", "async", "vlash"])
def test_a_slow_policy_makes_the_robot_hold_and_never_run_stale(mode):
    robot = PointRobot()
    policy = TaggedPolicy(delays=[0.02, 0.15, 0.02, 0.3, 0.15], fail_at=3)
    cfg = RealtimeConfig(mode=mode, max_steps=60, max_chunk_age_s=0.25)
    with LocalChunkSource(policy) as source:
        r = run_realtime(robot, source, cfg, seed=0)
    assert r.steps == 60 and len(robot.acted) == 60
    assert "MainThread" in robot.thread and "MainThread" not in policy.threads  # inference off the control thread
    assert r.stall_steps > 0  # the policy is slower than 4 actions at 50 Hz: the robot held
    failed = [c for c in r.chunks if c.error]
    assert len(failed) == 1 and "fell over" in failed[0].error
    assert any(c.dropped == "stale:age" for c in r.chunks)  # the 0.3 s chunk arrived older than allowed
    queued = {c.chunk_id: c for c in r.chunks if c.chunk_id is not None}
    dropped_serials = set()
    for i, c in enumerate(r.chunks):
        if c.dropped:
            dropped_serials.add(i + 1)  # requests are computed in order: serial i + 1
    for rec, (_, executed) in zip(r.records, robot.acted):
        if rec.chunk_id is None:
            assert np.all(executed == 0)  # a hold: zero delta
            continue
        c = queued[rec.chunk_id]
        serial, row = int(executed[0]), int(executed[1])
        assert serial not in dropped_serials  # never an action of a dropped (stale) chunk
        assert row == rec.index and c.first_index <= row < c.first_index + K  # never past its executed rows
        assert rec.step == c.first_step + (row - c.first_index)  # only at the step it was planned for
        newer = [o for o in queued.values() if o.chunk_id > c.chunk_id and o.delivered_step <= rec.step
                 and o.first_step <= rec.step < o.first_step + K]
        assert not newer  # never an action that a newer chunk has replaced
    stamps = [(s.tick, s.started, s.observed, s.acted) for s in r.records]
    assert all(b <= c <= d for _, b, c, d in stamps)  # started, observed, acted: in order
    assert all(s2[0] > s1[0] for s1, s2 in zip(stamps, stamps[1:]))


def test_delay_is_measured_online_and_sets_the_vlash_horizon():
    robot = PointRobot()
    with LocalChunkSource(TaggedPolicy(delays=[0.1])) as source:
        r = run_realtime(robot, source, RealtimeConfig(mode="vlash", max_steps=50, delay_quantile=1.0), seed=0)
    assert r.delay_estimate >= 5  # 0.1 s at 50 Hz, however busy the machine
    later = [c for c in r.chunks[2:] if c.chunk_id is not None]
    assert later and all(c.delay_estimate >= 5 for c in later)
    assert all(c.start_step == c.obs_step + c.committed for c in r.chunks)


def test_wall_clock_run_of_a_task_env(push_policy):
    from policy_steer.runtime.robot import SimRobot
    from policy_steer.steered_policy import SteeredPolicy
    from tests.runtime.conftest import make_env

    robot = SimRobot(make_env("push", "nominal"))
    with LocalChunkSource(SteeredPolicy(push_policy)) as source:
        r = run_realtime(robot, source, RealtimeConfig(mode="vlash", control_hz=20, max_steps=30), seed=2)
    assert r.steps == 30 == robot.steps
    errs = [c.estimate_error for c in r.chunks if c.estimate_error is not None and c.committed > 0]
    assert all(e < 1e-3 for e in errs)  # the model estimator on the simulator: the future state is exact


def test_client_source_sends_the_whole_previous_plan_and_where_it_runs():
    """Protocol v2's observe carries prefix_start/prefix_committed: RTC's overlap reaches the server."""
    calls = []

    class FakeClient:
        spec = TaggedPolicy.spec
        episode = None

        def submit_chunk(self, obs, step, start_step=None, prefix=None, state_kind="measured", timeout_s=None,
                         prefix_start=None, prefix_committed=None):
            calls.append((step, start_step, None if prefix is None else prefix[:, 1].tolist(), state_kind,
                          prefix_start, prefix_committed))
            return object()

    src = ClientChunkSource(FakeClient(), wants_prefix=True)
    plan = np.stack([np.zeros(6), np.arange(6), np.zeros(6)], 1).astype(np.float32)
    src.submit({"step": 10}, start_step=12, prefix=plan, state_kind="estimated", prefix_start=10, prefix_committed=2)
    src.submit({"step": 10}, start_step=12, prefix=plan[:0])  # an empty plan is no plan
    src.submit({"step": 10}, start_step=12, prefix=plan[:2])  # committed rows only (v1's meaning)
    assert calls == [(10, 12, [0.0, 1.0, 2.0, 3.0, 4.0, 5.0], "estimated", 10, 2), (10, 12, None, "measured", None, None),
                     (10, 12, [0.0, 1.0], "measured", None, None)]


def test_the_transport_client_plugs_in_as_a_chunk_source():
    """A policy server in its own process (the transport's fixed-chunk server), reached over ZeroMQ."""
    from policy_steer.transport import client as client_mod
    from tests.transport import helpers
    server = helpers.ServerProcess(["--bind", "tcp://127.0.0.1:*", "--state_dim", "5", "--action_dim", "3",
                                    "--horizon", "8", "--delay_s", "0.1", "--control_hz", "50"])
    try:
        client = client_mod.PolicyClient(client_mod.ClientConfig(endpoint=server.endpoint, control_hz=50, timeout_s=5.0))
        client.connect()
        source = ClientChunkSource(client)
        robot = PointRobot()
        r = run_realtime(robot, source, RealtimeConfig(mode="vlash", max_steps=40), seed=0)
        source.close()
    finally:
        server.kill()
    assert r.steps == 40 and not any(c.error for c in r.chunks)
    done = [c for c in r.chunks if c.chunk_id is not None]
    assert len(done) >= 2 and r.stall_steps >= 5  # the first chunk took 0.1 s: held meanwhile
    assert r.delay_estimate >= 5  # measured over the wire
    for rec, (_, executed) in zip(r.records, robot.acted):
        if rec.chunk_id is not None:
            assert executed[0] == rec.index  # the fixed chunk's row i is [i, i + .01, i + .02]
