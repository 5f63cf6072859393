"""PROTOCOL.md v1 on the wire, against a server in its own process, with a hand-written raw client."""

from __future__ import annotations

import time

import msgpack
import numpy as np
import pytest

from tests.transport.conftest import FIXED_ARGS
from tests.transport.helpers import RawClient, ServerProcess, observation

EXPECTED_ACTIONS = np.arange(16, dtype=np.float32)[:, None] + np.arange(7, dtype=np.float32)[None, :] / 100


@pytest.fixture
def raw(fixed_server):
    client = RawClient(fixed_server.endpoint)
    yield client
    client.close()


def observe(raw: RawClient, welcome: dict, step: int = 0, arrays=None, **keys):
    arrays = observation(welcome["observation"], seed=step) if arrays is None else arrays
    keys = {"session": welcome["session"], "step": step, "start_step": step, "state_kind": "measured", **keys}
    return raw.request("observe", arrays, **keys)


def test_hello_negotiates_the_spec(raw):
    seq = raw.send(raw.header("hello", client="raw-test", control_hz=20.0))
    w, frames = raw.recv()
    assert frames == []
    assert w["type"] == "welcome" and w["v"] == 1 and w["re"] == seq and isinstance(w["seq"], int)
    assert isinstance(w["session"], str) and len(w["session"]) >= 16 and w["arrays"] == []
    assert w["policy"] == {
        "name": "fixed-chunk",
        "family": "diffusion",
        "horizon": 16,
        "action_dim": 7,
        "n_action_steps": 8,
        "control_hz": 10.0,
    }
    assert w["observation"] == {
        "observation.state": {"dtype": "<f4", "shape": [32]},
        "observation.images.front": {"dtype": "|u1", "shape": [8, 8, 3]},
    }
    assert w["action"] == {"dtype": "<f4", "shape": [16, 7]}
    assert w["server"].startswith("policy-steer/")


def test_observe_returns_a_chunk_built_from_exactly_what_was_sent(raw):
    w = raw.hello()
    arrays = observation(w["observation"], seed=3)
    prefix = np.ones((2, 7), np.float32)
    h, frames = observe(raw, w, step=11, arrays={**arrays, "prefix": prefix}, start_step=13, task="stack the cubes")
    assert h["type"] == "chunk" and h["session"] == w["session"] and h["start_step"] == 13
    assert h["arrays"] == [{"name": "actions", "dtype": "<f4", "shape": [16, 7]}]
    actions = np.frombuffer(frames[0], dtype="<f4").reshape(16, 7)
    np.testing.assert_array_equal(actions, EXPECTED_ACTIONS)
    assert isinstance(h["info"]["latency_ms"], float) and isinstance(h["info"]["steer"], dict)
    echo = h["info"]["echo"]
    assert echo["step"] == 11 and echo["task"] == "stack the cubes" and echo["prefix_rows"] == 2
    for key, arr in arrays.items():
        assert echo["sums"][key] == pytest.approx(float(arr.astype(np.float64).sum()), rel=1e-6)


def test_configure_sets_task_and_steer_for_the_session(raw):
    w = raw.hello()
    h, _ = raw.request("configure", session=w["session"], task="open the drawer", steer={"candidates": 4})
    assert h["type"] == "configured" and h["steer"] == {"candidates": 4} and h["session"] == w["session"]
    h, _ = observe(raw, w, step=1)
    echo = h["info"]["echo"]
    assert echo["task"] == "open the drawer" and echo["steer"] == {"candidates": 4}
    h, _ = observe(raw, w, step=2)
    assert h["info"]["echo"]["configure_calls"] == echo["configure_calls"]  # the hook runs on changes only
    # a setting the policy refuses: an error naming it, and the previous settings stay in force
    h, _ = raw.request("configure", session=w["session"], steer={"invalid": 1})
    assert h["type"] == "error" and h["code"] == "bad_header" and "invalid" in h["message"]
    h, _ = observe(raw, w, step=3)
    assert h["info"]["echo"]["steer"] == {"candidates": 4}
    # None returns a key to its default
    h, _ = raw.request("configure", session=w["session"], steer={"candidates": None})
    assert h["steer"] == {}


def test_ping_pong_needs_no_session(raw):
    seq = raw.send(raw.header("ping"))
    h, _ = raw.recv()
    assert h["type"] == "pong" and h["re"] == seq


def test_sessions_are_separate_and_bound_to_their_client(fixed_server):
    clients = [RawClient(fixed_server.endpoint) for _ in range(4)]
    try:
        welcomes = [c.hello() for c in clients]
        assert len({w["session"] for w in welcomes}) == 4
        for step in range(3):
            for i, (c, w) in enumerate(zip(clients, welcomes)):
                c.request("configure", session=w["session"], task=f"robot {i}")
                h, _ = observe(c, w, step=step)
                assert h["session"] == w["session"] and h["info"]["echo"]["task"] == f"robot {i}"
        # a session id is not a credential: another client cannot use it
        h, _ = observe(clients[0], welcomes[1], step=9)
        assert h["type"] == "error" and h["code"] == "no_session" and "another client" in h["message"]
        # a second hello replaces the client's first session
        new = clients[0].hello()
        h, _ = observe(clients[0], welcomes[0], step=10)
        assert h["code"] == "no_session"
        h, _ = observe(clients[0], new, step=10)
        assert h["type"] == "chunk"
    finally:
        for c in clients:
            c.close()


