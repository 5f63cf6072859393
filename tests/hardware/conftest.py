"""Fixtures of the hardware tests: policy servers in their own OS processes.

These machines are shared (2 cores, load up to ~10): end-to-end tests run the control loop at 10 Hz,
so that "within N control periods" is measured in 100 ms periods with the loop's own stamps, and every
wait for a process has a generous deadline.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402

from tests.hardware.helpers import ROOT, SERVER_SCRIPT, child_env, wait_for_line  # noqa: E402


@pytest.fixture
def policy_server() -> Iterator[Callable[..., tuple[subprocess.Popen, str]]]:
    """``policy_server(policy="circle", **options)`` starts tests/hardware/policy_server.py; returns (process, endpoint)."""
    procs: list[subprocess.Popen] = []

    def start(**options: object) -> tuple[subprocess.Popen, str]:
        args = [sys.executable, str(SERVER_SCRIPT)] + [f"--{k}={v}" for k, v in options.items()]
        err = tempfile.TemporaryFile("w+")  # a file, not a pipe: a chatty server never blocks on it
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=err, text=True, env=child_env(), cwd=ROOT)
        procs.append(proc)
        try:
            line = wait_for_line(proc, "ready ", 60.0)
        except (RuntimeError, TimeoutError) as e:
            err.seek(0)
            raise RuntimeError(f"{e}; the server said: {err.read()[-2000:]}") from None
        return proc, line.split()[1]

    yield start
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait(10)
        if p.stdout:
            p.stdout.close()

