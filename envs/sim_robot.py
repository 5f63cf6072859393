"""The sim-as-robot process: a task env run on the wall clock and driven by a policy server over ZeroMQ.

    policy-steer sim-robot --task push --variant obstacle --rate 20 --server tcp://127.0.0.1:5555 \\
        --mode vlash --episodes 3 --seed 0 --telemetry tcp://127.0.0.1:5557 --json sim_robot.json

It is the real-robot loop of DESIGN.md end to end on one machine, asynchrony included: the control
thread (:class:`~policy_steer.runtime.realtime.RealtimeLoop`) steps the env once per control period and
asks the server for chunks through the transport client
(:class:`~policy_steer.runtime.chunk_source.ClientChunkSource`) without ever waiting on it.

What the robot does when things go wrong comes from the loop and the client, and is reported here:

- no validated action queued for this step (a slow server, a timeout, ``busy``, the server gone): it
  **holds** (stays in place, gripper unchanged); it never runs a stale chunk (earlier episode, older than
  a queued one, entirely in the past, or answered after its deadline) nor a partial one (the client
  checks dtype, shape, finiteness and ``start_step`` of every chunk);
- the server went away: the client reconnects and says ``hello`` again on its own; the episode goes on
  (holding meanwhile) and picks the new chunks up as soon as the server answers;
- a safety layer (``--safety clip|hold|off``) checks every action against the env's action bounds before
  it reaches the simulator (a real arm's driver would check joint and workspace limits here).

Every executed action and every event (holds, reconnects, failed requests, dropped chunks, safety
interventions) is published on the robot's own telemetry PUB endpoint (``--telemetry``), the v1
convention of :mod:`policy_steer.transport.robot_telemetry`. Each episode ends with a one-line summary
(success, steps, holds, chunk latency p50/p95); ``--json`` writes them, with per-step records if
``--records true``.

The simulated time per control step is the task's own (``1 / control_hz`` of the env, 0.1 s for the
MuJoCo tasks): with ``--rate`` above the task's rate the simulated world runs faster than the wall
clock by that ratio, and the policy sees exactly the dynamics it was trained on.
``--dry_run true`` observes the env but never steps it (a real arm's dry run: commands are checked,
logged and published, not executed).
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from policy_steer.errors import ConfigError, PolicySteerError
from policy_steer.policies.observation import camera_env_kwargs
from policy_steer.runtime.chunk_source import ClientChunkSource
from policy_steer.runtime.planner import MODES, hold_action
from policy_steer.runtime.realtime import RealtimeChunk, RealtimeConfig, RealtimeLoop, RealtimeResult, RealtimeStep
from policy_steer.runtime.robot import SimRobot
from policy_steer.types import OBS_STATE, Observation

SAFETY_MODES = ("clip", "hold", "off")
SAFETY_EVENTS_PER_S = 5  # `safety` events published per second at most (each action message still says it)


@dataclass
class SimRobotConfig:
    """Options of ``policy-steer sim-robot``."""

    task: str = "push"
    variant: str = "nominal"
    rate: float | None = None  # control rate on the wall clock, Hz (None: the task's own rate)
    server: str = "tcp://127.0.0.1:5555"  # the policy server's ROUTER endpoint
    mode: str = "vlash"  # sync | async | vlash
    episodes: int = 1
    seed: int = 0  # episode i uses seed + i
    telemetry: str | None = None  # this robot's PUB endpoint (actions, events); e.g. tcp://127.0.0.1:5557
    json: str | None = None  # write the episode summaries here
    records: bool = False  # also write every step and every chunk request into the JSON
    max_episode_steps: int | None = None  # None: the task's own limit
    timeout_s: float = 1.0  # deadline of one observe -> chunk request
    connect_timeout_s: float = 30.0  # wait this long for the server at start
    trigger: int | None = None  # ask when at most this many actions remain (None: the measured delay)
    estimator: str = "auto"  # vlash future-state estimator: auto | target | delta | model
    max_chunk_age_s: float | None = None  # drop a chunk whose observation is older than this on arrival
    safety: str = "clip"  # clip: clip to the action bounds; hold: hold instead; off: no check
    dry_run: bool = False  # observe, never step the env
    action_mode: str = "delta"  # the env's action space: delta | absolute
    name: str = "sim-robot"  # sent in hello; in every telemetry header
    curve_keys: str | None = None  # folder with server.key and <curve_name>.key_secret
    curve_name: str = "client"

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"--mode must be one of {MODES}, got {self.mode!r}")
        if self.safety not in SAFETY_MODES:
            raise ConfigError(f"--safety must be one of {SAFETY_MODES}, got {self.safety!r}")
        if self.rate is not None and not self.rate > 0:
            raise ConfigError(f"--rate must be > 0 Hz, got {self.rate}")
        if self.episodes < 1:
            raise ConfigError(f"--episodes must be >= 1, got {self.episodes}")
        if not self.timeout_s > 0 or not self.connect_timeout_s > 0:
            raise ConfigError("--timeout_s and --connect_timeout_s must be > 0")


class ActionGuard:
    """The safety layer between the loop and the simulator: bounds and finiteness of every action.

    ``check(action, state, last)`` returns the action to execute and, when it intervened, why.
    """

    def __init__(self, mode: str, low: np.ndarray, high: np.ndarray, robot_desc) -> None:
        self.mode = mode
        self.low = np.asarray(low, np.float32)
        self.high = np.asarray(high, np.float32)
        self.desc = robot_desc
        self.interventions = 0

    def check(self, action: np.ndarray, state: np.ndarray, last: np.ndarray | None) -> tuple[np.ndarray, str | None]:
        a = np.asarray(action, np.float32)
        if self.mode == "off":
            return a, None
        if not np.all(np.isfinite(a)):
            self.interventions += 1
            return hold_action(state, self.desc, a.shape[0], last), "non-finite action: held"
        outside = (a < self.low - 1e-6) | (a > self.high + 1e-6)
        if not outside.any():
            return a, None
        self.interventions += 1
        dims = [int(i) for i in np.flatnonzero(outside)]
        if self.mode == "hold":
            return hold_action(state, self.desc, a.shape[0], last), f"action outside bounds in dims {dims}: held"
        return np.clip(a, self.low, self.high), f"action outside bounds in dims {dims}: clipped"


class GuardedSimRobot:
    """:class:`~policy_steer.runtime.robot.SimRobot` behind an :class:`ActionGuard`, with a dry-run switch.

    A :class:`~policy_steer.runtime.robot.Robot` for the realtime loop. It remembers what it last did
    (``last_executed``, ``last_intervention``) so the process can publish it after each step.
    """

    def __init__(self, env, rate: float, safety: str = "clip", dry_run: bool = False) -> None:
        self.sim = SimRobot(env)
        self.description = self.sim.description
        self.control_hz = float(rate)
        self.instruction = self.sim.instruction
        self.dry_run = dry_run
        space = env.action_space
        self.guard = ActionGuard(safety, space.low, space.high, self.description)
        self.last_executed: np.ndarray | None = None
        self.last_intervention: str | None = None
        self._state: np.ndarray | None = None

    @property
    def episode_over(self) -> bool:
        return self.sim.episode_over

    @property
    def info(self) -> dict[str, Any]:
        return self.sim.info

    @property
    def steps(self) -> int:
        return self.sim.steps

    def episode_info(self) -> dict[str, Any]:
        return self.sim.episode_info()

    def reset(self, seed: int | None = None) -> Observation:
        self.last_executed = None
        self.last_intervention = None
        obs = self.sim.reset(seed=seed)
        self._state = np.asarray(obs[OBS_STATE], np.float32)
        return obs

    def observe(self) -> Observation:
        obs = self.sim.observe()
        self._state = np.asarray(obs[OBS_STATE], np.float32)
        return obs

    def act(self, action: np.ndarray) -> None:
        state = self._state if self._state is not None else np.asarray(self.sim.observe()[OBS_STATE], np.float32)
        executed, why = self.guard.check(action, state, self.last_executed)
        self.last_executed, self.last_intervention = executed, why
        if not self.dry_run:
            self.sim.act(executed)


def check_fit(env, spec) -> None:
    """Raise ConfigError, naming the mismatch, when the server's policy does not fit the task env."""
    u = env.unwrapped
    obs = env.observation_space
    problems = []
    for key, feat in spec.observation.items():
        if key not in obs.spaces:
            problems.append(f"the policy wants {key!r}, which task {u.task!r} does not provide")
        elif tuple(obs.spaces[key].shape) != tuple(feat.shape):
            problems.append(f"{key!r} is {list(feat.shape)} for the policy, {list(obs.spaces[key].shape)} in task {u.task!r}")
    if spec.action_dim != u.action_dim:
        problems.append(f"the policy's actions have {spec.action_dim} dims, task {u.task!r} takes {u.action_dim}")
    if problems:
        raise ConfigError(f"the policy served by the server does not fit {u.task}/{u.variant}: " + "; ".join(problems))


