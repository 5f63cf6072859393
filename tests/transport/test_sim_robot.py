"""The sim-as-robot process (the robot host with the simulated-task driver) end to end against
``policy-steer serve`` with a real (tiny) checkpoint.

Three processes: the server, the robot (``policy-steer sim-robot``), and this test subscribing to both
telemetry endpoints. No timing is asserted; the invariants hold however loaded the machine is.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.launch.helpers import Proc, TelemetryCollector, free_endpoint
from tests.transport.helpers import ServerProcess

STEPS = 60


@pytest.fixture(scope="module")
def served(push_checkpoint):
    server = ServerProcess(
        ["serve", "--policy", str(push_checkpoint), "--bind", "tcp://127.0.0.1:*", "--telemetry", "tcp://127.0.0.1:*"],
        module="cli", timeout_s=240.0,
    )
    yield server
    server.kill()


def test_an_episode_runs_end_to_end_and_is_published(served, tmp_path):
    robot_tel = free_endpoint()
    tel = TelemetryCollector({"robot": robot_tel, "server": served.telemetry})
    out = tmp_path / "sim_robot.json"
    try:
        # the server publishes metrics every second: once one arrives, its chunks will not be missed
        tel.wait_for("server", lambda ms: any(m.topic == "metrics" for m in ms), 30)
        robot = Proc.cli(
            "sim-robot", "--task", "push", "--variant", "obstacle", "--rate", "20", "--server", served.endpoint,
            "--mode", "vlash", "--episodes", "1", "--seed", "3", "--max_steps", str(STEPS),
            "--telemetry", robot_tel, "--report", str(out), "--records", "true", "--request_timeout_s", "3",
        )
        assert robot.wait(120) == 0, robot.output_tail()
        tel.wait_for("robot", lambda ms: any(m.header.get("event") == "episode_end" for m in ms), 10)
    finally:
        tel.stop()
    assert "sim-robot: connected" in robot.output and "episode 0 seed 3: success=" in robot.output

    report = json.loads(out.read_text())
    (ep,) = report["episodes"]
    (rec,) = report["records"]
    steps = rec["steps"]
    assert ep["steps"] == len(steps) and 0 < ep["steps"] <= STEPS
    assert ep["n_chunks"] >= 1 and ep["latency_ms_p50"] is not None and ep["latency_ms_p95"] >= ep["latency_ms_p50"]
    assert ep["stall_steps"] == sum(s["chunk_id"] is None for s in steps)
    assert [s["step"] for s in steps] == list(range(ep["steps"]))

    # every executed (or held) action is on the robot's telemetry, in order, as the JSON records say
    actions = tel.of("robot", "action")
    # (PUB/SUB may drop the first few, published before the subscription was in place)
    seen = steps[len(steps) - len(actions):]
    assert len(actions) >= len(steps) - 5 and [m.header["step"] for m in actions] == [s["step"] for s in seen]
    for m, s in zip(actions, seen):
        assert m.header["chunk_id"] == s["chunk_id"] and m.header["held"] == (s["chunk_id"] is None)
        assert m.header["episode"] == 0 and m.header["robot"] == "sim-robot"
        np.testing.assert_allclose(m.arrays["commanded"], s["action"], rtol=1e-6, atol=1e-7)
        assert m.arrays["action"].shape == (3,) and m.arrays["action"].dtype == np.float32
        assert m.header["stamp"] == pytest.approx(s["acted"])
    events = tel.events("robot")
    # the robot publishes its first events (connected, episode_start, the hold for the first chunk) right
    # after it binds: PUB/SUB may drop them before the subscription takes (holds and resumes mid-episode are
    # checked in test_sim_robot_recovery; the first hold is in the JSON and in the action messages above)
    assert {"chunk_queued", "episode_end"} <= set(events)
    if "hold" in events:
        assert "resumed" in events[events.index("hold"):]  # it held for the first chunk, then moved
    assert steps[0]["chunk_id"] is None  # (the hold for the first chunk, as recorded)

    # the robot's session is the one the server published its chunks under
    session = actions[0].header["session"]
    server_chunks = [m for m in tel.of("server", "chunk") if m.header["session"] == session]
    assert session and len(server_chunks) >= ep["n_chunks"]
    assert all(m.arrays["actions"].shape[1] == 3 for m in server_chunks)


def test_the_virtual_clock_pauses_simulated_time_while_a_chunk_is_computed(served, tmp_path):
    """``--clock virtual --latency 2``: as in bench, a chunk arrives exactly 2 control steps after its
    observation, whatever the server and this machine take; sync mode holds meanwhile."""
    out = tmp_path / "virtual.json"
    robot = Proc.cli(
        "sim-robot", "--task", "push", "--variant", "obstacle", "--server", served.endpoint, "--mode", "sync",
        "--clock", "virtual", "--latency", "2", "--episodes", "2", "--seed", "5", "--max_steps", "30",
        "--report", str(out), "--records", "true",
    )
    assert robot.wait(120) == 0, robot.output_tail()
    report = json.loads(out.read_text())
    assert report["clock"] == "virtual" and report["watchdog"] is None  # nothing moves while it waits
    assert [e["seed"] for e in report["episodes"]] == [5, 6]
    logged = [json.loads(line) for line in (tmp_path / "virtual.episodes.jsonl").read_text().splitlines()]
    assert [e["episode"] for e in logged] == report["episodes"] and [e["records"] for e in logged] == report["records"]
    for ep, rec in zip(report["episodes"], report["records"]):
        chunks = [c for c in rec["chunks"] if c["chunk_id"] is not None]
        assert chunks and all(c["delay_steps"] == 2 for c in chunks)
        assert ep["stall_steps"] == sum(s["chunk_id"] is None for s in rec["steps"]) >= 2
        assert ep["late_ticks"] == 0


def test_a_killed_robot_keeps_every_episode_it_finished(served, tmp_path):
    """Each finished episode is appended to ``<report>.episodes.jsonl`` and flushed as it ends, so a robot
    process that is SIGKILLed (no report at exit) still leaves its finished episodes on disk."""
    import time

    out = tmp_path / "killed.json"
    log = tmp_path / "killed.episodes.jsonl"
    robot = Proc.cli(
        "sim-robot", "--task", "push", "--variant", "obstacle", "--server", served.endpoint, "--mode", "sync",
        "--clock", "virtual", "--episodes", "50", "--seed", "11", "--max_steps", "12",
        "--report", str(out), "--records", "true",
    )
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and (not log.exists() or log.read_text().count("\n") < 2):
        time.sleep(0.1)
    robot.kill()  # SIGKILL
    assert not out.exists()  # killed: the report at exit was never written
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(lines) >= 2, robot.output_tail()
    assert [e["episode"]["seed"] for e in lines] == list(range(11, 11 + len(lines)))
    for e in lines:
        assert e["episode"]["steps"] == len(e["records"]["steps"]) == 12
