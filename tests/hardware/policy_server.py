"""A policy server for the hardware tests, run as its own OS process (``python tests/hardware/policy_server.py``).

``--policy circle`` (default): a well-behaved end-effector policy for the virtual arm's ``task`` state
(``ee_pos``, ``gripper``, 5 joints): small ``ee_delta`` steps (at most ``--step`` m) around a circle,
gripper open. ``--policy wild``: the fixed chunk of :mod:`policy_steer.transport.fixed_policy`
(``actions[i, j] = (i + j / 100) * scale``: metres, radians or degrees outside the limits), for
clamping tests.
Prints ``ready <endpoint>`` once bound (``--bind tcp://127.0.0.1:*`` picks a free port).
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from dataclasses import dataclass

import numpy as np

from policy_steer.config import parse_config
from policy_steer.transport.fixed_policy import FixedChunkPolicy, fixed_spec
from policy_steer.transport.server import PolicyServer, ServerConfig
from policy_steer.types import STEP, Chunk


class CirclePolicy(FixedChunkPolicy):
    """Deltas along a horizontal circle; the phase follows the observation's step, so chunks line up."""

    def __init__(self, spec, step: float, period_steps: int, delay_s: float) -> None:
        super().__init__(spec, delay_s=delay_s)
        self.step = step
        self.period = period_steps

    def _chunk(self, obs, prefix, start_step, new_episode=None, context=None) -> Chunk:
        s0 = int(obs.get(STEP, 0)) if start_step is None else int(start_step)
        h, a = self.spec.horizon, self.spec.action_dim
        theta = 2 * np.pi * (s0 + np.arange(h)) / self.period
        out = np.zeros((h, a), np.float32)
        # a circle whose centre lies ahead of the start (+x): away from the workspace's near edge
        out[:, 0] = self.step * np.sin(theta)
        out[:, 1] = -self.step * np.cos(theta)
        if a > 3:
            out[:, 3] = -1.0  # open
        return Chunk(out, s0, {"latency_ms": self.delay_s * 1e3, "steer": {}, "strategies": {}})


@dataclass
class Config:
    bind: str = "tcp://127.0.0.1:*"
    policy: str = "circle"  # circle | wild
    state_dim: int = 9
    action_dim: int = 4
    horizon: int = 16
    n_action_steps: int = 8
    control_hz: float = 10.0
    step: float = 0.008  # circle: metres per control step
    period_steps: int = 60
    delay_s: float = 0.02
    scale: float = 1.0  # wild: multiplies the fixed chunk
    cameras: str = ""  # e.g. front:64x64 (the policy then expects that image)
    episode_delay_s: float = 0.0  # an episode start takes this long (a strategy preparing the episode)
    curve_keys: str = ""  # a folder from `policy-steer keys`: serve with CURVE


def main() -> int:
    cfg = parse_config(Config, sys.argv[1:])
    cams = {c.split(":")[0]: tuple(int(v) for v in c.split(":")[1].split("x")) for c in cfg.cameras.split(",") if c}
    spec = fixed_spec(cfg.state_dim, cams, cfg.horizon, cfg.action_dim, cfg.control_hz, cfg.n_action_steps)
    if cfg.policy == "circle":
        policy = CirclePolicy(spec, cfg.step, cfg.period_steps, cfg.delay_s)
    else:
        policy = FixedChunkPolicy(spec, delay_s=cfg.delay_s)
        policy.actions = policy.actions * np.float32(cfg.scale)
    if cfg.episode_delay_s > 0:
        start = policy.start_episode

        def slow_start(*args, **kwargs):
            time.sleep(cfg.episode_delay_s)
            return start(*args, **kwargs)

        policy.start_episode = slow_start
    server = PolicyServer(policy, ServerConfig(bind=cfg.bind, curve_keys=cfg.curve_keys or None))
    server.start()
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    print(f"ready {server.endpoint}", flush=True)
    while not stop.wait(0.2):
        pass
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
