"""``serve --record_bag``: the server records one bag per session-episode from what the robot sends it
(protocol v2, unchanged): every TACO candidate (the served policy keeps them; they never go over the
wire), the robot's stamps, its executed steps. A real server on a real socket, the shipped push policy
with its verifier, and the robot host running the simulated task (sim-robot) in this process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.recording.test_bags import read_bag

REPO = Path(__file__).resolve().parents[2]


def test_serve_records_each_session_episode_with_every_candidate(tmp_path):
    from policy_steer.errors import ConfigError
    from policy_steer.hardware.host import RobotHost, SimRobotConfig
    from policy_steer.transport.cli import ServeConfig, build_recording, build_served_policy, server_config
    from policy_steer.transport.server import PolicyServer

    cfg = ServeConfig(policy=str(REPO / "checkpoints" / "push-diffusion"), steer="taco", steer_settings={"candidates": 4},
                      bind="tcp://127.0.0.1:*", record_bag=str(tmp_path / "served"), seed=0)
    policy = build_served_policy(cfg)
    assert policy.keep_candidates
    server = PolicyServer(policy, server_config(cfg, policy, cfg.steer_settings), recording=build_recording(cfg, 10.0))
    with server:
        robot = SimRobotConfig(server=server.endpoint, task="push", variant="obstacle", mode="sync", clock="virtual",
                               episodes=2, seed=0, max_steps=14, estop="", record_bag=str(tmp_path / "robot"))
        with RobotHost(robot) as host:
            result = host.run()
    assert result.exit_code == 0

    bags = sorted((tmp_path / "served").iterdir())
    assert len(bags) == 2 and bags[0].name.endswith("_episode0001") and bags[1].name.endswith("_episode0002")
    for bag, loop in zip(bags, result.results):
        msgs = read_bag(bag)
        sets = [m for topic, _, _, m in msgs if topic == "/policy_steer/candidates"]
        assert len(sets) == len([c for c in loop.chunks if c.delivered_step is not None])
        for arr in sets:  # every candidate drew, though only the chunk went over the wire
            assert sorted(mk.id for mk in arr.markers if mk.ns == "candidates") == [0, 1, 2, 3]
        js = [(t, m) for topic, _, t, m in msgs if topic == "/joint_states"]
        # one per executed step (it carries the measured state), stamped step / hz: here the robot's
        # virtual clock, the stamps of its own bag
        assert [t for t, _ in js] == [round(k / 10 * 1e9) for k in range(loop.steps)]
        outcome = json.loads(next(m for topic, _, _, m in msgs if topic == "/policy_steer/episode").data)
        assert outcome["executed"] == loop.steps and outcome["success"] is None
    assert "the robot started episode 2" in json.loads(read_bag(bags[0])[-1][3].data)["ended"]

    # the robot's own bags of the same episodes: every step, the executed chunk (no candidates over the wire)
    robot_bags = sorted((tmp_path / "robot").iterdir())
    assert [b.name for b in robot_bags] == ["episode0000_seed0", "episode0001_seed1"]
    rmsgs = read_bag(robot_bags[0])
    assert sum(topic == "/joint_states" for topic, _, _, _ in rmsgs) == result.results[0].steps
    # the same joints at the same stamps in the robot's bag and in the server's (sent with each executed step)
    mine = [(t, list(m.position)) for topic, _, t, m in rmsgs if topic == "/joint_states"]
    served_js = [(t, list(m.position)) for topic, _, t, m in read_bag(bags[0]) if topic == "/joint_states"]
    assert mine == served_js
    cands = [m for topic, _, _, m in rmsgs if topic == "/policy_steer/candidates"][0]
    assert [mk.ns for mk in cands.markers].count("executed") == 1
    assert "taco: counts=[" in next(mk.text for mk in cands.markers if mk.ns == "text")

    with pytest.raises(ConfigError, match="exists already"):
        ServeConfig(policy="x", record_bag=str(tmp_path / "served"))
