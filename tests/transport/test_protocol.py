"""Protocol v2 (docs/protocol.md) on the wire, against a server in its own process, with a hand-written raw client."""

from __future__ import annotations

import time

import msgpack
import numpy as np
import pytest

from tests.transport.conftest import FIXED_ARGS
from tests.transport.helpers import CONTEXT, RawClient, ServerProcess, observation, with_block_at

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
    assert w["type"] == "welcome" and w["v"] == 2 and w["re"] == seq and isinstance(w["seq"], int)
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
    assert h["info"]["strategies"] == {} and h["info"]["episode"] == 1  # an implicit, unsteered episode
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
    h, _ = raw.request("ping", v=3)
    assert h["code"] == "version" and h["v"] == 2 and "3" in h["message"] and "docs/protocol.md" in h["message"]


def test_v1_clients_are_refused_with_a_v1_error_that_names_v2(fixed_server):
    """A version 1 client, speaking PROTOCOL.md v1's own messages, is told why in a message it can read."""
    v1 = RawClient(fixed_server.endpoint, version=1)
    try:
        seq = v1.send(v1.header("hello", client="v1-robot", control_hz=10.0))
        h, frames = v1.recv()
        assert frames == [] and h["type"] == "error" and h["re"] == seq
        assert h["v"] == 1  # written in version 1, whose error has the same keys: the v1 client reads it
        assert h["code"] == "version"
        assert "version 2" in h["message"] and "docs/protocol.md" in h["message"] and "episode context" in h["message"]
        # its observe is refused the same way (its hello opened no session, and nothing was computed)
        obs = {"observation.state": np.zeros(32, np.float32), "observation.images.front": np.zeros((8, 8, 3), np.uint8)}
        h, _ = v1.request("observe", obs, session="0123456789abcdef", step=0, start_step=0, state_kind="measured")
        assert h["code"] == "version" and h["v"] == 1
        h, _ = v1.request("configure", session="0123456789abcdef", task="x")
        assert h["code"] == "version"
    finally:
        v1.close()


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


# --- v2: episodes, context updates, executed steps -----------------------------------------------

def test_an_episode_carries_its_context_to_the_policy_and_updates_apply_before_the_next_observe(raw):
    w = raw.hello()
    sid = w["session"]
    h, frames = raw.request("episode", session=sid, context=CONTEXT)
    assert frames == [] and h["type"] == "episode_started" and h["session"] == sid
    assert h["episode"] == 1 and h["steer"] == {} and h["strategies"] == []
    h, _ = observe(raw, w, step=0)
    echo = h["info"]["echo"]
    assert h["info"]["episode"] == 1 and h["info"]["strategies"] == {}
    assert echo["context"] == {
        "instruction": CONTEXT["instruction"], "task": "push", "variant": "obstacle", "seed": 5, "stamp": 1.0,
        "objects": {"block": [0.4, 0.0, 0.025], "target": [0.6, 0.1, 0.0]}, "robot": "delta",
    }
    assert echo["task"] == CONTEXT["instruction"]  # no task given: the context's instruction
    # a mid-episode update is a notification: no answer, applied before the next observe
    raw.send(raw.header("context", session=sid, context=with_block_at(CONTEXT, [0.45, 0.02, 0.025], 2.0)))
    assert raw.quiet(0.3) == []
    h, _ = observe(raw, w, step=1)
    assert h["info"]["echo"]["context"]["objects"]["block"] == [0.45, 0.02, 0.025]
    assert h["info"]["echo"]["context"]["stamp"] == 2.0 and h["info"]["episode"] == 1
    # a lower step inside an explicit episode does not end it; only the next `episode` does
    h, _ = observe(raw, w, step=0)
    assert h["info"]["episode"] == 1 and h["info"]["echo"]["context"]["stamp"] == 2.0
    h, _ = raw.request("episode", session=sid, context={})
    assert h["type"] == "episode_started" and h["episode"] == 2
    h, _ = observe(raw, w, step=0)
    assert h["info"]["episode"] == 2 and h["info"]["echo"]["context"]["objects"] is None


def test_a_context_before_any_episode_is_refused_and_an_observe_starts_an_implicit_one(raw):
    w = raw.hello()
    sid = w["session"]
    seq = raw.send(raw.header("context", session=sid, context=CONTEXT))
    h, _ = raw.recv()
    assert h["type"] == "error" and h["re"] == seq and h["code"] == "no_episode" and "episode" in h["message"]
    h, _ = observe(raw, w, step=3, task="push it")
    assert h["type"] == "chunk" and h["info"]["episode"] == 1
    assert h["info"]["echo"]["context"]["instruction"] == "push it"  # the implicit episode's empty context
    raw.send(raw.header("context", session=sid, context=CONTEXT))  # now there is an episode: applied
    assert raw.quiet(0.3) == []
    h, _ = observe(raw, w, step=4)
    assert h["info"]["echo"]["context"]["seed"] == 5 and h["info"]["episode"] == 1
    h, _ = observe(raw, w, step=0)  # an implicit episode restarts when the step goes back (v1's rule)
    assert h["info"]["episode"] == 2 and h["info"]["echo"]["context"]["seed"] is None