# --- one test per error code -------------------------------------------------------------------


def test_error_bad_header(raw):
    raw.send_raw([b"\x00not msgpack"])
    h, _ = raw.recv()
    assert h["type"] == "error" and h["code"] == "bad_header" and "re" not in h and "msgpack" in h["message"]
    seq = raw.send(raw.header("hello", control_hz=10.0))
    h, _ = raw.recv()
    assert h["code"] == "bad_header" and h["re"] == seq and "client" in h["message"]


def test_error_version(raw):
    h, _ = raw.request("ping", v=2)
    assert h["code"] == "version" and "2" in h["message"]


def test_error_unknown_type(raw):
    h, _ = raw.request("teleport")
    assert h["code"] == "unknown_type" and "teleport" in h["message"]


def test_error_bad_array(raw):
    w = raw.hello()
    good = observation(w["observation"])
    cases = {
        "shape": {**good, "observation.state": np.zeros(31, np.float32)},
        "dtype": {**good, "observation.state": np.zeros(32, np.float64)},
        "missing": {"observation.state": good["observation.state"]},
        "non-finite": {**good, "observation.state": np.full(32, np.nan, np.float32)},
        "extra": {**good, "observation.images.rear": np.zeros((8, 8, 3), np.uint8)},
        "prefix": {**good, "prefix": np.zeros((2, 6), np.float32)},
    }
    for what, arrays in cases.items():
        h, _ = observe(raw, w, arrays=arrays)
        assert h["type"] == "error" and h["code"] == "bad_array", what
    h, _ = observe(raw, w, arrays=cases["shape"])
    assert "observation.state" in h["message"] and "[31]" in h["message"] and "[32]" in h["message"]
    # a frame that does not match its declared length
    hdr = raw.header("observe", session=w["session"], step=0, start_step=0, state_kind="measured")
    hdr["arrays"] = [{"name": "observation.state", "dtype": "<f4", "shape": [32]}]
    raw.send_raw([msgpack.packb(hdr), b"\0" * 100])
    h, _ = raw.recv()
    assert h["code"] == "bad_array" and h["re"] == hdr["seq"] and "100 bytes" in h["message"]


def test_error_too_large(raw):
    hdr = raw.header("ping")
    hdr["arrays"] = [{"name": "x", "dtype": "<f8", "shape": [2**31, 2**31]}]
    raw.send_raw([msgpack.packb(hdr), b""])
    h, _ = raw.recv()
    assert h["code"] == "too_large" and h["re"] == hdr["seq"]


def test_error_no_session(raw):
    h, _ = observe(
        raw,
        {
            "session": "0123456789abcdef",
            "observation": {
                "observation.state": {"dtype": "<f4", "shape": [32]},
                "observation.images.front": {"dtype": "|u1", "shape": [8, 8, 3]},
            },
        },
    )
    assert h["code"] == "no_session" and "hello" in h["message"]
    h, _ = raw.request("configure", session="nope", task="x")
    assert h["code"] == "no_session"


def test_error_internal_when_the_policy_fails_and_the_server_keeps_serving(raw):
    w = raw.hello()
    h, _ = observe(raw, w, step=1, task="explode")
    assert h["code"] == "internal" and "RuntimeError" in h["message"]
    h, _ = observe(raw, w, step=2)
    assert h["type"] == "chunk"


def test_error_busy_for_a_stale_queued_observe(slower_server):
    raw = RawClient(slower_server.endpoint)
    try:
        w = raw.hello()
        arrays = observation(w["observation"])
        keys = {"session": w["session"], "state_kind": "measured"}
        a = raw.send(raw.header("observe", step=1, start_step=1, **keys), arrays)
        time.sleep(0.5)  # A is running now (it takes 2 s)
        b = raw.send(raw.header("observe", step=2, start_step=2, **keys), arrays)
        c = raw.send(raw.header("observe", step=3, start_step=3, **keys), arrays)
        replies = {}
        for _ in range(3):
            h, _ = raw.recv(timeout_s=20)
            replies[h["re"]] = h
        assert replies[a]["type"] == "chunk" and replies[a]["start_step"] == 1
        assert replies[b]["type"] == "error" and replies[b]["code"] == "busy" and "step 3" in replies[b]["message"]
        assert replies[c]["type"] == "chunk" and replies[c]["start_step"] == 3
    finally:
        raw.close()


