"""``robot --record_bag`` on the wall clock: the virtual arm (MuJoCo) driven by a policy server in its
own OS process, one bag per episode, stamped with the loop's monotonic clock; a folder that exists is
refused before anything connects."""

from __future__ import annotations

import json

import numpy as np
import pytest

from policy_steer.errors import ConfigError
from policy_steer.hardware.host import RobotConfig, RobotHost
from policy_steer.hardware.watchdog import WatchdogConfig
from tests.recording.test_bags import read_bag

HZ = 10.0


def test_robot_records_one_bag_per_episode_on_the_wall_clock(policy_server, tmp_path):
    _, endpoint = policy_server(policy="circle")
    cfg = RobotConfig(driver="virtual", server=endpoint, rate=HZ, mode="vlash", max_steps=15, estop="",
                      watchdog=WatchdogConfig(stop_after_s=1.5, first_chunk_s=30.0, loop_stall_s=5.0),
                      request_timeout_s=2.0, connect_timeout_s=30.0, record_bag=str(tmp_path / "run"))
    with RobotHost(cfg) as host:
        result = host.run()
    bags = sorted((tmp_path / "run").iterdir())
    assert [b.name for b in bags] == ["episode0000_seednone"]
    msgs = read_bag(bags[0])
    js = [(t, m) for topic, _, t, m in msgs if topic == "/joint_states"]
    assert len(js) == 15
    stamps = [t for t, _ in js]
    assert all(b > a for a, b in zip(stamps, stamps[1:]))
    assert 0.05e9 < np.median(np.diff(stamps)) < 0.5e9  # the wall clock's ticks, about 1 / 10 Hz apart
    assert {topic for topic, _, _, _ in msgs} >= {"/tf", "/policy_steer/chunk", "/policy_steer/candidates",
                                                  "/policy_steer/executed_path", "/diagnostics", "/policy_steer/episode"}
    outcome = json.loads(next(m for topic, _, _, m in msgs if topic == "/policy_steer/episode").data)
    assert outcome["clock"] == "wall" and outcome["steps"] == 15
    assert result.exit_code == 0
    names = {s.name for topic, _, _, m in msgs if topic == "/diagnostics" for s in m.status}
    assert "policy_steer/chunk" in names
    loop = result.results[0]
    holds = [s for topic, _, _, m in msgs if topic == "/diagnostics" for s in m.status if s.name == "policy_steer/hold"]
    assert len(holds) == loop.stall_steps > 0  # every held step is in the diagnostics
    safety = [s for topic, _, _, m in msgs if topic == "/diagnostics" for s in m.status if s.name == "policy_steer/safety"]
    assert len(safety) == sum(r.intervention is not None for r in loop.records)


def test_an_existing_record_bag_folder_is_refused_before_anything_starts(tmp_path):
    (tmp_path / "run").mkdir()
    with pytest.raises(ConfigError, match="--record_bag .* exists already; refusing to overwrite"):
        RobotConfig(driver="virtual", record_bag=str(tmp_path / "run"))
    with pytest.raises(ConfigError, match="beyond loopback"):
        RobotConfig(driver="virtual", foxglove=8765, foxglove_host="0.0.0.0")
