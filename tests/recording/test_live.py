"""The live view: a real Foxglove WebSocket server (foxglove-sdk) and a real WebSocket client that
speaks its protocol (subprotocol ``foxglove.sdk.v1``: JSON ``serverInfo``/``advertise``, the client's
``subscribe``, binary message frames ``0x01 | subscription id u32 | log time u64 | CDR payload``),
while the control loop runs the shipped push policy on the virtual clock."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def test_foxglove_client_receives_every_channel_with_the_loops_stamps():
    from rosbags.typesys import Stores, get_typestore
    from websockets.sync.client import connect

    from policy_steer.envs import make
    from policy_steer.policies.loading import load_policy
    from policy_steer.recording import LiveView, Recorder
    from policy_steer.recording.messages import TOPICS
    from policy_steer.runtime.chunk_source import LocalChunkSource
    from policy_steer.runtime.loop import ControlLoop, LoopConfig, VirtualClock
    from policy_steer.runtime.robot import SimRobot
    from policy_steer.steered_policy import SteeredPolicy

    from policy_steer.errors import ConfigError

    live = LiveView(port=0)  # loopback, a free port
    assert live.host == "127.0.0.1"
    with pytest.raises(ConfigError, match=f"cannot serve the live view on 127.0.0.1:{live.port}"):
        LiveView(port=live.port)  # taken: one line naming the address
    live.advertise()
    ts = get_typestore(Stores.ROS2_HUMBLE)
    try:
        with connect(f"ws://127.0.0.1:{live.port}", subprotocols=["foxglove.sdk.v1"], open_timeout=10,
                     max_size=None) as ws:
            assert ws.subprotocol == "foxglove.sdk.v1"
            channels: dict[int, dict] = {}
            while set(TOPICS) - {c["topic"] for c in channels.values()}:
                msg = json.loads(ws.recv(timeout=10))
                if msg["op"] == "advertise":
                    channels.update({c["id"]: c for c in msg["channels"]})
            for c in channels.values():
                assert c["encoding"] == "cdr" and c["schemaEncoding"] == "ros2msg"
                assert c["schemaName"] == TOPICS[c["topic"]]
            subs = {i + 1: cid for i, cid in enumerate(channels)}
            ws.send(json.dumps({"op": "subscribe", "subscriptions": [{"id": s, "channelId": c} for s, c in subs.items()]}))

            policy = SteeredPolicy.from_method(load_policy(str(REPO / "checkpoints" / "push-diffusion")), "taco", {"candidates": 4})
            policy.keep_candidates = True
            rec = Recorder([live])
            loop = ControlLoop(SimRobot(make("push", "obstacle")), LocalChunkSource(policy, inline=True), VirtualClock("0"),
                               LoopConfig(max_steps=14), observer=rec)
            loop.run(seed=0)
            assert rec.close()["error"] is None

            got: dict[str, list[tuple[int, object]]] = {}
            while set(TOPICS) - set(got):
                frame = ws.recv(timeout=10)
                if isinstance(frame, str):
                    continue  # status and other JSON
                op, sub, t = struct.unpack_from("<BIQ", frame)
                assert op == 0x01
                ch = channels[subs[sub]]
                got.setdefault(ch["topic"], []).append((t, ts.deserialize_cdr(frame[13:], ch["schemaName"])))
    finally:
        live.stop()
    assert [t for t, _ in got["/joint_states"]][:3] == [0, 100_000_000, 200_000_000]  # virtual time, step / hz
    markers = got["/policy_steer/candidates"][0][1].markers
    assert sorted(m.id for m in markers if m.ns == "candidates") == [0, 1, 2, 3]
    assert json.loads(got["/policy_steer/episode"][0][1].data)["steps"] == 14
