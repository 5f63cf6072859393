"""The sockets a robot process binds (e-stop and status, telemetry) follow the policy server's rule
(issue 14, hole 4): loopback, unless CURVE keys are given or the operator declares the network trusted;
the mode is logged. ``robot --estop tcp://0.0.0.0:6158 --telemetry tcp://0.0.0.0:6157`` used to bind
both with no check: anyone on the network could stop the arm, query it and read its telemetry."""

from __future__ import annotations

import logging
import re
import socket
import threading
import time

import pytest

from policy_steer.errors import ConfigError
from policy_steer.hardware.drivers.virtual import VirtualArm
from policy_steer.hardware.estop import EstopServer, EstopUnanswered, estop_keys, query_status, send_estop
from policy_steer.hardware.host import RobotConfig, RobotHost, SimRobotConfig
from policy_steer.hardware.observation import ObservationMap
from policy_steer.hardware.safety import SafetyLayer
from policy_steer.hardware.spaces import make_space
from policy_steer.hardware.watchdog import WatchdogConfig
from policy_steer.transport.keys import generate_keys, load_keypair
from policy_steer.transport.robot_telemetry import RobotTelemetry
from policy_steer.transport.telemetry import TelemetrySubscriber
from tests.hardware.helpers import cli_process, run_cli, wait_for_line


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        return s.getsockname()[1]


