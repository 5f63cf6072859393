"""Latency models (parsing, sampling, the online estimate) and action quantization."""

from __future__ import annotations

import json

import numpy as np
import pytest

from policy_steer.errors import ConfigError
from policy_steer.runtime.latency import FixedLatency, MeasuredDelay, ReplayLatency, UniformLatency, parse_latency
from policy_steer.runtime.quantization import quantize_actions


def test_parse_latency(tmp_path):
    rng = np.random.default_rng(0)
    fixed = parse_latency("4")
    assert isinstance(fixed, FixedLatency) and fixed.sample(rng) == fixed.estimate() == 4
    assert parse_latency(0).estimate() == 0
    uni = parse_latency(" uniform:2-6 ")
    assert isinstance(uni, UniformLatency) and uni.estimate() == 6  # plan for the worst case
    assert set(uni.sample(rng) for _ in range(200)) == {2, 3, 4, 5, 6}
    f = tmp_path / "lat.json"
    f.write_text(json.dumps([120, 80.0, 301]))
    rep = parse_latency(f"replay:{f}", control_hz=10)
    assert isinstance(rep, ReplayLatency)
    assert [rep.sample(rng) for _ in range(4)] == [2, 1, 4, 2]  # ceil(ms * hz / 1000), replayed in order
    assert rep.estimate() == 3  # the 95th percentile of 80..301 ms is 283 ms -> 3 steps at 10 Hz
    for bad, why in (("-1", "must be >= 0"), ("uniform:5-2", "low <= high"), ("fast", "use N, uniform"),
                     (f"replay:{tmp_path / 'none.json'}", "No such file"), ("uniform:1", "bad latency")):
        with pytest.raises(ConfigError, match=why):
            parse_latency(bad)
    f.write_text("[]")
    with pytest.raises(ConfigError, match="non-empty JSON list"):
        parse_latency(f"replay:{f}")


def test_measured_delay_is_a_conservative_quantile_of_a_window():
    m = MeasuredDelay(control_hz=20, window=5, quantile=0.8, initial_steps=2)
    assert m.estimate() == 2  # nothing measured yet
    for s in (0.01, 0.02, 0.12, 0.03, 0.04):
        m.record(s)
    assert m.estimate() == 2  # 80% quantile of the window = 0.054 s -> ceil(1.08) steps
    for s in (0.2, 0.2, 0.2, 0.2, 0.2):
        m.record(s)
    assert m.estimate() == 4  # old latencies left the window
    assert MeasuredDelay(control_hz=10, quantile=1.0).estimate() == 1


def test_quantization():
    a = np.arange(7 * 4, dtype=np.float32).reshape(7, 4)
    a[:, 3] = [1, 1, -1, -1, 1, -1, 1]
    assert quantize_actions(a, 1, "delta") is a
    absolute = quantize_actions(a, 3, "absolute")
    np.testing.assert_array_equal(absolute, a[[2, 5, 6]])  # every q-th target (and the last, partial group)
    delta = quantize_actions(a, 3, "delta")
    np.testing.assert_array_equal(delta[:, :3], [a[0:3, :3].sum(0), a[3:6, :3].sum(0), a[6:7, :3].sum(0)])
    np.testing.assert_array_equal(delta[:, 3], [-1, -1, 1])  # the gripper keeps each group's last command
    with pytest.raises(ConfigError, match="q must be >= 1"):
        quantize_actions(a, 0, "delta")
    with pytest.raises(ConfigError, match="cannot quantize 'joint'"):
        quantize_actions(a, 2, "joint")
