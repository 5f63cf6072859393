"""The Ray executor: episodes on Ray actors, one per worker slot, on this machine or on a cluster.

``--executor ray`` without ``--ray_address`` starts a Ray instance here with ``--workers`` CPUs (no
dashboard, a small object store: episodes return records of a few kB) and stops it at the end; with
``--ray_address HOST:PORT`` (a cluster started with ``ray start --head`` and joined by
``ray start --address HOST:PORT`` on the other nodes) it connects, starts ``--workers`` actors of one
CPU each wherever Ray places them, and leaves the cluster running.

**Actors.** Each actor (:class:`EpisodeWorker`) runs :func:`policy_steer.bench.worker.init_worker` with
the run's worker options when it starts and :func:`~policy_steer.bench.worker.run_job` per episode, so
it keeps its loaded environments and steered policies (policy, verifier, reward) for every episode it
runs. Before its first episode it fingerprints the run's checkpoints where it runs and refuses to start
when one differs from the run's header (another file at the same path on another node), naming the node.
The actors get one thread per numeric library in their environment (:data:`ACTOR_ENV`) and the
submitting process's CPU-kernel pins (:data:`FORWARDED_ENV`): see :mod:`policy_steer.bench.executors`
for why the same seed gives the same record on every node.

**Scheduling.** One episode in flight per actor: an actor that finishes gets the next episode at once
(episodes of a cell are queued together, so an actor mostly reuses the policy it loaded), and each
finished episode is yielded as it arrives (``ray.wait``).

**Failures.** An actor whose process or node dies (its episode's result is a ``RayActorError``,
``WorkerCrashedError``, ``NodeDiedError`` or ``ObjectLostError``) is dropped, a replacement actor is
started, and its episode goes back to the front of the queue to run on the next free actor; an episode
whose worker died more than ``retries`` times stops the run naming it (an episode that kills its worker
every time, e.g. by running out of memory, is not retried for ever). An episode that raises stops the
run with its exception, as the local executor does. The records file is written by the runner alone, so
an episode is recorded once (and the writer drops a second record of a (cell, seed) pair, should Ray
ever deliver one). While every actor is lost and no replacement can be placed (a cluster that lost its
nodes), the queue waits for Ray to place them and says so every :data:`WAIT_REPORT_S` seconds.

Security: Ray moves the jobs and records between the processes of the cluster with its own
serialization (cloudpickle), so a Ray cluster must only be reachable by its users: never expose its
ports to an untrusted network, and turn on Ray's token authentication for a cluster of several machines
(``RAY_AUTH_MODE=token`` and one shared token on every node; Ray 2.59+ does it by default for a Ray
started here).
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections import deque
from collections.abc import Iterator
from typing import Any

import ray
from ray.exceptions import NodeDiedError, ObjectLostError, RayActorError, RayTaskError, WorkerCrashedError

from policy_steer.bench.executors import Job, Retries
from policy_steer.errors import ConfigError

log = logging.getLogger(__name__)

# Set in every actor's environment before it imports torch: one thread per numeric library, as
# init_worker sets for torch (see policy_steer.bench.executors: thread counts change float sums).
ACTOR_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
# Passed from the submitting process to every actor when set there: the CPU-kernel pins that make
# nodes with different CPUs compute alike, and how the simulator renders and policies load.
FORWARDED_ENV = ("ATEN_CPU_CAPABILITY", "MKL_CBWR", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "MUJOCO_GL",
                 "PYOPENGL_PLATFORM", "HF_HUB_OFFLINE")
OBJECT_STORE_BYTES = 128 * 1024 * 1024  # a Ray started here: records are small, the store holds nothing else
WAIT_REPORT_S = 30.0
# What a dead actor process or node looks like to the caller of one of its methods.
WORKER_LOST = (RayActorError, WorkerCrashedError, NodeDiedError, ObjectLostError)


class EpisodeWorker:
    """One worker slot: the bench worker of :mod:`policy_steer.bench.worker` inside a Ray actor."""

    def __init__(self, options: dict[str, Any]) -> None:
        from policy_steer.bench.worker import init_worker

        init_worker(options)  # one torch thread; the run's worker options

    def check(self, policies: dict[str, str]) -> str | None:
        """None, or what differs between the run's checkpoints and the files this node has."""
        from pathlib import Path

        from policy_steer.bench.records import policy_fingerprint

        for path, fingerprint in policies.items():
            if not Path(path).exists():
                return f"node {socket.gethostname()} has no {path} (every node needs the run's checkpoints at the same path)"
            if policy_fingerprint(path) != fingerprint:
                return f"node {socket.gethostname()} has another {path} than the run (its files' fingerprint differs)"
        return None

    def run(self, job: Job) -> dict[str, Any]:
        from policy_steer.bench.worker import run_job

        return run_job(job)[1]

    def pid(self) -> int:
        return os.getpid()


_RemoteWorker = ray.remote(num_cpus=1, max_restarts=0, max_task_retries=0)(EpisodeWorker)


