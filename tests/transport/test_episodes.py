"""Protocol v2's episodes against a real steered policy: checkpoints/push-diffusion served in this
process (so a test strategy registered here runs on the server), reached over ZeroMQ on loopback.

- the context makes the round trip: a strategy on the server sees exactly the scene the robot sent,
  mid-episode updates included, applied before the next chunk;
- each refusal code over the wire, and the session stays usable after each one;
- a served VLS episode on the push obstacle task carries reward figures in every chunk, and the
  server's telemetry shows its chunks and the executed actions on one subscription;
- two sessions interleaving episodes on one model keep their own contexts.
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path

import numpy as np
import pytest

from policy_steer.steering.base import Strategy
from policy_steer.steering.registry import SteerMethod, SteerSetup, register
from policy_steer.transport import PolicyClient, PolicyServer, RemoteError, ServerConfig, TelemetrySubscriber
from policy_steer.transport.limits import VERIFIER_PATH_REFUSED, ServerLimits
from policy_steer.types import EpisodeContext, ExecutedStep
from tests.transport.helpers import RawClient, observation

REPO = Path(__file__).resolve().parents[2]
CHECKPOINT = REPO / "checkpoints" / "push-diffusion"


class Probe(Strategy):
    """Records every context it is given and reports, in each chunk, the scene it knew when sampling."""

    name = "probe"
    seen: list[tuple[str, EpisodeContext]] = []  # (reset | update, context), across all instances

    def __init__(self) -> None:
        self.context: EpisodeContext | None = None

    def reset_episode(self, context: EpisodeContext) -> None:
        self.context = context
        Probe.seen.append(("reset", context))

    def update_context(self, context: EpisodeContext) -> None:
        self.context = context
        Probe.seen.append(("update", context))

    def export_episode_state(self):
        return self.context

    def import_episode_state(self, state) -> None:
        self.context = state

    def begin(self, run) -> None:
        c = self.context
        block = None
        if c is not None and c.scene is not None:
            block = [float(v) for v in c.scene.object("block").position]
        run.info[self.name] = {
            "stamp": None if c is None else c.stamp,
            "seed": None if c is None else c.seed,
            "instruction": None if c is None else c.instruction,
            "block": block,
        }





register(SteerMethod("probe", (), lambda policy, settings: SteerSetup([Probe()])))


@pytest.fixture(scope="module")
def verifier_root(tmp_path_factory):
    """The one folder under which clients may name a verifier_path; it holds an empty folder."""
    root = tmp_path_factory.mktemp("verifiers")
    (root / "empty").mkdir()
    return root


@pytest.fixture(scope="module")
def server(verifier_root):
    from policy_steer.policies.loading import load_policy
    from policy_steer.steered_policy import SteeredPolicy

    policy = SteeredPolicy.from_method(load_policy(str(CHECKPOINT)), "none", seed=0)
    config = ServerConfig(
        bind="tcp://127.0.0.1:*", telemetry="tcp://127.0.0.1:*", metrics_interval_s=0.2,
        limits=ServerLimits(verifier_roots=(str(verifier_root),)),
    )
    with PolicyServer(policy, config) as srv:
        yield srv


@pytest.fixture
def client(server):
    c = PolicyClient(endpoint=server.endpoint, timeout_s=60.0)
    c.connect()
    yield c
    c.close()


class Robot:
    """The push obstacle task as a robot: observations, its episode context, and its steps."""

    def __init__(self, seed: int) -> None:
        from policy_steer import envs

        self.env = envs.make("push", "obstacle")
        self.u = self.env.unwrapped
        self.obs, _ = self.env.reset(seed=seed)
        self.seed = seed
        self.step = 0

    def context(self) -> EpisodeContext:
        return self.u.episode_context(self.seed)

    def scene_now(self, context: EpisodeContext) -> EpisodeContext:
        return context.with_scene(self.u.scene(), stamp=float(self.step))

    def run(self, chunk, n: int, client: PolicyClient | None = None) -> None:
        for i in range(n):
            action = chunk.actions[i]
            state = np.asarray(self.obs["observation.state"], np.float32)
            self.obs, *_ = self.env.step(action)
            if client is not None:
                client.report_executed(
                    ExecutedStep(step=self.step, action=action, commanded=action, state=state,
                                 chunk_start_step=chunk.start_step, index=i)
                )
            self.step += 1


def block_of(context: EpisodeContext) -> list[float]:
    return [float(v) for v in context.scene.object("block").position]


def test_the_strategy_sees_exactly_the_context_the_robot_sent(client):
    robot = Robot(seed=4)
    assert client.configure(steer={"method": "probe"})["method"] == "probe"
    context = robot.context()
    started = client.start_episode(context)
    assert started["strategies"] == ["probe"] and started["steer"]["method"] == "probe"
    kind, received = Probe.seen[-1]
    assert kind == "reset" and received == context  # scene, robot description, instruction, task, seed
    assert received.scene.frame == "world" and received.robot.state_layout == context.robot.state_layout
    chunk = client.request_chunk(robot.obs, step=0)
    assert chunk.info["strategies"] == {"probe": True}
    assert chunk.info["steer"]["probe"]["block"] == block_of(context)
    robot.run(chunk, 8)  # the block moves, or the arm does: the scene now differs
    update = robot.scene_now(context)
    client.update_context(update)
    chunk = client.request_chunk(robot.obs, step=robot.step)  # the update is applied before this chunk
    kind, received = Probe.seen[-1]
    assert kind == "update" and received == update and received.stamp == 8.0
    figures = chunk.info["steer"]["probe"]
    assert figures["stamp"] == 8.0 and figures["block"] == block_of(update) and figures["seed"] == 4


def test_each_refusal_code_over_the_wire_and_the_session_stays_usable(client, server, verifier_root):
    robot = Robot(seed=5)
    instruction_only = EpisodeContext(instruction="push the block into the target region")

    def usable(expect_strategies: dict) -> None:
        chunk = client.request_chunk(robot.obs, step=robot.step)
        assert chunk.actions.shape == (16, 3) and chunk.info["strategies"] == expect_strategies

    def refused(code: str, call, *args, **kwargs) -> str:
        with pytest.raises(RemoteError) as e:
            call(*args, **kwargs)
        assert e.value.code == code, e.value
        return e.value.message

    # context_required: VLS and no scene, at episode and at an observe's implicit episode
    assert client.configure(steer={"method": "vls"})["method"] == "vls"  # no episode yet: nothing to check
    msg = refused("context_required", client.request_chunk, robot.obs, step=0)
    assert "vls" in msg and "scene" in msg and "episode" in msg
    msg = refused("context_required", client.start_episode, instruction_only)
    assert "no scene description" in msg
    assert client.start_episode(robot.context())["strategies"] == ["vls"]
    usable({"vls": True})
    # ... and at configure, mid-episode: an episode without a scene cannot switch to VLS
    assert client.configure(steer={"method": "none"})["method"] == "none"
    client.start_episode(instruction_only)
    msg = refused("context_required", client.configure, steer={"method": "vls"})
    assert "configure refused" in msg and "scene" in msg
    usable({})  # the settings before the refused configure are still in force
    # steer_unavailable: TACO with a verifier path the server may not read (the same text, whatever the path) ...
    msg = refused("steer_unavailable", client.configure, steer={"method": "taco", "verifier_path": "/nonexistent/v"})
    assert msg == VERIFIER_PATH_REFUSED
    usable({})
    # ... and with an allowed folder that holds no verifier (the loader's own refusal, naming the folder)
    empty = str(verifier_root / "empty")
    msg = refused("steer_unavailable", client.configure, steer={"method": "taco", "verifier_path": empty})
    assert empty in msg and msg != VERIFIER_PATH_REFUSED
    usable({})
    # steer_unsupported: an option the policy's family lacks (VLS's velocity form is for flow policies)
    msg = refused("steer_unsupported", client.configure, steer={"method": "vls", "vls_form": "velocity"})
    assert "flow policies only" in msg and "diffusion" in msg
    usable({})
    # context_mismatch: a context for another task than the checkpoint's (policy_steer.json: push)
    other = dataclasses.replace(robot.context(), task="pick-place")
    msg = refused("context_mismatch", client.start_episode, other)
    assert "'pick-place'" in msg and "'push'" in msg
    usable({})
    # bad_context: a scene failing its schema (sent by hand: the client library never sends one)
    raw = RawClient(server.endpoint)
    try:
        w = raw.hello()
        scene = robot.context().to_dict()["scene"]
        scene["objects"][1]["half_size"] = [0.02, 0.02]
        h, _ = raw.request("episode", session=w["session"], context={"scene": scene}, timeout_s=30)
        assert h["code"] == "bad_context" and "scene/objects/1/half_size" in h["message"]
        h, _ = raw.request("episode", session="not-mine", context={}, timeout_s=30)  # before hello: no_session
        assert h["code"] == "no_session"
        h, _ = raw.request("observe", observation(w["observation"]), session=w["session"], step=0, start_step=0,
                           state_kind="measured", timeout_s=30)
        assert h["type"] == "chunk" and h["info"]["strategies"] == {}
    finally:
        raw.close()
    # after all that, an episode with the scene, and VLS steers it
    assert client.start_episode(robot.context())["strategies"] == []
    assert client.configure(steer={"method": "vls"})["method"] == "vls"  # mid-episode: checked, accepted
    usable({"vls": True})


def test_a_served_vls_episode_carries_reward_figures_in_every_chunk_and_telemetry_sees_the_loop(server):
    # one subscriber takes everything; the other only the loop's two topics (a prefix filter on frame 0)
    everything = TelemetrySubscriber(server.telemetry_endpoint, topics=("",))
    loop = TelemetrySubscriber(server.telemetry_endpoint, topics=("chunk", "executed"))
    robot = Robot(seed=3)
    try:
        deadline = time.monotonic() + 30
        while (m := everything.recv(0.5)) is None or m.topic != "metrics":  # the subscriptions are in
            assert time.monotonic() < deadline, "no telemetry"
        with PolicyClient(endpoint=server.endpoint, timeout_s=60.0) as client:
            client.configure(steer={"method": "vls", "particles": 4})
            context = robot.context()
            assert client.start_episode(context)["strategies"] == ["vls"]
            chunks = 0
            for _ in range(4):
                client.update_context(robot.scene_now(context))
                chunk = client.request_chunk(robot.obs, step=robot.step)
                chunks += 1
                assert chunk.info["strategies"] == {"vls": True}
                vls = chunk.info["steer"]["vls"]
                assert vls["steered"] == 1 and vls["particles"] == 4
                for key in ("reward_best", "reward_mean", "reward_executed"):
                    assert isinstance(vls[key], float) and math.isfinite(vls[key]), key
                robot.run(chunk, 6, client)
            session = client.session
            assert client.ping() > 0  # calls run in order: every executed step has gone out
            assert client.stats.executed == 24 and client.stats.notification_errors == 0
        seen: dict[str, list] = {"chunk": [], "executed": []}
        deadline = time.monotonic() + 20
        while (len(seen["chunk"]) < chunks or len(seen["executed"]) < 24) and time.monotonic() < deadline:
            m = loop.recv(0.5)
            if m is not None:
                assert m.topic in ("chunk", "executed"), m.topic  # the filter let nothing else through
                if m.header["session"] == session:
                    seen[m.topic].append(m)
        assert len(seen["chunk"]) == chunks and len(seen["executed"]) == 24
        assert all(m.header["info"]["strategies"] == {"vls": True} for m in seen["chunk"])
        first = seen["executed"][0]
        assert first.header["step"] == 0 and first.header["chunk_start_step"] == 0 and first.header["index"] == 0
        assert first.header["held"] is False and first.arrays["action"].shape == (3,)
        assert first.arrays["state"].shape == (19,)
        assert [m.header["step"] for m in seen["executed"]] == list(range(24))
        np.testing.assert_array_equal(first.arrays["action"], seen["chunk"][0].arrays["actions"][0])
    finally:
        everything.close()
        loop.close()


def test_two_sessions_interleaving_episodes_keep_their_own_contexts(server):
    robots = {"a": Robot(seed=1), "b": Robot(seed=2), "c": Robot(seed=6)}
    assert block_of(robots["a"].context()) != block_of(robots["b"].context())
    clients = {k: PolicyClient(endpoint=server.endpoint, timeout_s=60.0, name=k) for k in robots}
    try:
        for k, c in clients.items():
            c.connect()
            # a and b steer alike (their episodes swap on one model); c steers differently (settings swap too)
            c.configure(steer={"method": "vls+probe" if k != "c" else "probe"})
        contexts = {k: r.context() for k, r in robots.items()}
        for k in ("a", "b", "c"):
            clients[k].start_episode(contexts[k])
        for round_ in range(3):
            for k in ("a", "c", "b"):
                robot, c = robots[k], clients[k]
                if round_:
                    contexts[k] = robot.scene_now(contexts[k])
                    c.update_context(contexts[k])
                chunk = c.request_chunk(robot.obs, step=robot.step)
                probe = chunk.info["steer"]["probe"]
                assert probe["block"] == block_of(contexts[k]), (k, round_)
                assert probe["seed"] == robot.seed and probe["stamp"] == float(robot.step)
                if k == "c":
                    assert chunk.info["strategies"] == {"probe": True}
                else:  # VLS steered this session's episode with its own scene all along
                    assert chunk.info["strategies"] == {"vls": True, "probe": True}
                    assert chunk.info["steer"]["vls"]["steered"] == 1
                    assert math.isfinite(chunk.info["steer"]["vls"]["reward_best"])
                robot.run(chunk, 4)
    finally:
        for c in clients.values():
            c.close()


def test_a_served_episode_reproduces_the_in_process_one_whatever_other_sessions_do(server):
    """Same seed, same observations: the served VLS chunks are the in-process ones, bit for bit, while
    another session's episode runs on the same model in between (the noise streams match)."""
    from policy_steer.steered_policy import SteeredPolicy
    from policy_steer.types import STEP

    local = SteeredPolicy.from_method(server.policy.policy, "vls", {}, seed=123)
    robot = Robot(seed=8)
    local.start_episode(robot.context())
    expected = []
    for _ in range(3):
        chunk = local.predict_chunk({**robot.obs, STEP: robot.step}, start_step=robot.step)
        expected.append(chunk.actions)
        robot.run(chunk, 6)

    robot, other = Robot(seed=8), Robot(seed=9)
    a = PolicyClient(endpoint=server.endpoint, timeout_s=60.0)
    b = PolicyClient(endpoint=server.endpoint, timeout_s=60.0)
    try:
        a.connect(), b.connect()
        for c in (a, b):
            c.configure(steer={"method": "vls"})
        a.start_episode(robot.context())
        b.start_episode(other.context())
        for want in expected:
            other.run(b.request_chunk(other.obs, step=other.step), 6)
            chunk = a.request_chunk(robot.obs, step=robot.step)
            np.testing.assert_array_equal(chunk.actions, want)
            robot.run(chunk, 6)
    finally:
        a.close(), b.close()


