"""The robot-side host: one process for the real arm and for the simulated task.

``policy-steer robot`` and ``policy-steer sim-robot`` are this host with different drivers:

    driver (Arm)           virtual arm | lerobot:<type> | a simulated task (drivers/sim_task.py)
      ^  |
    SafetyLayer            watchdog, e-stop, command filter; validated chunk rows only (safety.py)
      ^  |                 = the Robot the loop drives
    ControlLoop            policy_steer.runtime.loop, on a WallClock (or, sim-robot --clock virtual, a
      ^  |                 VirtualClock: simulated time pauses while a chunk is computed)
    guarded ClientChunkSource -> PolicyClient -> the policy server (protocol v2)

Around them: the episode context (:mod:`~policy_steer.hardware.context`: the simulator's ground
truth, or ``--instruction``/``--scene FILE.json`` and a Python :class:`ContextProvider` on a real
robot; sent at every episode start and, for a dynamic scene, before every request), the robot's
telemetry PUB socket (``action`` every step, ``event`` for holds, link changes, chunks, safety
interventions, episodes and periodic ``safety_metrics``), the e-stop control socket, signals and the
JSON report.

:class:`RobotHost` does it in steps a test can reach into: ``start()`` (driver, connection, spec
checks, safety layer, sockets, loop), ``run()`` (the episodes), ``write_report()``, ``close()``.
:func:`run_host` is the command: it adds the signal handling and the printed lines.

**Options** (one set for both commands: :class:`HostOptions`; each command adds its driver's):
``--server``, ``--mode``, ``--rate``, ``--trigger``, ``--n_execute``, ``--estimator``,
``--max_chunk_age_s``, ``--request_timeout_s``, ``--connect_timeout_s``, ``--client_name``,
``--curve_keys``, ``--curve_name``, ``--max_steps``, ``--duration_s``, ``--dry_run``,
``--watchdog.*``, ``--estop``, ``--telemetry``, ``--trusted_network``, ``--metrics_every_s``, ``--report``,
``--records``.

**Who may reach the host's sockets** (``--estop``: e-stop and status; ``--telemetry``): the policy
server's rule. Loopback (the defaults) binds as it is. An endpoint beyond loopback is refused (exit 2,
one line, nothing bound) unless ``--curve_keys DIR`` is given, and then the socket is a CURVE server with
the robot's key pair (``DIR/<curve_name>.key_secret``, the one it uses towards the policy server)
admitting only the public keys in ``DIR/authorized_clients/`` (``policy-steer estop --curve_keys DIR
--curve_name operator --robot_key <curve_name>``), or unless ``--trusted_network true``: no encryption,
anyone on the network can stop the arm, query its status and read its telemetry (a warning). Each
socket's mode is logged and printed on the "connected" line.

**--dry_run** (both commands, one meaning): everything runs (connection, chunks, the safety layer's
checks, records, telemetry) but no command reaches the driver: a real arm is only observed (it stays
where it is, torque as the driver left it), a simulated task is never stepped. A safe stop still
reaches the driver. (To run the lerobot adapter on the MuJoCo stand-in instead of the real robot:
``policy-steer robot --virtual_arm true``.)

**Signals and exit codes**: SIGINT/SIGTERM are the operator's stop: the safety layer safe-stops the arm
(``stop:signal``; a simulated task is not stepped again), the episode in progress ends (``interrupted``)
and the report is written; exit 0. Exit 3 when the safety layer stopped the arm on its own or on an
e-stop (watchdog, e-stop, driver error, the server changed its policy); 2 on a configuration, driver or
connection error, or an episode the server refused (one line on stderr).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from policy_steer.config import FloatList, StrList
from policy_steer.errors import ConfigError, PolicySteerError
from policy_steer.hardware.arm import Arm
from policy_steer.hardware.context import ContextProvider, load_scene_file
from policy_steer.hardware.drivers import LEROBOT, VIRTUAL, VIRTUAL_LEROBOT, make_arm
from policy_steer.hardware.errors import SafetyError
from policy_steer.hardware.estop import DEFAULT_ENDPOINT, EstopServer
from policy_steer.hardware.limits import load_limits_file
from policy_steer.hardware.observation import ObservationMap, check_against_welcome
from policy_steer.hardware.safety import EXEC, HOLD, SafetyLayer, SafetyStep
from policy_steer.hardware.spaces import JointSpace, make_space
from policy_steer.hardware.watchdog import WatchdogConfig
from policy_steer.runtime.planner import MODES
from policy_steer.types import OBS_IMAGES, EpisodeContext

log = logging.getLogger("policy_steer.hardware")

CLOCKS = ("wall", "virtual")
STOPPED_EXIT = 3
SIGNAL_STOP = "stop:signal"
WALL_REQUEST_TIMEOUT_S = 2.0  # the default deadline of one chunk request on the wall clock
VIRTUAL_REQUEST_TIMEOUT_S = 60.0  # ... on the virtual clock, where the simulation waits for the chunk


@dataclass
class HostOptions:
    """The options every robot host has (``policy-steer robot`` and ``policy-steer sim-robot``)."""

    server: str = "tcp://127.0.0.1:5555"  # the policy server's ROUTER endpoint
    mode: str = "vlash"  # execution mode: sync | async | vlash
    rate: float | None = None  # control rate in Hz (None: the driver's own; a simulated task's is its task rate)
    trigger: int | None = None  # ask for a chunk when at most this many actions remain (None: the delay estimate)
    n_execute: int | None = None  # actions run per chunk (None: the policy's n_action_steps)
    estimator: str = "auto"  # vlash future state: auto (the best the arm's description allows) | kinematic | model-robot | model | delta | target
    max_chunk_age_s: float | None = None  # drop a chunk whose observation is older than this on arrival (None: never)
    request_timeout_s: float | None = None  # deadline of one chunk request (None: 2 s on the wall clock, 60 s on the virtual)
    connect_timeout_s: float = 30.0  # wait this long for the server's welcome (and an episode's answer)
    client_name: str = "policy-steer-robot"  # the name sent in hello (server logs) and in every telemetry header
    curve_keys: str | None = None  # folder of CURVE keys (policy-steer keys): server.key, <curve_name>.key_secret; for --estop/--telemetry beyond loopback also authorized_clients/
    curve_name: str = "client"  # which key pair of --curve_keys is this robot's
    max_steps: int | None = None  # control steps per episode (None: a simulated task's episode length; an arm: until stopped)
    duration_s: float | None = None  # end the run (the arm holds) after this many wall-clock seconds (None: no limit)
    dry_run: bool = False  # run everything but send no command to the driver (arm observed only; a task never stepped)
    watchdog: WatchdogConfig = field(default_factory=WatchdogConfig)  # hold and stop when chunks stop coming
    estop: str = DEFAULT_ENDPOINT  # bind the e-stop control socket here (policy-steer estop; '' for none)
    telemetry: str | None = None  # bind the robot's telemetry PUB socket here (actions, events), e.g. tcp://127.0.0.1:5557
    trusted_network: bool = False  # allow --estop/--telemetry beyond loopback without --curve_keys (unencrypted: anyone there can stop the arm and read its telemetry)
    metrics_every_s: float = 1.0  # period of the safety_metrics telemetry event (0: only at the end)
    report: str | None = None  # write the JSON report (episodes, safety figures) to this file; each episode also goes to <report>.episodes.jsonl as it ends
    records: bool = False  # also write every step and every chunk request into the report
    record_bag: str | None = None  # write one ROS 2 bag (rosbag2 folder, MCAP) per episode under this new folder: episode<i>_seed<seed>
    foxglove: int | None = None  # serve the live view (Foxglove WebSocket, the bag's topics) on this port (0: a free one)
    foxglove_host: str = "127.0.0.1"  # --foxglove binds here (beyond loopback only with --trusted_network: the protocol has no authentication)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"--mode must be one of {MODES}, got {self.mode!r}")
        if self.rate is not None and not self.rate > 0:
            raise ConfigError(f"--rate must be > 0 Hz, got {self.rate}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError(f"--max_steps must be >= 1, got {self.max_steps}")
        if self.request_timeout_s is not None and not self.request_timeout_s > 0:
            raise ConfigError(f"--request_timeout_s must be > 0, got {self.request_timeout_s}")
        if not self.connect_timeout_s > 0:
            raise ConfigError(f"--connect_timeout_s must be > 0, got {self.connect_timeout_s}")
        if self.duration_s is not None and not self.duration_s > 0:
            raise ConfigError(f"--duration_s must be > 0, got {self.duration_s}")
        from policy_steer.transport.robot_telemetry import robot_bind_mode

        for what, endpoint in (("--estop", self.estop), ("--telemetry", self.telemetry)):
            if endpoint:  # refused here, before anything connects or binds (the sockets check again)
                robot_bind_mode(endpoint, what, self.curve_keys, self.trusted_network)
        from policy_steer.recording.options import check_recording_options

        check_recording_options(self.record_bag, self.foxglove, self.foxglove_host, self.trusted_network)


@dataclass
class RobotConfig(HostOptions):
    """``policy-steer robot``: a real arm (or the virtual arm) driven by a policy server."""

    driver: str = VIRTUAL  # the arm: virtual | lerobot:<type>, e.g. lerobot:so101_follower
    driver_arg: StrList = field(default_factory=StrList)  # key=value for the driver (repeat the flag, or a comma list)
    virtual_arm: bool = False  # replace the driver by the MuJoCo virtual arm (lerobot:<type>: the lerobot stand-in)
    action_space: str = "auto"  # what the policy's actions mean: auto | joint | ee_delta | ee_absolute
    instruction: str | None = None  # the task instruction sent with every observation and in the episode context
    scene: str | None = None  # JSON file with the scene (or a whole episode context) sent at every episode start
    state_extra: FloatList = field(default_factory=FloatList)  # values appended to observation.state (dry runs of task policies)
    limits: str | None = None  # YAML file that narrows the driver's limits (policy_steer.hardware.limits)
    max_joint_velocity: float | None = None  # lerobot drivers: joint units per second (None: by motor mode)
    stop_torque_off: bool = False  # lerobot drivers: the safe stop also disables torque (drops the arm!)


@dataclass
class SimRobotConfig(HostOptions):
    """``policy-steer sim-robot``: a simulated task run by the robot host, driven by a policy server."""

    client_name: str = "sim-robot"  # the name sent in hello (server logs) and in every telemetry header
    estop: str = ""  # bind the e-stop control socket here (policy-steer estop; '' for none)
    task: str = "push"  # the simulated task (policy-steer envs list)
    variant: str = "nominal"  # its variant: nominal | obstacle | shifted-surface | clutter | moving-goal
    variant_params: str = ""  # the variant's parameters, "obstacle.height=0.08;obstacle.radius=0.03" (policy-steer envs list)
    episodes: int = 1  # episodes to run
    seed: int = 0  # episode i uses seed + i
    clock: str = "wall"  # wall: real time at --rate; virtual: simulated time pauses while a chunk is computed
    latency: str = "0"  # virtual clock: inference delay in control steps, as in bench (N, uniform:LO-HI, replay:FILE)
    action_mode: str = "delta"  # the task's action space: delta | absolute

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.clock not in CLOCKS:
            raise ConfigError(f"--clock must be one of {CLOCKS}, got {self.clock!r}")
        if self.clock == "wall" and str(self.latency) != "0":
            raise ConfigError("--latency is the virtual clock's simulated inference delay: give --clock virtual too")
        if self.episodes < 1:
            raise ConfigError(f"--episodes must be >= 1, got {self.episodes}")
        if self.seed < 0:
            raise ConfigError(f"--seed must be >= 0, got {self.seed}")


class EpisodeRefused(PolicySteerError):
    """The policy server refused an episode's context (a steering strategy cannot act with it)."""


