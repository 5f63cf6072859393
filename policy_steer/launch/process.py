"""One child process of a launch: started in its own process group, output forwarded with a prefix,
stopped by escalating signals.

The child runs in a new session (its own process group), so a Ctrl-C at the terminal reaches only the
launcher, which then stops the children in order; signals go to the whole group, so whatever the child
started goes too. On Linux the child also gets SIGTERM if the launcher dies without cleaning up
(``PR_SET_PDEATHSIG``); it runs under ``guard.py``, which then stops the child's whole process group,
so a killed launcher leaves no orphans behind, grandchildren included.
"""

from __future__ import annotations

import collections
import ctypes
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import TextIO

from policy_steer.launch.config import ProcessSpec

PR_SET_PDEATHSIG = 1
GUARD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "guard.py")


def _die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass  # not Linux: the launcher's own teardown still stops the children


def resolve_command(command: list[str]) -> list[str]:
    """``policy-steer ...`` -> this interpreter's CLI module; ``python`` -> this interpreter."""
    if command[0] == "policy-steer":
        return [sys.executable, "-m", "policy_steer.cli.main", *command[1:]]
    if command[0] in ("python", "python3"):
        return [sys.executable, *command[1:]]
    return list(command)


class ManagedProcess:
    """A started process; ``lines`` of its output are forwarded to ``out`` as ``name | line``."""

    def __init__(self, spec: ProcessSpec, base_env: dict[str, str], out: TextIO, out_lock: threading.Lock,
                 width: int, color: str | None = None) -> None:
        self.spec = spec
        self.name = spec.name
        self.out, self.out_lock = out, out_lock
        self.prefix = spec.name.ljust(width) + " | "
        if color:
            self.prefix = f"\x1b[{color}m{self.prefix}\x1b[0m"
        self.tail: collections.deque[str] = collections.deque(maxlen=40)
        self._watchers: list[tuple[re.Pattern, threading.Event]] = []
        self._lock = threading.Lock()
        self.started_at = time.monotonic()
        self.ready_at: float | None = None
        self.ready_note = ""
        self.state = "starting"  # starting | healthy | failed | exited | stopping | stopped | killed
        self.stop_requested = False
        self.stopped_with: str | None = None  # the last signal it took to stop
        env = {**os.environ, **base_env, **spec.env, "PYTHONUNBUFFERED": "1"}
        self.command = resolve_command(spec.command)
        guarded = [sys.executable, GUARD, *self.command] if sys.platform.startswith("linux") else self.command
        self.popen = subprocess.Popen(
            guarded, cwd=spec.cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, errors="replace", bufsize=1, start_new_session=True,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )
        self.pid = self.popen.pid
        self._readers = [
            threading.Thread(target=self._forward, args=(stream,), name=f"launch-{self.name}-{label}", daemon=True)
            for stream, label in ((self.popen.stdout, "out"), (self.popen.stderr, "err"))
        ]
        for t in self._readers:
            t.start()

    # --- output ---------------------------------------------------------------------------------
    def _forward(self, stream: TextIO) -> None:
        for line in stream:
            line = line.rstrip("\n")
            with self.out_lock:
                self.out.write(self.prefix + line + "\n")
                self.out.flush()
            with self._lock:
                self.tail.append(line)
                for pattern, event in self._watchers:
                    if pattern.search(line):
                        event.set()

    def watch(self, pattern: str) -> threading.Event:
        """An event that is set when a line matching ``pattern`` is (or already was) printed."""
        regex, event = re.compile(pattern), threading.Event()
        with self._lock:
            if any(regex.search(line) for line in self.tail):
                event.set()
            self._watchers.append((regex, event))
        return event

    # --- state ------------------------------------------------------------------------------------
    @property
    def returncode(self) -> int | None:
        return self.popen.poll()

    def alive(self) -> bool:
        return self.popen.poll() is None

    def _signal(self, sig: int) -> None:
        try:
            os.killpg(self.pid, sig)  # the whole group: what the child started goes too
        except ProcessLookupError:
            pass
        except PermissionError:
            self.popen.send_signal(sig)

    def stop(self, first: str, timeout_s: float, log: Callable[[str], None]) -> None:
        """``first`` signal, wait ``timeout_s``; SIGTERM, wait; SIGKILL. Also sweeps the process group."""
        self.stop_requested = True
        if self.alive():
            self.state = "stopping"
            for sig in (getattr(signal, first), signal.SIGTERM, signal.SIGKILL):
                if not self.alive():
                    break
                if sig != getattr(signal, first):
                    log(f"{self.name} still running after {timeout_s:g} s: sending {signal.Signals(sig).name}")
                self.stopped_with = signal.Signals(sig).name
                self._signal(sig)
                try:
                    self.popen.wait(timeout_s)
                except subprocess.TimeoutExpired:
                    continue
            self.state = "killed" if self.stopped_with == "SIGKILL" else "stopped"
        self._signal(signal.SIGKILL)  # anything the child left behind in its group
        for t in self._readers:
            t.join(2.0)
