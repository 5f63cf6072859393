"""``policy-steer serve`` and ``policy-steer keys``.

    policy-steer keys --out keys/                         # server + one client key pair, allow-list
    policy-steer serve --policy ckpt/ --bind tcp://127.0.0.1:5555 --telemetry tcp://127.0.0.1:5556
    policy-steer serve --policy ckpt/ --bind tcp://0.0.0.0:5555 --curve_keys keys/

The server speaks protocol v2 (``docs/protocol.md``). Without ``--curve_keys`` it binds loopback only
unless ``--trusted_network true``.
SIGINT and SIGTERM stop it cleanly (exit code 0).
"""

from __future__ import annotations

import logging
import signal
import threading
from dataclasses import dataclass, field

from policy_steer.config import StrList
from policy_steer.errors import ConfigError
from policy_steer.transport.inference import ServedPolicy
from policy_steer.transport.server import PolicyServer, ServerConfig

log = logging.getLogger(__name__)


@dataclass
class ServeConfig:
    policy: str = ""  # lerobot checkpoint folder or hub id
    bind: str = "tcp://127.0.0.1:5555"  # ROUTER endpoint; tcp://127.0.0.1:* picks a free port
    telemetry: str | None = None  # PUB endpoint, e.g. tcp://127.0.0.1:5556
    steer: str = "none"  # steering method: none, taco, vls, rtc, or a+b
    # Settings of the steering method, e.g. '{candidates: 16, verifier: cfn}'; clients may change them with `configure`.
    steer_settings: dict = field(default_factory=dict)
    device: str = "cpu"  # torch device of the policy
    seed: int | None = None  # seed of the sampler's noise (None: random)
    curve_keys: str | None = None  # folder made by `policy-steer keys`
    trusted_network: bool = False  # allow a non-loopback bind without CURVE
    session_timeout_s: float = 30.0  # a session expires after this long without a message
    max_sessions: int = 64  # hellos beyond this are answered `busy`
    telemetry_hwm: int = 100  # telemetry messages queued per subscriber before they are dropped
    max_batch: int = 1  # >1: batch observes of several sessions (a BatchPolicy only; SteeredPolicy: warned, ignored)


def build_served_policy(cfg: ServeConfig) -> ServedPolicy:
    """The one place that turns serve options into the policy the server runs.

    Steering strategies plug in here (``--steer`` and their options) when they are added.
    """
    from policy_steer.policies.loading import load_policy
    from policy_steer.steered_policy import SteeredPolicy

    if not cfg.policy:
        raise ConfigError("--policy is required (a lerobot checkpoint folder or hub id)")
    base = load_policy(cfg.policy, device=cfg.device)
    return SteeredPolicy.from_method(base, cfg.steer, dict(cfg.steer_settings), seed=cfg.seed)


def server_config(cfg: ServeConfig) -> ServerConfig:
    return ServerConfig(
        bind=cfg.bind,
        telemetry=cfg.telemetry,
        telemetry_hwm=cfg.telemetry_hwm,
        curve_keys=cfg.curve_keys,
        trusted_network=cfg.trusted_network,
        session_timeout_s=cfg.session_timeout_s,
        max_sessions=cfg.max_sessions,
        max_batch=cfg.max_batch,
    )


def serve_until_signal(server: PolicyServer) -> None:
    """Run ``server`` until SIGINT or SIGTERM, then stop it."""
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.start()
        print(
            f"policy-steer serve: ready on {server.endpoint}"
            + (f", telemetry on {server.telemetry_endpoint}" if server.telemetry_endpoint else ""),
            flush=True,
        )
        while not stop.wait(0.2):
            pass
        log.info("stopping (signal)")
    finally:
        server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run_serve(cfg: ServeConfig) -> int:
    # Check the bind before loading a model that may take minutes.
    from policy_steer.transport.security import check_bind

    check_bind(cfg.bind, cfg.curve_keys is not None, cfg.trusted_network)
    if cfg.telemetry:
        check_bind(cfg.telemetry, cfg.curve_keys is not None, cfg.trusted_network)
    policy = build_served_policy(cfg)
    serve_until_signal(PolicyServer(policy, server_config(cfg)))
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
