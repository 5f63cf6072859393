"""``policy-steer serve`` and ``policy-steer keys``.

    policy-steer keys --out keys/                         # server + one client key pair, allow-list
    policy-steer serve --policy ckpt/ --bind tcp://127.0.0.1:5555 --telemetry tcp://127.0.0.1:5556
    policy-steer serve --policy ckpt/ --bind tcp://0.0.0.0:5555 --curve_keys keys/

The server speaks protocol v2 (``docs/protocol.md``). Without ``--curve_keys`` it binds loopback only
unless ``--trusted_network true``.

Costs a client may choose are bounded by ``--max_candidates``, ``--max_particles``,
``--max_num_steps`` and ``--max_chunk_s`` (announced in ``welcome.limits``); a client's
``verifier_path`` must lie under ``--verifier_roots`` (default: the policy's own folder) and its
``reward_backend`` be one of ``--reward_backends``.

SIGINT and SIGTERM stop it cleanly at any moment, loading included: exit code 0, within about 2 s
(``stop_timeout_s``), a chunk in flight abandoned if it does not finish in time.
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from policy_steer.config import StrList
from policy_steer.errors import ConfigError
from policy_steer.transport.inference import ServedPolicy
from policy_steer.transport.limits import DEFAULT_REWARD_BACKENDS, ServerLimits, limits_from_options
from policy_steer.transport.server import PolicyServer, ServerConfig

log = logging.getLogger(__name__)


@dataclass
class ServerOptions:
    """The options of a policy server process, whatever policy it serves (``serve``, and the fixed-chunk
    test server of :mod:`~policy_steer.transport.fixed_policy`); :func:`server_config` turns them into a
    :class:`ServerConfig`."""

    bind: str = "tcp://127.0.0.1:5555"  # ROUTER endpoint; tcp://127.0.0.1:* picks a free port
    telemetry: str | None = None  # PUB endpoint, e.g. tcp://127.0.0.1:5556
    curve_keys: str | None = None  # folder made by `policy-steer keys`
    trusted_network: bool = False  # allow a non-loopback bind without CURVE
    session_timeout_s: float = 30.0  # a session expires after this long without a message
    max_sessions: int = 64  # hellos beyond this are answered `busy`
    telemetry_hwm: int = 100  # telemetry messages queued per subscriber before they are dropped
    # >1: observes of up to this many sessions with the same steering settings share one sampling run
    # (SteeredPolicy.predict_chunks; a strategy that is not batchable, e.g. VLS or RTC, still runs per session)
    max_batch: int = 1
    # With --max_batch > 1: wait at most this long for other sessions' observes to join a batch, and only
    # while another session is open that has not sent one yet; a lone robot is never delayed by it.
    batch_window_ms: float = 2.0
    # Limits on the costs a client may choose with `configure` (announced in welcome.limits; over them: over_limit).
    max_candidates: int = 64  # TACO candidates per observe
    max_particles: int = 32  # VLS particles per observe
    max_num_steps: int = 100  # denoising steps, where the steering settings take num_steps
    max_chunk_s: float = 1.0  # a chunk over this many seconds: the session's next observe is refused until it reconfigures
    verifier_roots: StrList = field(default_factory=StrList)  # folders a client's verifier_path may point under (empty: the policy's folder)
    reward_backends: StrList = field(default_factory=lambda: StrList(DEFAULT_REWARD_BACKENDS))  # VLS reward backends a client may choose


@dataclass
class ServeConfig(ServerOptions):
    policy: str = ""  # lerobot checkpoint folder or hub id
    trust_checkpoint: bool = False  # load --policy even where it names code to run (see policies/checkpoint_safety.py)
    steer: str = "none"  # steering method: none, taco, vls, rtc, or a+b
    # Settings of the steering method, e.g. '{candidates: 16, verifier: cfn}'; clients may change them with `configure`.
    steer_settings: dict = field(default_factory=dict)
    device: str = "cpu"  # torch device of the policy
    dtype: str = "float32"  # the policy network's weights and compute: float32 or bfloat16 (policies/precision.py)
    compile: bool = False  # torch.compile the denoiser (the first chunk of each batch size compiles)
    activations: str = "exact"  # exact, or sigmoid: Mish / tanh-GELU rewritten through the sigmoid (same chunks to float rounding)
    seed: int | None = None  # seed of the sampler's noise (None: random)
    record_bag: str | None = None  # write one ROS 2 bag (rosbag2 folder, MCAP) per session-episode under this new folder
    foxglove: int | None = None  # serve the live view (Foxglove WebSocket) of every session on this port (0: a free one)
    foxglove_host: str = "127.0.0.1"  # --foxglove binds here (beyond loopback only with --trusted_network: no authentication)

    def __post_init__(self) -> None:
        from policy_steer.recording.options import check_recording_options

        check_recording_options(self.record_bag, self.foxglove, self.foxglove_host, self.trusted_network)


def build_served_policy(cfg: ServeConfig) -> ServedPolicy:
    """The one place that turns serve options into the policy the server runs.

    Steering strategies plug in here (``--steer`` and their options) when they are added.
    """
    from policy_steer.policies.loading import load_policy
    from policy_steer.steered_policy import SteeredPolicy

    if not cfg.policy:
        raise ConfigError("--policy is required (a lerobot checkpoint folder or hub id)")
    base = load_policy(cfg.policy, device=cfg.device, trust_checkpoint=cfg.trust_checkpoint, dtype=cfg.dtype,
                       compile=cfg.compile, activations=cfg.activations)
    steered = SteeredPolicy.from_method(base, cfg.steer, dict(cfg.steer_settings), seed=cfg.seed)
    # a recording draws every candidate: the policy keeps them in the chunk's info (never sent; same chunks)
    steered.keep_candidates = cfg.record_bag is not None or cfg.foxglove is not None
    return steered


def build_recording(cfg: ServeConfig, hz: float):
    """``--record_bag`` / ``--foxglove``: the server's recording (None: neither)."""
    if cfg.record_bag is None and cfg.foxglove is None:
        return None
    from policy_steer.recording import LiveView
    from policy_steer.recording.serve import ServerRecording

    live = None
    if cfg.foxglove is not None:
        live = LiveView(cfg.foxglove, cfg.foxglove_host, name="policy-steer serve")
        live.advertise()
        log.info("live view: Foxglove on ws://%s:%d", cfg.foxglove_host, live.port)
    return ServerRecording(cfg.record_bag, live, hz, say=lambda line: log.warning("%s", line))


