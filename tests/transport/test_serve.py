"""``policy-steer serve`` with a tiny real lerobot checkpoint, telemetry, shutdown, keys and CURVE."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time

import numpy as np
import pytest

from policy_steer.errors import ConfigError
from policy_steer.transport import PolicyClient, TelemetrySubscriber, TransportError
from policy_steer.transport.keys import client_keys, generate_keys
from policy_steer.transport.security import check_bind, is_loopback
from tests.transport.conftest import FIXED_ARGS
from tests.transport.helpers import REPO, RawClient, ServerProcess, observation


def test_serve_a_real_checkpoint_end_to_end(tiny_diffusion_checkpoint):
    server = ServerProcess(
        [
            "serve",
            "--policy",
            str(tiny_diffusion_checkpoint),
            "--bind",
            "tcp://127.0.0.1:*",
            "--telemetry",
            "tcp://127.0.0.1:*",
            "--seed",
            "0",
        ],
        module="cli",
        timeout_s=120,
    )
    try:
        sub = TelemetrySubscriber(server.telemetry)
        # PUB drops what it publishes before a subscription reaches it: wait for the first periodic metrics
        deadline = time.monotonic() + 30
        while (msg := sub.recv(0.5)) is None or msg.topic != "metrics":
            assert time.monotonic() < deadline, "no telemetry from the server"
        raw = RawClient(server.endpoint)
        w = raw.hello()
        assert w["policy"]["family"] == "diffusion" and w["policy"]["horizon"] == 15 and w["policy"]["action_dim"] == 3
        assert w["policy"]["n_action_steps"] == 8
        assert w["observation"] == {
            "observation.state": {"dtype": "<f4", "shape": [10]},
            "observation.environment_state": {"dtype": "<f4", "shape": [6]},
        }
        assert w["action"] == {"dtype": "<f4", "shape": [15, 3]}

        # an observe and a ping in flight together both get their answer (that the pong does not wait for
        # the chunk is test_protocol's test_pings_are_answered_while_a_chunk_is_computed, with a slow policy)
        keys = {"session": w["session"], "state_kind": "measured"}
        obs_seq = raw.send(raw.header("observe", step=0, start_step=0, **keys), observation(w["observation"], seed=1))
        ping_seq = raw.send(raw.header("ping"))
        replies = {}
        for _ in range(2):
            h, frames = raw.recv(timeout_s=30)
            replies[h["re"]] = (h, frames)
        assert replies[ping_seq][0]["type"] == "pong"
        second, frames = replies[obs_seq]
        assert second["type"] == "chunk"
        actions = np.frombuffer(frames[0], "<f4").reshape(15, 3)
        assert np.isfinite(actions).all() and np.abs(actions).max() > 0
        assert second["info"]["latency_ms"] > 0

        # two robots on one server, through the client library
        clients = [PolicyClient(endpoint=server.endpoint, timeout_s=30.0, name=f"robot{i}") for i in range(2)]
        try:
            for c in clients:
                c.connect()
                assert c.spec.horizon == 15
            for step in range(2):  # the two sessions alternate on one model
                for c in clients:
                    chunk = c.request_chunk(observation(w["observation"], seed=step), step=step, start_step=step + 2)
                    assert chunk.actions.shape == (15, 3) and chunk.start_step == step + 2
        finally:
            for c in clients:
                c.close()

        # telemetry saw the chunk that was sent, and session events
        seen: dict[str, list] = {}
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not {"chunk", "event", "metrics"} <= set(seen):
            msg = sub.recv(0.5)
            if msg is not None:
                seen.setdefault(msg.topic, []).append(msg)
        assert {"chunk", "event", "metrics"} <= set(seen)
        chunk_msg = seen["chunk"][0]
        assert chunk_msg.header["session"] and chunk_msg.arrays["actions"].shape == (15, 3)
        assert any(m.header.get("event") == "session_opened" for m in seen["event"])
        raw.close()
        sub.close()

        t0 = time.monotonic()
        assert server.terminate(timeout_s=20) == 0  # SIGTERM: clean exit
        assert time.monotonic() - t0 < 10
    finally:
        server.kill()


def test_serve_until_signal_stops_cleanly_on_sigint():
    code = (
        "from policy_steer.transport.cli import serve_until_signal\n"
        "from policy_steer.transport.server import PolicyServer, ServerConfig\n"
        "from policy_steer.transport.fixed_policy import FixedChunkPolicy, fixed_spec\n"
        "serve_until_signal(PolicyServer(FixedChunkPolicy(fixed_spec()), ServerConfig(bind='tcp://127.0.0.1:*')))\n"
        "print('stopped', flush=True)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        line = proc.stdout.readline()
        assert "ready on tcp://127.0.0.1:" in line
        endpoint = line.split("ready on ")[1].split()[0].rstrip(",")
        with PolicyClient(endpoint=endpoint, timeout_s=5.0) as c:
            assert c.ping() > 0
            proc.send_signal(signal.SIGINT)
            assert proc.wait(10) == 0
        assert "stopped" in proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()


def test_serve_refuses_a_public_bind_without_curve():
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "policy_steer.cli.main",
            "serve",
            "--policy",
            "/nonexistent",
            "--bind",
            "tcp://0.0.0.0:5599",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "refusing to bind tcp://0.0.0.0:5599 without CURVE" in proc.stderr and "--curve_keys" in proc.stderr


@pytest.mark.parametrize(
    "endpoint, loopback",
    [
        ("tcp://127.0.0.1:5555", True),
        ("tcp://127.3.2.1:1", True),
        ("tcp://localhost:5555", True),
        ("tcp://[::1]:5555", True),
        ("ipc:///tmp/x", True),
        ("inproc://x", True),
        ("tcp://0.0.0.0:5555", False),
        ("tcp://*:5555", False),
        ("tcp://192.168.1.4:5555", False),
        ("tcp://eth0:5555", False),
        ("tcp://[::]:5555", False),
    ],
)
def test_loopback_rule(endpoint, loopback):
    assert is_loopback(endpoint) is loopback
    if loopback:
        check_bind(endpoint, curve=False, trusted_network=False)
    else:
        with pytest.raises(ConfigError, match="refusing"):
            check_bind(endpoint, curve=False, trusted_network=False)
        check_bind(endpoint, curve=True, trusted_network=False)
        check_bind(endpoint, curve=False, trusted_network=True)


def test_keys_command_writes_pairs_and_allow_list(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "policy_steer.cli.main",
            "keys",
            "--out",
            str(tmp_path / "k"),
            "--clients",
            "robot1,robot2",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    k = tmp_path / "k"
    for name in ("server", "robot1", "robot2"):
        assert (k / f"{name}.key").is_file()
        assert stat.S_IMODE(os.stat(k / f"{name}.key_secret").st_mode) == 0o600
    assert sorted(p.name for p in (k / "authorized_clients").iterdir()) == ["robot1.key", "robot2.key"]
    again = subprocess.run(
        [sys.executable, "-m", "policy_steer.cli.main", "keys", "--out", str(k)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert again.returncode == 2 and "exists" in again.stderr  # never overwrites secrets silently


def test_curve_admits_only_allowed_client_keys(tmp_path):
    keys = tmp_path / "keys"
    generate_keys(keys, clients=["robot"])
    stranger = tmp_path / "stranger"
    generate_keys(stranger, clients=["robot"])  # a valid key pair that the server does not know
    (stranger / "server.key").write_bytes((keys / "server.key").read_bytes())
    # CURVE allows a non-loopback bind; the test still listens on loopback only
    server = ServerProcess(FIXED_ARGS + ["--curve_keys", str(keys), "--telemetry", "tcp://127.0.0.1:*"])
    try:
        with PolicyClient(endpoint=server.endpoint, curve_keys=str(keys), curve_name="robot", timeout_s=5.0) as c:
            chunk = c.request_chunk(observation(c.welcome.raw["observation"]), step=4)
            assert chunk.start_step == 4
            sub = TelemetrySubscriber(server.telemetry, topics=("metrics",), curve=client_keys(keys, "robot"))
            assert sub.recv(5.0) is not None  # telemetry is encrypted and admitted the same way
            sub.close()
        cases = [
            ({"curve_keys": str(stranger), "curve_name": "robot"}, "refused this client's CURVE key"),
            ({}, "security handshake"),
        ]
        for kwargs, why in cases:
            c = PolicyClient(endpoint=server.endpoint, **kwargs)
            with pytest.raises(TransportError, match=why):  # refused at the handshake, said so at once
                c.connect(timeout_s=5.0)
            c.close()
        raw = RawClient(server.endpoint)  # plain ZeroMQ, no CURVE: never gets an answer
        raw.send(raw.header("ping"))
        with pytest.raises(TimeoutError):
            raw.recv(timeout_s=1.0)
        raw.close()
        assert server.alive()
    finally:
        server.kill()
