"""One real-robot run: driver + safety layer + transport client + the wall-clock runtime, wired together.

:class:`RobotSession` does what ``policy-steer robot`` does, in steps a test can reach into:

1. build the driver (``--dry-run`` substitutes the virtual arm: ``virtual`` for ``virtual``, the
   lerobot robot backed by it for ``lerobot:<type>``, so the lerobot adapter's mapping is exercised);
2. connect the :class:`~policy_steer.transport.client.PolicyClient` and read the policy's spec from
   ``welcome`` (cameras the policy wants are set on the virtual arm at the promised size);
3. connect the arm, choose the action space and the observation layout, and check them against the
   spec (a mismatch is one line naming both sides);
4. build the :class:`~policy_steer.hardware.safety.SafetyLayer` (its watchdog sees the client's link),
   bind the e-stop control socket and, if asked, the robot's telemetry PUB endpoint
   (:class:`~policy_steer.transport.robot_telemetry.RobotTelemetry`: ``action`` every step, ``event``
   for safety interventions, link changes and periodic ``safety_metrics``);
5. run :class:`~policy_steer.runtime.realtime.RealtimeLoop` on the safety layer and the guarded chunk
   source until ``max_steps``, ``duration_s``, or a safe stop (watchdog, e-stop, driver error, and in
   ``policy-steer robot`` also SIGINT/SIGTERM).

A run that ends normally leaves the arm holding its last command; ``close()`` then disconnects the
driver (what that does to torque is the driver's choice, see its docstring).
"""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from policy_steer.config import FloatList, StrList
from policy_steer.errors import ConfigError
from policy_steer.hardware.arm import Arm
from policy_steer.hardware.drivers import DRY_RUN_LEROBOT, LEROBOT, VIRTUAL, make_arm
from policy_steer.hardware.errors import SafetyError
from policy_steer.hardware.estop import DEFAULT_ENDPOINT, EstopServer
from policy_steer.hardware.limits import load_limits_file, narrow
from policy_steer.hardware.observation import ObservationMap, check_against_welcome
from policy_steer.hardware.safety import SafetyLayer
from policy_steer.hardware.spaces import JointSpace, make_space
from policy_steer.hardware.watchdog import WatchdogConfig
from policy_steer.runtime.chunk_source import ClientChunkSource
from policy_steer.runtime.realtime import RealtimeConfig, RealtimeLoop, RealtimeResult
from policy_steer.types import OBS_IMAGES

log = logging.getLogger("policy_steer.hardware")


@dataclass
class RobotRunConfig:
    """``policy-steer robot``: the real-robot control loop (see ``policy_steer.hardware``)."""

    driver: str = VIRTUAL  # virtual | lerobot:<type>, e.g. lerobot:so101_follower
    driver_arg: StrList = field(default_factory=StrList)  # key=value for the driver (repeat the flag, or a comma list)
    dry_run: bool = False  # substitute the MuJoCo virtual arm for the driver
    server: str = "tcp://127.0.0.1:5555"  # the policy server (ROUTER)
    mode: str = "vlash"  # sync | async | vlash
    rate: float | None = None  # control rate in Hz (None: the driver's)
    action_space: str = "auto"  # auto | joint | ee_delta | ee_absolute
    task: str | None = None  # the instruction sent with every observation
    max_steps: int = 1_000_000  # control steps of the run
    duration_s: float | None = None  # stop the run (the arm holds) after this long
    n_execute: int | None = None  # actions run per chunk (None: the policy's n_action_steps)
    trigger: int | None = None  # ask for a chunk when at most this many actions remain (None: the measured delay)
    estimator: str = "auto"  # vlash future state: auto | target | delta | model
    watchdog: WatchdogConfig = field(default_factory=WatchdogConfig)
    estop: str = DEFAULT_ENDPOINT  # the control socket to bind ('' to go without: not advised)
    telemetry: str | None = None  # robot-side PUB endpoint for safety events, actions, metrics
    limits: str | None = None  # YAML file that narrows the driver's limits (policy_steer.hardware.limits)
    max_joint_velocity: float | None = None  # lerobot drivers: joint units per second (default by motor mode)
    stop_torque_off: bool = False  # lerobot drivers: the safe stop also disables torque (drops the arm!)
    state_extra: FloatList = field(default_factory=FloatList)  # values appended to observation.state (dry runs of task policies)
    request_timeout_s: float = 2.0  # one observe -> chunk request
    connect_timeout_s: float = 10.0  # wait this long for the server's welcome
    curve_keys: str | None = None  # folder of CURVE keys (policy-steer keys)
    curve_name: str = "client"  # which key pair of --curve_keys is this robot's
    client_name: str = "policy-steer-robot"  # the name sent in hello (server logs, telemetry)
    metrics_every_s: float = 1.0  # telemetry metrics period
    report: str | None = None  # write a JSON report (summary, interventions, per-step records) here

    def __post_init__(self) -> None:
        if self.rate is not None and not self.rate > 0:
            raise ConfigError(f"--rate must be > 0, got {self.rate}")
        if self.max_steps < 1:
            raise ConfigError("--max_steps must be >= 1")


