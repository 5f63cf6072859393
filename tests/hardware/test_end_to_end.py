"""End to end: the robot host on the virtual arm (safety layer, the control loop on the wall clock) and a
live policy server in another OS process.

The loop runs at 10 Hz. Reaction times are counted in control periods with the loop's own stamps
(the tick at which a step started, the stamp at which the safety layer decided it) and the stamps of
the events themselves (the moment the server was killed, the e-stop sender's stamp, the watchdog's
stop); monotonic clocks agree between processes of one machine. Measured figures are printed
(``pytest -s``).
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from policy_steer.hardware.host import RobotConfig, RobotHost, report_lines
from policy_steer.hardware.safety import EXEC, STOPPED
from policy_steer.hardware.watchdog import WatchdogConfig
from policy_steer.transport.telemetry import TelemetrySubscriber
from tests.hardware.helpers import run_cli

HZ = 10.0
STOP_AFTER_S = 1.5


def session_for(endpoint: str, **overrides) -> RobotHost:
    options = dict(
        driver="virtual", server=endpoint, rate=HZ, mode="vlash", max_steps=400, estop="tcp://127.0.0.1:*",
        watchdog=WatchdogConfig(stop_after_s=STOP_AFTER_S, first_chunk_s=30.0, loop_stall_s=5.0),
        request_timeout_s=2.0, connect_timeout_s=30.0,
    )
    options.update(overrides)
    return RobotHost(RobotConfig(**options)).start()


def wait_for_executed(session: RobotHost, n: int, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if sum(r.decision == EXEC for r in list(session.safety.records)) >= n:
            return
        time.sleep(0.005)
    raise TimeoutError(f"fewer than {n} executed steps within {timeout_s} s")


def assert_commands_within_limits(session: RobotHost) -> None:
    arm = session.arm
    lim, kin = arm.limits, arm.kinematics
    q_prev = np.asarray(session.safety.records[0].joints) if session.safety.records else None
    for _, q, g in arm.sent:
        assert np.all(q >= lim.joint_low - 1e-9) and np.all(q <= lim.joint_high + 1e-9)
        assert lim.in_workspace(kin.fk(q), 1e-6) and lim.gripper_low <= g <= lim.gripper_high
        if q_prev is not None:
            assert np.all(np.abs(q - q_prev) <= lim.joint_step(HZ) + 1e-9)
        q_prev = q


def subscribe_for_sure(session: RobotHost, sub: TelemetrySubscriber, timeout_s: float = 60.0) -> None:
    """PUB drops what it sends before a subscription has reached it (ZeroMQ's slow joiner): publish
    probe events until one arrives, so that nothing of the run itself is lost."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        session.telemetry.event("probe")
        m = sub.recv(timeout_s=0.1)
        if m is not None:
            return
    raise TimeoutError(f"the telemetry subscription did not take within {timeout_s} s")


@pytest.mark.parametrize("phase", [0.3, 0.97])  # where in a control period the server dies (0.97: just before a step)
def test_killing_the_server_holds_within_two_periods_and_stops_after_the_timeout(policy_server, phase):
    proc, endpoint = policy_server(policy="circle")
    session = session_for(endpoint)
    t_kill: list[float] = []
    t_seen: list[float] = []

    def kill_when_running() -> None:
        wait_for_executed(session, 12)
        decided = session.safety.records[-1].stamp  # a step's decision, a few ms after its tick
        time.sleep(max(0.0, decided + phase / HZ - time.monotonic()))
        t_kill.append(time.monotonic())
        proc.kill()  # SIGKILL: no goodbye, the socket just dies
        while session.client.connected and time.monotonic() - t_kill[0] < 10:
            time.sleep(0.0005)
        t_seen.append(time.monotonic())

    killer = threading.Thread(target=kill_when_running, daemon=True)
    try:
        killer.start()
        result = session.run()
    finally:
        session.close()
    killer.join(10)
    safety, arm = session.safety, session.arm
    assert t_kill, "the server was never killed"
    tk = t_kill[0]
    started = {r.step: r.started for r in result.results[0].records}
    recs = list(safety.records)
    k0 = next(r.step for r in recs if started[r.step] >= tk)  # the first step that began after the kill
    kh = next(r.step for r in recs if r.step >= k0 and r.decision != EXEC)
    periods_to_hold = kh - k0 + 1  # this many control steps began after the kill until one held
    hold_reason = next(r.reason for r in recs if r.step == kh)

    # Before the kill: a well-behaved policy, no intervention but waiting holds (the first chunk).
    before = [i for i in safety.log.recent if i.stamp < tk]
    assert all(i.kind == "hold" for i in before), [i.key for i in before]
    # The hold: within 2 control periods, because the link dropped; latched until the end.
    assert periods_to_hold <= 2, periods_to_hold
    assert hold_reason == "hold:link_down"
    assert all(r.decision != EXEC for r in recs if r.step >= kh)
    # The stop: the configured timeout after the last chunk, not before, and promptly after.
    last = safety.watchdog.last_chunk
    late_periods = (safety.stop_stamp - (last + STOP_AFTER_S)) * HZ
    assert result.stopped and result.stop_reason == "stop:no_chunk"
    assert 0.0 <= late_periods <= 2.0, late_periods
    assert arm.stopped and all(stamp <= safety.stop_stamp for stamp, _, _ in arm.sent)
    assert all(r.decision == STOPPED for r in recs if r.stamp > safety.stop_stamp)  # the loop ends at once
    assert_commands_within_limits(session)
    print(
        f"\n[kill phase {phase}] link loss seen {(t_seen[0] - tk) * 1e3:.1f} ms after the kill; hold at the {periods_to_hold}. "
        f"step after it ({(safety.records[kh].stamp - tk) * 1e3:.0f} ms), reason {hold_reason}; "
        f"stop {STOP_AFTER_S + late_periods / HZ:.3f} s after the last chunk "
        f"(timeout {STOP_AFTER_S} s, {late_periods:.2f} periods late); late ticks {result.results[0].late_ticks}"
    )


def test_a_restarted_server_ends_the_hold_with_fresh_chunks_only(policy_server):
    proc, endpoint = policy_server(policy="circle")
    session = session_for(endpoint, watchdog=WatchdogConfig(stop_after_s=30.0, first_chunk_s=30.0, loop_stall_s=5.0))
    marks: dict[str, float] = {}

    def outage() -> None:
        wait_for_executed(session, 10)
        marks["kill"] = time.monotonic()
        proc.kill()
        proc.wait(10)
        policy_server(policy="circle", bind=endpoint)  # the same port: the client reconnects on its own
        marks["restarted"] = time.monotonic()
        n = sum(r.decision == EXEC for r in list(session.safety.records))
        wait_for_executed(session, n + 10)
        session.loop.stop()

    t = threading.Thread(target=outage, daemon=True)
    try:
        t.start()
        result = session.run()
    finally:
        session.close()
    t.join(60)
    recs = list(session.safety.records)
    before = [r for r in recs if r.stamp < marks["kill"]]
    during = [r for r in recs if marks["kill"] <= r.stamp < marks["restarted"]]
    resumed = [r for r in recs if r.stamp >= marks["restarted"] and r.decision == EXEC]
    last_serial = max(r.chunk for r in before if r.decision == EXEC)
    assert not result.stopped and len(resumed) >= 10
    assert sum(r.decision == EXEC for r in during) <= 1  # at most the step in progress when the link dropped
    assert all(r.chunk > last_serial for r in resumed)  # never a row of a chunk from before the outage
    assert session.client.stats.reconnects >= 1
    assert_commands_within_limits(session)


def test_an_estop_message_stops_the_arm_within_one_control_period(policy_server):
    _, endpoint = policy_server(policy="circle")
    session = session_for(endpoint)
    cli: list = []

    def operator() -> None:
        wait_for_executed(session, 12)
        cli.append(run_cli(["estop", "--endpoint", session.estop.endpoint, "--reason", "test operator"], timeout_s=120))

    op = threading.Thread(target=operator, daemon=True)
    try:
        op.start()
        result = session.run()
        op.join(120)
        time.sleep(1.0 / HZ)
        after = session.arm.observe()  # one control period after the stop
    finally:
        session.close()
    safety, arm = session.safety, session.arm
    assert cli and cli[0].returncode == 0 and "stopped; acknowledged after" in cli[0].stdout, cli
    assert result.stop_reason == "stop:estop" and arm.stopped
    e = safety.estops[0]
    reaction_periods = (e["stopped"] - e["sent"]) * HZ
    assert reaction_periods < 1.0, reaction_periods
    # With the loop's stamps: nothing executed after the stop, at most the step in progress after the message.
    recs = list(safety.records)
    assert all(r.decision == STOPPED for r in recs if r.stamp > safety.stop_stamp)
    assert sum(r.decision == EXEC and r.stamp > e["sent"] for r in recs) <= 1
    assert all(stamp <= safety.stop_stamp for stamp, _, _ in arm.sent)
    assert np.all(np.abs(after.joint_vel) < 0.05), after.joint_vel  # at rest one period later
    assert_commands_within_limits(session)
    lines = report_lines(session, result)  # what `policy-steer robot` prints at the end
    assert "stop 1 (stop:estop 1)" in lines[1]
    assert "stopped: stop:estop (e-stop from the control socket (test operator))" in lines[2]
    assert "control periods) after the e-stop was sent" in lines[2]
    print(
        f"\n[estop] sent -> safe stop {reaction_periods:.3f} periods ({(e['stopped'] - e['sent']) * 1e3:.1f} ms; "
        f"received after {(e['received'] - e['sent']) * 1e3:.1f} ms); max joint speed one period later "
        f"{np.max(np.abs(after.joint_vel)):.4f} rad/s"
    )


def test_an_out_of_limit_chunk_is_clamped_counted_and_published(policy_server):
    _, endpoint = policy_server(policy="wild")  # rows i + j/100: metres far outside the workspace
    session = session_for(endpoint, action_space="ee_absolute", max_steps=30, telemetry="tcp://127.0.0.1:*",
                          metrics_every_s=0.5)
    sub = TelemetrySubscriber(session.telemetry.endpoint, topics=("event", "action"))
    try:
        subscribe_for_sure(session, sub)
        result = session.run()
    finally:
        session.close()  # flushes the telemetry queue
    msgs = []
    while (m := sub.recv(timeout_s=1.0)) is not None:
        if m.header.get("event") != "probe":
            msgs.append(m)
    sub.close()
    m = result.safety
    assert not result.stopped and m["chunks_accepted"] >= 2
    assert m["interventions"]["clamp:chunk"] == m["chunks_accepted"]  # every chunk, each counted once
    assert m["interventions"].get("clamp:workspace", 0) + m["interventions"].get("limit:ee_step", 0) > 0
    assert m["executed"] > 0
    assert_commands_within_limits(session)
    events = [x.header for x in msgs if x.topic == "event" and x.header.get("event") == "safety"]
    assert any(h["what"] == "clamp:chunk" and h["kind"] == "clamp" for h in events)
    actions = [x for x in msgs if x.topic == "action"]
    assert actions and {"decision", "step", "chunk_id"} <= set(actions[-1].header)
    assert actions[-1].arrays["action"].shape == (6,) and actions[-1].arrays["commanded"].shape == (4,)
    assert any(x.header.get("event") == "safety_metrics" for x in msgs if x.topic == "event")


def test_a_policy_that_does_not_fit_the_arm_is_one_clear_error(policy_server):
    _, endpoint = policy_server(policy="circle", state_dim=12)  # a task policy: robot part + a goal
    from policy_steer.hardware.errors import SafetyError

    with pytest.raises(SafetyError, match=r"observation.state: the policy expects \[12\], the arm provides \[9\]"):
        session_for(endpoint)
    session = session_for(endpoint, state_extra=[0.45, 0.0, 0.1], max_steps=5)  # a fixed goal: fits
    try:
        result = session.run()
    finally:
        session.close()
    assert result.results[0].steps == 5


def test_a_slow_episode_start_is_not_a_stalled_loop(policy_server):
    """The episode start blocks until the server answered (a strategy preparing the episode); the watchdog
    watches the episode from there, so a start longer than the loop-stall limit does not stop the arm."""
    _, endpoint = policy_server(policy="circle", episode_delay_s=1.0)
    session = session_for(endpoint, max_steps=15, watchdog=WatchdogConfig(stop_after_s=5.0, loop_stall_s=0.3))
    try:
        result = session.run()
    finally:
        session.close()
    assert not result.stopped, result.stop_reason
    assert result.results[0].steps == 15 and result.safety["executed"] > 0
