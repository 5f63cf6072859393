"""The control socket: an acknowledged e-stop, status, and garbage that never takes the listener down."""

from __future__ import annotations

import time

import msgpack
import numpy as np
import pytest
import zmq

from policy_steer.hardware.drivers.virtual import VirtualArm
from policy_steer.hardware.estop import EstopServer, EstopUnanswered, query_status, send_estop
from policy_steer.hardware.observation import ObservationMap
from policy_steer.hardware.safety import SafetyLayer
from policy_steer.hardware.spaces import make_space
from policy_steer.hardware.watchdog import WatchdogConfig


@pytest.fixture
def robot():
    arm = VirtualArm()
    arm.connect()
    s = SafetyLayer(arm, make_space("ee_delta", arm, 10.0, 4), ObservationMap(arm, "task"),
                    WatchdogConfig(stop_after_s=60, first_chunk_s=60, loop_stall_s=None), control_hz=10.0)
    s.reset()
    server = EstopServer("tcp://127.0.0.1:*", s.estop, s.status)
    yield s, arm, server
    server.close()
    arm.disconnect()


def test_estop_is_acknowledged_after_the_safe_stop(robot):
    s, arm, server = robot
    assert query_status(server.endpoint)["state"] == "running"
    t0 = time.monotonic()
    ack = send_estop(server.endpoint, "operator pressed the button", timeout_s=10)
    assert ack["type"] == "estopped" and ack["stopped"] and ack["first"]
    assert arm.stopped and s.stop_key == "stop:estop" and "operator pressed" in s.stop_detail
    assert t0 <= ack["stop_stamp"] <= time.monotonic()
    assert s.estops[0]["sent"] <= s.estops[0]["received"] <= s.estops[0]["stopped"]
    again = send_estop(server.endpoint, "twice", timeout_s=10)
    assert again["stopped"] and not again["first"] and again["stop_stamp"] == ack["stop_stamp"]
    assert query_status(server.endpoint)["state"] == "stopped"


def test_garbage_gets_errors_and_the_listener_keeps_serving(robot):
    s, arm, server = robot
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(server.endpoint)
    bad = [
        [b"\x00garbage"],
        [msgpack.packb({"v": 2, "type": "estop", "seq": 1, "stamp": 0.0, "arrays": []}), b"extra frame"],
        [msgpack.packb({"v": 1, "type": "estop", "seq": 2, "stamp": 0.0, "arrays": []})],  # the framing is v2's
        [msgpack.packb({"v": 2, "type": "resume", "seq": 3, "stamp": 0.0, "arrays": []})],
        [msgpack.packb({"v": 2, "type": "estop", "seq": 4, "stamp": 0.0, "arrays": [], "reason": 7})],
    ]
    codes = []
    for frames in bad:
        sock.send_multipart(frames)
        if sock.poll(10_000):
            reply = msgpack.unpackb(sock.recv_multipart()[0])
            codes.append(reply.get("code"))
    sock.send(np.zeros(70_000, np.uint8).tobytes())  # over the size limit: ZeroMQ drops the sender
    sock.close()
    ctx.term()
    assert codes[:5] == ["bad_header", "bad_array", "version", "unknown_type", "bad_header"]
    assert not arm.stopped  # nothing above was an e-stop
    assert send_estop(server.endpoint, timeout_s=10)["stopped"] and arm.stopped


def test_nobody_listening_is_reported():
    with pytest.raises(EstopUnanswered, match="no answer"):
        send_estop("tcp://127.0.0.1:1", timeout_s=0.3)