@dataclass
class HostResult:
    """What a run did: one loop result and summary per episode, the safety figures, how it ended."""

    episodes: list[dict[str, Any]]
    results: list[Any]  # runtime.loop.LoopResult per episode
    safety: dict[str, Any]
    stopped: bool  # the safety layer stopped the arm
    stop_reason: str | None
    interrupted: bool = False  # the operator's signal ended the run
    error: str | None = None

    @property
    def exit_code(self) -> int:
        """0: the run ended (or the operator stopped it); 3: the safety layer stopped the arm."""
        return STOPPED_EXIT if self.stopped and self.stop_reason != SIGNAL_STOP else 0


class RobotHost:
    """One robot host: ``start()``, ``run()``, ``close()`` (or ``with``); see the module docstring.

    ``arm``: a driver built by the caller (else the config's). ``context_provider``: a perception hook
    (:class:`~policy_steer.hardware.context.ContextProvider`) asked for the episode context at every
    episode start and, when its scene is dynamic, before every chunk request.
    """

    def __init__(self, cfg: HostOptions, arm: Arm | None = None, context_provider: ContextProvider | None = None) -> None:
        if context_provider is not None and not isinstance(context_provider, ContextProvider):
            raise ConfigError("context_provider must have a dynamic_scene flag and context(base, seed) "
                              "(policy_steer.hardware.context.ContextProvider)")
        self.cfg = cfg
        self.sim = isinstance(cfg, SimRobotConfig)
        self.command = "sim-robot" if self.sim else "robot"
        self.arm = arm
        self.provider = context_provider
        self.client = None
        self.welcome = None
        self.safety: SafetyLayer | None = None
        self.loop = None
        self.clock = None
        self.estop: EstopServer | None = None
        self.telemetry = None
        self.hz: float | None = None
        self.driver_name = cfg.driver if isinstance(cfg, RobotConfig) else f"sim:{cfg.task}"
        self.scene_context: EpisodeContext | None = None  # robot: --scene FILE.json, read at start
        self.interrupted = False
        self.error: str | None = None
        self._stop_run = threading.Event()
        self._context: EpisodeContext | None = None
        self._context_episode = -1
        self._episode_safety: list[SafetyStep] = []  # the safety layer's steps of this episode (--records only)
        self._counts = {"executed": 0, "held": 0, "holds": 0}  # this episode's; holds: runs of held steps
        self._holding = False
        self._hold_start = 0
        self.result: HostResult | None = None
        self.live = None  # --foxglove: the live view (policy_steer.recording.LiveView), for the whole run

    # --- building ----------------------------------------------------------------------------------
    def start(self) -> RobotHost:
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def _start(self) -> None:
        from policy_steer.runtime.loop import ControlLoop, LoopConfig, VirtualClock, WallClock
        from policy_steer.transport.client import ClientConfig, PolicyClient
        from policy_steer.transport.errors import TransportError

        from policy_steer.transport.robot_telemetry import robot_bind_mode

        cfg = self.cfg
        for what, endpoint in (("--estop", cfg.estop), ("--telemetry", cfg.telemetry)):
            if endpoint:  # the config checked them too; a config changed since must not open a socket unguarded
                robot_bind_mode(endpoint, what, cfg.curve_keys, cfg.trusted_network)
        if isinstance(cfg, RobotConfig) and cfg.scene:
            self.scene_context = load_scene_file(cfg.scene)  # a bad file fails before anything connects
        if self.arm is None:
            self.arm = self._make_arm()
        arm = self.arm
        self.hz = float(cfg.rate or arm.control_hz)
        virtual = self.sim and cfg.clock == "virtual"
        timeout = cfg.request_timeout_s or (VIRTUAL_REQUEST_TIMEOUT_S if virtual else WALL_REQUEST_TIMEOUT_S)
        self.client = PolicyClient(
            ClientConfig(endpoint=cfg.server, name=cfg.client_name, control_hz=self.hz,
                         timeout_s=max(timeout, cfg.connect_timeout_s), connect_timeout_s=cfg.connect_timeout_s,
                         curve_keys=cfg.curve_keys, curve_name=cfg.curve_name),
            on_event=self._client_event,
        )
        try:
            self.welcome = self.client.connect()
        except TransportError as e:
            raise PolicySteerError(f"cannot reach the policy server at {cfg.server}: {e}") from None
        spec = self.welcome.spec
        if abs(spec.control_hz - self.hz) > 1e-6 and not self.sim:
            log.warning("the policy was made for %g Hz; this loop runs at %g Hz", spec.control_hz, self.hz)
        arm.check_policy(spec)
        cameras = self._cameras(spec.observation)
        arm.connect()
        if isinstance(cfg, RobotConfig) and cfg.limits:
            arm.narrow_limits(load_limits_file(cfg.limits))
        space = make_space(cfg.action_space if isinstance(cfg, RobotConfig) else "auto", arm, self.hz, spec.action_dim)
        if isinstance(space, JointSpace) and cfg.estimator not in ("auto", "model"):
            raise SafetyError(f"joint-space actions use the 'model' (target-as-state) future state; "
                              f"--estimator {cfg.estimator} does not apply")
        native_layout = isinstance(space, JointSpace) or arm.state_layout is not None
        instruction = cfg.instruction if isinstance(cfg, RobotConfig) else None
        if instruction is None and self.scene_context is not None:
            instruction = self.scene_context.instruction
        obs_map = ObservationMap(
            arm, "native" if native_layout else "task",
            extra_state=list(cfg.state_extra) if isinstance(cfg, RobotConfig) else None,
            instruction=instruction or arm.instruction, cameras=cameras,
        )
        check_against_welcome(obs_map, spec.observation)
        if cfg.telemetry:
            from policy_steer.transport.robot_telemetry import RobotTelemetry

            self.telemetry = RobotTelemetry(cfg.telemetry, robot=cfg.client_name, curve_keys=cfg.curve_keys,
                                            curve_name=cfg.curve_name, trusted_network=cfg.trusted_network)
            self.telemetry.session = self.welcome.session
        client = self.client
        dynamic = self.provider.dynamic_scene if self.provider is not None else None
        self.safety = SafetyLayer(
            arm, space, obs_map, cfg.watchdog, control_hz=self.hz, link_up=lambda: client.connected,
            telemetry=self.telemetry, n_execute=cfg.n_execute or spec.n_action_steps, dry_run=cfg.dry_run,
            use_watchdog=not virtual, context=self._episode_context, dynamic_scene=dynamic,
        )
        self._describe_arm_model(arm, native_layout)
        if cfg.estop:
            self.estop = EstopServer(cfg.estop, self.safety.estop, self.safety.status, curve_keys=cfg.curve_keys,
                                     curve_name=cfg.curve_name, trusted_network=cfg.trusted_network)
        from policy_steer.runtime.chunk_source import ClientChunkSource

        source = self.safety.guard(ClientChunkSource(self.client, timeout_s=timeout))
        self.clock = VirtualClock(cfg.latency, self.hz) if virtual else WallClock(self.hz)
        max_steps = cfg.max_steps
        if self.sim:
            from policy_steer.hardware.drivers.sim_task import SimTaskArm

            if isinstance(arm, SimTaskArm):
                max_steps = arm.max_episode_steps  # the task's own limit (a dry run never ends its episode)
        self.loop = ControlLoop(self.safety, source, self.clock, LoopConfig(
            mode=cfg.mode, trigger=cfg.trigger, n_execute=cfg.n_execute, estimator=cfg.estimator,
            max_steps=max_steps, max_chunk_age_s=cfg.max_chunk_age_s,
        ), on_step=self._on_step, on_chunk=self._on_chunk)
        loop = self.loop
        self.safety.on_stop.append(lambda _key: loop.stop())
        if cfg.foxglove is not None:
            from policy_steer.recording import LiveView

            self.live = LiveView(cfg.foxglove, cfg.foxglove_host, name=cfg.client_name)
            self.live.advertise(cameras)
            self._say(f"live view: Foxglove on ws://{cfg.foxglove_host}:{self.live.port} (open docs/foxglove_layout.json)")
        self._say(
            f"connected to {cfg.server} (policy {spec.name}, session {self.welcome.session}); {arm.name} at "
            f"{self.hz:g} Hz, {space.name} actions, mode {cfg.mode}, {self.clock.name} clock"
            + (f" (latency {cfg.latency} steps)" if virtual else "")
            + (f"; simulated time runs {self.hz / arm.control_hz:g}x the wall clock"
               if self.sim and not virtual and abs(self.hz - arm.control_hz) > 1e-9 else "")
            + (f"; telemetry on {self.telemetry.endpoint} ({self.telemetry.mode_line})" if self.telemetry else "")
            + (f"; e-stop on {self.estop.endpoint} ({self.estop.mode_line})" if self.estop else "")
            + ("; DRY RUN (no command reaches the driver)" if cfg.dry_run else "")
        )

    def _describe_arm_model(self, arm: Arm, native_layout: bool) -> None:
        """Put the driver's arm model (``Arm.arm_description``) into the robot description the loop's
        estimator reads and the episode context carries; a model whose joints do not fit the state is
        refused here, before any episode. A native state layout names no end effector or joint slice to
        predict: the model is not used there (the joint-space future state stays the driver's own)."""
        described = arm.arm_description()
        desc = self.safety.description
        if described is None or desc.arm is not None:
            return
        if native_layout:
            log.info("%s describes its arm model; the native state layout has no ee_pos/joint_pos to predict with it, "
                     "so the VLASH future state stays the driver's own", arm.name)
            return
        from policy_steer.runtime.arm_model import ArmModel

        desc = dataclasses.replace(desc, arm=described)
        ArmModel(described).check_robot(desc)
        self.safety.description = desc

    def _make_arm(self) -> Arm:
        cfg = self.cfg
        if isinstance(cfg, SimRobotConfig):
            from policy_steer.hardware.drivers.sim_task import SimTaskArm

            from policy_steer.envs.variants import parse_setting

            return SimTaskArm(cfg.task, cfg.variant, cfg.action_mode, cfg.max_steps, parse_setting(cfg.variant_params))
        assert isinstance(cfg, RobotConfig)
        driver, args = cfg.driver, list(cfg.driver_arg)
        if cfg.virtual_arm and (driver.startswith(LEROBOT) or driver == VIRTUAL):
            sub = VIRTUAL if driver == VIRTUAL else VIRTUAL_LEROBOT
            if sub != driver:
                log.warning("--virtual_arm: %s replaced by the MuJoCo virtual arm (%s); driver args %s ignored",
                            driver, sub, args)
                args = []
            driver = sub
        self.driver_name = driver
        options: dict[str, Any] = {"control_hz": cfg.rate}
        if driver.startswith(LEROBOT):
            options.update(max_joint_velocity=cfg.max_joint_velocity, stop_torque_off=cfg.stop_torque_off)
            if cfg.rate is None:
                options["control_hz"] = 30.0
        return make_arm(driver, args, **options)

    def _cameras(self, observation: dict) -> tuple[str, ...]:
        """The cameras the policy wants, delivered by the driver at the promised size."""
        cams = []
        for key, feat in observation.items():
            if not key.startswith(OBS_IMAGES + "."):
                continue
            cam = key[len(OBS_IMAGES) + 1:]
            shape = tuple(feat.shape)
            if len(shape) != 3:
                raise SafetyError(f"the policy wants {key} {list(shape)}; cameras are [H, W, 3]")
            self.arm.set_camera_size(cam, shape[:2])
            cams.append(cam)
        return tuple(cams)

    # --- the episode context -----------------------------------------------------------------------
    def _episode_context(self, seed: int | None) -> EpisodeContext:
        """Robot.context: at an episode start the context built from the driver or the options (and the
        provider's); later (a dynamic scene) the provider's update of the current one, or the driver's now."""
        safety = self.safety
        now = time.monotonic()
        ctx = self.arm.episode_context(seed)  # a simulated task: ground truth, read now
        start = self._context_episode != safety.episode
        if ctx is None:
            if start or self._context is None:
                ctx = self._option_context(seed, now)
            else:
                ctx = self._context
        if self.provider is not None:
            ctx = self.provider.context(ctx, seed)
            if not isinstance(ctx, EpisodeContext):
                raise ConfigError(f"the context provider returned {type(ctx).__name__}, not an EpisodeContext")
        self._context, self._context_episode = ctx, safety.episode
        return ctx

    def _option_context(self, seed: int | None, stamp: float) -> EpisodeContext:
        """``--instruction``, ``--scene`` (a scene, or a whole context) and the arm's robot description."""
        base = self.scene_context or EpisodeContext()
        instruction = self.cfg.instruction if isinstance(self.cfg, RobotConfig) else None
        if instruction is None:
            instruction = base.instruction or (base.scene.instruction if base.scene is not None else None)
        return dataclasses.replace(base, instruction=instruction, robot=self.safety.description, seed=seed,
                                   stamp=stamp)

    # --- telemetry and events ----------------------------------------------------------------------
    def _say(self, line: str) -> None:
        print(f"policy-steer {self.command}: {line}", flush=True)

    def _client_event(self, name: str, fields: dict[str, Any]) -> None:
        tel = self.telemetry
        if tel is not None and name in ("connected", "reconnected") and fields.get("session"):
            tel.session = str(fields["session"])
        if name in ("disconnected", "reconnected", "socket_reset", "spec_changed", "handshake_failed",
                    "episode_replay_failed", "context_error"):
            log.warning("policy server link: %s %s", name, fields)
        if tel is not None:
            tel.event(name, **fields)
        if name == "spec_changed" and self.safety is not None:  # its chunks would not fit this robot
            threading.Thread(target=self.safety.stop, name="policy-steer-spec-stop", daemon=True,
                             args=("stop:spec_changed", f"the server now serves another policy ({fields.get('policy')})")).start()

    def _on_step(self, rec: Any) -> None:
        s = self.safety.records[-1]
        if self.cfg.records:
            self._episode_safety.append(s)
        tel = self.telemetry
        executed = s.decision == EXEC
        counts = self._counts
        counts["executed"] += executed
        counts["held"] += s.decision == HOLD
        counts["holds"] += s.decision == HOLD and not self._holding
        if tel is not None and s.sent is not None:
            tel.action(
                rec.step, np.asarray(s.sent, np.float32), rec.chunk_id if executed else None,
                rec.index if executed else None, rec.acted, commanded=np.asarray(rec.action, np.float32),
                decision=s.decision, safety=s.notes, dry_run=self.cfg.dry_run,
            )
        held = s.decision == HOLD
        if held and not self._holding:
            self._holding, self._hold_start = True, rec.step
            if tel is not None:
                reason = "server_unreachable" if not self.client.connected else (
                    "waiting_for_chunk" if s.reason == "hold:no_action" else s.reason)
                tel.event("hold", step=rec.step, reason=reason)
        elif executed and self._holding:
            self._holding = False
            if tel is not None:
                tel.event("resumed", step=rec.step, held_steps=rec.step - self._hold_start, chunk_id=rec.chunk_id)

    def _on_chunk(self, rec: Any) -> None:
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

    # --- running -----------------------------------------------------------------------------------
    def _recorder(self, episode: int, seed: int | None):
        """This episode's recorder (None: neither --record_bag nor --foxglove)."""
        cfg = self.cfg
        if cfg.record_bag is None and self.live is None:
            return None
        from policy_steer.recording import BagSink, Recorder

        sinks: list[Any] = [] if self.live is None else [self.live]
        if cfg.record_bag is not None:
            sinks.append(BagSink(Path(cfg.record_bag) / f"episode{episode:04d}_seed{seed if seed is not None else 'none'}"))
        return Recorder(sinks, say=self._say)

    def seeds(self) -> list[int | None]:
        cfg = self.cfg
        if isinstance(cfg, SimRobotConfig):
            return [cfg.seed + i for i in range(cfg.episodes)]
        return [None]

    def stop(self, key: str = SIGNAL_STOP, detail: str = "") -> None:
        """The operator's stop (any thread): safe-stop the arm, end the episode and the run."""
        self.interrupted = key == SIGNAL_STOP
        self._stop_run.set()
        if self.safety is not None:
            self.safety.stop(key, detail)
        if self.loop is not None:
            self.loop.stop()

    def run(self) -> HostResult:
        """The episodes (one on a real arm), until done, a stop or the run's duration."""
        from policy_steer.transport.errors import RemoteError

        if self.loop is None:
            raise RuntimeError("call start() first")
        cfg, safety, loop = self.cfg, self.safety, self.loop
        timer = None
        if cfg.duration_s is not None:
            def end() -> None:
                self._stop_run.set()
                loop.stop()

            timer = threading.Timer(cfg.duration_s, end)
            timer.daemon = True
        stop_metrics = threading.Event()
        metrics_thread = None
        if self.telemetry is not None and cfg.metrics_every_s > 0:
            metrics_thread = threading.Thread(target=self._metrics_loop, args=(stop_metrics,), daemon=True)
        episodes: list[dict[str, Any]] = []
        results: list[Any] = []
        self._records: list[dict[str, Any]] = []
        log_path = self.episodes_log()
        if log_path is not None:  # this run's episodes log (the report of an earlier run at that path is replaced too)
            log_path.parent.mkdir(parents=True, exist_ok=True)
            log_path.write_text("")
        safety.start()
        if timer:
            timer.start()
        if metrics_thread:
            metrics_thread.start()
        try:
            for i, seed in enumerate(self.seeds()):
                if self._stop_run.is_set() or safety.stopped:
                    break
                self._episode_safety = []
                self._counts = {"executed": 0, "held": 0, "holds": 0}
                self._holding = False
                if self.telemetry is not None:
                    self.telemetry.episode = i
                    self.telemetry.event("episode_start", seed=seed)
                reconnects0, interventions0 = self.client.stats.reconnects, safety.log.metrics()["total"]
                t0 = time.monotonic()
                recorder = self._recorder(i, seed)  # --record_bag / --foxglove: sees the episode, never slows it
                loop.observer = recorder
                try:
                    result = loop.run(seed=seed)
                except RemoteError as e:
                    if e.refused or e.code == "bad_context":  # at the episode start: nothing was commanded
                        raise EpisodeRefused(f"the policy server refused the episode ({e.code}): {e.message}") from None
                    raise
                finally:
                    loop.observer = None
                    if recorder is not None:
                        stats = recorder.close(timeout_s=30.0)  # a hung disk does not hold the next episode
                        if stats["dropped"]:
                            self._say(f"recording: {stats['dropped']} telemetry messages dropped (the writer fell behind)")
                safety.end_episode()
                summary = self._summary(result, i, seed, {
                    "reconnects": self.client.stats.reconnects - reconnects0,
                    "safety_interventions": safety.log.metrics()["total"] - interventions0,
                    "wall_s": time.monotonic() - t0,
                    "interrupted": self.interrupted,
                    "stop_reason": safety.stop_key,
                })
                episodes.append(summary)
                results.append(result)
                if cfg.records:
                    self._records.append(self._episode_records(i, seed, result))
                if cfg.report:
                    self._log_episode(summary, self._records[-1] if cfg.records else None)
                if self.telemetry is not None:
                    self.telemetry.event("episode_end", **{k: v for k, v in summary.items() if not isinstance(v, list)})
                self._say(summary_line(summary))
        except KeyboardInterrupt:
            self.interrupted = True
            safety.stop(SIGNAL_STOP, "Ctrl-C in the robot process")
            raise
        except EpisodeRefused:
            raise  # refused before the episode's first command: the arm holds where it is, the driver closes
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
        self.result = HostResult(episodes, results, metrics, safety.stopped, safety.stop_key, self.interrupted, self.error)
        return self.result

    def _summary(self, result: Any, episode: int, seed: int | None, extra: dict[str, Any]) -> dict[str, Any]:
        """The per-episode figures printed and written to the report."""
        base = result.summary()
        lat = base.pop("chunk_latency_ms")
        recs = result.records
        late = [(r.started - r.tick) * 1e3 for r in recs]
        periods = [(b.started - a.started) * 1e3 for a, b in zip(recs, recs[1:])]
        lat_p50, lat_p95 = _quantiles(lat, (0.5, 0.95))
        l50, l95, lmax = _quantiles(late, (0.5, 0.95, 1.0))
        return {
            "episode": episode, **base, "seed": seed,
            **self._counts,
            "latency_ms_p50": lat_p50, "latency_ms_p95": lat_p95,
            "tick_late_ms_p50": l50, "tick_late_ms_p95": l95, "tick_late_ms_max": lmax,
            "period_ms_std": float(np.std(periods)) if periods and self.clock.name == "wall" else None,
            **extra,
        }

    def _episode_records(self, episode: int, seed: int | None, result: Any) -> dict[str, Any]:
        """Every step (the loop's record joined with the safety layer's decision) and every chunk request."""
        steps = []
        for r, s in zip(result.records, self._episode_safety):
            steps.append({**asdict(r), "decision": s.decision, "safety_reason": s.reason or None,
                          "safety_stamp": s.stamp, "command": s.sent, "validated_chunk": s.chunk})
        chunks = [{**asdict(c), "latency_s": c.latency_s} for c in result.chunks]
        return {"episode": episode, "seed": seed, "steps": steps, "chunks": chunks}

    def _metrics_loop(self, stop: threading.Event) -> None:
        while not stop.wait(self.cfg.metrics_every_s):
            self._publish_metrics(self.safety.metrics(), final=False)

    def _publish_metrics(self, metrics: dict[str, Any], final: bool) -> None:
        if self.telemetry is not None:  # an event: RobotTelemetry's topics are action and event
            self.telemetry.event("safety_metrics", final=final, **{k: v for k, v in metrics.items() if k != "estops"})

    # --- reporting ---------------------------------------------------------------------------------
    def report(self) -> dict[str, Any]:
        """The JSON report: the run's settings, every episode's figures, the safety layer's (and, with
        ``--records``, every step and chunk request)."""
        res, safety, arm, cfg = self.result, self.safety, self.arm, self.cfg
        eps = res.episodes if res else []
        out: dict[str, Any] = {
            "command": self.command, "config": asdict(cfg), "driver": self.driver_name, "arm": arm.name,
            "rate_hz": self.hz, "mode": cfg.mode, "clock": self.clock.name if self.clock else None,
            "dry_run": cfg.dry_run, "action_space": safety.space.name if safety else None,
            "policy": self.welcome.spec.to_dict() if self.welcome else None,
            "session": self.welcome.session if self.welcome else None,
            "limits": arm.limits.describe(arm.joint_names),
            "watchdog": asdict(safety.watchdog.cfg) if safety and safety.use_watchdog else None,
            "episodes": eps,
            "success_rate": float(np.mean([e["success"] for e in eps])) if eps else None,
            "safety": res.safety if res else (safety.metrics() if safety else None),
            "stopped": res.stopped if res else None, "stop_reason": res.stop_reason if res else None,
            "stop_detail": safety.stop_detail if safety and safety.stopped else None,
            "interrupted": self.interrupted,
            "interventions_recent": [asdict(i) for i in list(safety.log.recent)[-500:]] if safety else [],
        }
        if cfg.records:
            out["records"] = self._records
        return _finite(out)

    def episodes_log(self) -> Path | None:
        """``<report>.episodes.jsonl``: one line per finished episode (its figures, and with ``--records``
        its steps and chunk requests), appended and flushed to disk as it ends, so a robot process that
        is killed keeps every episode it finished; the report at exit has them all again."""
        return None if not self.cfg.report else Path(self.cfg.report).with_suffix(".episodes.jsonl")

    def _log_episode(self, summary: dict[str, Any], records: dict[str, Any] | None) -> None:
        path = self.episodes_log()
        line = json.dumps(_finite({"episode": summary, "records": records}), default=_json_default, allow_nan=False)
        with open(path, "a", encoding="utf-8") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())

    def write_report(self, path: str | Path) -> None:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_suffix(p.suffix + ".tmp")
        tmp.write_text(json.dumps(self.report(), indent=1, default=_json_default, allow_nan=False))
        os.replace(tmp, p)

    def close(self) -> None:
        for what, fn in (
            ("safety", lambda: self.safety and self.safety.close()),
            ("e-stop socket", lambda: self.estop and self.estop.close()),
            ("client", lambda: self.client and self.client.close()),
            ("telemetry", lambda: self.telemetry and self.telemetry.close()),
            ("driver", lambda: self.arm and self.arm.disconnect()),
            ("live view", lambda: self.live and self.live.stop()),
        ):
            try:
                fn()
            except Exception:  # noqa: BLE001 - close everything we can
                log.exception("closing the %s failed", what)
        self.telemetry = None

    def __enter__(self) -> RobotHost:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()


