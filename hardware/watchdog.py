"""The watchdog: hold when chunks stop coming or the link drops; safe stop when that lasts too long.

It watches three things: when the last validated chunk arrived, whether the transport still has a
session with the server (``link_up``, e.g. ``PolicyClient.connected``, which a socket monitor clears
within milliseconds of the server's death), and when the control loop last acted (its heartbeat).

Verdicts, evaluated by the control thread at every step and by the watchdog's own thread between
steps (so a safe stop does not wait for a control loop that may itself be stuck):

- ``stop:no_chunk``: no chunk for ``stop_after_s`` (``first_chunk_s`` before the first one, for a
  server still warming up);
- ``stop:loop_stalled``: the control loop has not acted for ``loop_stall_s``;
- ``hold:link_down``: the link to the server is down (``hold_on_disconnect``);
- ``hold:stale_chunks``: no chunk for ``hold_after_s`` (by default the time a chunk's executed rows
  last, ``n_execute / rate``, plus 0.5 s: a working server never trips it, a hung one does).

A hold is latched. A ``link_down`` hold ends only when a chunk *requested after the hold began*
arrives, so the arm does not resume before the server has answered for the present state (the rows
that chunk was planned to follow, the committed prefix of ``vlash``/``async`` modes, may still run:
after an outage longer than the queue there are none); a ``stale_chunks`` hold ends with the next
chunk that arrives (the server was slow, not gone; the runtime drops stale chunks itself).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from policy_steer.errors import ConfigError


@dataclass
class WatchdogConfig:
    hold_after_s: float | None = None  # no fresh chunk for this long: hold (None: n_execute / rate + 0.5 s)
    stop_after_s: float = 5.0  # no fresh chunk for this long: safe stop
    first_chunk_s: float = 30.0  # the stop limit before the first chunk (a server warming up)
    hold_on_disconnect: bool = True  # hold as soon as the link to the server drops
    loop_stall_s: float | None = 1.0  # the control loop has not acted for this long: safe stop (None: off)

    def __post_init__(self) -> None:
        if not self.stop_after_s > 0 or not self.first_chunk_s > 0:
            raise ConfigError("stop_after_s and first_chunk_s must be > 0")
        if self.hold_after_s is not None and not 0 < self.hold_after_s <= self.stop_after_s:
            raise ConfigError(f"hold_after_s must be in (0, stop_after_s={self.stop_after_s:g}], got {self.hold_after_s}")
        if self.loop_stall_s is not None and not self.loop_stall_s > 0:
            raise ConfigError("loop_stall_s must be > 0 (or None)")


def resolve(cfg: WatchdogConfig, n_execute: int | None, control_hz: float) -> WatchdogConfig:
    """``cfg`` with its default ``hold_after_s`` filled in for chunks of ``n_execute`` actions."""
    if cfg.hold_after_s is not None:
        return cfg
    hold = (n_execute or 10) / control_hz + 0.5
    if hold > cfg.stop_after_s:
        raise ConfigError(
            f"a chunk's {n_execute} actions last {hold - 0.5:.2f} s at {control_hz:g} Hz: raise stop_after_s "
            f"(now {cfg.stop_after_s:g} s) above {hold:.2f} s, or set hold_after_s"
        )
    return replace(cfg, hold_after_s=hold)


@dataclass(frozen=True)
class Verdict:
    action: str  # "ok" | "hold" | "stop"
    key: str = ""  # intervention key, e.g. "hold:link_down"
    detail: str = ""


OK = Verdict("ok")


class Watchdog:
    def __init__(self, cfg: WatchdogConfig, link_up: Callable[[], bool] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.cfg = cfg
        self.link_up = link_up
        self.clock = clock
        self._lock = threading.Lock()
        self._armed_at: float | None = None
        self._last_chunk: float | None = None  # arrival of the last validated chunk
        self._last_request: float | None = None  # when that chunk was requested
        self._beat: float | None = None
        self._hold_since: float | None = None
        self._hold_key = ""
        self._thread: threading.Thread | None = None
        self._closing = threading.Event()

    # --- inputs ------------------------------------------------------------------------------------
    def arm(self) -> None:
        """Start watching (the run begins now)."""
        with self._lock:
            now = self.clock()
            self._armed_at = self._beat = now
            self._last_chunk = self._last_request = None
            self._hold_since = None

    def disarm(self) -> None:
        with self._lock:
            self._armed_at = None

    @property
    def armed(self) -> bool:
        return self._armed_at is not None

    def beat(self) -> None:
        """The control loop acted."""
        with self._lock:
            self._beat = self.clock()

    def chunk_arrived(self, requested: float, arrived: float) -> None:
        with self._lock:
            self._last_chunk = arrived if self._last_chunk is None else max(self._last_chunk, arrived)
            self._last_request = requested if self._last_request is None else max(self._last_request, requested)

    @property
    def last_chunk(self) -> float | None:
        return self._last_chunk

    # --- decisions ---------------------------------------------------------------------------------
    def verdict(self) -> Verdict:
        cfg = self.cfg
        link = True if self.link_up is None or not cfg.hold_on_disconnect else bool(self.link_up())
        with self._lock:
            now = self.clock()
            if self._armed_at is None:
                return OK
            first = self._last_chunk is None
            ref = self._armed_at if first else self._last_chunk
            limit = max(cfg.stop_after_s, cfg.first_chunk_s) if first else cfg.stop_after_s
            age = now - ref
            if age > limit:
                what = "since the run started" if first else "since the last one"
                return Verdict("stop", "stop:no_chunk", f"no chunk for {age:.3f} s {what} (limit {limit:g} s)")
            if cfg.loop_stall_s is not None and now - self._beat > cfg.loop_stall_s:
                return Verdict("stop", "stop:loop_stalled", f"the control loop has not acted for {now - self._beat:.3f} s")
            key = detail = ""
            if not link:
                key, detail = "hold:link_down", "the link to the policy server is down"
            elif cfg.hold_after_s is not None and not first and age > cfg.hold_after_s:
                key, detail = "hold:stale_chunks", f"no chunk for {age:.3f} s (hold after {cfg.hold_after_s:g} s)"
            if key:
                if self._hold_since is None:
                    self._hold_since, self._hold_key = now, key
                return Verdict("hold", key, detail)
            if self._hold_since is not None:
                if self._last_request is not None and self._last_request > self._hold_since:
                    self._hold_since = None  # a chunk asked for after the hold began: resume
                    return OK
                arrived = self._last_chunk is not None and self._last_chunk > self._hold_since
                if self._hold_key == "hold:stale_chunks" and arrived:
                    self._hold_since = None  # the server was slow, not gone: any new chunk ends the hold
                    return OK
                return Verdict("hold", self._hold_key, "waiting for a chunk requested after the hold began")
            return OK

    # --- the thread --------------------------------------------------------------------------------
    def start(self, on_stop: Callable[[Verdict], None], period_s: float) -> None:
        """Evaluate every ``period_s`` on a daemon thread; call ``on_stop`` once on a stop verdict."""
        if self._thread is not None:
            return

        def run() -> None:
            while not self._closing.wait(period_s):
                v = self.verdict()
                if v.action == "stop":
                    on_stop(v)
                    return

        self._closing.clear()
        self._thread = threading.Thread(target=run, name="policy-steer-watchdog", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._closing.set()
        if self._thread is not None:
            self._thread.join(2.0)
            self._thread = None
