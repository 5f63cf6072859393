"""The safety layer: the only way from the runtime to a driver.

:class:`SafetyLayer` is the robot the runtime's control loop drives (it implements
:class:`policy_steer.runtime.robot.Robot`); underneath is an :class:`~policy_steer.hardware.arm.Arm`.
Chunks reach it through :meth:`SafetyLayer.guard` (:mod:`~policy_steer.hardware.chunk_guard`: checked,
clamped, counted on arrival). At every control step, ``act(action)``:

1. asks the :class:`~policy_steer.hardware.watchdog.Watchdog`: a stop verdict safe-stops the arm, a hold
   verdict sends the previous command again;
2. executes ``action`` only if it is a row of a validated chunk; anything else (the runtime's own
   hold when its queue is empty, non-finite values) becomes a hold;
3. turns the row into an arm command (:mod:`~policy_steer.hardware.spaces`) and passes it through the
   :class:`~policy_steer.hardware.command_filter.CommandFilter` (joint ranges, workspace, step), then
   sends it to the driver.

A stop (watchdog, e-stop from the control socket, a driver error) calls the driver's safe stop at once,
from whatever thread noticed it, is latched, and ends the run (``episode_over``). Every intervention
goes to the :class:`~policy_steer.hardware.interventions.InterventionLog` (reason, count, log line,
telemetry ``event``); every step is recorded as a :class:`SafetyStep` with its stamps and, with a
:class:`~policy_steer.transport.robot_telemetry.RobotTelemetry`, published on the ``action`` topic
(``action``: the joint command sent; ``commanded``: the runtime's action; ``chunk_id``/``index``: the
validated chunk and row, None for a hold).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from policy_steer.hardware.arm import Arm, ArmObservation, JointCommand
from policy_steer.hardware.chunk_guard import ChunkGuard, GuardedChunkSource
from policy_steer.hardware.command_filter import CommandFilter
from policy_steer.hardware.errors import SafetyError
from policy_steer.hardware.interventions import InterventionLog
from policy_steer.hardware.observation import ObservationMap
from policy_steer.hardware.spaces import ActionSpace, EeDeltaSpace, JointSpace
from policy_steer.hardware.watchdog import Verdict, Watchdog, WatchdogConfig, resolve
from policy_steer.types import Observation

log = logging.getLogger(__name__)

EXEC, HOLD, STOPPED = "exec", "hold", "stopped"


@dataclass
class SafetyStep:
    """What the safety layer did at one control step (stamps: monotonic seconds)."""

    step: int
    stamp: float  # when the decision was taken (the command went out right after)
    decision: str  # exec | hold | stopped
    reason: str  # the intervention key of a hold ("" when executing)
    joints: list[float] | None  # the command sent (None once stopped)
    gripper: float | None
    chunk: int | None = None  # validated chunk serial of the executed row
    row: int | None = None


class SafetyLayer:
    def __init__(
        self,
        arm: Arm,
        space: ActionSpace,
        obs_map: ObservationMap,
        watchdog: WatchdogConfig | None = None,
        control_hz: float | None = None,
        link_up: Callable[[], bool] | None = None,
        telemetry: Any | None = None,
        clock: Callable[[], float] = time.monotonic,
        keep_steps: int = 200_000,
        n_execute: int | None = None,
    ) -> None:
        if space.arm is not arm or obs_map.arm is not arm:
            raise SafetyError("the action space and the observation map must describe this arm")
        self.arm = arm
        self.space = space
        self.obs_map = obs_map
        self.clock = clock
        self.control_hz = float(control_hz or arm.control_hz)
        # telemetry: a RobotTelemetry (or anything with its event() and action()); None: log only
        self.telemetry = telemetry
        emit = None if telemetry is None else (lambda name, fields: telemetry.event(name, **fields))
        self.log = InterventionLog(emit, clock=clock)
        # n_execute: actions run per chunk (sets the default hold_after_s of the watchdog)
        self.watchdog = Watchdog(resolve(watchdog or WatchdogConfig(), n_execute, self.control_hz), link_up, clock)
        self.guard_ = ChunkGuard(space, self.log, self.watchdog, clock)
        self.filter = CommandFilter(arm.limits, self.control_hz, arm.kinematics)
        self.description = obs_map.description(
            space.mode,
            space.names if isinstance(space, JointSpace) else None,
            space.max_step if isinstance(space, EeDeltaSpace) else None,
        )
        self.records: deque[SafetyStep] = deque(maxlen=keep_steps)
        self.estops: list[dict[str, float | None]] = []
        self.on_stop: list[Callable[[str], None]] = []  # called (with the key) after a stop, any thread
        self.episode_over = False
        self.info: dict[str, Any] = {}
        self.steps = 0
        self.stop_key: str | None = None
        self.stop_detail = ""
        self.stop_stamp: float | None = None
        self._lock = threading.RLock()
        self._obs: ArmObservation | None = None
        self._held_last = False

    # --- wiring ------------------------------------------------------------------------------------
    def guard(self, source: Any) -> GuardedChunkSource:
        """``source`` with every chunk validated by this layer (give this one to the runtime)."""
        return GuardedChunkSource(source, self.guard_)

    def start(self) -> None:
        """Start the watchdog's own thread (checks between control steps)."""
        self.watchdog.start(self._watchdog_stop, period_s=min(0.02, 0.25 / self.control_hz))

    def close(self) -> None:
        self.watchdog.close()

    @property
    def stopped(self) -> bool:
        return self.stop_key is not None

    # --- Robot protocol ----------------------------------------------------------------------------
    def reset(self, seed: int | None = None) -> Observation:
        """Arm the watchdog and take the measured pose as the reference; the arm does not move."""
        with self._lock:
            if self.stopped:
                raise SafetyError(f"the arm was safe-stopped ({self.stop_key}: {self.stop_detail}); restart the robot process")
            obs = self._read_arm()
            if not (np.all(np.isfinite(obs.joints)) and np.isfinite(obs.gripper)):
                raise SafetyError(f"{self.arm.name} reports non-finite joint values {np.asarray(obs.joints).tolist()}, "
                                  f"gripper {obs.gripper}: check the driver and its calibration")
            self._obs = obs
            self.filter.reset(obs.joints, obs.gripper)
            self._check_start(obs)
            self.steps = 0
            self.episode_over = False
            self.watchdog.arm()
        return self.obs_map(obs)

    def observe(self) -> Observation:
        obs = self._read_arm()
        self._obs = obs
        return self.obs_map(obs)

    def _read_arm(self) -> ArmObservation:
        """The driver's reading; a driver that cannot read the arm is safe-stopped and ends the run."""
        try:
            return self.arm.observe()
        except Exception as e:  # noqa: BLE001 - whatever the driver raises, the arm stops first
            why = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
            self.stop("stop:driver_error", f"reading the arm failed ({why})")
            raise SafetyError(f"{self.arm.name}: reading the arm failed ({why}); the arm was safe-stopped") from e

    def act(self, action: np.ndarray) -> None:
        step = self.steps
        self.steps += 1
        self.watchdog.beat()
        keys: set[str] = set()
        with self._lock:
            rec = self._act_locked(step, action, keys)
            self.records.append(rec)
        self.log.end_runs(step, keys)
        if self.telemetry is not None and rec.joints is not None:
            self._publish_action(rec, action)

    def _act_locked(self, step: int, action: np.ndarray, keys: set[str]) -> SafetyStep:
        now = self.clock()
        if self.stopped:
            self.episode_over = True
            return SafetyStep(step, now, STOPPED, self.stop_key or "", None, None)
        verdict = self.watchdog.verdict()
        if verdict.action == "stop":
            self._stop_locked(verdict.key, verdict.detail, step)
            return SafetyStep(step, self.clock(), STOPPED, verdict.key, None, None)
        found = self.guard_.rows.find(action)
        chunk = row = None
        if verdict.action == "hold":
            key, detail = verdict.key, verdict.detail
        elif found is None:
            a = np.asarray(action)
            if a.dtype.kind == "f" and not np.all(np.isfinite(a)):
                key, detail = "reject:nonfinite", "a non-finite action that is not a validated row"
            else:
                key, detail = "hold:no_action", "no validated action for this step"
        else:
            key, detail = "", ""
            chunk, row = found
        if key:
            cmd, decision = self.filter.hold(), HOLD
            self._note(key, detail, step, keys)
        else:
            proposal = self.space.to_command(np.asarray(action, dtype=np.float64), self._obs, self.filter.last)
            res = self.filter(proposal)
            for k, d in res.notes:
                self._note(k, d, step, keys)
            cmd, decision = res.command, (HOLD if res.held else EXEC)
            key = res.notes[0][0] if res.held else ""
        stamp = self.clock()
        try:
            self.arm.command(cmd)
        except Exception as e:  # noqa: BLE001 - any driver failure ends in a safe stop
            self._stop_locked("stop:driver_error", f"{type(e).__name__}: {e}", step)
            return SafetyStep(step, self.clock(), STOPPED, "stop:driver_error", None, None)
        return SafetyStep(step, stamp, decision, key, [float(v) for v in cmd.joints], float(cmd.gripper), chunk, row)

    def _note(self, key: str, detail: str, step: int, keys: set[str]) -> None:
        keys.add(key)
        self.log.record(key, detail, step)

    # --- stopping ----------------------------------------------------------------------------------
    def stop(self, key: str, detail: str = "", step: int | None = None) -> tuple[bool, float | None, bool]:
        """Safe-stop the arm now (any thread). Returns (stopped cleanly, stop stamp, first stop)."""
        with self._lock:
            return self._stop_locked(key, detail, step)

    def estop(self, reason: str, sender_stamp: float | None) -> tuple[bool, float | None, bool]:
        """An e-stop from the control socket (called on the listener's thread)."""
        received = self.clock()
        result = self.stop("stop:estop", f"e-stop from the control socket ({reason or 'no reason given'})")
        self.estops.append({"sent": sender_stamp, "received": received, "stopped": result[1], "first": result[2]})
        return result

    def _watchdog_stop(self, v: Verdict) -> None:
        self.stop(v.key, v.detail)

    def _stop_locked(self, key: str, detail: str, step: int | None) -> tuple[bool, float | None, bool]:
        if self.stop_key is not None:
            return True, self.stop_stamp, False
        ok = True
        try:
            self.arm.safe_stop()
        except Exception as e:  # noqa: BLE001 - still latched: nothing more is sent
            ok = False
            detail += f" (the driver's safe stop failed: {type(e).__name__}: {e})"
        self.stop_stamp = self.clock()
        self.stop_key, self.stop_detail = key, detail
        self.episode_over = True
        self.info = {"stop_reason": key, "stop_detail": detail}
        self.log.record(key, detail, step)
        for cb in list(self.on_stop):
            try:
                cb(key)
            except Exception:  # noqa: BLE001
                log.exception("on_stop callback failed")
        return ok, self.stop_stamp, True

    # --- reporting ---------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        last = self.records[-1] if self.records else None
        state = "stopped" if self.stopped else ("holding" if last is not None and last.decision == HOLD else "running")
        return {"state": state, "step": self.steps, "stop_reason": self.stop_key}

    def metrics(self) -> dict[str, Any]:
        recs = list(self.records)
        out: dict[str, Any] = {
            "steps": len(recs),
            "executed": sum(r.decision == EXEC for r in recs),
            "held": sum(r.decision == HOLD for r in recs),
            "stopped_steps": sum(r.decision == STOPPED for r in recs),
            "chunks_accepted": self.guard_.accepted,
            "chunks_rejected": self.guard_.rejected,
            **self.log.metrics(),
            "stop": None if self.stop_key is None else {
                "reason": self.stop_key, "detail": self.stop_detail, "stamp": self.stop_stamp},
            "estops": list(self.estops),
            "last_chunk": self.watchdog.last_chunk,
        }
        return out

    def step_records(self) -> list[dict[str, Any]]:
        return [asdict(r) for r in self.records]

    def _check_start(self, obs: ArmObservation) -> None:
        lim = self.arm.limits
        q = np.asarray(obs.joints)
        out = np.flatnonzero((q < lim.joint_low) | (q > lim.joint_high)).tolist()
        if out:
            names = [self.arm.joint_names[i] for i in out]
            self.log.record("warn:start_outside_limits",
                            f"joints {names} start outside their ranges; commands only move them back")
        if self.arm.kinematics is not None and lim.has_workspace and not lim.in_workspace(self.arm.kinematics.fk(q), 1e-6):
            self.log.record("warn:start_outside_limits", "the hand starts outside the workspace; commands only move it back")

    def _publish_action(self, rec: SafetyStep, action: np.ndarray) -> None:
        """``action``: the joint command sent (joints, gripper); ``commanded``: what the runtime asked."""
        try:
            self.telemetry.action(
                rec.step, np.asarray([*rec.joints, rec.gripper], dtype=np.float32), rec.chunk, rec.row, rec.stamp,
                commanded=np.asarray(action, dtype=np.float32), decision=rec.decision, safety=rec.reason or None,
            )
        except Exception:  # noqa: BLE001 - telemetry never stops the arm
            log.exception("publishing an action failed")


def command_of(rec: SafetyStep) -> JointCommand | None:
    """The command a step sent (None for a stopped step)."""
    return None if rec.joints is None else JointCommand(np.asarray(rec.joints), float(rec.gripper))