# --- the command -----------------------------------------------------------------------------------
def run_host(host: RobotHost) -> int:
    """Start, run and close ``host`` with the signal handling of the commands; print the end of the run,
    write the report; returns the exit code (module docstring).

    In the main thread, SIGINT and SIGTERM safe-stop the arm (``stop:signal``) and end the run; before
    the run has started they interrupt the start-up.
    """
    cfg = host.cfg

    def on_signal(signum: int, _frame: Any) -> None:
        if host.safety is None or host.loop is None:
            raise KeyboardInterrupt
        # On a thread: the handler runs on the control thread, which may hold the driver's lock right now.
        threading.Thread(target=host.stop, name="policy-steer-signal-stop", daemon=True,
                         args=(SIGNAL_STOP, f"{signal.Signals(signum).name} in the robot process")).start()

    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with host:
            result = host.run()
            if cfg.report:
                host.write_report(cfg.report)
    except KeyboardInterrupt:
        print(f"policy-steer {host.command}: stopped before the first episode", flush=True)
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    for line in report_lines(host, result):
        host._say(line)
    if result.stopped:
        print(f"policy-steer {host.command}: safe stop ({result.stop_reason}: {host.safety.stop_detail})",
              file=sys.stderr, flush=True)
    return result.exit_code


def run_robot(cfg: RobotConfig) -> int:
    """``policy-steer robot``."""
    return run_host(RobotHost(cfg))