def _quantiles(values: list[float], qs: tuple[float, ...]) -> list[float | None]:
    if not values:
        return [None for _ in qs]
    return [float(np.quantile(values, q)) for q in qs]


def episode_summary(result: RealtimeResult, episode: int, seed: int, extra: dict[str, Any]) -> dict[str, Any]:
    """The per-episode figures printed and written to JSON."""
    base = result.summary()
    lat = base.pop("chunk_latency_ms")
    lat_p50, lat_p95 = _quantiles(lat, (0.5, 0.95))
    jitter_ms = [(s.started - s.tick) * 1e3 for s in result.records]
    periods = [(b.started - a.started) * 1e3 for a, b in zip(result.records, result.records[1:])]
    j50, j95, jmax = _quantiles(jitter_ms, (0.5, 0.95, 1.0))
    holds = 0  # runs of consecutive held steps
    prev_held = False
    for s in result.records:
        held = s.chunk_id is None
        holds += held and not prev_held
        prev_held = held
    return {
        "episode": episode,
        "seed": seed,
        **base,
        "holds": holds,
        "latency_ms_p50": lat_p50,
        "latency_ms_p95": lat_p95,
        "tick_late_ms_p50": j50,
        "tick_late_ms_p95": j95,
        "tick_late_ms_max": jmax,
        "period_ms_std": float(np.std(periods)) if periods else None,
        "failure": result.info.get("failure"),  # why the env ended the episode early (a collision, ...), or None
        **extra,
    }


