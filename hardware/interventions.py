"""Every safety intervention: recorded with its reason, counted, logged and published as telemetry.

A key is ``<kind>:<reason>``: ``clamp`` (a value moved into its range), ``limit`` (a step cut short),
``reject`` (a value or chunk refused), ``hold`` (the previous command sent again instead of the
runtime's action), ``stop`` (the arm's safe stop). Counts are exact (one per control step or chunk);
the log and the robot's ``event`` telemetry topic (``event: safety``, the convention of
:mod:`policy_steer.transport.robot_telemetry`) get one line per *run* of the same key on consecutive
steps (a hold of 30 steps is one warning when it starts and one line when it ends), so that a
long hold does not flood them. Thread-safe: the watchdog and the e-stop listener record from their
own threads.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("policy_steer.hardware.safety")

Emit = Callable[[str, dict[str, Any]], None]  # (event name, fields), e.g. RobotTelemetry.event
QUIET_HOLD = "hold:no_action"  # nothing validated queued for this step: the loop is waiting for a chunk


@dataclass(frozen=True)
class Intervention:
    stamp: float  # monotonic seconds
    step: int | None  # control index (None: outside a control step, e.g. a chunk or an e-stop)
    key: str  # "<kind>:<reason>"
    detail: str

    @property
    def kind(self) -> str:
        return self.key.split(":", 1)[0]


class InterventionLog:
    def __init__(self, emit: Emit | None = None, keep: int = 10_000, clock: Callable[[], float] = time.monotonic) -> None:
        self.emit = emit
        self.clock = clock
        self.counts: Counter[str] = Counter()
        self.recent: deque[Intervention] = deque(maxlen=keep)
        self._lock = threading.Lock()
        self._runs: dict[str, tuple[int, int, float]] = {}  # key -> (first step, last step, first stamp)

    def record(self, key: str, detail: str = "", step: int | None = None) -> Intervention:
        item = Intervention(self.clock(), step, key, detail)
        with self._lock:
            self.counts[key] += 1
            self.recent.append(item)
            run = self._runs.get(key)
            continuing = run is not None and step is not None and run[1] == step - 1
            self._runs[key] = (run[0], step, run[2]) if continuing else (step, step, item.stamp)
        if not continuing:
            # waiting for a chunk (sync mode between chunks, a first chunk) is normal operation: info, not a warning
            level = logging.ERROR if item.kind == "stop" else logging.INFO if key == QUIET_HOLD else logging.WARNING
            where = f" at step {step}" if step is not None else ""
            log.log(level, "safety %s%s: %s", key, where, detail)
            self._publish(item, "start")
        return item

    def end_runs(self, step: int, keys_now: set[str]) -> None:
        """Close the runs of keys that did not occur at ``step`` (called once per control step)."""
        ended = []
        with self._lock:
            for key, (first, last, stamp) in list(self._runs.items()):
                if key not in keys_now and last is not None and last < step:
                    del self._runs[key]
                    if first is not None and last > first:
                        ended.append((key, first, last, stamp))
        for key, first, last, _ in ended:
            log.info("safety %s ended after %d steps (steps %d-%d)", key, last - first + 1, first, last)
            self._publish(Intervention(self.clock(), last, key, f"ended after {last - first + 1} steps"), "end")

    def _publish(self, item: Intervention, phase: str) -> None:
        if self.emit is None:
            return
        fields = {"what": item.key, "kind": item.kind, "phase": phase, "step": item.step, "detail": item.detail,
                  "stamp": item.stamp}
        try:
            self.emit("safety", fields)
        except Exception:  # noqa: BLE001 - telemetry must never take the safety layer down
            log.exception("publishing a safety event failed")

    def metrics(self) -> dict[str, Any]:
        with self._lock:
            counts = dict(sorted(self.counts.items()))
        by_kind: Counter[str] = Counter()
        for k, v in counts.items():
            by_kind[k.split(":", 1)[0]] += v
        return {"interventions": counts, "by_kind": dict(by_kind), "total": sum(counts.values())}