def run_sim_robot(cfg: SimRobotConfig) -> int:
    """``policy-steer sim-robot``."""
    return run_host(RobotHost(cfg))


def report_lines(host: RobotHost, result: HostResult) -> list[str]:
    """What an operator reads at the end of a run: what ran, every intervention by kind, why it stopped."""
    safety = result.safety
    eps = result.episodes
    n_ok = sum(bool(e["success"]) for e in eps)
    steps = sum(e["steps"] for e in eps)
    failed = sum(e["failed"] for e in eps)
    secs = sum(e["wall_s"] for e in eps)
    first = f"done, {len(eps)} episode(s), {n_ok} successful; " if host.sim else ""
    lines = [
        f"{first}{steps} steps in {secs:.1f} s at {host.hz:g} Hz: {safety['executed']} executed, {safety['held']} held; "
        f"chunks {safety['chunks_accepted']} accepted, {safety['chunks_rejected']} refused, {failed} failed requests"
        + (f"; wrote {host.cfg.report}" if host.cfg.report else "")
    ]
    counts: dict[str, int] = safety["interventions"]
    if counts:
        groups = []
        for kind, total in sorted(safety["by_kind"].items()):
            keys = ", ".join(f"{k} {v}" for k, v in counts.items() if k.split(":", 1)[0] == kind)
            groups.append(f"{kind} {total} ({keys})")
        lines.append(f"{safety['total']} interventions: " + "; ".join(groups))
    else:
        lines.append("0 interventions")
    stop = safety["stop"]
    if stop is None:
        lines.append("run ended without a safe stop (the arm held its last command until the driver disconnected)")
    else:
        line = f"stopped: {stop['reason']} ({stop['detail']})"
        est = safety["estops"]
        if stop["reason"] == "stop:estop" and est and est[0]["stopped"] is not None and _loopback(host):
            dt = est[0]["stopped"] - est[0]["sent"]  # the sender's monotonic clock is this machine's
            if dt >= 0:
                line += f"; the arm stopped {dt * 1e3:.1f} ms ({dt * host.hz:.2f} control periods) after the e-stop was sent"
        lines.append(line)
    return lines


