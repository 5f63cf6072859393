"""``policy-steer robot`` and ``policy-steer estop`` as an operator runs them (new processes)."""

from __future__ import annotations

import json

from policy_steer.hardware.cli import prepare_args
from tests.hardware.helpers import run_cli


def one_error_line(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.startswith("policy-steer: error:")]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr, stderr
    return lines[0]


def test_the_virtual_arm_stand_in_for_a_lerobot_robot_and_a_missing_driver(policy_server, tmp_path):
    _, endpoint = policy_server(policy="wild", state_dim=6, action_dim=6, control_hz=20.0, scale=100.0)
    base = ["robot", "--driver", "lerobot:so101_follower", "--driver-arg", "port=/dev/ttyACM0", "--driver-arg", "id=arm1",
            "--server", endpoint, "--estop", "tcp://127.0.0.1:*"]
    # The real driver: its SDK (or its serial port) is missing here -> one line, exit 2, the arm untouched.
    r = run_cli(base)
    assert r.returncode == 2, r.stderr
    line = one_error_line(r.stderr)
    assert "feetech" in line or "/dev/ttyACM0" in line
    # --virtual_arm: the same lerobot adapter on the MuJoCo stand-in, against the live server.
    report = tmp_path / "run.json"
    r = run_cli([*base, "--virtual-arm", "--rate", "20", "--max_steps", "30", "--report", str(report), "--records"])
    assert r.returncode == 0, r.stderr
    assert "replaced by the MuJoCo virtual arm" in r.stderr
    out = r.stdout.splitlines()
    assert all(ln.startswith("policy-steer robot: ") for ln in out), r.stdout
    assert "connected to" in out[0] and "joint actions" in out[0] and out[1].startswith("policy-steer robot: episode 0: success=")
    end = out[-3:]  # what an operator reads at the end
    assert "30 steps in" in end[0] and "executed" in end[0] and "accepted" in end[0]
    assert "interventions: clamp" in end[1] and "clamp:chunk" in end[1]
    assert "run ended without a safe stop" in end[2]
    rep = json.loads(report.read_text())
    assert rep["command"] == "robot" and rep["config"]["virtual_arm"] is True
    assert rep["arm"] == "lerobot:policy_steer_virtual_follower" and rep["action_space"] == "joint"
    assert rep["safety"]["interventions"]["clamp:chunk"] == rep["safety"]["chunks_accepted"] >= 1
    (ep,) = rep["episodes"]
    assert ep["steps"] == 30 and ep["executed"] + ep["held"] == 30
    steps = rep["records"][0]["steps"]
    assert len(steps) == 30 and {"tick", "started", "decision", "command"} <= set(steps[-1])
    assert list(rep["limits"]["joints"]) == ["shoulder_pan.pos", "shoulder_lift.pos", "elbow_flex.pos",
                                             "wrist_flex.pos", "wrist_roll.pos"]


def test_a_dry_run_commands_nothing(policy_server, tmp_path):
    """--dry_run (the one meaning, for robot and sim-robot alike): everything runs and is recorded, no command
    reaches the driver; the virtual arm stays where it started."""
    _, endpoint = policy_server(policy="circle", step=0.02)
    report = tmp_path / "dry.json"
    r = run_cli(["robot", "--driver", "virtual", "--server", endpoint, "--estop", "", "--max_steps", "25",
                 "--dry-run", "--report", str(report), "--records"])
    assert r.returncode == 0, r.stderr
    assert "DRY RUN" in r.stdout
    rep = json.loads(report.read_text())
    assert rep["dry_run"] is True and rep["episodes"][0]["executed"] > 10
    steps = rep["records"][0]["steps"]
    executed = [s for s in steps if s["decision"] == "exec"]
    assert executed and all(s["command"] is not None for s in executed)  # what it would have sent, recorded
    ee = [s["ee"] for s in steps]
    assert max(abs(a - b) for a, b in zip(ee[0], ee[-1])) < 1e-3  # and the arm never moved


def test_operator_errors_are_one_line():
    r = run_cli(["robot", "--driver", "virtual", "--server", "tcp://127.0.0.1:1", "--connect_timeout_s", "1",
                 "--estop", "tcp://127.0.0.1:*"])
    assert r.returncode == 2 and "no welcome" in one_error_line(r.stderr)
    r = run_cli(["robot", "--driver", "ur5:/dev/x", "--server", "tcp://127.0.0.1:1"])
    assert r.returncode == 2 and "unknown driver" in one_error_line(r.stderr)
    r = run_cli(["estop", "--endpoint", "tcp://127.0.0.1:1", "--timeout_s", "0.3"])
    assert r.returncode == 1 and "no answer" in r.stderr


def test_shell_conveniences():
    args = prepare_args("robot", ["--driver-arg", "port=/dev/ttyACM0", "--dry-run", "--driver-arg=id=a", "--rate", "30"])
    assert args == ["--dry_run", "true", "--rate", "30", "--driver_arg", "port=/dev/ttyACM0,id=a"]
    assert prepare_args("robot", ["--dry-run", "false"]) == ["--dry_run", "false"]
    assert prepare_args("sim-robot", ["--dry-run", "--records", "--seed", "3"]) == [
        "--dry_run", "true", "--records", "true", "--seed", "3"]


def test_sigterm_safe_stops_the_arm_and_says_why(policy_server):
    """The operator's stop: the arm is safe-stopped first, the run ends, exit 0 (the same for sim-robot)."""
    import signal
    import time

    from tests.hardware.helpers import cli_process, wait_for_line

    _, endpoint = policy_server(policy="circle")
    proc = cli_process(["robot", "--driver", "virtual", "--server", endpoint, "--rate", "10", "--estop", "tcp://127.0.0.1:*",
                        "--telemetry", "tcp://127.0.0.1:*"])
    try:
        wait_for_line(proc, "policy-steer robot: connected", 120.0)
        time.sleep(1.0)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "safe stop (stop:signal: SIGTERM in the robot process)" in err
    assert "steps in" in out and "stop 1 (stop:signal 1)" in out
    assert "stopped: stop:signal (SIGTERM in the robot process)" in out
    assert "stop=stop:signal" in out  # the episode line says why it ended
