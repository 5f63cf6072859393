"""PolicyClient against servers in their own processes: requests, async use, timeouts, reconnection."""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest

from policy_steer.errors import ValidationError
from policy_steer.transport import BusyError, ClientClosed, PolicyClient, RemoteError, RequestTimeout, SpecChanged
from policy_steer.types import EpisodeContext, ExecutedStep
from tests.transport.conftest import FIXED_ARGS
from tests.transport.helpers import CONTEXT, ServerProcess, with_block_at

EPISODE = EpisodeContext.from_dict(CONTEXT)
MOVED = EpisodeContext.from_dict(with_block_at(CONTEXT, [0.5, 0.05, 0.025], 2.0))

EXPECTED_ACTIONS = np.arange(16, dtype=np.float32)[:, None] + np.arange(7, dtype=np.float32)[None, :] / 100


def make_obs(seed: int = 0, task: str | None = None) -> dict:
    rng = np.random.default_rng(seed)
    obs = {
        "observation.state": rng.standard_normal(32).astype(np.float32),
        "observation.images.front": rng.integers(0, 256, (8, 8, 3), dtype=np.uint8),
    }
    if task is not None:
        obs["task"] = task
    return obs


@pytest.fixture
def client(fixed_server):
    c = PolicyClient(endpoint=fixed_server.endpoint, timeout_s=5.0)
    c.connect()
    yield c
    c.close()


def test_connect_negotiates_and_request_chunk_returns_a_checked_chunk(client):
    assert client.connected and client.spec.horizon == 16 and client.spec.action_dim == 7
    assert set(client.spec.observation) == {"observation.state", "observation.images.front"}
    obs = make_obs(1, task="pick")
    chunk = client.request_chunk(obs, step=4, start_step=6)
    assert chunk.start_step == 6 and chunk.actions.dtype == np.float32
    np.testing.assert_array_equal(chunk.actions, EXPECTED_ACTIONS)
    assert chunk.actions.flags.writeable  # the robot's own copy
    echo = chunk.info["echo"]
    assert echo["step"] == 4 and echo["task"] == "pick"
    assert echo["sums"]["observation.state"] == pytest.approx(float(obs["observation.state"].sum()), rel=1e-5)


def test_float64_state_is_cast_and_bad_observations_fail_locally(client):
    obs = make_obs()
    obs["observation.state"] = obs["observation.state"].astype(np.float64)
    assert client.request_chunk(obs, step=0).start_step == 0
    sent = client.stats.sent
    with pytest.raises(ValidationError, match="missing 'observation.images.front'"):
        client.submit_chunk({"observation.state": np.zeros(32, np.float32)}, step=1)
    with pytest.raises(ValidationError, match="shape"):
        client.submit_chunk({**make_obs(), "observation.state": np.zeros(3, np.float32)}, step=1)
    with pytest.raises(ValidationError, match="non-finite"):
        client.submit_chunk({**make_obs(), "observation.state": np.full(32, np.inf, np.float32)}, step=1)
    with pytest.raises(ValidationError, match="uint8"):
        client.submit_chunk({**make_obs(), "observation.images.front": np.zeros((8, 8, 3), np.float32)}, step=1)
    with pytest.raises(ValidationError, match="prefix"):
        client.submit_chunk(make_obs(), step=1, prefix=np.zeros((2, 3), np.float32))
    assert client.stats.sent == sent  # nothing went out


def test_configure_and_ping(client):
    assert client.configure(task="wipe", steer={"k": 2}) == {"k": 2}
    assert client.request_chunk(make_obs(), step=0).info["echo"]["configured_task"] == "wipe"
    assert client.ping() > 0  # a pong came back before the deadline (no timing claim: the machine is shared)


def test_submit_then_poll_and_busy_for_the_superseded_request(slower_server):
    with PolicyClient(endpoint=slower_server.endpoint, timeout_s=20.0) as c:
        first = c.submit_chunk(make_obs(), step=1)
        assert not first.done() and first.poll() is None
        time.sleep(0.5)  # the first observe is running now (it takes 2 s)
        second = c.submit_chunk(make_obs(), step=2)
        third = c.submit_chunk(make_obs(), step=3, start_step=5)
        assert first.result().start_step == 1
        with pytest.raises(BusyError):
            second.result()
        chunk = third.result()
        assert chunk.start_step == 5 and third.done() and third.poll().start_step == 5
        assert third.latency_s > 1.0  # it waited for the first chunk, then took its own
        assert c.stats.busy == 1