def assert_port_free(port: int) -> None:
    """Nothing holds ``port`` on any interface: we can bind it ourselves."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("0.0.0.0", port))


def one_error_line(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.startswith("policy-steer: error:")]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


@pytest.fixture
def safety():
    arm = VirtualArm()
    arm.connect()
    s = SafetyLayer(arm, make_space("ee_delta", arm, 10.0, 4), ObservationMap(arm, "task"),
                    WatchdogConfig(stop_after_s=60, first_chunk_s=60, loop_stall_s=None), control_hz=10.0)
    s.reset()
    yield s, arm
    arm.disconnect()


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    """One key folder as `policy-steer keys --out DIR --clients robot,operator` writes it."""
    folder = tmp_path_factory.mktemp("keys")
    generate_keys(folder, clients=("robot", "operator"))
    stranger = tmp_path_factory.mktemp("stranger")
    generate_keys(stranger, clients=("operator",))  # a key pair the robot's allow-list does not hold
    return folder, stranger


# --- the sockets themselves --------------------------------------------------------------------------------

def test_the_sockets_refuse_a_network_bind_without_curve_or_trust(safety):
    s, _ = safety
    p1, p2 = free_port(), free_port()
    with pytest.raises(ConfigError, match=rf"--estop: refusing to bind tcp://0.0.0.0:{p1} without CURVE"):
        EstopServer(f"tcp://0.0.0.0:{p1}", s.estop, s.status)
    with pytest.raises(ConfigError, match=rf"--telemetry: refusing to bind tcp://0.0.0.0:{p2} without CURVE"):
        RobotTelemetry(f"tcp://0.0.0.0:{p2}")
    for ep in ("tcp://*:{}", "tcp://192.0.2.7:{}", "tcp://eth0:{}"):
        with pytest.raises(ConfigError, match="--trusted_network true"):
            EstopServer(ep.format(p1), s.estop, s.status)
    assert_port_free(p1)
    assert_port_free(p2)


def test_a_trusted_network_binds_and_says_so(safety, caplog):
    s, arm = safety
    port, tport = free_port(), free_port()
    with caplog.at_level(logging.INFO):
        server = EstopServer(f"tcp://0.0.0.0:{port}", s.estop, s.status, trusted_network=True)
        tel = RobotTelemetry(f"tcp://0.0.0.0:{tport}", trusted_network=True)
    try:
        assert server.mode == tel.mode == "trusted_network"
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert any(f"e-stop socket (--estop) bound at tcp://0.0.0.0:{port} without CURVE (--trusted_network)" in w
                   and "stop the arm" in w for w in warnings), warnings
        assert any(f"robot telemetry (--telemetry) bound at tcp://0.0.0.0:{tport} without CURVE" in w for w in warnings)
        assert query_status(f"tcp://127.0.0.1:{port}", timeout_s=10)["state"] == "running"
    finally:
        server.close()
        tel.close()
    assert not arm.stopped


def test_loopback_binds_as_before_and_logs_its_mode(safety, caplog):
    s, _ = safety
    with caplog.at_level(logging.INFO):
        server = EstopServer("tcp://127.0.0.1:*", s.estop, s.status, curve_keys=None)
    try:
        assert server.mode == "loopback" and server.mode_line == "loopback"
        assert any("(loopback: only this machine can stop the arm" in r.getMessage() for r in caplog.records)
    finally:
        server.close()


def test_curve_keys_make_the_sockets_curve_servers(safety, keys, caplog):
    """Beyond loopback with --curve_keys: only the keys in authorized_clients/ reach the e-stop and the
    telemetry; a sender without keys, or with a key the robot does not know, gets no answer."""
    s, arm = safety
    folder, stranger = keys
    with caplog.at_level(logging.INFO):
        server = EstopServer("tcp://0.0.0.0:*", s.estop, s.status, curve_keys=str(folder), curve_name="robot")
        tel = RobotTelemetry("tcp://0.0.0.0:*", robot="arm1", curve_keys=str(folder), curve_name="robot")
    try:
        assert server.mode == tel.mode == "curve"
        assert "CURVE, 2 allowed key(s)" == server.mode_line
        assert any("with CURVE: only the 2 key(s)" in r.getMessage() for r in caplog.records)
        port = server.endpoint.rsplit(":", 1)[1]
        local = f"tcp://127.0.0.1:{port}"
        with pytest.raises(EstopUnanswered):
            query_status(local, timeout_s=1.0)  # no keys: the handshake never completes
        with pytest.raises(EstopUnanswered):
            query_status(local, timeout_s=1.0, curve=estop_keys(str(stranger), "operator", str(folder / "robot.key")))
        assert not arm.stopped
        # telemetry: the allowed operator reads it, a plain subscriber reads nothing
        tport = tel.endpoint.rsplit(":", 1)[1]
        ok = TelemetrySubscriber(f"tcp://127.0.0.1:{tport}", topics=("event",),
                                 curve=(load_keypair(folder / "operator.key_secret"), load_keypair(folder / "robot.key", need_secret=False).public))
        plain = TelemetrySubscriber(f"tcp://127.0.0.1:{tport}", topics=("event",))
        try:
            got = None
            deadline = time.monotonic() + 30
            while got is None and time.monotonic() < deadline:
                tel.event("probe")
                got = ok.recv(timeout_s=0.1)
            assert got is not None and got.header["event"] == "probe" and got.header["robot"] == "arm1"
            assert plain.recv(timeout_s=0.5) is None
        finally:
            ok.close()
            plain.close()
        # the e-stop command with the operator's keys (a new process, as an operator runs it)
        r = run_cli(["estop", "--endpoint", local, "--curve_keys", str(folder), "--curve_name", "operator",
                     "--robot_key", "robot", "--reason", "over CURVE", "--timeout_s", "20"])
        assert r.returncode == 0 and "stopped; acknowledged" in r.stdout, r.stderr
        assert arm.stopped and "over CURVE" in s.stop_detail
    finally:
        server.close()
        tel.close()


def test_curve_needs_an_allow_list(safety, tmp_path):
    s, _ = safety
    generate_keys(tmp_path / "k", clients=("robot",))
    robot_only = tmp_path / "robot-copy"  # what keys.py says to copy to a robot: server.key, robot.key_secret
    robot_only.mkdir()
    for name in ("server.key", "robot.key_secret"):
        (robot_only / name).write_bytes((tmp_path / "k" / name).read_bytes())
    with pytest.raises(ConfigError, match="authorized_clients holds no public keys"):
        EstopServer("tcp://0.0.0.0:*", s.estop, s.status, curve_keys=str(robot_only), curve_name="robot")
    with pytest.raises(ConfigError, match="authorized_clients holds no public keys"):
        RobotTelemetry("tcp://0.0.0.0:*", curve_keys=str(robot_only), curve_name="robot")
    # on loopback the robot's copy is enough: its sockets stay plain, only the link to the server uses CURVE
    server = EstopServer("tcp://127.0.0.1:*", s.estop, s.status, curve_keys=str(robot_only), curve_name="robot")
    assert server.mode == "loopback"
    server.close()


# --- the host and the commands -------------------------------------------------------------------------------

@pytest.mark.parametrize("config", [RobotConfig, SimRobotConfig])
def test_the_host_options_refuse_before_anything_binds(config):
    p1, p2 = free_port(), free_port()
    with pytest.raises(ConfigError, match=f"--estop: refusing to bind tcp://0.0.0.0:{p1}"):
        config(estop=f"tcp://0.0.0.0:{p1}", telemetry=f"tcp://0.0.0.0:{p2}")
    with pytest.raises(ConfigError, match=f"--telemetry: refusing to bind tcp://0.0.0.0:{p2}"):
        config(estop="", telemetry=f"tcp://0.0.0.0:{p2}")
    assert config(estop=f"tcp://0.0.0.0:{p1}", telemetry=f"tcp://0.0.0.0:{p2}", trusted_network=True)
    assert config(estop=f"tcp://0.0.0.0:{p1}", curve_keys="keys/")
    # a config changed after it was checked: the host checks again before it connects or binds anything
    cfg = config(server="tcp://127.0.0.1:1", connect_timeout_s=1.0)
    cfg.estop = f"tcp://0.0.0.0:{p1}"
    with pytest.raises(ConfigError, match="--estop: refusing to bind"):
        RobotHost(cfg).start()
    assert_port_free(p1)
    assert_port_free(p2)


@pytest.mark.parametrize("command", ["robot", "sim-robot"])
def test_the_commands_refuse_with_one_line_and_bind_nothing(command):
    """The issue's attack, as an operator would type it: exit 2, one line, both ports still free."""
    p1, p2 = free_port(), free_port()
    r = run_cli([command, "--estop", f"tcp://0.0.0.0:{p1}", "--telemetry", f"tcp://0.0.0.0:{p2}"])
    assert r.returncode == 2, r.stderr
    line = one_error_line(r.stderr)
    assert f"--estop: refusing to bind tcp://0.0.0.0:{p1} without CURVE" in line
    assert "--curve_keys DIR" in line and "--trusted_network true" in line
    assert_port_free(p1)
    assert_port_free(p2)