def test_pings_are_answered_while_a_chunk_is_computed(slow_server):
    raw = RawClient(slow_server.endpoint)
    try:
        w = raw.hello()
        t0 = time.monotonic()
        obs_seq = raw.send(
            raw.header("observe", session=w["session"], step=0, start_step=0, state_kind="measured"),
            observation(w["observation"]),
        )
        time.sleep(0.05)
        ping_seq = raw.send(raw.header("ping"))
        h, _ = raw.recv()
        assert h["type"] == "pong" and h["re"] == ping_seq  # answered before the chunk that was asked first
        h, _ = raw.recv()
        assert h["type"] == "chunk" and h["re"] == obs_seq and time.monotonic() - t0 >= 0.5
    finally:
        raw.close()


def test_sessions_expire_without_messages_and_pings_keep_them():
    server = ServerProcess(FIXED_ARGS + ["--session_timeout_s", "1.0"])
    try:
        idle, busy = RawClient(server.endpoint), RawClient(server.endpoint)
        w_idle, w_busy = idle.hello(), busy.hello()
        # 3.5 s: the busy client pings every 0.25 s, the idle one says nothing (expiry is checked every
        # second, so the idle session is gone after 2 s at most; the busy one has 4x margin per ping)
        for _ in range(14):
            busy.request("ping", timeout_s=20)
            time.sleep(0.25)
        h, _ = observe(idle, w_idle)
        assert h["code"] == "no_session"
        h, _ = observe(busy, w_busy)
        assert h["type"] == "chunk"
    finally:
        server.kill()


def test_session_limit_answers_busy():
    server = ServerProcess(FIXED_ARGS + ["--max_sessions", "2"])
    clients = [RawClient(server.endpoint) for _ in range(3)]
    try:
        clients[0].hello()
        clients[1].hello()
        h, _ = clients[2].request("hello", client="third", control_hz=10.0)
        assert h["type"] == "error" and h["code"] == "busy" and "2 sessions" in h["message"]
    finally:
        for c in clients:
            c.close()
        server.kill()


def test_observes_of_several_sessions_are_batched_when_the_policy_can():
    server = ServerProcess(FIXED_ARGS + ["--delay_s", "2.0", "--max_batch", "4"])
    clients = [RawClient(server.endpoint) for _ in range(5)]
    try:
        welcomes = [c.hello() for c in clients]
        # client 4 steers differently: it cannot share a forward pass with the others
        h, _ = clients[4].request("configure", session=welcomes[4]["session"], steer={"candidates": 8})
        assert h["type"] == "configured"
        arrays = [observation(w["observation"], seed=i) for i, w in enumerate(welcomes)]

        def send(i: int, step: int) -> int:
            keys = {"session": welcomes[i]["session"], "step": step, "start_step": step + i, "state_kind": "measured"}
            return clients[i].send(clients[i].header("observe", **keys), arrays[i])

        seqs = {0: send(0, 1)}
        time.sleep(0.5)  # client 0's observe is running (2 s); the next ones queue up behind it
        for i in (1, 2, 3, 4):
            seqs[i] = send(i, 1)
        replies = {i: clients[i].recv(timeout_s=30)[0] for i in range(5)}
        for i, h in replies.items():
            assert h["type"] == "chunk" and h["re"] == seqs[i] and h["start_step"] == 1 + i
            assert h["info"]["echo"]["sums"]["observation.state"] == pytest.approx(
                float(arrays[i]["observation.state"].astype(np.float64).sum()), rel=1e-5
            )
        assert "batch" not in replies[0]["info"] and "batch" not in replies[4]["info"]
        assert [replies[i]["info"]["batch"] for i in (1, 2, 3)] == [3, 3, 3]
        assert replies[1]["info"]["echo"]["new_episode"] is True
        assert replies[4]["info"]["echo"]["steer"] == {"candidates": 8}
        assert replies[1]["info"]["echo"]["steer"] == {}
    finally:
        for c in clients:
            c.close()
        server.kill()


def test_a_telemetry_subscriber_that_never_reads_loses_messages_and_slows_nothing():
    from policy_steer.transport.telemetry import TelemetryPublisher, TelemetrySubscriber

    pub = TelemetryPublisher("tcp://127.0.0.1:*", hwm=10)
    sub = TelemetrySubscriber(pub.endpoint, topics=("chunk",), hwm=1)
    try:
        # PUB drops everything until the subscription has reached it: publish probes until one arrives
        deadline = time.monotonic() + 30
        while sub.recv(0.05) is None:
            assert time.monotonic() < deadline, "the subscription never reached the publisher"
            pub.publish("chunk", {"session": "s", "i": -1})
        while sub.recv(0.2) is not None:  # drain the probes still in flight
            pass
        payload = np.zeros((256, 256), np.float32)  # 256 KiB per message, 500 MiB in all
        n = 2000
        t0 = time.monotonic()
        for i in range(n):
            pub.publish("chunk", {"session": "s", "i": i}, {"actions": payload})
        assert time.monotonic() - t0 < 20  # never waits for the subscriber
        got = []
        while (msg := sub.recv(0.5)) is not None:
            got.append(msg.header["i"])
        assert 0 < len(got) < n // 4  # it kept what the buffers held and lost the rest
        assert got == sorted(got) and got[0] == 0
    finally:
        sub.close()
        pub.close()