def test_a_server_slower_than_the_timeout(slow_server):
    with PolicyClient(endpoint=slow_server.endpoint, timeout_s=0.2) as c:
        t0 = time.monotonic()
        with pytest.raises(RequestTimeout):
            c.request_chunk(make_obs(), step=1)
        assert time.monotonic() - t0 > 0.15  # it waited for its deadline, not for the 0.5 s chunk (late ones time out)
        # the late chunk for step 1 is dropped; the next request gets its own chunk
        chunk = c.request_chunk(make_obs(), step=2, start_step=2, timeout_s=3.0)
        assert chunk.start_step == 2
        deadline = time.monotonic() + 10
        while c.stats.late_replies < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert c.stats.late_replies >= 1 and c.stats.timeouts == 1


def test_kill_and_restart_the_server_mid_stream():
    server = ServerProcess(FIXED_ARGS)
    events: list[str] = []
    c = PolicyClient(
        endpoint=server.endpoint, timeout_s=2.0, heartbeat_s=0.2, on_event=lambda name, _: events.append(name)
    )
    try:
        first = c.connect()
        c.configure(task="keep going", steer={"mode": "a"})
        assert c.start_episode(EPISODE)["episode"] == 1
        c.update_context(MOVED)  # the scene now: what the episode re-sent after the restart carries
        for step in range(20):
            assert c.request_chunk(make_obs(step), step=step).start_step == step
        server.kill()  # SIGKILL mid-episode
        with pytest.raises(RequestTimeout):
            c.request_chunk(make_obs(), step=20, timeout_s=0.5)  # never a stale chunk
        pending = c.submit_chunk(make_obs(), step=21, timeout_s=20.0)  # submitted while the server is down
        server.restart_same_port()
        chunk = pending.result()  # re-sent after the re-hello
        assert chunk.start_step == 21
        assert c.session != first.session and c.stats.reconnects >= 1 and "reconnected" in events
        echo = c.request_chunk(make_obs(), step=22).info["echo"]
        assert echo["configured_task"] == "keep going" and echo["steer"] == {"mode": "a"}  # settings replayed
        # and the episode, with the latest scene: a new session has none of its own
        assert echo["context"]["objects"]["block"] == [0.5, 0.05, 0.025] and echo["context"]["seed"] == 5
        assert echo["episodes"] == 1 and "episode_replayed" in events
    finally:
        c.close()
        server.kill()


def test_a_frozen_server_is_detected_by_heartbeats():
    server = ServerProcess(FIXED_ARGS)
    c = PolicyClient(endpoint=server.endpoint, timeout_s=1.0, heartbeat_s=0.2, dead_after_s=1.0)
    try:
        c.connect()
        os.kill(server.pid, signal.SIGSTOP)  # the TCP connection stays up; only heartbeats notice
        deadline = time.monotonic() + 15
        while c.stats.socket_resets == 0 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert c.stats.socket_resets >= 1 and not c.connected
        os.kill(server.pid, signal.SIGCONT)
        assert c.request_chunk(make_obs(), step=3, timeout_s=10.0).start_step == 3
        assert c.connected and c.stats.reconnects >= 1
    finally:
        os.kill(server.pid, signal.SIGCONT)
        c.close()
        server.kill()


def test_a_different_policy_after_restart_is_refused_until_connect():
    server = ServerProcess(FIXED_ARGS)
    c = PolicyClient(endpoint=server.endpoint, timeout_s=2.0, heartbeat_s=0.2)
    try:
        c.connect()
        server.kill()
        server.args += ["--state_dim", "16"]
        server.restart_same_port()
        with pytest.raises(SpecChanged):
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                try:
                    c.request_chunk(make_obs(), step=0, timeout_s=0.5)
                except RequestTimeout:
                    continue
        welcome = c.connect()
        assert welcome.spec.observation["observation.state"].shape == (16,)
        obs = {**make_obs(), "observation.state": np.zeros(16, np.float32)}
        assert c.request_chunk(obs, step=1).start_step == 1
    finally:
        c.close()
        server.kill()


