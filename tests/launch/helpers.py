"""Process helpers shared by the sim-robot, ROS-bridge and launch tests: real processes, real sockets.

- :func:`free_port`: a loopback TCP port nobody listens on (for endpoints a subscriber must know
  before the publisher binds);
- :class:`Proc`: a child process whose output is collected by a thread (never blocks on a full pipe);
- :class:`TelemetryCollector`: SUB sockets on telemetry endpoints, every message kept, on a thread;
- :func:`descendants` / :func:`alive`: what a process started, and whether any of it still runs (psutil).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import zmq

from policy_steer.transport.telemetry import TelemetryMessage, TelemetrySubscriber

REPO = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
ENV = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_endpoint() -> str:
    return f"tcp://127.0.0.1:{free_port()}"


class Proc:
    """``Popen`` with stdout+stderr merged and collected line by line on a thread."""

    def __init__(self, args: list[str], cwd: Path = REPO, env: dict[str, str] | None = None) -> None:
        self.args = args
        self.popen = subprocess.Popen(
            args, cwd=cwd, env=env or ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            errors="replace", stdin=subprocess.DEVNULL,
        )
        self.lines: list[str] = []
        self._cond = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    @classmethod
    def cli(cls, *words: str, **kw) -> Proc:
        return cls([PYTHON, "-m", "policy_steer.cli.main", *words], **kw)

    def _read(self) -> None:
        for line in self.popen.stdout:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def output(self) -> str:
        with self._cond:
            return "\n".join(self.lines)

    def wait_line(self, text: str, timeout_s: float) -> str:
        """The first line containing ``text``; raises (with the output) if the process ends or time runs out."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while True:
                for line in self.lines:
                    if text in line:
                        return line
                left = deadline - time.monotonic()
                if left <= 0 or (self.popen.poll() is not None and not self._cond.wait(0.5)):
                    raise AssertionError(f"no line with {text!r} (rc={self.popen.poll()}); output:\n{self.output_tail()}")
                self._cond.wait(min(left, 0.2))

    def output_tail(self, n: int = 60) -> str:
        return "\n".join(self.lines[-n:])

    def wait(self, timeout_s: float) -> int:
        try:
            return self.popen.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"process did not end within {timeout_s} s; output:\n{self.output_tail()}") from None

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(10)


class TelemetryCollector:
    """Keeps every message from some telemetry endpoints (label -> endpoint) until ``stop()``."""

    def __init__(self, endpoints: dict[str, str]) -> None:
        self.context = zmq.Context()
        # a short reconnect interval: a robot binds its endpoint after this connects, and publishes at once
        self.subs = {label: TelemetrySubscriber(ep, topics=("",), context=self.context, hwm=100_000, reconnect_ms=10)
                     for label, ep in endpoints.items()}
        self.messages: dict[str, list[TelemetryMessage]] = {label: [] for label in endpoints}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        poller = zmq.Poller()
        by_socket = {}
        for label, sub in self.subs.items():
            poller.register(sub.socket, zmq.POLLIN)
            by_socket[sub.socket] = label
        while not self._stop.is_set():
            for sock, _ in poller.poll(100):
                label = by_socket[sock]
                msg = self.subs[label].recv(0)
                if msg is not None:
                    self.messages[label].append(msg)

    def of(self, label: str, topic: str) -> list[TelemetryMessage]:
        return [m for m in list(self.messages[label]) if m.topic == topic]

    def events(self, label: str) -> list[str]:
        return [m.header.get("event") for m in self.of(label, "event")]

    def wait_for(self, label: str, predicate, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if predicate(list(self.messages[label])):
                return
            time.sleep(0.05)
        raise AssertionError(f"telemetry {label!r}: condition not met within {timeout_s} s")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for sub in self.subs.values():
            sub.close()
        self.context.term()


def descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def alive(procs: list[psutil.Process]) -> list[psutil.Process]:
    """Those of ``procs`` still running (zombies waiting for their parent count as gone)."""
    out = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except psutil.NoSuchProcess:
            pass
    return out
