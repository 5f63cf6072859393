"""Bring a launch file up, watch it, and take it down.

1. Start the processes in file order; a process with ``after`` starts once those are healthy. Each
   process's readiness check runs in its own thread (so independent processes come up together).
2. Once all are healthy, print a status table. From then on (and while starting) watch them: a process
   that exits ends the launch, unless it is marked ``finishes`` and exited with 0 (then the launch ends
   when every ``finishes`` process has).
3. Stop (Ctrl-C / SIGTERM, a death, a failed readiness check, or the normal end): every process still
   running gets its stop signal (SIGINT by default), in reverse start order, then SIGTERM, then SIGKILL
   after ``stop_timeout_s`` each. Print the final table.

The exit code is 0 when the launch ended normally or on a signal with every process stopping cleanly,
and 1 when a process failed (died, exited non-zero, missed its readiness deadline, or had to be killed).
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from typing import TextIO

from rich.console import Console
from rich.table import Table

from policy_steer.launch import health
from policy_steer.launch.config import LaunchFile
from policy_steer.launch.process import ManagedProcess

COLORS = ("36", "33", "35", "32", "34", "31")


class Launcher:
    def __init__(self, cfg: LaunchFile, out: TextIO | None = None, color: bool | None = None) -> None:
        self.cfg = cfg
        self.out = out or sys.stdout
        self.color = self.out.isatty() if color is None else color
        self.lock = threading.Lock()
        self.width = max([len("launch")] + [len(p.name) for p in cfg.processes])
        self.procs: dict[str, ManagedProcess] = {}
        self.ready: dict[str, threading.Event] = {p.name: threading.Event() for p in cfg.processes}
        self.failures: list[str] = []
        self.stop_event = threading.Event()
        self.stop_reason: str | None = None
        self.console = Console(file=self.out, highlight=False, soft_wrap=True, no_color=not self.color)

    # --- output ----------------------------------------------------------------------------------
    def log(self, msg: str) -> None:
        with self.lock:
            self.out.write("launch".ljust(self.width) + " | " + msg + "\n")
            self.out.flush()

    def table(self, title: str) -> None:
        t = Table(title=title, title_justify="left")
        for col in ("process", "pid", "state", "ready check", "ready after s", "exit"):
            t.add_column(col)
        for spec in self.cfg.processes:
            p = self.procs.get(spec.name)
            if p is None:
                t.add_row(spec.name, "-", "not started", spec.ready.kind, "-", "-")
                continue
            rc = p.returncode
            ready_s = "-" if p.ready_at is None else f"{p.ready_at - p.started_at:.1f}"
            state = p.state + (f" ({p.stopped_with})" if p.stopped_with else "")
            t.add_row(p.name, str(p.pid), state, spec.ready.kind, ready_s, "-" if rc is None else str(rc))
        with self.lock:
            self.console.print(t)
            self.out.flush()

    # --- lifecycle -------------------------------------------------------------------------------
    def request_stop(self, reason: str) -> None:
        if self.stop_reason is None:
            self.stop_reason = reason
        self.stop_event.set()

    def _fail(self, name: str, why: str) -> None:
        self.failures.append(f"{name}: {why}")
        self.request_stop(f"{name} {why}")

    def _check_ready(self, p: ManagedProcess) -> None:
        spec = p.spec.ready
        deadline = p.started_at + spec.timeout_s
        cancelled = lambda: self.stop_event.is_set() or not p.alive()  # noqa: E731
        if spec.kind == "none":
            ok = not self.stop_event.wait(spec.grace_s) and p.alive()
            note = f"alive after {spec.grace_s:g} s" if ok else ""
        elif spec.kind == "line":
            seen = p.watch(spec.pattern)
            while not seen.wait(0.1) and not cancelled() and time.monotonic() < deadline:
                pass
            ok = seen.is_set()
            note = "line seen" if ok else f"no line matching {spec.pattern!r}"
        elif spec.kind == "ping":
            ok, note = health.ping(spec.endpoint, deadline, cancelled)
        else:
            ok, note = health.telemetry(spec.endpoint, spec.topics, deadline, cancelled)
        if ok:
            p.ready_at, p.ready_note, p.state = time.monotonic(), note, "healthy"
            self.log(f"{p.name} is healthy ({note}, {p.ready_at - p.started_at:.1f} s)")
            self.ready[p.name].set()
        elif self.stop_event.is_set():
            return
        elif not p.alive():
            return  # the watch loop reports the death
        else:
            p.state = "failed"
            self._fail(p.name, f"not healthy within {spec.timeout_s:g} s ({note})")

    def _start(self, index: int) -> None:
        spec = self.cfg.processes[index]
        color = COLORS[index % len(COLORS)] if self.color else None
        try:
            p = ManagedProcess(spec, self.cfg.env, self.out, self.lock, self.width, color)
        except OSError as e:
            self._fail(spec.name, f"cannot start {spec.command[0]!r}: {e}")
            return
        self.procs[spec.name] = p
        self.log(f"started {spec.name} (pid {p.pid}): {' '.join(p.command)}")
        threading.Thread(target=self._check_ready, args=(p,), name=f"ready-{spec.name}", daemon=True).start()

    def _watch(self) -> None:
        """Until a stop is requested: start processes (in file order, each once its ``after`` are
        healthy), notice exits, report when everything is healthy, end on completion.

        Runs on the main thread, which is the one that starts the children: their parent-death signal
        is tied to the thread that forked them.
        """
        announced = False
        finishers = [p.name for p in self.cfg.processes if p.finishes]
        next_i = 0
        while True:
            while (next_i < len(self.cfg.processes) and not self.stop_event.is_set()
                   and all(self.ready[d].is_set() for d in self.cfg.processes[next_i].after)):
                self._start(next_i)
                next_i += 1
            for p in list(self.procs.values()):
                rc = p.returncode
                if rc is None or p.state in ("exited", "failed"):
                    continue
                if rc == 0 and p.spec.finishes:
                    p.state = "exited"
                    self.log(f"{p.name} finished (exit 0)")
                else:
                    p.state = "failed"
                    tail = " / ".join(list(p.tail)[-3:])
                    self._fail(p.name, f"exited with {rc}" + (f"; last output: {tail}" if tail else ""))
            if self.stop_event.is_set():
                break
            if finishers and all(n in self.procs and self.procs[n].state == "exited" for n in finishers):
                self.request_stop("every finishing process is done")
                break
            if not announced and all(e.is_set() for e in self.ready.values()):
                announced = True
                self.table(f"{self.cfg.name}: all {len(self.procs)} processes healthy")
            if self.stop_event.wait(0.1):
                break

    def _stop_all(self) -> None:
        for p in reversed(list(self.procs.values())):
            if p.alive():
                self.log(f"stopping {p.name} ({p.spec.stop_signal})")
            was_running = p.alive()
            p.stop(p.spec.stop_signal, self.cfg.stop_timeout_s, self.log)
            if was_running and p.state == "killed":
                self.failures.append(f"{p.name}: did not stop on {p.spec.stop_signal} or SIGTERM; killed")

    def run(self) -> int:
        """Bring up, watch, tear down; returns the exit code. Installs SIGINT/SIGTERM handlers (main thread)."""
        handlers = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                handlers[sig] = signal.signal(sig, lambda s, _f: self.request_stop(f"{signal.Signals(s).name} received"))
        self.log(f"{self.cfg.name}: starting {len(self.cfg.processes)} process(es)")
        try:
            self._watch()
            self.log(f"stopping: {self.stop_reason}")
            self._stop_all()
        finally:
            for sig, h in handlers.items():
                signal.signal(sig, h)
        self.table(f"{self.cfg.name}: stopped ({self.stop_reason})")
        if self.failures:
            for f in self.failures:
                self.log(f"FAILED {f}")
            return 1
        return 0
