"""The client against a hand-written server (pyzmq + msgpack from docs/protocol.md): what it refuses to
hand the robot, that it answers the server's pings, and the server's per-session policy state."""

from __future__ import annotations

import threading
import time

import msgpack
import numpy as np
import pytest
import zmq

from policy_steer.transport import PolicyClient, PolicyServer, ServerConfig, TransportError
from policy_steer.transport.fixed_policy import FixedChunkPolicy, fixed_spec
from policy_steer.types import Chunk, EpisodeContext

WELCOME = {
    "policy": {
        "name": "hand",
        "family": "flow",
        "horizon": 4,
        "action_dim": 2,
        "n_action_steps": 2,
        "control_hz": 20.0,
    },
    "observation": {"observation.state": {"dtype": "<f4", "shape": [3]}},
    "action": {"dtype": "<f4", "shape": [4, 2]},
    "server": "hand-written",
}


class HandServer:
    """A ROUTER that answers hello with WELCOME and each observe with whatever ``answer`` says."""

    def __init__(self, answer) -> None:
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        port = self.sock.bind_to_random_port("tcp://127.0.0.1")
        self.endpoint = f"tcp://127.0.0.1:{port}"
        self.answer = answer
        self.pongs: list[dict] = []
        self.stop = threading.Event()
        self.seq = 1000
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def send(self, ident: bytes, header: dict, frames: list[bytes] = ()) -> None:
        self.seq += 1
        self.sock.send_multipart(
            [
                ident,
                msgpack.packb({"v": 2, "seq": self.seq, "stamp": time.monotonic(), "arrays": [], **header}),
                *frames,
            ]
        )

    def run(self) -> None:
        while not self.stop.is_set():
            if not self.sock.poll(50):
                continue
            ident, raw, *frames = self.sock.recv_multipart()
            h = msgpack.unpackb(raw)
            if h["type"] == "hello":
                self.send(ident, {"type": "welcome", "re": h["seq"], "session": "s1", **WELCOME})
                self.send(ident, {"type": "ping"})  # "ping: from either"
            elif h["type"] == "pong":
                self.pongs.append(h)
            elif h["type"] == "ping":
                self.send(ident, {"type": "pong", "re": h["seq"]})
            elif h["type"] == "observe":
                header, arrays = self.answer(h)
                self.send(
                    ident,
                    {
                        "type": "chunk",
                        "re": h["seq"],
                        "session": "s1",
                        "info": {"latency_ms": 0.0, "steer": {}},
                        **header,
                        "arrays": [
                            {"name": n, "dtype": a.dtype.str, "shape": list(a.shape)} for n, a in arrays.items()
                        ],
                    },
                    [a.tobytes() for a in arrays.values()],
                )

    def close(self) -> None:
        self.stop.set()
        self.thread.join(2)
        self.sock.close(linger=0)
        self.ctx.term()