def test_the_server_tells_the_robot_when_its_steering_reads_the_previous_plan(client):
    """RTC over the wire: `episode_started` says wants_prefix, so the robot's loop sends the prefix
    (without it RTC would have nothing to inpaint, and every chunk would say rtc did not act)."""
    from policy_steer.runtime.chunk_source import ClientChunkSource

    robot = Robot(seed=2)
    source = ClientChunkSource(client)
    assert client.configure(steer={"method": "rtc"})["method"] == "rtc"
    assert client.start_episode(robot.context())["wants_prefix"] is True and source.wants_prefix
    first = client.request_chunk(robot.obs, step=0)
    assert first.info["strategies"] == {"rtc": False}  # no previous plan yet: said, not hidden
    robot.run(first, 4)
    # committed rows only (v1's meaning), ending right before the chunk: this policy's chunk has no
    # past rows to put them on, so RTC cannot act, and the chunk says so
    only_committed = client.request_chunk(robot.obs, step=4, start_step=8, prefix=first.actions[4:8])
    assert only_committed.info["strategies"] == {"rtc": False}
    # the previous plan overlapping the new chunk, 4 rows committed: RTC inpaints the overlap
    second = client.request_chunk(robot.obs, step=4, start_step=8, prefix=first.actions[4:12],
                                  prefix_start=4, prefix_committed=4)
    assert second.info["strategies"] == {"rtc": True} and second.info["steer"]["rtc"]["prefix_rows"] == 8
    assert second.info["steer"]["rtc"]["guided_rows"] >= 4
    assert client.configure(steer={"method": "none"})["method"] == "none"
    assert client.start_episode(robot.context())["wants_prefix"] is False and not source.wants_prefix