def policy_folder(policy: ServedPolicy) -> str | None:
    """The folder the served policy was loaded from (the default verifier root), if it says."""
    return policy.folder


def serve_limits(
    cfg: ServerOptions, policy: ServedPolicy | None = None, default_steer: dict[str, Any] | None = None
) -> ServerLimits:
    """The limits of ``cfg`` (ConfigError when the server's own default steering settings break them)."""
    roots = list(cfg.verifier_roots)
    if not roots and policy is not None and policy_folder(policy) is not None:
        roots = [policy_folder(policy)]
    return limits_from_options(
        cfg.max_candidates, cfg.max_particles, cfg.max_num_steps, cfg.max_chunk_s, roots, cfg.reward_backends,
        default_steer=default_steer,
    )


def server_config(
    cfg: ServerOptions, policy: ServedPolicy | None = None, default_steer: dict[str, Any] | None = None
) -> ServerConfig:
    return ServerConfig(
        limits=serve_limits(cfg, policy, default_steer),
        bind=cfg.bind,
        telemetry=cfg.telemetry,
        telemetry_hwm=cfg.telemetry_hwm,
        curve_keys=cfg.curve_keys,
        trusted_network=cfg.trusted_network,
        session_timeout_s=cfg.session_timeout_s,
        max_sessions=cfg.max_sessions,
        max_batch=cfg.max_batch,
        batch_window_ms=cfg.batch_window_ms,
    )


class Interrupted(BaseException):
    """SIGINT/SIGTERM before the server started (while a model loads)."""