def test_trusted_network_runs_and_logs_the_mode(policy_server):
    _, endpoint = policy_server(policy="circle")
    p1, p2 = free_port(), free_port()
    r = run_cli(["robot", "--driver", "virtual", "--server", endpoint, "--rate", "10", "--max_steps", "5",
                 "--estop", f"tcp://0.0.0.0:{p1}", "--telemetry", f"tcp://0.0.0.0:{p2}", "--trusted_network", "true"])
    assert r.returncode == 0, r.stderr
    assert f"e-stop socket (--estop) bound at tcp://0.0.0.0:{p1} without CURVE (--trusted_network)" in r.stderr
    assert f"robot telemetry (--telemetry) bound at tcp://0.0.0.0:{p2} without CURVE (--trusted_network)" in r.stderr
    connected = next(ln for ln in r.stdout.splitlines() if "connected to" in ln)
    assert f"e-stop on tcp://0.0.0.0:{p1} (no encryption, --trusted_network)" in connected


def test_curve_keys_end_to_end(policy_server, keys):
    """A robot with --curve_keys: CURVE to the policy server, and its e-stop on the network as a CURVE
    server that the operator's `policy-steer estop --curve_keys` reaches."""
    folder, _ = keys
    _, endpoint = policy_server(policy="circle", curve_keys=str(folder))
    proc = cli_process(["robot", "--driver", "virtual", "--server", endpoint, "--rate", "10", "--curve_keys", str(folder),
                        "--curve_name", "robot", "--estop", "tcp://0.0.0.0:*"])
    try:
        line = wait_for_line(proc, "policy-steer robot: connected", 120.0)
        m = re.search(r"e-stop on tcp://0\.0\.0\.0:(\d+) \(CURVE, 2 allowed key\(s\)\)", line)
        assert m, line
        result: list = []
        t = threading.Thread(target=lambda: result.append(send_estop(
            f"tcp://127.0.0.1:{m.group(1)}", "curve e2e", timeout_s=30,
            curve=estop_keys(str(folder), "operator", "robot"))), daemon=True)
        t.start()
        t.join(60)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert result and result[0]["stopped"], err
    assert proc.returncode == 3, err  # the safety layer stopped the arm on the e-stop
    assert "stop:estop" in out and "curve e2e" in out
