"""``policy-steer robot`` (the real-robot control loop) and ``policy-steer estop`` (stop it).

    policy-steer robot --driver lerobot:so101_follower --driver-arg port=/dev/ttyACM0 --driver-arg id=arm1 \\
        --server tcp://gpu-box:5555 --mode vlash --rate 30 --curve_keys keys/
    policy-steer robot --driver lerobot:so101_follower --server tcp://127.0.0.1:5555 --dry-run   # MuJoCo stand-in
    policy-steer estop --endpoint tcp://127.0.0.1:5558 --reason "hand in the workspace"

``robot`` exits 0 when the run ends (``--max_steps``, ``--duration_s``), 3 when the safety layer stopped
the arm (watchdog, e-stop, driver error; the reason is printed), 2 on a configuration or driver error
(one line, e.g. a missing SDK or serial port). ``estop`` exits 0 once the robot process acknowledged
the stop, 1 if nobody answered.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, fields

from policy_steer.hardware.estop import DEFAULT_ENDPOINT
from policy_steer.hardware.session import RobotRunConfig, run_session

STOPPED_EXIT = 3


def run_robot(cfg: RobotRunConfig) -> int:
    session, result = run_session(cfg)
    s = result.summary()
    safety = s["safety"]
    line = (
        f"policy-steer robot: {s['runtime']['steps']} steps, {safety['executed']} executed, {safety['held']} held, "
        f"{safety['total']} interventions {json.dumps(safety['interventions'])}"
    )
    print(line, flush=True)
    if result.stopped:
        print(f"policy-steer robot: safe stop ({result.stop_reason}: {session.safety.stop_detail})", file=sys.stderr, flush=True)
        return STOPPED_EXIT
    return 0


@dataclass
class EstopConfig:
    """``policy-steer estop``: safe-stop a running robot process through its control socket."""

    endpoint: str = DEFAULT_ENDPOINT
    reason: str = ""
    timeout_s: float = 2.0


def run_estop(cfg: EstopConfig) -> int:
    from policy_steer.hardware.estop import EstopUnanswered, send_estop

    try:
        ack = send_estop(cfg.endpoint, cfg.reason, cfg.timeout_s)
    except EstopUnanswered as e:
        print(f"policy-steer estop: {e}", file=sys.stderr, flush=True)
        return 1
    state = "stopped" if ack.get("stopped") else "stop requested, but the driver's safe stop reported a failure"
    again = "" if ack.get("first", True) else " (it was already stopped)"
    print(f"policy-steer estop: {cfg.endpoint}: {state}{again}", flush=True)
    return 0 if ack.get("stopped") else 1


COMMANDS = {"robot": (RobotRunConfig, run_robot), "estop": (EstopConfig, run_estop)}

_REPEATABLE = {"--driver_arg", "--state_extra"}


def prepare_args(name: str, args: list[str]) -> list[str]:
    """Shell conveniences draccus lacks: bare boolean flags (``--dry-run``) and repeated list flags
    (``--driver-arg a=1 --driver-arg b=2``)."""
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
