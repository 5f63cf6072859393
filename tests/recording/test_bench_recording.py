"""``bench --record_bag``: one bag per chosen episode, read back with rosbags; an unfinished bag of an
episode that runs again (its worker died, the run was stopped) is kept aside, never overwritten."""

from __future__ import annotations

import json

from rosbags.rosbag2 import Reader

from policy_steer.bench.config import BenchConfig
from policy_steer.bench.runner import run_bench


def test_bench_records_the_chosen_episodes_and_keeps_an_unfinished_bag_aside(tmp_path):
    bags = tmp_path / "bags"
    stale = bags / "cell000_push_nominal_none_seed1"
    stale.mkdir(parents=True)
    (stale / "bag_0.mcap").write_bytes(b"half a recording")  # no metadata.yaml: it never closed
    cfg = BenchConfig(episodes=2, seed_start=0, workers=1, out=str(tmp_path / "out"), plots=False, quiet=True,
                      record_bag=str(bags), record_episodes=[1])
    run_bench(cfg)

    assert sorted(p.name for p in bags.iterdir()) == [stale.name, stale.name + ".incomplete"]
    assert (bags / (stale.name + ".incomplete") / "bag_0.mcap").read_bytes() == b"half a recording"
    steps = {json.loads(line)["seed"]: json.loads(line)["outcome"]["steps"]
             for line in (tmp_path / "out" / "episodes.jsonl").read_text().splitlines()[1:]}
    with Reader(stale) as reader:
        counts = {c.topic: c.msgcount for c in reader.connections}
    assert counts["/joint_states"] == steps[1]
    assert counts["/policy_steer/candidates"] >= 1