GOOD = np.arange(8, dtype=np.float32).reshape(4, 2)
CASES = {
    "good": lambda h: ({"start_step": h["start_step"]}, {"actions": GOOD}),
    "partial": lambda h: ({"start_step": h["start_step"]}, {"actions": GOOD[:3]}),
    "float64": lambda h: ({"start_step": h["start_step"]}, {"actions": GOOD.astype(np.float64)}),
    "nan": lambda h: ({"start_step": h["start_step"]}, {"actions": np.full((4, 2), np.nan, np.float32)}),
    "other_start": lambda h: ({"start_step": h["start_step"] + 1}, {"actions": GOOD}),
    "no_actions": lambda h: ({"start_step": h["start_step"]}, {}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_the_client_hands_over_only_chunks_as_promised(case):
    server = HandServer(CASES[case])
    try:
        with PolicyClient(endpoint=server.endpoint, timeout_s=2.0) as c:
            assert c.spec.horizon == 4 and c.spec.family == "flow"
            obs = {"observation.state": np.zeros(3, np.float32)}
            if case == "good":
                chunk = c.request_chunk(obs, step=5, start_step=7)
                np.testing.assert_array_equal(chunk.actions, GOOD)
                assert chunk.start_step == 7
            else:
                with pytest.raises(TransportError, match="rejected"):
                    c.request_chunk(obs, step=5, start_step=7)
                assert c.stats.bad_replies == 1
            deadline = time.monotonic() + 10
            while not server.pongs and time.monotonic() < deadline:
                time.sleep(0.02)
            assert server.pongs and server.pongs[0]["re"] > 1000  # the server's ping was answered
    finally:
        server.close()


class HistoryPolicy(FixedChunkPolicy):
    """Keeps an observation history (like lerobot's n_obs_steps queues), reported in each chunk, and moves
    it in and out per session through the contract's export/import."""

    def __init__(self) -> None:
        super().__init__(fixed_spec(state_dim=2), echo=True)
        self.history: list[float] = []

    def predict_chunk(self, obs, prefix=None, start_step=None, prefix_start=None, prefix_committed=None) -> Chunk:
        self.history.append(float(obs["observation.state"][0]))
        chunk = super().predict_chunk(obs, prefix, start_step)
        chunk.info["history"] = list(self.history)
        return chunk

    def start_episode(self, context=None, seed=None):
        started = super().start_episode(context, seed)
        self.history = []
        return started

    def export_session_state(self):
        return {**super().export_session_state(), "history": list(self.history)}

    def import_session_state(self, state) -> None:
        super().import_session_state(state)
        self.history = list(state["history"])


def test_sessions_do_not_share_policy_history():
    policy = HistoryPolicy()
    with PolicyServer(policy, ServerConfig(bind="tcp://127.0.0.1:*")) as server:
        a = PolicyClient(endpoint=server.endpoint, timeout_s=5.0)
        b = PolicyClient(endpoint=server.endpoint, timeout_s=5.0)
        try:
            a.connect(), b.connect()
            obs = lambda v: {"observation.state": np.array([v, 0], np.float32)}  # noqa: E731
            a.request_chunk(obs(1), step=0)
            b.request_chunk(obs(100), step=0)
            assert a.request_chunk(obs(2), step=1).info["history"] == [1, 2]
            assert b.request_chunk(obs(200), step=1).info["history"] == [100, 200]
            assert a.request_chunk(obs(3), step=2).info["history"] == [1, 2, 3]
            # a step lower than the last one starts a new (implicit) episode
            assert a.request_chunk(obs(9), step=0).info["history"] == [9]
            # an explicit episode clears it too, and then only the next episode does
            a.start_episode(EpisodeContext(instruction="again"))
            assert a.request_chunk(obs(5), step=7).info["history"] == [5]
            assert a.request_chunk(obs(6), step=0).info["history"] == [5, 6]
            assert b.request_chunk(obs(300), step=2).info["history"] == [100, 200, 300]
        finally:
            a.close(), b.close()


def test_a_policy_without_the_served_contract_is_refused_by_name():
    from policy_steer.errors import ConfigError

    class Bare:
        spec = fixed_spec()

        def predict_chunk(self, obs, prefix=None, start_step=None, prefix_start=None, prefix_committed=None):
            raise AssertionError("never called")

    with pytest.raises(ConfigError, match="lacks configure, export_session_state, import_session_state, "
                                          "start_episode, update_context"):
        PolicyServer(Bare(), ServerConfig(bind="tcp://127.0.0.1:*"))


def test_a_busy_port_is_a_clear_error_and_nothing_hangs():
    policy = FixedChunkPolicy(fixed_spec())
    with PolicyServer(policy, ServerConfig(bind="tcp://127.0.0.1:*", telemetry="tcp://127.0.0.1:*")) as first:
        from policy_steer.errors import ConfigError

        for cfg in (
            ServerConfig(bind=first.endpoint),
            ServerConfig(bind="tcp://127.0.0.1:*", telemetry=first.telemetry_endpoint),
        ):
            t0 = time.monotonic()
            with pytest.raises(ConfigError, match="cannot bind .*Address already in use"):
                PolicyServer(policy, cfg).start()
            assert time.monotonic() - t0 < 5
