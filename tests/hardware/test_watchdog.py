"""The watchdog's verdicts on a manual clock: holds, their latch, stops, and its own thread."""

from __future__ import annotations

import threading
import time

import pytest

from policy_steer.errors import ConfigError
from policy_steer.hardware.watchdog import Watchdog, WatchdogConfig, resolve
from tests.hardware.helpers import ManualClock


def make(link=None, **cfg):
    clock = ManualClock()
    wd = Watchdog(WatchdogConfig(**cfg), link_up=link, clock=clock)
    wd.arm()
    return wd, clock


def test_unarmed_watchdog_says_ok():
    wd = Watchdog(WatchdogConfig(), clock=ManualClock())
    assert wd.verdict().action == "ok"


def test_first_chunk_gets_the_longer_limit_then_stop_after():
    wd, clock = make(hold_after_s=0.5, stop_after_s=1.0, first_chunk_s=5.0, loop_stall_s=None)
    clock.advance(4.9)
    assert wd.verdict().action == "ok"
    wd.chunk_arrived(requested=clock() - 0.1, arrived=clock())
    clock.advance(0.49)
    assert wd.verdict().action == "ok"
    clock.advance(0.02)
    v = wd.verdict()
    assert (v.action, v.key) == ("hold", "hold:stale_chunks")
    clock.advance(0.5)
    v = wd.verdict()
    assert (v.action, v.key) == ("stop", "stop:no_chunk") and "limit 1 s" in v.detail


def test_no_first_chunk_stops_after_first_chunk_s():
    wd, clock = make(stop_after_s=1.0, first_chunk_s=3.0, loop_stall_s=None)
    clock.advance(3.01)
    assert wd.verdict().key == "stop:no_chunk"


def test_link_down_holds_at_once_and_the_hold_is_latched_until_a_newer_request():
    up = {"v": True}
    wd, clock = make(link=lambda: up["v"], hold_after_s=5.0, stop_after_s=10.0, loop_stall_s=None)
    wd.chunk_arrived(clock(), clock())
    assert wd.verdict().action == "ok"
    up["v"] = False
    clock.advance(0.001)
    assert wd.verdict().key == "hold:link_down"
    up["v"] = True
    clock.advance(0.5)
    assert wd.verdict().key == "hold:link_down"  # the link is back, but no chunk asked for since
    wd.chunk_arrived(requested=clock() - 1.0, arrived=clock())  # asked for before the outage: not enough
    assert wd.verdict().action == "hold"
    wd.chunk_arrived(requested=clock() - 0.01, arrived=clock())
    assert wd.verdict().action == "ok"


def test_a_stale_hold_ends_with_the_next_chunk():
    wd, clock = make(hold_after_s=0.5, stop_after_s=5.0, loop_stall_s=None)
    wd.chunk_arrived(clock(), clock())
    clock.advance(0.6)
    assert wd.verdict().key == "hold:stale_chunks"
    clock.advance(0.2)
    wd.chunk_arrived(requested=clock() - 0.9, arrived=clock())  # a slow answer to an old request
    assert wd.verdict().action == "ok"


def test_a_stalled_control_loop_stops_the_arm():
    wd, clock = make(loop_stall_s=0.5, stop_after_s=10.0)
    wd.chunk_arrived(clock(), clock())
    clock.advance(0.4)
    wd.beat()
    clock.advance(0.4)
    assert wd.verdict().action == "ok"
    clock.advance(0.2)
    assert wd.verdict().key == "stop:loop_stalled"


def test_default_hold_after_follows_the_chunk_length():
    cfg = resolve(WatchdogConfig(stop_after_s=5.0), n_execute=8, control_hz=10.0)
    assert cfg.hold_after_s == pytest.approx(1.3)
    with pytest.raises(ConfigError, match="raise stop_after_s"):
        resolve(WatchdogConfig(stop_after_s=1.0), n_execute=50, control_hz=10.0)
    with pytest.raises(ConfigError):
        WatchdogConfig(hold_after_s=2.0, stop_after_s=1.0)


def test_the_thread_calls_on_stop_once_without_the_control_loop():
    wd = Watchdog(WatchdogConfig(stop_after_s=0.2, first_chunk_s=0.2, loop_stall_s=None))
    t0 = time.monotonic()
    wd.arm()
    got: list[str] = []
    done = threading.Event()
    wd.start(lambda v: (got.append(v.key), done.set()), period_s=0.01)
    assert done.wait(10.0)
    assert got == ["stop:no_chunk"] and time.monotonic() - t0 >= 0.2
    wd.close()
