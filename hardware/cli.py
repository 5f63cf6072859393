"""``policy-steer robot`` (the real-robot control loop) and ``policy-steer estop`` (stop it).

    policy-steer robot --driver lerobot:so101_follower --driver-arg port=/dev/ttyACM0 --driver-arg id=arm1 \\
        --server tcp://gpu-box:5555 --mode vlash --rate 30 --curve_keys keys/
    policy-steer robot --driver lerobot:so101_follower --server tcp://127.0.0.1:5555 --dry-run   # MuJoCo stand-in
    policy-steer estop --endpoint tcp://127.0.0.1:5558 --reason "hand in the workspace"

``robot`` logs every intervention as it happens (stderr) and ends with three lines on stdout: steps
executed and held, chunks accepted and refused; every intervention counted by kind and key; the stop
reason (with the e-stop's reaction time on a loopback control socket). It exits 0 when the run ends
(``--max_steps``, ``--duration_s``), 3 when the safety layer stopped the arm (watchdog, e-stop, driver
error, a signal; the reason is printed on stderr too), 2 on a configuration or driver error (one line,
e.g. a missing SDK or serial port). ``estop`` exits 0 once the robot process acknowledged the stop,
1 if nobody answered.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, fields

from policy_steer.hardware.estop import DEFAULT_ENDPOINT
from policy_steer.hardware.session import RobotRunConfig, RobotRunResult, RobotSession, run_session

STOPPED_EXIT = 3


def run_robot(cfg: RobotRunConfig) -> int:
    session, result = run_session(cfg)
    for line in report_lines(session, result):
        print(f"policy-steer robot: {line}", flush=True)
    if result.stopped:
        print(f"policy-steer robot: safe stop ({result.stop_reason}: {session.safety.stop_detail})", file=sys.stderr, flush=True)
        return STOPPED_EXIT
    return 0


def report_lines(session: RobotSession, result: RobotRunResult) -> list[str]:
    """What an operator reads at the end of a run: what ran, every intervention by kind, why it stopped."""
    s = result.summary()
    rt, safety = s["runtime"], s["safety"]
    recs = result.runtime.records
    secs = recs[-1].acted - recs[0].started if recs else 0.0
    lines = [
        f"{rt['steps']} steps in {secs:.1f} s at {session.hz:g} Hz: {safety['executed']} executed, {safety['held']} held; "
        f"chunks {safety['chunks_accepted']} accepted, {safety['chunks_rejected']} refused, {rt['failed']} failed requests"
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
        if stop["reason"] == "stop:estop" and est and est[0]["stopped"] is not None and _loopback(session):
            dt = est[0]["stopped"] - est[0]["sent"]  # the sender's monotonic clock is this machine's
            if dt >= 0:
                line += f"; the arm stopped {dt * 1e3:.1f} ms ({dt * session.hz:.2f} control periods) after the e-stop was sent"
        lines.append(line)
    return lines


def _loopback(session: RobotSession) -> bool:
    """The control socket takes messages from this machine only (their stamps are on our clock)."""
    ep = session.estop.endpoint if session.estop is not None else ""
    return ep.startswith(("tcp://127.", "tcp://localhost:", "tcp://[::1]:", "ipc://", "inproc://"))


@dataclass
class EstopConfig:
    """``policy-steer estop``: safe-stop a running robot process through its control socket."""

    endpoint: str = DEFAULT_ENDPOINT  # the robot process's control socket (policy-steer robot --estop)
    reason: str = ""  # logged by the robot process with the stop
    timeout_s: float = 2.0  # give up (exit 1) when no acknowledgement came within this long


def run_estop(cfg: EstopConfig) -> int:
    from policy_steer.hardware.estop import EstopUnanswered, send_estop

    t0 = time.monotonic()
    try:
        ack = send_estop(cfg.endpoint, cfg.reason, cfg.timeout_s)
    except EstopUnanswered as e:
        print(f"policy-steer estop: {e}", file=sys.stderr, flush=True)
        return 1
    rtt_ms = (time.monotonic() - t0) * 1e3
    state = "stopped" if ack.get("stopped") else "stop requested, but the driver's safe stop reported a failure"
    again = "" if ack.get("first", True) else " (it was already stopped)"
    print(f"policy-steer estop: {cfg.endpoint}: {state}{again}; acknowledged after {rtt_ms:.1f} ms", flush=True)
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
