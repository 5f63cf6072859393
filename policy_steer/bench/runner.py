"""Run a benchmark grid: seeded episodes of every cell in parallel worker processes."""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import shlex
import sys
import time
from collections import defaultdict
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from tqdm import tqdm

from policy_steer.bench.cells import Cell, expand_cells
from policy_steer.bench.config import BenchConfig
from policy_steer.bench.plots import write_plots
from policy_steer.bench.results import markdown_table, run_entry, write_results
from policy_steer.bench.worker import init_worker, run_job
from policy_steer.errors import CheckpointError, ConfigError
from policy_steer.policies.loading import resolve_checkpoint

log = logging.getLogger(__name__)


def check_cells(cells: list[Cell]) -> None:
    """Fail before any worker starts: checkpoint folders exist and their action dim fits the task."""
    from policy_steer.envs import make

    action_dims: dict[str, int] = {}
    for task in {c.task for c in cells}:
        env = make(task)
        action_dims[task] = env.unwrapped.action_dim
        env.close()
    for policy, task in {(c.policy, c.task) for c in cells}:
        folder = resolve_checkpoint(policy)
        cfg = json.loads((folder / "config.json").read_text())
        try:
            a = int(cfg["output_features"]["action"]["shape"][0])
        except (KeyError, IndexError, TypeError) as e:
            raise CheckpointError(f"{folder}/config.json has no output_features.action.shape") from e
        if a != action_dims[task]:
            raise CheckpointError(
                f"policy {folder} outputs {a}-D actions but task {task!r} takes {action_dims[task]}-D actions"
            )


def episode_key(cell: Cell, cfg: BenchConfig) -> Any:
    """Cells with the same key give identical episodes, so only the first is run.

    At a fixed delay of 0 with the default trigger the three runtime modes are the same loop: the
    chunk is asked for when the queue is empty, conditioned on the measured state (nothing is pending,
    so vlash's estimate is the measurement), and starts at once (tests/runtime/test_modes.py checks
    that the episodes are identical action for action). Only the measured compute times differ.
    """
    if cell.latency.strip() == "0" and cfg.trigger in (None, 0):
        return replace(cell, mode="*")
    return cell


def run_bench(cfg: BenchConfig) -> list[dict[str, Any]]:
    cells = expand_cells(cfg)
    check_cells(cells)
    if cfg.workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {cfg.workers}")
    seeds = list(range(cfg.seed_start, cfg.seed_start + cfg.episodes))
    # Cells whose episodes are identical by construction run once (see shared_episodes).
    owner: dict[int, int] = {}
    first_of: dict[Any, int] = {}
    for i, cell in enumerate(cells):
        owner[i] = first_of.setdefault(episode_key(cell, cfg), i)
    # Group a cell's episodes together so that each worker's cached policy is reused.
    jobs = [(i, cell, s) for i, cell in enumerate(cells) if owner[i] == i for s in seeds]
    opts = {k: getattr(cfg, k) for k in ("trigger", "n_execute", "estimator", "quantize", "sampler_method", "num_steps")}
    episodes: dict[int, list[dict[str, Any]]] = defaultdict(list)
    t0 = time.perf_counter()
    bar = tqdm(total=len(jobs), desc=f"bench {len(cells)} cells x {len(seeds)} episodes", unit="ep",
               disable=cfg.quiet, file=sys.stderr)
    if cfg.workers == 1:
        init_worker(opts)
        for job in jobs:
            i, summary = run_job(job)
            episodes[i].append(summary)
            bar.update()
    else:
        with mp.get_context("spawn").Pool(cfg.workers, initializer=init_worker, initargs=(opts,)) as pool:
            for i, summary in pool.imap_unordered(run_job, jobs, chunksize=1):
                episodes[i].append(summary)
                bar.update()
    bar.close()
    runs = []
    for i, cell in enumerate(cells):
        entry = run_entry(cell, episodes[owner[i]])
        if owner[i] != i:
            entry["episodes_from"] = f"mode={cells[owner[i]].mode}"
        runs.append(entry)
    meta = {
        "command": "policy-steer " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv else "",
        "config": {k: (list(v) if isinstance(v, list) else v) for k, v in asdict(cfg).items()},
        "wall_s": time.perf_counter() - t0,
    }
    out = Path(cfg.out)
    json_path, md_path = write_results(out, runs, meta)
    if cfg.plots:
        write_plots(runs, out)
    log.info("wrote %s, %s", json_path, md_path)
    return runs


def print_table(runs: list[dict[str, Any]]) -> None:
    print(markdown_table(runs), end="")
