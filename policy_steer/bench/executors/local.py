"""The local executor: episodes in worker processes on this machine (the default; needs nothing extra).

``workers == 1`` runs the episodes in the calling process (no process start, the simplest to debug).
More workers are ``spawn`` processes (a fork of a process that already holds torch's thread pools or an
EGL context is not safe), each initialised once with :func:`policy_steer.bench.worker.init_worker` and
then fed one episode at a time over its own pipe (the load stays balanced, and the parent always knows
which episode each process holds).

**A worker that dies** (killed, out of memory, a crash in native code) is seen by its process sentinel:
its episode goes back to the front of the queue, a replacement process starts, and the episode runs
again, at most ``retries`` times; it is recorded once, by the runner. (A ``multiprocessing.Pool`` loses
such an episode and waits for it for ever, which is why this is not one.) An episode that raises stops
the run with its exception. Workers ignore SIGINT: Ctrl-C reaches the runner, which keeps what is
recorded, and the workers are terminated. See :mod:`policy_steer.bench.executors` for the contract and
the reproducibility rules.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import signal
import traceback
from collections import deque
from collections.abc import Iterator
from multiprocessing.connection import Connection, wait
from typing import Any

from policy_steer.bench.executors import Job, Retries
from policy_steer.bench.worker import init_worker, run_job

log = logging.getLogger(__name__)


def _serve(conn: Connection, options: dict[str, Any]) -> None:
    """A worker process: init once and say ("ready", None), then (job -> ("ok", record) | ("error",
    exception)) until None or until it is terminated."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    try:
        init_worker(options)
    except Exception as e:
        _send_error(conn, e, "initialising a bench worker process")
        return
    conn.send(("ready", None))
    while (job := conn.recv()) is not None:
        try:
            record = run_job(job)[1]
        except Exception as e:  # the episode failed: the parent stops the run with it, and shows where
            _send_error(conn, e, f"in a bench worker process, episode (cell {job[0]}, seed {job[2]})")
            continue
        conn.send(("ok", record))


def _send_error(conn: Connection, e: Exception, where: str) -> None:
    e.add_note(f"{where}:\n{traceback.format_exc()}")
    try:
        conn.send(("error", e))
    except Exception:  # an exception that does not pickle: its text
        conn.send(("error", RuntimeError(f"{type(e).__name__}: {e} ({where})")))


class LocalExecutor:
    name = "local"

    def __init__(self, workers: int, options: dict[str, Any], retries: int = 2) -> None:
        self.workers = workers
        self.options = options
        self._retries = Retries(workers, retries, "worker process")
        self._procs: dict[Connection, Any] = {}  # parent's end of a worker's pipe -> its process

    @property
    def rerun(self) -> int:
        return self._retries.rerun

    def __enter__(self) -> LocalExecutor:
        return self

    def __exit__(self, *exc: Any) -> None:
        # Finished, stopped or failed alike: a worker holds nothing to save (its records came back over
        # its pipe), and the interpreter teardown of torch, MuJoCo and EGL takes seconds, so it is ended.
        for proc in self._procs.values():
            proc.terminate()
        for conn in list(self._procs):
            self._drop(conn, wait_s=10)

    def _start(self) -> Connection:
        ctx = mp.get_context("spawn")
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=_serve, args=(child, self.options), daemon=True)
        proc.start()
        child.close()
        self._procs[parent] = proc
        return parent

    def _drop(self, conn: Connection, wait_s: float = 0.0) -> int | None:
        """Forget a worker (killing it if it still runs after ``wait_s``); its exit code."""
        proc = self._procs.pop(conn)
        proc.join(wait_s)
        if proc.is_alive():
            proc.kill()
            proc.join()
        conn.close()
        return proc.exitcode

    def episodes(self, jobs: list[Job]) -> Iterator[dict[str, Any]]:
        if not jobs:
            return
        if self.workers == 1:
            init_worker(self.options)
            for job in jobs:
                yield run_job(job)[1]
            return
        queue: deque[Job] = deque(jobs)
        # A process gets episodes once it is ready: a replacement still importing torch holds none back.
        starting = {self._start() for _ in range(min(self.workers, len(jobs)))}
        idle: list[Connection] = []
        busy: dict[Connection, Job] = {}
        while queue or busy:
            while idle and queue:
                conn, job = idle.pop(), queue.popleft()
                try:
                    conn.send(job)
                except OSError:  # the process died while idle: replace it, the episode never started
                    self._drop(conn)
                    queue.appendleft(job)
                    starting.add(self._start())
                    continue
                busy[conn] = job
            watched = [*busy, *starting]
            sentinels = {self._procs[c].sentinel: c for c in watched}
            for ready in wait([*watched, *sentinels]):
                conn = sentinels.get(ready, ready)
                if conn not in busy and conn not in starting:
                    continue  # its message and its exit in one wait: handled with the message
                try:
                    status, value = conn.recv() if conn.poll() else (None, None)
                except (EOFError, OSError):
                    status, value = None, None
                if status == "error":
                    raise value
                if conn in starting:
                    starting.discard(conn)
                    if status == "ready":
                        idle.append(conn)
                        continue
                    self._retries.start_failed(f"exit code {self._drop(conn)}")
                    starting.add(self._start())
                    continue
                job = busy.pop(conn)
                if status == "ok":
                    idle.append(conn)
                    yield value
                    continue
                # the process died holding this episode: run it again on another worker
                code = self._drop(conn)
                self._retries.episode_lost(job, f"exit code {code}")
                log.warning("a worker process died (exit code %s) running episode (cell %d, seed %d); it runs again",
                            code, job[0], job[2])
                queue.appendleft(job)
                starting.add(self._start())
