"""``policy-steer robot``, ``policy-steer sim-robot`` (the robot host, :mod:`~policy_steer.hardware.host`)
and ``policy-steer estop`` (stop it).

    policy-steer robot --driver lerobot:so101_follower --driver-arg port=/dev/ttyACM0 --driver-arg id=arm1 \\
        --server tcp://gpu-box:5555 --mode vlash --rate 30 --curve_keys keys/ \\
        --instruction "push the block onto the target" --scene scene.json
    policy-steer robot --driver lerobot:so101_follower --server tcp://127.0.0.1:5555 --virtual_arm  # MuJoCo stand-in
    policy-steer robot --driver virtual --server tcp://127.0.0.1:5555 --dry-run  # observe only, never command
    policy-steer sim-robot --task push --variant obstacle --server tcp://127.0.0.1:5555 --mode sync \\
        --clock virtual --episodes 50 --seed 3000 --report sim_robot.json
    policy-steer estop --endpoint tcp://127.0.0.1:5558 --reason "hand in the workspace"
    policy-steer robot ... --estop tcp://0.0.0.0:5558 --curve_keys keys/ --curve_name robot  # CURVE off loopback
    policy-steer estop --endpoint tcp://ROBOT:5558 --curve_keys keys/ --curve_name operator --robot_key robot

Both host commands take the same host options (``--server``, ``--mode``, ``--rate``, ``--dry_run``,
``--request_timeout_s``, ``--client_name``, ``--report``, ``--records``, ``--telemetry``, ``--estop``,
``--watchdog.*``, ...) with one meaning; ``robot`` adds its driver's (``--driver``, ``--instruction``,
``--scene``, ...), ``sim-robot`` its task's (``--task``, ``--variant``, ``--episodes``, ``--seed``,
``--clock``, ``--latency``). A host logs every intervention as it happens (stderr), prints a line when
connected and one per episode, and ends with three lines: steps executed and held, chunks accepted and
refused; every intervention counted by kind and key; the stop reason (with the e-stop's reaction time
on a loopback control socket). Exit codes: 0 when the run ended (or SIGINT/SIGTERM stopped it: the
arm is safe-stopped first), 3 when the safety layer stopped the arm (watchdog, e-stop, driver error),
2 on a configuration, driver or connection error (one line, e.g. a missing SDK or serial port).
``estop`` exits 0 once the robot process acknowledged the stop, 1 if nobody answered.

The sockets a host binds (``--estop``, ``--telemetry``) follow the policy server's rule: loopback,
unless ``--curve_keys`` is given (they are then CURVE servers with the robot's key pair, admitting the
keys in ``DIR/authorized_clients/``) or ``--trusted_network true``; otherwise the host refuses to start
(exit 2, one line) before anything is bound. The mode of each socket is logged.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, fields

from policy_steer.hardware.estop import DEFAULT_ENDPOINT
from policy_steer.hardware.host import RobotConfig, SimRobotConfig, run_robot, run_sim_robot


@dataclass
class EstopConfig:
    """``policy-steer estop``: safe-stop a running robot process through its control socket."""

    endpoint: str = DEFAULT_ENDPOINT  # the robot process's control socket (its --estop)
    reason: str = ""  # logged by the robot process with the stop
    timeout_s: float = 2.0  # give up (exit 1) when no acknowledgement came within this long
    curve_keys: str | None = None  # a robot socket bound with CURVE: folder with <curve_name>.key_secret and <robot_key>.key
    curve_name: str = "client"  # whose key pair of --curve_keys sends (its .key must be in the robot's authorized_clients)
    robot_key: str = "client"  # the robot's --curve_name: its public key <robot_key>.key in --curve_keys (or a .key file)


def run_estop(cfg: EstopConfig) -> int:
    from policy_steer.hardware.estop import EstopUnanswered, estop_keys, send_estop

    curve = estop_keys(cfg.curve_keys, cfg.curve_name, cfg.robot_key) if cfg.curve_keys else None
    t0 = time.monotonic()
    try:
        ack = send_estop(cfg.endpoint, cfg.reason, cfg.timeout_s, curve=curve)
    except EstopUnanswered as e:
        print(f"policy-steer estop: {e}", file=sys.stderr, flush=True)
        return 1
    rtt_ms = (time.monotonic() - t0) * 1e3
    state = "stopped" if ack.get("stopped") else "stop requested, but the driver's safe stop reported a failure"
    again = "" if ack.get("first", True) else " (it was already stopped)"
    print(f"policy-steer estop: {cfg.endpoint}: {state}{again}; acknowledged after {rtt_ms:.1f} ms", flush=True)
    return 0 if ack.get("stopped") else 1


COMMANDS = {
    "robot": (RobotConfig, run_robot),
    "sim-robot": (SimRobotConfig, run_sim_robot),
    "estop": (EstopConfig, run_estop),
}

_REPEATABLE = {"--driver_arg", "--state_extra"}


def prepare_args(name: str, args: list[str]) -> list[str]:
    """Shell conveniences draccus lacks: bare boolean flags (``--dry-run``) and repeated list flags
    (``--driver-arg a=1 --driver-arg b=2``); the same for every command of this module."""
    cls = COMMANDS[name][0]
    bools = {f"--{f.name}" for f in fields(cls) if f.type in (bool, "bool")}
    out: list[str] = []
    repeated: dict[str, list[str]] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if not arg.startswith("--"):
            out.append(arg)
            continue
        name, eq, value = arg[2:].partition("=")
        flag = "--" + name.replace("-", "_")
        if flag in _REPEATABLE:
            if not eq and i < len(args):
                value, i = args[i], i + 1
            repeated.setdefault(flag, []).append(value)
        elif flag in bools and not eq and (i == len(args) or args[i].startswith("--")):
            out += [flag, "true"]
        else:
            out.append(flag + eq + value)
    for flag, values in repeated.items():
        out += [flag, ",".join(v for v in values if v)]
    return out
