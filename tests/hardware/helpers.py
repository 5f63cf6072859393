"""Helpers of the hardware tests: a manual clock, processes of this repository, stdout waits."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SERVER_SCRIPT = Path(__file__).with_name("policy_server.py")


class ManualClock:
    """A monotonic clock that moves only when told to (deterministic watchdog and physics tests)."""

    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, dt: float) -> None:
        self.t += dt


def child_env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def wait_for_line(proc: subprocess.Popen, prefix: str, timeout_s: float, stream=None) -> str:
    """The first line of ``proc``'s stdout (or ``stream``) that starts with ``prefix`` (fails on exit or timeout)."""
    stream = proc.stdout if stream is None else stream
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}")
        ready, _, _ = select.select([stream], [], [], 0.2)
        if ready:
            line = stream.readline()
            if line.startswith(prefix):
                return line.strip()
    raise TimeoutError(f"no {prefix!r} line within {timeout_s} s")


def run_cli(args: list[str], timeout_s: float = 120.0) -> subprocess.CompletedProcess:
    """``policy-steer ARGS`` in a new process (the installed console script's entry point)."""
    cmd = [sys.executable, "-c", "import sys; from policy_steer.cli.main import main; sys.exit(main())", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=child_env(), cwd=ROOT)


def cli_process(args: list[str]) -> subprocess.Popen:
    cmd = [sys.executable, "-c", "import sys; from policy_steer.cli.main import main; sys.exit(main())", *args]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env(), cwd=ROOT)
