"""VLS through the robot host: ``policy-steer serve --steer vls`` and the host as separate OS processes.

The sim-robot sends the simulator's episode context (the push obstacle scene) at the episode start and
again before every request: every chunk of the episode is steered and carries VLS's reward figures. A
real-robot host that sends no scene is refused (``context_required``) with one clear error: a chunk is
never silently unsteered.
"""

from __future__ import annotations

import json

import pytest

from tests.launch.helpers import Proc
from tests.transport.helpers import ServerProcess


@pytest.fixture(scope="module")
def vls_server(push_checkpoint):
    server = ServerProcess(
        ["serve", "--policy", str(push_checkpoint), "--bind", "tcp://127.0.0.1:*", "--steer", "vls",
         "--steer_settings", json.dumps({"particles": 2})],
        module="cli", timeout_s=240.0,
    )
    yield server
    server.kill()


def test_a_vls_episode_through_the_host_carries_reward_figures_in_every_chunk(vls_server, tmp_path):
    out = tmp_path / "vls.json"
    robot = Proc.cli(
        "sim-robot", "--task", "push", "--variant", "obstacle", "--server", vls_server.endpoint, "--mode", "sync",
        "--clock", "virtual", "--episodes", "1", "--seed", "7", "--max_steps", "20", "--report", str(out),
        "--records", "true",
    )
    assert robot.wait(300) == 0, robot.output_tail()
    report = json.loads(out.read_text())
    assert report["clock"] == "virtual" and report["command"] == "sim-robot"
    (ep,) = report["episodes"]
    (rec,) = report["records"]
    chunks = [c for c in rec["chunks"] if c["chunk_id"] is not None]
    assert ep["steps"] == len(rec["steps"]) > 0 and len(chunks) >= 2
    assert ep["stall_steps"] == 0  # the virtual clock: simulated time waited for every chunk
    for c in chunks:
        assert c["info"]["strategies"] == {"vls": True}, c["info"]  # steered, every one
        figures = c["info"]["steer"]["vls"]
        assert {"reward_best", "reward_mean", "reward_executed"} <= set(figures), figures
        assert all(isinstance(figures[k], float) for k in ("reward_best", "reward_executed"))


def test_a_robot_without_a_scene_is_refused_by_vls_with_one_clear_error(vls_server, tmp_path):
    # the virtual arm's 9 state values plus 10 fixed ones fit the push policy's inputs; no --scene
    extra = ",".join(["0.0"] * 10)
    robot = Proc.cli("robot", "--driver", "virtual", "--server", vls_server.endpoint, "--estop", "",
                     "--state_extra", extra, "--max_steps", "10")
    assert robot.wait(120) == 2, robot.output_tail()
    errors = [ln for ln in robot.output.splitlines() if "policy-steer: error:" in ln]
    assert len(errors) == 1 and "Traceback" not in robot.output, robot.output_tail()
    assert "refused the episode (context_required)" in errors[0] and "scene" in errors[0]
