"""Executors: where a benchmark's episodes run. ``local`` (worker processes on this machine, the default)
or ``ray`` (actors on a Ray cluster: ``--executor ray [--ray_address HOST:PORT]``).

**Contract.** The unit of work is one episode, a :data:`Job` = (cell index, cell, seed). An executor is a
context manager (entering it starts its workers or joins its cluster, leaving it stops what it started);
:meth:`Executor.episodes` takes the jobs still to run and yields one episode record
(:mod:`policy_steer.bench.records`) per job, in the order they finish, while the others run. Every worker
runs :func:`policy_steer.bench.worker.init_worker` once with the run's worker options and then
:func:`~policy_steer.bench.worker.run_job` per episode, so a worker keeps its loaded environments and
steered policies (policy, verifier, reward) across the episodes it runs. The runner appends each yielded
record to the records file and builds results.json / results.md / the plots from that file, the same for
every executor; an executor therefore never writes results itself. An exception from ``episodes`` (an
episode that failed, Ctrl-C) ends the run; the records written until then stay, and ``--resume true``
finishes it, with any executor.

**Reproducibility: the same records everywhere.** An episode's record (outcome, the executed actions'
SHA-256, steering figures) depends only on (policy, configuration, seed): never on the executor, the
number of workers, which worker ran it or the order. What makes this hold:

- Every random draw of an episode comes from its seed (the env's reset and the sampler's noise are seeded
  per episode), and what a worker caches between episodes (envs, policies) carries no state from one
  episode into the next; tests/bench/test_executors.py checks that 1 local worker, 2 local workers and
  Ray actors on a two-node cluster write identical records.
- Thread counts. A float reduction split over T threads adds in another order than over 1 thread (torch's
  intra-op pool, OpenMP, MKL), so the last bits of an action, and from there a whole trajectory, can
  differ with T. Every worker runs torch on one thread (``init_worker``), and a Ray actor also gets
  ``OMP_NUM_THREADS=MKL_NUM_THREADS=OPENBLAS_NUM_THREADS=1`` in its environment before it imports torch
  (:data:`policy_steer.bench.executors.ray.ACTOR_ENV`). The single-process path (``--workers 1``) runs in
  the calling process, after the same ``init_worker``.
- CPU kernels. torch picks vectorised kernels by the CPU's instruction set (its dispatch: DEFAULT, AVX2,
  AVX512), MKL and oneDNN (convolutions) do the same, and kernels for different instruction sets may round
  differently. Nodes with the same CPU family and the same torch build agree; across different CPUs set
  the same lower level on every node and on the machine that starts the run (``ATEN_CPU_CAPABILITY=avx2``,
  ``MKL_CBWR=AVX2``, ``ONEDNN_MAX_CPU_ISA=AVX2``): the Ray executor passes these variables from the
  submitting process to every actor. Each record says what it ran on (``numerics``: torch version, CPU
  capability, threads), so a difference can be traced.
- GPUs are not used by the benchmark workers; CUDA kernels (atomics, cuDNN autotuning) are a further
  source of nondeterminism this guarantee does not cover.
- Versions: the same torch, lerobot, MuJoCo and policy-steer on every node (a different MuJoCo or torch
  build may change results); the checkpoints are compared by fingerprint (the Ray actors check theirs
  against the run's header before their first episode).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

from policy_steer.bench.cells import Cell
from policy_steer.bench.config import BenchConfig, worker_options
from policy_steer.errors import ConfigError

Job = tuple[int, Cell, int]  # (cell index in the grid, the cell, seed): one episode
EXECUTORS = ("local", "ray")


class Executor(Protocol):
    name: str
    rerun: int  # episodes run again because the worker running them died (after episodes() ended)

    def __enter__(self) -> Executor: ...

    def __exit__(self, *exc: Any) -> None: ...

    def episodes(self, jobs: list[Job]) -> Iterator[dict[str, Any]]:
        """Run ``jobs``; yield each one's episode record as it finishes (any order)."""
        ...


class Retries:
    """What an executor forgives when workers die: an episode whose worker died under it runs again, at most
    ``retries`` times (``rerun`` counts those runs); worker starts may fail ``workers * (retries + 1)`` times
    in all. Past either bound the run stops with a RuntimeError naming ``what`` died and how (``last``)."""

    def __init__(self, workers: int, retries: int, what: str) -> None:
        self.workers, self.retries, self.what = workers, retries, what
        self.rerun = 0
        self.failed_starts = 0
        self._lost: dict[tuple[int, int], int] = {}  # (cell, seed) -> times its worker died under it

    def episode_lost(self, job: Job, last: str) -> None:
        """``job``'s worker died: count a re-run, or raise when the episode has had its retries."""
        key = (job[0], job[2])
        self._lost[key] = self._lost.get(key, 0) + 1
        if self._lost[key] > self.retries:
            raise RuntimeError(f"episode (cell {job[0]}, seed {job[2]}): its {self.what} died {self._lost[key]} times "
                               f"(last: {last}); not retried again (--episode_retries {self.retries})")
        self.rerun += 1

    def start_failed(self, last: str) -> None:
        """A worker died while it started: count it, or raise when starts keep failing."""
        self.failed_starts += 1
        if self.failed_starts > self.workers * (self.retries + 1):
            raise RuntimeError(f"bench {self.what}s keep dying while they start ({self.failed_starts} times; last: {last})")


def make_executor(cfg: BenchConfig, policies: dict[str, str]) -> Executor:
    """The executor ``cfg`` asks for, not started yet. ``policies``: the run's checkpoint fingerprints
    (the records header's ``policies``), which remote workers check theirs against. Refuses bad options
    and ``--executor ray`` without Ray installed, each in one line, before anything runs."""
    if cfg.executor not in EXECUTORS:
        raise ConfigError(f"unknown --executor {cfg.executor!r}; use one of {', '.join(EXECUTORS)}")
    if cfg.workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {cfg.workers}")
    if cfg.episode_retries < 0:
        raise ConfigError(f"--episode_retries must be >= 0, got {cfg.episode_retries}")
    if cfg.executor == "local":
        if cfg.ray_address:
            raise ConfigError("--ray_address needs --executor ray")
        from policy_steer.bench.executors.local import LocalExecutor

        return LocalExecutor(cfg.workers, worker_options(cfg), retries=cfg.episode_retries)
    try:
        from policy_steer.bench.executors.ray import RayExecutor  # imports ray, the optional extra
    except ImportError as e:
        if e.name != "ray" and not (e.name or "").startswith("ray."):
            raise  # something else is missing: its own error
        raise ConfigError(f'--executor ray needs Ray, which is not installed ({e}): pip install "policy-steer[ray]"') from None

    return RayExecutor(cfg.workers, worker_options(cfg), address=cfg.ray_address, policies=policies,
                       retries=cfg.episode_retries)