def _fmt(v: float | None, digits: int = 1) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def summary_line(s: dict[str, Any]) -> str:
    failure = f" failure={s['failure']}" if s.get("failure") else ""
    return (
        f"episode {s['episode']} seed {s['seed']}: success={s['success']}{failure} steps={s['steps']} "
        f"stalls={s['stall_steps']} holds={s['holds']} chunks={s['n_chunks']} dropped={s['dropped']} "
        f"failed={s['failed']} reconnects={s['reconnects']} safety={s['safety_interventions']} "
        f"latency p50={_fmt(s['latency_ms_p50'])} ms p95={_fmt(s['latency_ms_p95'])} ms "
        f"late ticks={s['late_ticks']}"
    )


class SimRobotProcess:
    """One sim-as-robot run: connect, then episodes on the wall clock, publishing as it goes."""

    def __init__(self, cfg: SimRobotConfig) -> None:
        self.cfg = cfg
        self.telemetry = None
        self.client = None
        self.loop: RealtimeLoop | None = None
        self._stop = threading.Event()
        self._fatal: str | None = None
        self._holding = False
        self._hold_start = 0
        self._episode = 0
        self._safety_window = 0.0
        self._safety_sent = self._safety_suppressed = 0

    # --- events from the client's I/O thread ------------------------------------------------------
    def _on_client_event(self, name: str, fields: dict[str, Any]) -> None:
        tel = self.telemetry
        if name in ("connected", "reconnected") and fields.get("session"):
            if tel is not None:
                tel.session = str(fields["session"])
        if tel is not None:
            tel.event(name, **fields)
        if name in ("disconnected", "reconnected", "socket_reset", "spec_changed", "handshake_failed"):
            print(f"sim-robot: {name} {fields}", flush=True)
        if name == "spec_changed":  # the server now serves another policy: its chunks would not fit
            self._fatal = f"the server changed its policy ({fields.get('policy')}); stopping"
            self.stop()

    # --- hooks of the realtime loop (control thread) ----------------------------------------------
    def _on_step(self, rec: RealtimeStep) -> None:
        robot, tel = self.robot, self.telemetry
        held = rec.chunk_id is None
        if tel is not None:
            tel.action(
                rec.step, robot.last_executed, rec.chunk_id, rec.index, rec.acted,
                commanded=np.asarray(rec.action, np.float32), safety=robot.last_intervention,
                dry_run=self.cfg.dry_run,
            )
            if robot.last_intervention is not None:
                self._safety_event(tel, rec)
        if held and not self._holding:
            self._holding, self._hold_start = True, rec.step
            if tel is not None:
                tel.event("hold", step=rec.step, reason=self._hold_reason())
        elif not held and self._holding:
            self._holding = False
            if tel is not None:
                tel.event("resumed", step=rec.step, held_steps=rec.step - self._hold_start, chunk_id=rec.chunk_id)

    def _safety_event(self, tel, rec: RealtimeStep) -> None:
        # Every intervention is in its `action` message (`safety`); events are capped per second so a
        # policy that is always out of bounds does not flood the subscribers.
        now = time.monotonic()
        if now - self._safety_window >= 1.0:
            if self._safety_suppressed:
                tel.event("safety_suppressed", count=self._safety_suppressed, per_s=SAFETY_EVENTS_PER_S)
            self._safety_window, self._safety_sent, self._safety_suppressed = now, 0, 0
        if self._safety_sent < SAFETY_EVENTS_PER_S:
            self._safety_sent += 1
            tel.event("safety", step=rec.step, what=self.robot.last_intervention, chunk_id=rec.chunk_id)
        else:
            self._safety_suppressed += 1

    def _hold_reason(self) -> str:
        if self.client is not None and not self.client.connected:
            return "server_unreachable"
        return "waiting_for_chunk"

    def _on_chunk(self, rec: RealtimeChunk) -> None:
        tel = self.telemetry
        if tel is None:
            return
        if rec.error is not None:
            tel.event("request_failed", obs_step=rec.obs_step, start_step=rec.start_step, error=rec.error[:300])
        elif rec.dropped is not None:
            tel.event("chunk_dropped", obs_step=rec.obs_step, start_step=rec.start_step, reason=rec.dropped)
        else:
            tel.event(
                "chunk_queued", chunk_id=rec.chunk_id, obs_step=rec.obs_step, first_step=rec.first_step,
                first_index=rec.first_index, latency_ms=None if rec.latency_s is None else rec.latency_s * 1e3,
            )

    # --- lifecycle ----------------------------------------------------------------------------------
    def stop(self) -> None:
        """Stop after the current control step (signal-safe)."""
        self._stop.set()
        if self.loop is not None:
            self.loop.stop()

    def run(self) -> dict[str, Any]:
        """Connect, run the episodes; returns the report written to JSON. Raises PolicySteerError."""
        from policy_steer import envs
        from policy_steer.transport.client import PolicyClient
        from policy_steer.transport.errors import TransportError
        from policy_steer.transport.robot_telemetry import RobotTelemetry

        cfg = self.cfg
        if cfg.telemetry:
            self.telemetry = RobotTelemetry(cfg.telemetry, robot=cfg.name)
        try:
            env_kwargs: dict[str, Any] = {"action_mode": cfg.action_mode, "render_mode": None}
            if cfg.max_episode_steps is not None:
                env_kwargs["max_episode_steps"] = int(cfg.max_episode_steps)
            env = envs.make(cfg.task, cfg.variant, **env_kwargs)  # fails fast on a bad task before connecting
            rate = float(cfg.rate or env.unwrapped.control_hz)
            self.client = PolicyClient(
                endpoint=cfg.server, name=cfg.name, control_hz=rate, timeout_s=cfg.timeout_s,
                connect_timeout_s=cfg.connect_timeout_s, curve_keys=cfg.curve_keys, curve_name=cfg.curve_name,
                on_event=self._on_client_event,
            )
            try:
                welcome = self.client.connect()
            except TransportError as e:
                raise PolicySteerError(f"cannot reach the policy server at {cfg.server}: {e}") from None
            cameras = camera_env_kwargs(welcome.spec.observation)
            if cameras:  # the policy reads images: render the cameras it asks for
                env = envs.make(cfg.task, cfg.variant, **env_kwargs, **cameras)
            check_fit(env, welcome.spec)
            self.robot = GuardedSimRobot(env, rate, cfg.safety, cfg.dry_run)
            u = env.unwrapped
            source = ClientChunkSource(self.client, timeout_s=cfg.timeout_s)
            rt = RealtimeConfig(
                mode=cfg.mode, control_hz=rate, trigger=cfg.trigger, estimator=cfg.estimator,
                max_steps=int(u.max_episode_steps), max_chunk_age_s=cfg.max_chunk_age_s,
            )
            self.loop = RealtimeLoop(self.robot, source, rt, on_step=self._on_step, on_chunk=self._on_chunk)
            scale = (1.0 / u.control_hz) * rate
            print(
                f"sim-robot: connected to {cfg.server} (policy {welcome.spec.name}, session {welcome.session}); "
                f"{cfg.task}/{cfg.variant} at {rate:g} Hz, mode {cfg.mode}"
                + (f"; telemetry on {self.telemetry.endpoint}" if self.telemetry else "")
                + (f"; simulated time runs {scale:g}x the wall clock" if abs(scale - 1) > 1e-9 else "")
                + ("; DRY RUN (the env is never stepped)" if cfg.dry_run else ""),
                flush=True,
            )
            return self._episodes(rate)
        finally:
            if self.client is not None:
                self.client.close()
            if self.telemetry is not None:
                self.telemetry.close()

    def _episodes(self, rate: float) -> dict[str, Any]:
        cfg = self.cfg
        report: dict[str, Any] = {"config": asdict(cfg), "rate_hz": rate, "episodes": []}
        if cfg.records:
            report["records"] = []
        for i in range(cfg.episodes):
            if self._stop.is_set():
                break
            seed = cfg.seed + i
            self._episode = i
            self._holding = False
            if self.telemetry is not None:
                self.telemetry.episode = i
                self.telemetry.event("episode_start", seed=seed)
            reconnects0, safety0 = self.client.stats.reconnects, self.robot.guard.interventions
            t0 = time.monotonic()
            result = self.loop.run(seed=seed)
            extra = {
                "reconnects": self.client.stats.reconnects - reconnects0,
                "safety_interventions": self.robot.guard.interventions - safety0,
                "wall_s": time.monotonic() - t0,
                "interrupted": self._stop.is_set(),
            }
            summary = episode_summary(result, i, seed, extra)
            report["episodes"].append(summary)
            if cfg.records:
                report["records"].append({
                    "episode": i,
                    "steps": [asdict(s) for s in result.records],
                    "chunks": [{**asdict(c), "latency_s": c.latency_s} for c in result.chunks],
                })
            if self.telemetry is not None:
                self.telemetry.event("episode_end", **{k: v for k, v in summary.items() if not isinstance(v, list)})
            print("sim-robot: " + summary_line(summary), flush=True)
        eps = report["episodes"]
        report["success_rate"] = float(np.mean([e["success"] for e in eps])) if eps else None
        if self._fatal:
            report["error"] = self._fatal
        return report