@dataclass
class RobotRunResult:
    runtime: RealtimeResult
    safety: dict[str, Any]
    stopped: bool
    stop_reason: str | None
    interrupted: bool = False

    def summary(self) -> dict[str, Any]:
        rt = self.runtime.summary()
        rt.pop("chunk_latency_ms", None)
        lat = [c.latency_s * 1e3 for c in self.runtime.chunks if c.latency_s is not None]
        rt["chunk_latency_ms_p50"] = sorted(lat)[len(lat) // 2] if lat else None
        return {"runtime": rt, "safety": self.safety, "stopped": self.stopped, "stop_reason": self.stop_reason,
                "interrupted": self.interrupted}


class RobotSession:
    def __init__(self, cfg: RobotRunConfig, arm: Arm | None = None) -> None:
        self.cfg = cfg
        self.arm = arm
        self.client = None
        self.safety: SafetyLayer | None = None
        self.loop: RealtimeLoop | None = None
        self.estop: EstopServer | None = None
        self.telemetry = None
        self.welcome = None
        self.hz: float | None = None
        self.driver_name = cfg.driver

    # --- building ----------------------------------------------------------------------------------
    def start(self) -> RobotSession:
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def _start(self) -> None:
        cfg = self.cfg
        if self.arm is None:
            self.arm = self._make_arm()
        arm = self.arm
        self.hz = float(cfg.rate or arm.control_hz)
        from policy_steer.transport.client import ClientConfig, PolicyClient

        self.client = PolicyClient(
            ClientConfig(endpoint=cfg.server, name=cfg.client_name, control_hz=self.hz, timeout_s=cfg.request_timeout_s,
                         connect_timeout_s=cfg.connect_timeout_s, curve_keys=cfg.curve_keys, curve_name=cfg.curve_name),
            on_event=self._client_event,
        )
        self.welcome = self.client.connect()
        spec = self.welcome.spec
        if abs(spec.control_hz - self.hz) > 1e-6:
            log.warning("the policy was made for %g Hz; this loop runs at %g Hz", spec.control_hz, self.hz)
        cameras = self._cameras(spec.observation)
        arm.connect()
        if cfg.limits:
            self._narrow_limits(load_limits_file(cfg.limits))
        space = make_space(cfg.action_space, arm, self.hz, spec.action_dim)
        if isinstance(space, JointSpace) and cfg.estimator not in ("auto", "model"):
            raise SafetyError(f"joint-space actions use the 'model' (target-as-state) future state; "
                              f"--estimator {cfg.estimator} does not apply")
        obs_map = ObservationMap(arm, "native" if isinstance(space, JointSpace) else "task",
                                 extra_state=list(cfg.state_extra), instruction=cfg.task, cameras=cameras)
        check_against_welcome(obs_map, spec.observation)
        if cfg.telemetry:
            from policy_steer.transport.robot_telemetry import RobotTelemetry

            self.telemetry = RobotTelemetry(cfg.telemetry, robot=cfg.client_name)
            self.telemetry.session = self.welcome.session
        client = self.client
        self.safety = SafetyLayer(
            arm, space, obs_map, cfg.watchdog, control_hz=self.hz, link_up=lambda: client.connected,
            telemetry=self.telemetry,
            n_execute=cfg.n_execute or spec.n_action_steps,
        )
        if cfg.estop:
            self.estop = EstopServer(cfg.estop, self.safety.estop, self.safety.status)
        source = self.safety.guard(ClientChunkSource(self.client))
        self.loop = RealtimeLoop(self.safety, source, RealtimeConfig(
            mode=cfg.mode, control_hz=self.hz, trigger=cfg.trigger, n_execute=cfg.n_execute,
            estimator=cfg.estimator, max_steps=cfg.max_steps,
        ))
        loop = self.loop
        self.safety.on_stop.append(lambda _key: loop.stop())
        log.info(
            "robot: %s at %g Hz, %s actions (%s), policy %s (H=%d, A=%d) at %s; e-stop on %s",
            arm.name, self.hz, space.name, cfg.mode, spec.name, spec.horizon, spec.action_dim, cfg.server,
            self.estop.endpoint if self.estop else "nothing (no control socket)",
        )

    def _make_arm(self) -> Arm:
        cfg = self.cfg
        driver, args = cfg.driver, list(cfg.driver_arg)
        if cfg.dry_run:
            sub = VIRTUAL if driver == VIRTUAL else DRY_RUN_LEROBOT
            if driver.startswith(LEROBOT) or driver == VIRTUAL:
                if sub != driver:
                    log.warning("dry run: %s replaced by the MuJoCo virtual arm (%s); driver args %s ignored", driver, sub, args)
                    args = []
                driver = sub
        self.driver_name = driver
        options = {"control_hz": cfg.rate}
        if driver.startswith(LEROBOT):
            options.update(max_joint_velocity=cfg.max_joint_velocity, stop_torque_off=cfg.stop_torque_off)
            if cfg.rate is None:
                options["control_hz"] = 30.0
        return make_arm(driver, args, **options)

    def _cameras(self, observation: dict) -> tuple[str, ...]:
        """The cameras the policy wants; the virtual arm renders them at the promised size."""
        arm = self.arm
        cams = []
        for key, feat in observation.items():
            if not key.startswith(OBS_IMAGES + "."):
                continue
            cam = key[len(OBS_IMAGES) + 1:]
            shape = tuple(feat.shape)
            if hasattr(arm, "set_camera_size") and len(shape) == 3:
                arm.set_camera_size(cam, shape[:2])
            elif cam in getattr(arm, "camera_shapes", {}) and tuple(arm.camera_shapes[cam]) != shape:
                raise SafetyError(f"the policy wants {key} {list(shape)}; {arm.name} gives {list(arm.camera_shapes[cam])}")
            cams.append(cam)
        return tuple(cams)

    def _narrow_limits(self, spec: dict[str, Any]) -> None:
        arm = self.arm
        if hasattr(arm, "_limits_spec"):  # the lerobot adapter reads the file with its own joint names
            arm._limits_spec = spec
            arm._limits = None
            _ = arm.limits
        else:
            arm._limits = narrow(arm.limits, arm.joint_names, spec)

    # --- telemetry ---------------------------------------------------------------------------------
    def _client_event(self, name: str, fields: dict[str, Any]) -> None:
        tel = self.telemetry
        if tel is not None and name in ("connected", "reconnected") and fields.get("session"):
            tel.session = str(fields["session"])
        if name in ("disconnected", "reconnected", "socket_reset", "spec_changed", "handshake_failed"):
            log.warning("policy server link: %s %s", name, fields)
        if tel is not None:
            tel.event(name, **fields)

    # --- running -----------------------------------------------------------------------------------
    def run(self) -> RobotRunResult:
        if self.loop is None:
            raise RuntimeError("call start() first")
        cfg, safety, loop = self.cfg, self.safety, self.loop
        timer = None
        if cfg.duration_s is not None:
            timer = threading.Timer(cfg.duration_s, loop.stop)
            timer.daemon = True
        stop_metrics = threading.Event()
        metrics_thread = None
        if self.telemetry is not None and cfg.metrics_every_s > 0:
            metrics_thread = threading.Thread(target=self._metrics_loop, args=(stop_metrics,), daemon=True)
        interrupted = False
        safety.start()
        if timer:
            timer.start()
        if metrics_thread:
            metrics_thread.start()
        try:
            result = loop.run()
        except KeyboardInterrupt:
            interrupted = True
            safety.stop("stop:interrupted", "Ctrl-C in the robot process")
            raise
        except Exception as e:  # the run cannot go on: the arm stops before the error is reported
            safety.stop("stop:error", f"the control loop failed: {type(e).__name__}: {e}")
            raise
        finally:
            if timer:
                timer.cancel()
            stop_metrics.set()
            safety.close()
        metrics = safety.metrics()
        self._publish_metrics(metrics, final=True)
        return RobotRunResult(result, metrics, safety.stopped, safety.stop_key, interrupted)

    def _metrics_loop(self, stop: threading.Event) -> None:
        while not stop.wait(self.cfg.metrics_every_s):
            self._publish_metrics(self.safety.metrics(), final=False)

    def _publish_metrics(self, metrics: dict[str, Any], final: bool) -> None:
        if self.telemetry is not None:  # an event: RobotTelemetry's topics are action and event
            self.telemetry.event("safety_metrics", final=final, **{k: v for k, v in metrics.items() if k != "estops"})

    def write_report(self, result: RobotRunResult, path: str | Path) -> None:
        """Summary, limits, interventions and per-step records (runtime stamps joined with the safety layer's)."""
        safety, arm = self.safety, self.arm
        steps = []
        by_step = {r.step: r for r in safety.records}
        for r in result.runtime.records:
            s = by_step.get(r.step)
            steps.append({
                "step": r.step, "tick": r.tick, "started": r.started, "observed": r.observed, "acted": r.acted,
                "runtime_chunk": r.chunk_id, "decision": s.decision if s else None, "reason": s.reason if s else None,
                "safety_stamp": s.stamp if s else None, "command": (s.joints + [s.gripper]) if s and s.joints else None,
            })
        report = {
            "driver": self.driver_name, "arm": arm.name, "rate_hz": self.hz, "mode": self.cfg.mode,
            "action_space": safety.space.name, "policy": self.welcome.spec.to_dict() if self.welcome else None,
            "limits": arm.limits.describe(arm.joint_names), "watchdog": asdict(safety.watchdog.cfg),
            **result.summary(),
            "interventions_recent": [asdict(i) for i in list(safety.log.recent)[-500:]],
            "steps": steps,
        }
        Path(path).write_text(json.dumps(report, indent=1, default=str))

    def close(self) -> None:
        for what, fn in (
            ("safety", lambda: self.safety and self.safety.close()),
            ("e-stop socket", lambda: self.estop and self.estop.close()),
            ("client", lambda: self.client and self.client.close()),
            ("telemetry", lambda: self.telemetry and self.telemetry.close()),
            ("driver", lambda: self.arm and self.arm.disconnect()),
        ):
            try:
                fn()
            except Exception:  # noqa: BLE001 - close everything we can
                log.exception("closing the %s failed", what)
        self.telemetry = None

    def __enter__(self) -> RobotSession:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()


def run_session(cfg: RobotRunConfig) -> tuple[RobotSession, RobotRunResult]:
    """Start, run and close one session; returns both (the session for its records).

    In the main thread, SIGINT and SIGTERM safe-stop the arm (``stop:signal``) and end the run; before
    the run has started they interrupt the start-up.
    """
    session = RobotSession(cfg)

    def on_signal(signum: int, _frame: Any) -> None:
        if session.safety is None or session.loop is None:
            raise KeyboardInterrupt
        # On a thread: the handler runs on the control thread, which may hold the driver's lock right now.
        threading.Thread(target=session.safety.stop, name="policy-steer-signal-stop",
                         args=("stop:signal", f"{signal.Signals(signum).name} in the robot process")).start()

    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with session:
            t0 = time.monotonic()
            result = session.run()
            log.info("run ended after %d steps in %.1f s", result.runtime.steps, time.monotonic() - t0)
            if cfg.report:
                session.write_report(result, cfg.report)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return session, result

