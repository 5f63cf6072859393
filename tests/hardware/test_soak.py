"""Longer wall-clock runs (``-m slow``): a 20 s soak at 30 Hz, and a policy that reads camera images."""

from __future__ import annotations

import numpy as np
import pytest

from policy_steer.hardware.safety import EXEC
from policy_steer.hardware.host import RobotConfig, RobotHost
from policy_steer.hardware.watchdog import WatchdogConfig

pytestmark = pytest.mark.slow


def run(endpoint: str, **options):
    cfg = RobotConfig(driver="virtual", server=endpoint, estop="tcp://127.0.0.1:*", connect_timeout_s=30.0,
                         watchdog=WatchdogConfig(stop_after_s=5.0, loop_stall_s=5.0), **options)
    session = RobotHost(cfg).start()
    try:
        return session, session.run()
    finally:
        session.close()


def test_a_20_s_soak_at_30_hz_stays_clean(policy_server):
    _, endpoint = policy_server(policy="circle", control_hz=30.0, step=0.006)
    session, result = run(endpoint, rate=30.0, max_steps=600)
    m = result.safety
    assert not result.stopped and result.results[0].steps == 600
    assert {k for k in m["interventions"] if not k.startswith("hold:")} == set(), m["interventions"]
    assert m["executed"] >= 500
    lim, kin = session.arm.limits, session.arm.kinematics
    q_prev = None
    for _, q, _g in session.arm.sent:
        assert np.all(q >= lim.joint_low) and np.all(q <= lim.joint_high) and lim.in_workspace(kin.fk(q), 1e-6)
        if q_prev is not None:
            assert np.all(np.abs(q - q_prev) <= lim.joint_step(30.0) + 1e-9)
        q_prev = q
    late = result.results[0].late_ticks
    print(f"\n[soak] 600 steps at 30 Hz: {m['executed']} executed, {m['held']} held, late ticks {late}, "
          f"interventions {m['interventions']}")


def test_a_policy_that_reads_images_gets_rendered_frames(policy_server):
    _, endpoint = policy_server(policy="wild", cameras="front:64x64,wrist:64x64")
    session, result = run(endpoint, rate=10.0, max_steps=30, action_space="ee_absolute")
    assert session.arm.cameras == ("front", "wrist") and session.arm.camera_sizes["front"] == (64, 64)
    assert result.results[0].steps == 30 and sum(r.decision == EXEC for r in session.safety.records) > 0
