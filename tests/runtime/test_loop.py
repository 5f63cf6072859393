"""The one control loop: the same episode under both clocks, simulated time that pauses for a slow
source, and the episode calls it makes on the chunk source (start, context updates, executed steps).

What is comparable between the clocks: the wall clock holds the robot while a chunk is computed, and a
simulated robot's holds are env steps that change the episode; with ``WallClock(pause=True)`` the loop
waits for a due chunk instead (the robot's time pauses during inference), so at zero planned delay the
wall-clock episode is the virtual clock's step for step: every executed action, the end effector before
it, every chunk's steps. Stamps, late ticks and latencies are this machine's and differ.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from policy_steer.errors import CONTEXT_REQUIRED, SteeringRefused
from policy_steer.runtime.chunk_source import ClientChunkSource, LocalChunkSource
from policy_steer.runtime.loop import ControlLoop, LoopConfig, VirtualClock, WallClock
from policy_steer.runtime.robot import SimRobot
from policy_steer.types import EpisodeContext, ExecutedStep
from tests.runtime.conftest import make_env
from tests.runtime.doubles import PointRobot, TaggedPolicy

REFERENCE = Path(__file__).resolve().parents[2] / "checkpoints" / "push-diffusion"


def _steps(r):
    return [(s.step, s.chunk_id, s.index, tuple(s.action), tuple(s.ee)) for s in r.records]


def _chunks(r):
    return [(c.obs_step, c.start_step, c.first_step, c.first_index, c.delivered_step, c.chunk_id, c.dropped) for c in r.chunks]


@pytest.fixture(scope="module")
def reference_policy():
    from policy_steer.policies import load_policy

    if not (REFERENCE / "config.json").exists():
        pytest.skip("the shipped push-diffusion checkpoint is not here")
    return load_policy(str(REFERENCE))


@pytest.mark.parametrize("mode", ["sync", "vlash"])
def test_both_clocks_give_identical_episodes_at_zero_latency(reference_policy, mode):
    from policy_steer.runtime.sim_loop import RuntimeConfig, run_episode
    from policy_steer.steered_policy import SteeredPolicy

    env = make_env("push", "obstacle")
    limit = int(env.unwrapped.max_episode_steps)
    seed = 1
    virtual = ControlLoop(SimRobot(env), LocalChunkSource(SteeredPolicy(reference_policy), inline=True),
                          VirtualClock("0"), LoopConfig(mode=mode, max_steps=limit)).run(seed=seed)
    with LocalChunkSource(SteeredPolicy(reference_policy)) as source:  # a worker thread, as a robot uses it
        wall = ControlLoop(SimRobot(env), source, WallClock(hz=1000.0, pause=True),
                           LoopConfig(mode=mode, max_steps=limit, fixed_delay_steps=0)).run(seed=seed)
    bench = run_episode(env, SteeredPolicy(reference_policy), RuntimeConfig(mode=mode, latency="0"), seed, record_steps=True)
    assert (virtual.clock, wall.clock) == ("virtual", "wall")
    assert virtual.steps > 20 and virtual.stall_steps == 0 and len(virtual.chunks) >= 3
    assert _steps(wall) == _steps(virtual) == _steps(bench)
    assert _chunks(wall) == _chunks(virtual) == _chunks(bench)
    for r in (wall, bench):
        assert (r.success, r.failure, r.steps, r.stall_steps, r.seam_jump, r.within_chunk_jump) == (
            virtual.success, virtual.failure, virtual.steps, virtual.stall_steps, virtual.seam_jump,
            virtual.within_chunk_jump)
    # the wall clock's stamps are real: the loop waited for every chunk instead of holding
    assert all(c.latency_s > 0 for c in wall.chunks)
    assert [s.observed for s in wall.records] == sorted(s.observed for s in wall.records)
    assert [s.observed for s in virtual.records] == [s.step / env.unwrapped.control_hz for s in virtual.records]
    env.close()


def test_the_virtual_clock_waits_for_a_slow_source_instead_of_running_ahead():
    cfg = LoopConfig(mode="vlash", max_steps=30)
    fast = ControlLoop(PointRobot(), LocalChunkSource(TaggedPolicy([0.0]), inline=True), VirtualClock("2"), cfg).run(seed=0)
    slow_policy = TaggedPolicy([0.05])  # far slower than 2 steps at 50 Hz
    with LocalChunkSource(slow_policy) as source:
        slow = ControlLoop(PointRobot(), source, VirtualClock("2"), cfg).run(seed=0)
    assert "MainThread" not in slow_policy.threads  # it really was computing elsewhere
    assert _steps(slow) == _steps(fast) and _chunks(slow) == _chunks(fast)
    # simulated time paused while the source computed: only the first chunk's 2 steps are a stall, and
    # every chunk arrived exactly 2 steps after its observation, however long it took
    assert slow.stall_steps == 2
    queued = [c for c in slow.chunks if c.chunk_id is not None]
    assert len(queued) >= 5 and all(c.delivered_step == c.obs_step + 2 for c in queued)
    assert all(c.latency_s >= 0.05 for c in queued)


class SceneRobot(PointRobot):
    """A point robot whose 'scene' (a number) it can read, clipping each action to 1 cm per axis."""

    dynamic_scene = True

    def __init__(self) -> None:
        super().__init__()
        self.last_executed = None
        self.last_intervention = None

    def context(self, seed=None):
        return EpisodeContext(instruction="t", robot=self.description, seed=seed, stamp=-1.0,
                              task=f"at {float(self.pos[0]):.3f}")

    def act(self, action):
        a = np.asarray(action, np.float32)
        clipped = np.clip(a, -0.01, 0.01).astype(np.float32)
        self.last_executed = clipped
        self.last_intervention = None if np.array_equal(clipped, a) else "clipped to 1 cm"
        super().act(clipped)


class RecordingSource:
    """A chunk source that records the episode calls the loop makes, in order."""

    def __init__(self, policy) -> None:
        self.inner = LocalChunkSource(policy, inline=True)
        self.calls: list[tuple] = []
        self.spec, self.wants_prefix = self.inner.spec, self.inner.wants_prefix

    def submit(self, obs, start_step, **kw):
        self.calls.append(("submit", int(obs["step"]), float(obs["stamp"])))
        return self.inner.submit(obs, start_step, **kw)

    def start_episode(self, context, seed=None):
        self.calls.append(("start", context, seed))
        return self.inner.start_episode(context, seed)

    def update_context(self, context):
        self.calls.append(("update", context))

    def report_executed(self, step):
        self.calls.append(("executed", step))

    def close(self):
        pass


@pytest.mark.parametrize("dynamic", [True, False])
def test_the_loop_starts_the_episode_updates_the_context_and_reports_what_ran(dynamic):
    robot = SceneRobot()
    robot.dynamic_scene = dynamic
    source = RecordingSource(TaggedPolicy([0.0]))
    r = ControlLoop(robot, source, VirtualClock("1"), LoopConfig(mode="vlash", max_steps=16)).run(seed=7)
    kind = [c[0] for c in source.calls]
    assert kind[0] == "start" and source.calls[0][2] == 7 and source.calls[0][1].seed == 7
    assert source.calls[0][1].task == "at 0.000"  # the context read at reset
    submits = [i for i, k in enumerate(kind) if k == "submit"]
    updates = [i for i, k in enumerate(kind) if k == "update"]
    if dynamic:  # the context read at the request's step, stamped with the observation, right before it
        assert [i + 1 for i in updates] == submits
        for i in updates:
            ctx, (_, step, stamp) = source.calls[i][1], source.calls[i + 1]
            assert ctx.stamp == stamp == step / robot.control_hz and ctx.seed == 7
            assert ctx.task == f"at {float(r.records[step].ee[0]):.3f}"
    else:
        assert not updates
    executed = [c[1] for c in source.calls if c[0] == "executed"]
    assert [e.step for e in executed] == list(range(r.steps)) == [s.step for s in r.records]
    by_id = {c.chunk_id: c for c in r.chunks}
    for e, s in zip(executed, r.records):
        assert isinstance(e, ExecutedStep)
        np.testing.assert_array_equal(e.commanded, s.action)
        np.testing.assert_array_equal(e.action, np.clip(np.float32(s.action), -0.01, 0.01).astype(np.float32))
        assert e.state[:3].tolist() == pytest.approx(s.ee)
        if s.chunk_id is None:
            assert e.held and e.index is None
        else:
            assert (e.chunk_start_step, e.index) == (by_id[s.chunk_id].start_step, s.index)
        # the tagged rows are far outside 1 cm: the robot's intervention is reported and recorded
        assert (e.safety is None) == (s.intervention is None) == (s.executed is None)
    assert any(e.safety == "clipped to 1 cm" for e in executed)


class RefusingPolicy(TaggedPolicy):
    def start_episode(self, context=None, seed=None):
        raise SteeringRefused(CONTEXT_REQUIRED, "vls: no scene description for this episode", strategy="vls")


@pytest.mark.parametrize("inline", [True, False])
def test_a_refused_episode_does_not_run(inline):
    robot = PointRobot()
    with LocalChunkSource(RefusingPolicy([0.0]), inline=inline) as source:
        loop = ControlLoop(robot, source, VirtualClock("0"), LoopConfig(max_steps=10))
        with pytest.raises(SteeringRefused) as e:
            loop.run(seed=0)
    assert e.value.code == CONTEXT_REQUIRED and not robot.acted


def test_the_client_source_maps_the_episode_calls_onto_the_client():
    calls = []

    class FakeClient:
        spec = TaggedPolicy.spec

        def start_episode(self, context, timeout_s=None, seed=None):
            calls.append(("start", context, seed))
            return {"episode": 1}

        def update_context(self, context):
            calls.append(("update", context))

        def report_executed(self, step):
            calls.append(("executed", step))

    src = ClientChunkSource(FakeClient())
    ctx = EpisodeContext(instruction="push", task="push")
    step = ExecutedStep(step=3, action=np.zeros(3, np.float32), commanded=np.zeros(3, np.float32))
    assert src.start_episode(ctx, 5) == {"episode": 1}
    src.update_context(ctx)
    src.report_executed(step)
    assert calls == [("start", ctx, 5), ("update", ctx), ("executed", step)]


def test_the_runtime_looks_nothing_up_by_name():
    """Every hook the loop uses is declared on its contract (Robot, ChunkSource, Clock), none probed."""
    root = Path(__file__).resolve().parents[2] / "policy_steer" / "runtime"
    for path in sorted(root.glob("*.py")):
        text = path.read_text()
        for probe in ("getattr(", "hasattr("):
            assert probe not in text, f"{path.name} uses {probe}"


def test_the_virtual_clock_waits_for_a_policy_server():
    """Over the wire (the transport's fixed-chunk server, 0.1 s per chunk): simulated time pauses while the
    server computes, so the episode is the one an in-process source gives, stall for stall."""
    from policy_steer.transport import client as client_mod
    from tests.transport import helpers

    server = helpers.ServerProcess(["--bind", "tcp://127.0.0.1:*", "--state_dim", "5", "--action_dim", "3",
                                    "--horizon", "8", "--delay_s", "0.1", "--control_hz", "50"])
    try:
        client = client_mod.PolicyClient(client_mod.ClientConfig(endpoint=server.endpoint, control_hz=50, timeout_s=5.0))
        client.connect()
        source = ClientChunkSource(client)
        robot = PointRobot()
        r = ControlLoop(robot, source, VirtualClock("2"), LoopConfig(mode="vlash", max_steps=40)).run(seed=0)
        source.close()
    finally:
        server.kill()
    queued = [c for c in r.chunks if c.chunk_id is not None]
    assert r.steps == 40 and not any(c.error for c in r.chunks) and len(queued) >= 4
    assert r.stall_steps == 2  # only the first chunk's 2 steps, though each took 0.1 s (5 periods at 50 Hz)
    assert all(c.delivered_step == c.obs_step + 2 == c.first_step for c in queued)
    assert all(c.latency_s >= 0.1 for c in queued)
    for rec, (_, executed) in zip(r.records, robot.acted):
        if rec.chunk_id is not None:
            assert executed[0] == rec.index  # the fixed chunk's row i is [i, i + .01, i + .02]