def summary_line(s: dict[str, Any]) -> str:
    failure = f" failure={s['failure']}" if s.get("failure") else ""
    stop = f" stop={s['stop_reason']}" if s.get("stop_reason") else ""
    seed = "" if s["seed"] is None else f" seed {s['seed']}"
    return (
        f"episode {s['episode']}{seed}: success={s['success']}{failure}{stop} steps={s['steps']} "
        f"stalls={s['stall_steps']} holds={s['holds']} chunks={s['n_chunks']} dropped={s['dropped']} "
        f"failed={s['failed']} reconnects={s['reconnects']} safety={s['safety_interventions']} "
        f"latency p50={_fmt(s['latency_ms_p50'])} ms p95={_fmt(s['latency_ms_p95'])} ms "
        f"late ticks={s['late_ticks']}"
    )


def _loopback(host: RobotHost) -> bool:
    """The control socket takes messages from this machine only (their stamps are on our clock)."""
    ep = host.estop.endpoint if host.estop is not None else ""
    return ep.startswith(("tcp://127.", "tcp://localhost:", "tcp://[::1]:", "ipc://", "inproc://"))


def _quantiles(values: list[float], qs: tuple[float, ...]) -> list[float | None]:
    if not values:
        return [None for _ in qs]
    return [float(np.quantile(values, q)) for q in qs]


def _fmt(v: float | None, digits: int = 1) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


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
    if isinstance(report, (list, tuple)):
        return [_finite(v) for v in report]
    if isinstance(report, np.ndarray):
        return _finite(report.tolist())
    return report