def _write_json(path: str, report: dict[str, Any]) -> None:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(p.suffix + ".tmp")
    tmp.write_text(json.dumps(report, indent=1, default=_json_default, allow_nan=False))
    os.replace(tmp, p)


def _json_default(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    return str(v)


def _finite(report: Any) -> Any:
    """NaN/inf -> None, so the JSON is strict."""
    if isinstance(report, float):
        return report if math.isfinite(report) else None
    if isinstance(report, dict):
        return {k: _finite(v) for k, v in report.items()}
    if isinstance(report, list):
        return [_finite(v) for v in report]
    return report


def run_sim_robot(cfg: SimRobotConfig) -> int:
    """``policy-steer sim-robot``: 0 when the episodes ran (or SIGINT/SIGTERM stopped them), 1 on a fatal error."""
    proc = SimRobotProcess(cfg)

    def on_signal(*_: Any) -> None:
        if proc.loop is None:
            raise KeyboardInterrupt  # still connecting: leave at once (run() closes what it opened)
        proc.stop()  # in the loop: finish this control step, then end the episode cleanly

    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        report = proc.run()
    except KeyboardInterrupt:
        print("sim-robot: stopped before the first episode", flush=True)
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if cfg.json:
        _write_json(cfg.json, _finite(report))
    eps = report["episodes"]
    n_ok = sum(e["success"] for e in eps)
    print(f"sim-robot: done, {len(eps)} episode(s), {n_ok} successful" + (f"; wrote {cfg.json}" if cfg.json else ""),
          flush=True)
    if report.get("error"):
        print(f"sim-robot: error: {report['error']}", file=sys.stderr, flush=True)
        return 1
    return 0


COMMANDS = {"sim-robot": (SimRobotConfig, run_sim_robot)}


def main(argv: list[str] | None = None) -> int:
    """``python -m policy_steer.envs.sim_robot ...`` (the same as ``policy-steer sim-robot``)."""
    from policy_steer.cli.main import main as cli_main

    return cli_main(["sim-robot", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
