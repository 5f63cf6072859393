"""The safety layer: the only way from the runtime to a driver.

:class:`SafetyLayer` is the robot the runtime's control loop drives (it implements
:class:`policy_steer.runtime.robot.Robot`); underneath is an :class:`~policy_steer.hardware.arm.Arm`:
a real arm, the virtual arm, or a simulated task. Chunks reach it through :meth:`SafetyLayer.guard`
(:mod:`~policy_steer.hardware.chunk_guard`: checked, clamped, counted on arrival). At every control
step, ``act(action)``:

1. asks the :class:`~policy_steer.hardware.watchdog.Watchdog`: a stop verdict safe-stops the arm, a hold
   verdict holds;
2. executes ``action`` only if it is a row of a validated chunk; anything else (the runtime's own
   hold when its queue is empty, non-finite values) becomes a hold;
3. turns the row into an arm command (:mod:`~policy_steer.hardware.spaces`) and passes it through the
   :class:`~policy_steer.hardware.command_filter.CommandFilter` (joint ranges, workspace, step; for a
   driver that takes end-effector targets natively, ``Arm.ee_native``, the target's checks only), then
   sends it to the driver. A hold is the previous joint command (an arm), or "stay where measured" (a
   driver that takes end-effector targets: a zero step).

``dry_run``: everything above runs, is recorded and published, but nothing is sent to the driver (the
arm is only observed; a simulated task is never stepped). A safe stop still reaches the driver.

A stop (watchdog, e-stop from the control socket, a driver error, the operator's signal) calls the
driver's safe stop at once, from whatever thread noticed it, is latched, and ends the run
(``episode_over``). Every intervention goes to the
:class:`~policy_steer.hardware.interventions.InterventionLog` (reason, count, log line, telemetry
``event``); every step is recorded as a :class:`SafetyStep` with its stamps. What reached the driver
is also kept as a row of the policy's action space (``last_executed``; ``last_intervention`` says why
it differs from the runtime's action), which the loop reports to the server (``executed``).

The watchdog runs on the monotonic clock; a host on a virtual clock (a simulation that pauses while it
waits for a chunk) runs without it (``use_watchdog=False``): nothing moves while it waits.
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

from policy_steer.hardware.arm import Arm, ArmCommand, ArmObservation, JointCommand
from policy_steer.hardware.chunk_guard import ChunkGuard, GuardedChunkSource
from policy_steer.hardware.command_filter import CommandFilter
from policy_steer.hardware.errors import SafetyError
from policy_steer.hardware.interventions import InterventionLog
from policy_steer.hardware.observation import ObservationMap
from policy_steer.hardware.spaces import ActionSpace, EeDeltaSpace, JointSpace
from policy_steer.hardware.watchdog import OK, Verdict, Watchdog, WatchdogConfig, resolve
from policy_steer.types import EpisodeContext, Observation, RobotDescription

log = logging.getLogger(__name__)

EXEC, HOLD, STOPPED = "exec", "hold", "stopped"


@dataclass
class SafetyStep:
    """What the safety layer did at one control step (stamps: monotonic seconds)."""

    step: int
    stamp: float  # when the decision was taken (the command went out right after)
    decision: str  # exec | hold | stopped
    reason: str  # the intervention key of a hold ("" when executing)
    joints: list[float] | None  # the joint command sent (None once stopped, and for an ee_native driver)
    gripper: float | None
    chunk: int | None = None  # validated chunk serial of the executed row
    row: int | None = None
    sent: list[float] | None = None  # what went to the driver: joints + gripper, or an ee_native driver's action
    executed: list[float] | None = None  # the same as a row of the policy's action space
    notes: str | None = None  # every intervention key of this step, comma-separated


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
        dry_run: bool = False,
        use_watchdog: bool = True,
        context: Callable[[int | None], EpisodeContext] | None = None,
        dynamic_scene: bool | None = None,
    ) -> None:
        if space.arm is not arm or obs_map.arm is not arm:
            raise SafetyError("the action space and the observation map must describe this arm")
        self.arm = arm
        self.space = space
        self.obs_map = obs_map
        self.clock = clock
        self.control_hz = float(control_hz or arm.control_hz)
        # telemetry: a RobotTelemetry (or anything with its event()) for the interventions; None: log only
        self.telemetry = telemetry
        emit = None if telemetry is None else (lambda name, fields: telemetry.event(name, **fields))
        self.log = InterventionLog(emit, clock=clock)
        # n_execute: actions run per chunk (sets the default hold_after_s of the watchdog)
        self.watchdog = Watchdog(resolve(watchdog or WatchdogConfig(), n_execute, self.control_hz), link_up, clock)
        self.guard_ = ChunkGuard(space, self.log, self.watchdog, clock)
        # the rate per-command step limits are computed at: a simulator's own rate, else the control rate
        self.filter_hz = 1.0 / arm.command_period_s if arm.command_period_s else self.control_hz
        self.filter = CommandFilter(arm.limits, self.filter_hz, arm.kinematics)
        self.dry_run = bool(dry_run)
        self.use_watchdog = bool(use_watchdog)
        self.description: RobotDescription = arm.robot_description() or obs_map.description(
            space.mode,
            space.names if isinstance(space, JointSpace) else None,
            space.max_step if isinstance(space, EeDeltaSpace) else None,
        )
        # the episode context (Robot.context): the host's (instruction, scene, a perception hook) or the driver's
        self._context = context
        self.dynamic_scene = bool(arm.dynamic_scene if dynamic_scene is None else dynamic_scene)
        self.records: deque[SafetyStep] = deque(maxlen=keep_steps)
        self.estops: list[dict[str, float | None]] = []
        self.on_stop: list[Callable[[str], None]] = []  # called (with the key) after a stop, any thread
        self._stop_info: dict[str, Any] = {}
        self.last_executed: np.ndarray | None = None  # what reached the driver at the last step, as a policy row
        self.last_intervention: str | None = None  # why it differs from the runtime's action (None: it does not)
        self.steps = 0
        self.episode = -1  # counts resets (0: the first episode)
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
        if self.use_watchdog:
            self.watchdog.start(self._watchdog_stop, period_s=min(0.02, 0.25 / self.control_hz))

    def close(self) -> None:
        self.watchdog.close()

    @property
    def stopped(self) -> bool:
        return self.stop_key is not None

    # --- Robot protocol ----------------------------------------------------------------------------
    @property
    def episode_over(self) -> bool:
        """The run ends: a safe stop, or the driver ended the episode (a simulated task)."""
        return self.stopped or self.arm.episode_over

    @property
    def info(self) -> dict[str, Any]:
        return {**self.arm.info, **self._stop_info}

    def context(self, seed: int | None = None) -> EpisodeContext:
        """The episode context now: the host's, else the driver's, else the instruction and this robot."""
        if self._context is not None:
            return self._context(seed)
        ctx = self.arm.episode_context(seed)
        if ctx is not None:
            return ctx
        return EpisodeContext(instruction=self.obs_map.instruction, robot=self.description, seed=seed,
                              stamp=self.clock())

    def reset(self, seed: int | None = None) -> Observation:
        """Start an episode (a simulated task resets its world; an arm does not move), arm the watchdog
        and take the measured pose as the reference."""
        with self._lock:
            if self.stopped:
                raise SafetyError(f"the arm was safe-stopped ({self.stop_key}: {self.stop_detail}); restart the robot process")
            self.arm.start_episode(seed)
            obs = self._read_arm()
            if not (np.all(np.isfinite(obs.joints)) and np.isfinite(obs.gripper)):
                raise SafetyError(f"{self.arm.name} reports non-finite joint values {np.asarray(obs.joints).tolist()}, "
                                  f"gripper {obs.gripper}: check the driver and its calibration")
            self._obs = obs
            # the limits of this episode (a simulated task's workspace follows its table)
            self.filter = CommandFilter(self.arm.limits, self.filter_hz, self.arm.kinematics)
            self.filter.reset(obs.joints, obs.gripper)
            self._check_start(obs)
            self.steps = 0
            self.episode += 1
            self.last_executed = self.last_intervention = None
            if self.use_watchdog:
                self.watchdog.arm()
        return self.obs_map(obs)

    def end_episode(self) -> None:
        """The episode is over (the host is between episodes): the watchdog rests until the next reset."""
        self.watchdog.disarm()

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
        self.last_executed = None if rec.executed is None else np.asarray(rec.executed, np.float32)
        self.last_intervention = rec.notes

    def _act_locked(self, step: int, action: np.ndarray, keys: set[str]) -> SafetyStep:
        now = self.clock()
        if self.stopped:
            return SafetyStep(step, now, STOPPED, self.stop_key or "", None, None, notes=self.stop_key)
        verdict = self.watchdog.verdict() if self.use_watchdog else OK
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
        native = self.arm.ee_native
        obs = self._obs
        cmd: ArmCommand
        if key:
            cmd, decision = (self.space.hold(obs, self.filter.last) if native else self.filter.hold()), HOLD
            self._note(key, detail, step, keys)
        else:
            proposal = self.space.to_command(np.asarray(action, dtype=np.float64), obs, self.filter.last)
            res = self.filter.native(proposal, obs.ee_pos) if native else self.filter(proposal)
            for k, d in res.notes:
                self._note(k, d, step, keys)
            cmd, decision = res.command, (HOLD if res.held else EXEC)
            key = res.notes[0][0] if res.held else ""
            if res.held:
                chunk = row = None
        stamp = self.clock()
        if not self.dry_run:
            try:
                if native:
                    self.arm.command_ee(cmd)
                else:
                    self.arm.command(cmd)
            except Exception as e:  # noqa: BLE001 - any driver failure ends in a safe stop
                self._stop_locked("stop:driver_error", f"{type(e).__name__}: {e}", step)
                return SafetyStep(step, self.clock(), STOPPED, "stop:driver_error", None, None, notes="stop:driver_error")
        executed = [float(v) for v in self.space.row(cmd, obs)]
        joints = None if native else [float(v) for v in cmd.joints]
        sent = executed if native else [*joints, float(cmd.gripper)]
        return SafetyStep(step, stamp, decision, key, joints, float(cmd.gripper), chunk, row, sent=sent,
                          executed=executed, notes=",".join(sorted(keys)) or None)

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
        self._stop_info = {"stop_reason": key, "stop_detail": detail}
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


def command_of(rec: SafetyStep) -> JointCommand | None:
    """The joint command a step sent (None for a stopped step, or an ee_native driver's step)."""
    return None if rec.joints is None else JointCommand(np.asarray(rec.joints), float(rec.gripper))