class RayExecutor:
    name = "ray"

    def __init__(self, workers: int, options: dict[str, Any], address: str | None, policies: dict[str, str],
                 retries: int = 2) -> None:
        self.workers = workers
        self.options = options
        self.address = address
        self.policies = policies
        self._retries = Retries(workers, retries, "Ray worker")
        self._started = False  # this executor called ray.init (so it calls ray.shutdown)
        self._actors: list[Any] = []
        self._env = {**ACTOR_ENV, **{k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}}
        if address:
            _check_reachable(address)  # before the run writes anything

    @property
    def rerun(self) -> int:
        return self._retries.rerun

    def __enter__(self) -> RayExecutor:
        if ray.is_initialized():  # a caller (a notebook, a test) already joined a cluster: use it, leave it
            return self
        try:
            if self.address:
                ray.init(address=self.address, log_to_driver=False, logging_level=logging.WARNING)
            else:
                ray.init(address="local", num_cpus=self.workers, include_dashboard=False,
                         object_store_memory=OBJECT_STORE_BYTES, log_to_driver=False, logging_level=logging.WARNING)
        except ConnectionError as e:  # it answered (see _check_reachable) but would not let this process join
            raise ConfigError(
                f"--ray_address {self.address}: could not join the Ray cluster there ({e}); a cluster with token "
                "authentication (Ray's default from 2.59) needs RAY_AUTH_MODE=token and its token (~/.ray/auth_token "
                "or RAY_AUTH_TOKEN) here as on its nodes") from None
        self._started = True
        return self

    def __exit__(self, *exc: Any) -> None:
        for actor in self._actors:
            try:
                ray.kill(actor, no_restart=True)
            except Exception:  # already dead, or the cluster is gone: nothing left to stop
                pass
        self._actors.clear()
        if self._started:
            ray.shutdown()
            self._started = False

    def _start_actor(self, starting: dict[Any, Any]) -> None:
        actor = _RemoteWorker.options(runtime_env={"env_vars": self._env}).remote(self.options)
        self._actors.append(actor)
        starting[actor.check.remote(self.policies)] = actor

    def _drop(self, actor: Any) -> None:
        if actor in self._actors:
            self._actors.remove(actor)
        try:
            ray.kill(actor, no_restart=True)  # it may be half alive (e.g. unreachable): make sure it is gone
        except Exception:
            pass

    def episodes(self, jobs: list[Job]) -> Iterator[dict[str, Any]]:
        queue: deque[Job] = deque(jobs)
        starting: dict[Any, Any] = {}  # check() ref -> actor not yet ready
        running: dict[Any, tuple[Any, Job]] = {}  # run() ref -> (actor, job)
        idle: list[Any] = []
        for _ in range(min(self.workers, len(jobs))):
            self._start_actor(starting)
        last_report = time.monotonic()
        while queue or running:
            while idle and queue:
                actor, job = idle.pop(), queue.popleft()
                running[actor.run.remote(job)] = (actor, job)
            ready, _ = ray.wait([*running, *starting], num_returns=1, timeout=WAIT_REPORT_S)
            if not ready:
                if not running and time.monotonic() - last_report >= WAIT_REPORT_S:
                    log.warning("waiting for Ray to place workers (%d starting, none running; %d episodes queued)",
                                len(starting), len(queue))
                    last_report = time.monotonic()
                continue
            (ref,) = ready
            if ref in starting:
                actor = starting.pop(ref)
                try:
                    problem = ray.get(ref)
                except RayTaskError as e:  # the check itself raised (e.g. an unreadable checkpoint file)
                    raise e.as_instanceof_cause() from None
                except WORKER_LOST as e:  # died while starting (its node went away, or it could not start)
                    self._drop(actor)
                    self._retries.start_failed(_first_line(e))
                    self._start_actor(starting)
                    continue
                if problem:
                    raise ConfigError(f"--executor ray: {problem}")
                idle.append(actor)
                continue
            actor, job = running.pop(ref)
            try:
                record = ray.get(ref)
            except RayTaskError as e:  # the episode itself raised: stop, as a local worker does
                raise e.as_instanceof_cause() from None
            except WORKER_LOST as e:
                self._retries.episode_lost(job, _first_line(e))
                log.warning("a Ray worker died running episode (cell %d, seed %d) (%s); it runs again on another worker",
                            job[0], job[2], _first_line(e))
                self._drop(actor)
                queue.appendleft(job)
                self._start_actor(starting)
                continue
            idle.append(actor)
            yield record


def _check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """A HOST:PORT that nothing answers on is refused at once (ray.init would retry it for minutes)."""
    host, sep, port = address.rpartition(":")
    if not sep or "://" in address or not port.isdigit():
        return  # "auto", ray://...: Ray's own forms, left to ray.init
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as e:
        raise ConfigError(f"--ray_address {address}: no Ray cluster answers there ({e}); start one with "
                          f"`ray start --head --port {port}` on that machine, or drop --ray_address to start Ray here"
                          ) from None


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"
