"""The safety layer with the MuJoCo virtual arm on a manual clock (no wall-clock timing here).

Property: whatever chunks arrive (NaN, infinities, huge values) and whatever the runtime asks for at a
step (a validated row, its own hold, garbage), every command that reaches the driver respects the
arm's joint ranges, its step limit, the workspace box and the gripper range. Then: only validated rows
are executed, bad chunks are refused and counted, stops latch and silence the driver.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policy_steer.hardware.chunk_guard import ChunkRejected
from policy_steer.hardware.drivers.virtual import VirtualArm, VirtualArmConfig
from policy_steer.hardware.errors import SafetyError
from policy_steer.hardware.observation import ObservationMap
from policy_steer.hardware.safety import EXEC, HOLD, STOPPED, SafetyLayer
from policy_steer.hardware.spaces import make_space
from policy_steer.hardware.watchdog import WatchdogConfig
from policy_steer.types import OBS_STATE, Chunk
from tests.hardware.helpers import ManualClock

HZ = 10.0
CLOCK = ManualClock()
ARM = VirtualArm(VirtualArmConfig(), clock=CLOCK)  # one model for all examples; connect() resets it
CALM = WatchdogConfig(hold_after_s=50.0, stop_after_s=100.0, first_chunk_s=100.0, loop_stall_s=None)


def layer(space: str = "ee_delta", action_dim: int = 4, watchdog: WatchdogConfig = CALM) -> SafetyLayer:
    ARM.connect()
    ARM.sent.clear()
    sp = make_space(space, ARM, HZ, action_dim)
    om = ObservationMap(ARM, "native" if space == "joint" else "task")
    s = SafetyLayer(ARM, sp, om, watchdog, control_hz=HZ, clock=CLOCK)
    s.reset()
    return s


def commands_respect_limits(start_q: np.ndarray, start_g: float) -> None:
    lim, kin = ARM.limits, ARM.kinematics
    q_prev = start_q
    for _, q, g in ARM.sent:
        assert np.all(np.isfinite(q)) and math.isfinite(g)
        assert np.all(q >= lim.joint_low - 1e-9) and np.all(q <= lim.joint_high + 1e-9)
        assert np.all(np.abs(q - q_prev) <= lim.joint_step(HZ) + 1e-9)
        assert lim.in_workspace(kin.fk(q), 1e-6)
        assert np.linalg.norm(kin.fk(q) - kin.fk(q_prev)) <= lim.ee_step(HZ) + 1e-6
        assert lim.gripper_low <= g <= lim.gripper_high
        q_prev = q


nasty = st.one_of(st.floats(-2.0, 2.0), st.floats(allow_nan=True, allow_infinity=True),
                  st.sampled_from([math.nan, math.inf, -math.inf, 1e30, -1e300]))


@st.composite
def episodes(draw, action_dim: int):
    events = []
    for _ in range(draw(st.integers(1, 14))):
        kind = draw(st.sampled_from(["chunk", "row", "row", "other"]))
        if kind == "chunk":
            h = draw(st.integers(1, 6))
            rows = draw(st.lists(st.lists(nasty, min_size=action_dim, max_size=action_dim), min_size=h, max_size=h))
            # float64 chunks too (a local chunk source): 1e300 is finite there and inf in float32
            dtype = draw(st.sampled_from([np.float32, np.float64]))
            with np.errstate(over="ignore"):  # 1e39 and beyond become inf in float32: part of the test
                events.append(("chunk", np.array(rows, dtype=np.float64).astype(dtype)))
        elif kind == "row":
            events.append(("row", draw(st.integers(0, 100))))
        else:
            with np.errstate(over="ignore"):
                events.append(("other", np.array(draw(st.lists(nasty, min_size=action_dim, max_size=action_dim)), np.float32)))
    return events


def play(s: SafetyLayer, events) -> None:
    rows: list[np.ndarray] = []
    for kind, value in events:
        if kind == "chunk":
            try:
                with np.errstate(over="ignore"):  # Chunk casts to float32: 1e300 becomes inf, as it would on the wire
                    chunk = s.guard_.admit(Chunk(value, 0), CLOCK(), CLOCK())
                rows += list(chunk.actions)
            except ChunkRejected:
                with np.errstate(over="ignore"):
                    assert not np.all(np.isfinite(value.astype(np.float32)))
            continue
        s.observe()
        if kind == "row":
            action = rows[value % len(rows)] if rows else np.zeros(s.space.dim, np.float32)
        else:
            action = value
        s.act(action)
        CLOCK.advance(1 / HZ)


SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("space,dim", [("ee_delta", 4), ("ee_absolute", 4), ("joint", 6)])
def test_no_command_reaching_the_driver_violates_a_limit(space, dim):
    @SETTINGS
    @given(events=episodes(dim))
    def prop(events):
        s = layer(space, dim)
        start = ARM.observe()
        play(s, events)
        commands_respect_limits(start.joints, start.gripper)
        assert len(s.records) == sum(k != "chunk" for k, _ in events)

    prop()


def test_only_rows_of_validated_chunks_are_executed():
    s = layer()
    s.observe()
    s.act(np.array([0.01, 0.0, 0.0, -1.0], np.float32))  # never validated: the runtime's proposal is not enough
    assert s.records[-1].decision == HOLD and s.records[-1].reason == "hold:no_action"
    chunk = s.guard_.admit(Chunk(np.array([[0.01, 0.0, 0.0, -1.0], [0.5, 0.0, 0.0, 1.0]], np.float32), 0), CLOCK(), CLOCK())
    assert chunk.actions[1, 0] == pytest.approx(0.03)  # a 50 cm step clamped to the largest step (0.3 m/s at 10 Hz)
    assert s.log.counts["clamp:chunk"] == 1 and chunk.info["safety"]["clamped"] == 1
    for row in chunk.actions:
        s.observe()
        s.act(row)
        CLOCK.advance(0.1)
        assert s.records[-1].decision == EXEC and s.records[-1].chunk == 0
    s.observe()
    s.act(np.array([np.nan, 0, 0, 0], np.float32))
    assert s.records[-1].reason == "reject:nonfinite"
    assert s.records[-1].joints == s.records[-2].joints  # a hold repeats the previous command


def test_non_finite_or_misshapen_chunks_are_refused_and_counted():
    s = layer()
    with pytest.raises(ChunkRejected, match="non-finite"):
        s.guard_.admit(Chunk(np.array([[0.0, 0.0, np.inf, 0.0]], np.float32), 3), CLOCK(), CLOCK())
    with pytest.raises(ChunkRejected, match="shape"):
        s.guard_.admit(Chunk(np.zeros((2, 3), np.float32), 3), CLOCK(), CLOCK())
    with pytest.raises(ChunkRejected, match="non-finite"), np.errstate(over="ignore"):
        # finite in float64, inf as the float32 rows a Chunk holds
        s.guard_.admit(Chunk(np.array([[0.0, 0.0, 1e300, 0.0]], np.float64), 3), CLOCK(), CLOCK())
    assert s.log.counts["reject:chunk"] == 3 and s.guard_.rejected == 3 and s.guard_.accepted == 0
    assert s.watchdog.last_chunk is None  # a refused chunk does not feed the watchdog


def test_a_stop_latches_and_silences_the_driver():
    s = layer()
    chunk = s.guard_.admit(Chunk(np.tile([0.01, 0, 0, -1], (4, 1)).astype(np.float32), 0), CLOCK(), CLOCK())
    s.observe()
    s.act(chunk.actions[0])
    n_sent = len(ARM.sent)
    ok, stamp, first = s.stop("stop:estop", "test")
    assert ok and first and stamp == CLOCK() and ARM.stopped and s.episode_over
    assert s.stop("stop:no_chunk", "again") == (True, stamp, False)  # the first reason stays
    s.observe()
    s.act(chunk.actions[1])
    assert s.records[-1].decision == STOPPED and len(ARM.sent) == n_sent
    assert s.metrics()["stop"]["reason"] == "stop:estop"
    with pytest.raises(SafetyError, match="restart"):
        s.reset()


def test_the_watchdog_stops_the_arm_inside_a_step():
    s = layer(watchdog=WatchdogConfig(hold_after_s=0.3, stop_after_s=0.5, first_chunk_s=0.5, loop_stall_s=None))
    s.guard_.admit(Chunk(np.zeros((8, 4), np.float32), 0), CLOCK(), CLOCK())
    keys = []
    for _ in range(8):
        s.observe()
        s.act(np.zeros(4, np.float32))
        keys.append(s.records[-1].reason or s.records[-1].decision)
        CLOCK.advance(0.1)
    assert keys[:4] == [EXEC] * 4 and keys[4:6] == ["hold:stale_chunks"] * 2 and keys[6] == "stop:no_chunk"
    assert s.stop_key == "stop:no_chunk" and ARM.stopped


def test_a_driver_error_becomes_a_safe_stop():
    s = layer()
    chunk = s.guard_.admit(Chunk(np.zeros((2, 4), np.float32), 0), CLOCK(), CLOCK())
    s.observe()
    ARM.disconnect()  # the next command raises in the driver
    s.act(chunk.actions[0])
    assert s.stop_key == "stop:driver_error" and s.records[-1].decision == STOPPED


def test_a_driver_that_cannot_read_the_arm_is_stopped_and_named():
    s = layer()
    ARM.disconnect()  # observe() raises in the driver
    with pytest.raises(SafetyError, match="reading the arm failed .*safe-stopped"):
        s.observe()
    assert s.stop_key == "stop:driver_error" and ARM.stopped and s.log.counts["stop:driver_error"] == 1


def test_a_non_finite_reading_at_reset_is_refused(monkeypatch):
    s = layer()
    real = ARM.observe()
    real.joints = real.joints.copy()
    real.joints[2] = np.nan
    monkeypatch.setattr(ARM, "observe", lambda: real)
    with pytest.raises(SafetyError, match="non-finite joint values"):
        s.reset()


def test_a_hold_run_is_one_log_line_but_every_step_counts(caplog):
    s = layer()
    with caplog.at_level(logging.INFO, logger="policy_steer.hardware.safety"):
        for _ in range(5):
            s.observe()
            s.act(np.zeros(4, np.float32))
            CLOCK.advance(0.1)
        s.guard_.admit(Chunk(np.zeros((1, 4), np.float32), 0), CLOCK(), CLOCK())
        s.observe()
        s.act(np.zeros(4, np.float32))
    assert s.log.counts["hold:no_action"] == 5
    lines = [r.getMessage() for r in caplog.records if "hold:no_action" in r.getMessage()]
    assert len(lines) == 2 and "ended after 5 steps" in lines[1]


def test_joint_space_vlash_future_state_is_the_last_target():
    s = layer("joint", 6)
    obs = s.observe()
    pending = np.tile(np.array([0.1, 0.2, 1.5, 0.5, 0.0, 0.3], np.float32), (3, 1))
    future = s.description.rollout(pending)
    assert future.shape == (3, len(obs[OBS_STATE])) and np.allclose(future[-1], pending[-1])