def test_a_context_failing_its_schema_is_bad_context_naming_the_place_and_the_session_stays_usable(raw):
    w = raw.hello()
    sid = w["session"]
    cases = {
        "scene/objects/0/position": with_block_at(CONTEXT, [1.0, 2.0], 1.0),
        "scene/objects/0/position/0": with_block_at(CONTEXT, [float("nan"), 0.0, 0.0], 1.0),
        "robot/action_mode": {**CONTEXT, "robot": {**CONTEXT["robot"], "action_mode": "teleport"}},
        "(top level)": {**CONTEXT, "colour": "red"},
        "seed": {**CONTEXT, "seed": -1},
    }
    for where, context in cases.items():
        h, _ = raw.request("episode", session=sid, context=context)
        assert h["type"] == "error" and h["code"] == "bad_context", (where, h)
        assert where in h["message"], (where, h["message"])
    h, _ = raw.request("episode", session=sid, context=CONTEXT)
    assert h["type"] == "episode_started" and h["episode"] == 1  # refused episodes are not counted
    seq = raw.send(raw.header("context", session=sid, context=cases["scene/objects/0/position"]))
    h, _ = raw.recv()
    assert h["re"] == seq and h["code"] == "bad_context" and "scene/objects/0/position" in h["message"]
    h, _ = observe(raw, w, step=1)
    assert h["type"] == "chunk" and h["info"]["echo"]["context"]["objects"]["block"] == [0.4, 0.0, 0.025]


def test_a_context_for_another_task_is_context_mismatch_and_the_episode_goes_on(raw):
    w = raw.hello()
    sid = w["session"]
    h, _ = raw.request("episode", session=sid, context=CONTEXT)
    assert h["episode"] == 1
    h, _ = raw.request("episode", session=sid, context={**CONTEXT, "task": "pick-place", "seed": 9})
    assert h["type"] == "error" and h["code"] == "context_mismatch"
    assert "'pick-place'" in h["message"] and "'push'" in h["message"]
    h, _ = observe(raw, w, step=1)  # nothing changed: the first episode goes on
    assert h["type"] == "chunk" and h["info"]["episode"] == 1 and h["info"]["echo"]["context"]["seed"] == 5


def test_episode_context_and_executed_before_hello_get_no_session(raw):
    for msg_type, keys, arrays in (
        ("episode", {"context": CONTEXT}, None),
        ("context", {"context": CONTEXT}, None),
        ("executed", {"step": 0}, {"action": np.zeros(7, np.float32), "commanded": np.zeros(7, np.float32)}),
    ):
        h, _ = raw.request(msg_type, arrays, session="0123456789abcdef", **keys)
        assert h["type"] == "error" and h["code"] == "no_session" and "hello" in h["message"], msg_type
    w = raw.hello()  # and the client can go on as usual
    h, _ = raw.request("episode", session=w["session"], context=CONTEXT)
    assert h["type"] == "episode_started"


def test_executed_is_answered_only_when_malformed(raw):
    w = raw.hello()
    sid = w["session"]
    a = np.arange(7, dtype=np.float32)
    good = {"action": a, "commanded": a + 1, "state": np.zeros(32, np.float32)}
    raw.send(raw.header("executed", session=sid, step=5, chunk_start_step=4, index=1, safety="clamped"), good)
    raw.send(raw.header("executed", session=sid, step=6), {"action": a, "commanded": a})  # a hold, no state
    raw.send(raw.header("executed", session=sid, step=7, chunk_start_step=None, index=None, safety=None), good)
    assert raw.quiet(0.5) == []
    cases = [  # (header keys, arrays, code, what the message says)
        ({}, {**good, "action": np.zeros(6, np.float32)}, "bad_array", "'action' is <f4 [6]; it must be <f4 [7]"),
        ({}, {**good, "action": a.astype(np.float64)}, "bad_array", "'action' is <f8 [7]"),
        ({}, {**good, "commanded": np.full(7, np.inf, np.float32)}, "bad_array", "'commanded' holds non-finite"),
        ({}, {"action": a}, "bad_array", "'commanded' is missing"),
        ({}, {**good, "state": np.zeros(31, np.float32)}, "bad_array", "'state' is <f4 [31]; it must be <f4 [32]"),
        ({}, {**good, "torque": a}, "bad_array", "unexpected arrays ['torque']"),
        ({"chunk_start_step": 4}, good, "bad_header", "both ints (a chunk row) or both nil"),
        ({"step": "five"}, good, "bad_header", "'step' must be int"),
    ]
    for keys, arrays, code, needle in cases:
        h, _ = raw.request("executed", arrays, session=sid, **{"step": 8, **keys})
        assert h["type"] == "error" and h["code"] == code, (needle, h)
        assert needle in h["message"], (needle, h["message"])
    h, _ = observe(raw, w, step=9)
    assert h["type"] == "chunk"