class StopSignals:
    """SIGINT and SIGTERM set ``stop``; before :meth:`serving` they also raise :class:`Interrupted` in the
    main thread, so a signal during a long model load stops the process at once. A context manager that
    puts the previous handlers back."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self._raise = True
        self._previous: dict[int, Any] = {}

    def _handler(self, signum: int, frame: Any) -> None:
        self.stop.set()
        if self._raise:
            self._raise = False
            raise Interrupted(signum)

    def serving(self) -> None:
        self._raise = False

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            self._previous = {sig: signal.signal(sig, self._handler) for sig in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *exc: Any) -> bool:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        return False


def _exit_now(code: int) -> None:
    """Leave without finalizing the interpreter. The last resort of a stop: the inference thread is still
    inside one call of the policy (a single torch operation longer than the stop's time, or native code
    that never returns to Python, so it could not be abandoned), and CPython 3.12 would end that daemon
    thread during finalization with ``pthread_exit``, whose forced unwind through libtorch's ``noexcept``
    frames aborts the process (exit 134). The sockets are already closed and the context terminated;
    the chunk's reply could not be delivered anyway. Logs and standard streams are flushed first."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # a closed pipe: nothing more to say
            pass
    os._exit(code)


def _announce(server: PolicyServer) -> str:
    return f"policy-steer serve: ready on {server.endpoint}" + (
        f", telemetry on {server.telemetry_endpoint}" if server.telemetry_endpoint else ""
    )


def serve_until_signal(
    server: PolicyServer,
    signals: StopSignals | None = None,
    announce: Callable[[PolicyServer], str] = _announce,
) -> bool:
    """Run ``server`` until SIGINT or SIGTERM, then stop it (within its ``stop_timeout_s``).

    Returns True when every thread ended. If the inference thread could not be stopped (see
    :func:`_exit_now`), the process exits 0 here instead of returning: this is a process's main loop.
    """
    from policy_steer.transport.memory import return_large_buffers

    own = signals is None
    signals = signals or StopSignals()
    if own:
        signals.__enter__()
    return_large_buffers()  # freed multi-megabyte frames go back to the system (transport/memory.py)
    try:
        signals.serving()
        server.start()
        print(announce(server), flush=True)
        while not signals.stop.wait(0.2):
            pass
        log.info("stopping (signal)")
    finally:
        clean = server.stop()
        if own:
            signals.__exit__(None, None, None)
    if not clean:
        _exit_now(0)
    return clean


def run_serve(cfg: ServeConfig) -> int:
    # Check the bind and the limits before loading a model that may take minutes.
    from policy_steer.transport.security import check_bind

    check_bind(cfg.bind, cfg.curve_keys is not None, cfg.trusted_network)
    if cfg.telemetry:
        check_bind(cfg.telemetry, cfg.curve_keys is not None, cfg.trusted_network)
    serve_limits(cfg, default_steer=cfg.steer_settings)
    with StopSignals() as signals:
        try:
            policy = build_served_policy(cfg)
            server = PolicyServer(policy, server_config(cfg, policy, cfg.steer_settings),
                                  recording=build_recording(cfg, policy.spec.control_hz))
            signals.serving()  # from here a signal only sets the stop event
        except Interrupted:
            log.info("stopped by a signal before serving")
        else:
            if not signals.stop.is_set():
                serve_until_signal(server, signals)
    # Every thread has ended and the process exits next: spare the interpreter's final garbage collections
    # the walk over every object of the imported libraries (about 1.5 s with lerobot loaded, 0.2 s without).
    gc.freeze()
    return 0


@dataclass
class KeysConfig:
    out: str = "keys"  # folder for the key pairs (server, client) and the allow-list
    clients: StrList = field(default_factory=lambda: StrList(["client"]))  # one key pair per name
    server: bool = True  # also make the server key pair
    force: bool = False  # overwrite existing secret keys


def run_keys(cfg: KeysConfig) -> int:
    from policy_steer.transport.keys import generate_keys

    written = generate_keys(cfg.out, clients=list(cfg.clients), server=cfg.server, force=cfg.force)
    for p in written:
        print(p)
    name = next(iter(cfg.clients), "client")
    print(
        f"\nserver: policy-steer serve --policy CKPT --bind tcp://0.0.0.0:5555 --curve_keys {cfg.out}\n"
        f"robot:  copy {cfg.out}/server.key and {cfg.out}/{name}.key_secret into a folder DIR on the robot, then\n"
        f"        policy-steer sim-robot --server tcp://SERVER_HOST:5555 --curve_keys DIR --curve_name {name} ...\n"
        f"        (in Python: PolicyClient(endpoint=..., curve_keys=DIR, curve_name='{name}'))"
    )
    return 0


COMMANDS = {"serve": (ServeConfig, run_serve), "keys": (KeysConfig, run_keys)}