def test_no_server_and_closed_client():
    c = PolicyClient(endpoint="tcp://127.0.0.1:9", timeout_s=0.3)
    with pytest.raises(RequestTimeout, match="no welcome"):
        c.connect(timeout_s=0.5)
    c.close()
    with pytest.raises(ClientClosed):
        c.submit_chunk(make_obs(), step=0)


def test_close_fails_pending_requests(slow_server):
    c = PolicyClient(endpoint=slow_server.endpoint, timeout_s=5.0)
    c.connect()
    pending = c.submit_chunk(make_obs(), step=0)
    c.close()
    with pytest.raises(ClientClosed):
        pending.result(timeout=2)


def test_episodes_context_updates_and_executed_steps(client):
    started = client.start_episode(EPISODE)
    assert started == {"session": client.session, "episode": 1, "steer": {}, "strategies": [], "wants_prefix": False}
    assert client.episode == started
    echo = client.request_chunk(make_obs(), step=0).info["echo"]
    assert echo["context"]["objects"]["block"] == [0.4, 0.0, 0.025] and echo["context"]["seed"] == 5
    client.update_context(MOVED)
    echo = client.request_chunk(make_obs(), step=1).info["echo"]
    assert echo["context"]["objects"]["block"] == [0.5, 0.05, 0.025] and echo["context"]["stamp"] == 2.0
    # seed= replaces the context's seed
    assert client.start_episode(EPISODE, seed=11)["episode"] == 2
    assert client.request_chunk(make_obs(), step=0).info["echo"]["context"]["seed"] == 11
    # a refusal is a RemoteError with the refusal's code; the episode in force goes on
    with pytest.raises(RemoteError) as e:
        client.start_episode(EpisodeContext(task="pick-place"))
    assert e.value.code == "context_mismatch" and e.value.refused
    assert client.request_chunk(make_obs(), step=1).info["episode"] == 2
    # executed steps: checked here, nothing answers the good ones
    a = np.arange(7, dtype=np.float32)
    client.report_executed(ExecutedStep(step=1, action=a, commanded=a, state=np.zeros(32), chunk_start_step=0, index=1))
    client.report_executed(ExecutedStep(step=2, action=a, commanded=a + 1, safety="clamped"))  # a hold
    bad = [
        (ExecutedStep(step=3, action=a[:6], commanded=a), "action has shape"),
        (ExecutedStep(step=3, action=a, commanded=np.full(7, np.nan)), "non-finite"),
        (ExecutedStep(step=3, action=a, commanded=a, state=np.zeros(31)), "state has shape"),
        (ExecutedStep(step=3, action=a, commanded=a, chunk_start_step=2), "both set"),
    ]
    for step, match in bad:
        with pytest.raises(ValidationError, match=match):
            client.report_executed(step)
    with pytest.raises(ValidationError, match="seed"):  # a context failing its schema is never sent
        client.update_context(EpisodeContext(seed=-1))
    with pytest.raises(ValidationError, match="scene/objects/0/position/1"):  # not finite
        client.start_episode(EpisodeContext.from_dict(with_block_at(CONTEXT, [0.4, float("inf"), 0.0], 3.0)))
    assert client.ping() > 0  # the I/O thread runs calls in order: what was reported has gone out by now
    stats = client.stats
    assert (stats.executed, stats.contexts, stats.episodes) == (2, 1, 2)  # nothing refused locally was sent
    assert stats.notification_errors == 0 and stats.notifications_dropped == 0


def test_a_refused_notification_arrives_as_an_event(fixed_server):
    events: list[tuple[str, dict]] = []
    with PolicyClient(endpoint=fixed_server.endpoint, timeout_s=5.0, on_event=lambda n, f: events.append((n, f))) as c:
        c.update_context(EPISODE)  # no episode yet in this session
        deadline = time.monotonic() + 10
        while not any(n == "context_error" for n, _ in events) and time.monotonic() < deadline:
            time.sleep(0.02)
        (fields,) = [f for n, f in events if n == "context_error"]
        assert fields["code"] == "no_episode" and "episode" in fields["message"]
        assert c.stats.notification_errors == 1
        assert c.request_chunk(make_obs(), step=0).start_step == 0  # still usable
