"""Run a benchmark grid: seeded episodes of every cell, on an executor (:mod:`policy_steer.bench.executors`:
local worker processes by default, or Ray actors on this machine or a cluster with ``--executor ray``).

The runner alone writes: every finished episode is appended to ``<out>/episodes.jsonl``
(:mod:`policy_steer.bench.records`) at once, whichever executor ran it; results.json, results.md and the
plots are built from that file at the end. A folder that holds results is refused unless ``--resume
true`` (finish the run recorded there: the same configuration, its recorded episodes skipped; another
configuration is refused naming the difference) or ``--overwrite true`` (delete its results, then run).
The executor and the number of workers are not part of a run's configuration: a run started locally
can be finished on a cluster, and gives the same records (see :mod:`policy_steer.bench.executors` for
why, and where floating point could break it).
"""

from __future__ import annotations

import json
import logging
import shlex
import sys
import time
from contextlib import ExitStack
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from tqdm import tqdm

from policy_steer.bench.cells import Cell, expand_cells
from policy_steer.bench.config import BenchConfig
from policy_steer.bench.executors import make_executor
from policy_steer.bench.plots import write_plots
from policy_steer.bench.records import (RECORDS_FILE, Records, RecordWriter, check_unlocked, differences, header_record,
                                        policy_fingerprint, read_records, summary_of)
from policy_steer.bench.results import markdown_table, run_entry, write_results
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


# What a benchmark writes into --out; a folder holding any of them holds results.
RESULT_FILES = (RECORDS_FILE, "results.json", "results.md")
PLOT_PATTERNS = ("success_by_variant.png", "*_vs_*.png")  # the names policy_steer.bench.plots writes


def out_state(cfg: BenchConfig) -> str:
    """``fresh`` (no results in --out), ``resume`` or ``overwrite``; refuses a folder with results unless
    one of --resume / --overwrite is given (and both together). Reads only: nothing is written here."""
    out = Path(cfg.out)
    if cfg.resume and cfg.overwrite:
        raise ConfigError("--resume and --overwrite exclude each other: finish the run in --out, or replace it")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file, not a folder")
    found = [name for name in RESULT_FILES if (out / name).exists()]
    if not found:
        return "fresh"
    if cfg.resume:
        return "resume"
    if cfg.overwrite:
        return "overwrite"
    raise ConfigError(
        f"--out {out} holds the results of an earlier run ({', '.join(found)}); pass --resume true to finish that "
        "run (same configuration, finished episodes skipped), --overwrite true to replace it, or another --out"
    )


def _command() -> str:
    return "policy-steer " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv else ""


def run_bench(cfg: BenchConfig) -> list[dict[str, Any]]:
    """Run the grid; episodes are recorded as they finish (:mod:`policy_steer.bench.records`) and the
    results are built from the records. See :func:`out_state` for an --out that holds results."""
    state = out_state(cfg)
    cells = expand_cells(cfg)
    check_cells(cells)
    seeds = list(range(cfg.seed_start, cfg.seed_start + cfg.episodes))
    out = Path(cfg.out)
    records_path = out / RECORDS_FILE
    policies = {str(resolve_checkpoint(p)): policy_fingerprint(resolve_checkpoint(p)) for p in sorted({c.policy for c in cells})}
    if cfg.verifier_path:
        policies[str(Path(cfg.verifier_path))] = policy_fingerprint(cfg.verifier_path)
    header = header_record(cfg, cells, seeds, policies, _command())
    executor = make_executor(cfg, policies)  # bad executor options (or no Ray) are refused before anything is written
    done: set[tuple[int, int]] = set()
    resume_at = None
    if state == "resume":
        previous = _previous_run(records_path)
        if previous is not None:
            diffs = differences(previous.header, header)
            if diffs:
                raise ConfigError(f"--resume: this configuration is not the run in {out}: " + "; ".join(diffs))
            if previous.cut_off:
                log.warning("%s: the last record was cut off (an episode in flight when the run was stopped); it runs again",
                            records_path)
            done, resume_at, header = previous.done(), previous.complete_bytes, None
            if previous.duplicates:
                log.warning("%s holds %d second records of an episode; the first of each is used", records_path,
                            previous.duplicates)
    elif state == "overwrite":
        check_unlocked(records_path)
        for name in RESULT_FILES:
            (out / name).unlink(missing_ok=True)
        for pattern in PLOT_PATTERNS:
            for png in out.glob(pattern):
                png.unlink()
    # Cells whose episodes are identical by construction run once (see episode_key).
    owner: dict[int, int] = {}
    first_of: dict[Any, int] = {}
    for i, cell in enumerate(cells):
        owner[i] = first_of.setdefault(episode_key(cell, cfg), i)
    # Group a cell's episodes together so that each worker's cached policy is reused.
    all_jobs = [(i, cell, s) for i, cell in enumerate(cells) if owner[i] == i for s in seeds]
    jobs = [j for j in all_jobs if (j[0], j[2]) not in done]
    t0 = time.perf_counter()
    first_s = None  # time to the first recorded episode
    with ExitStack() as stack:
        if jobs:  # workers started (or the cluster joined) before anything is written: a failure leaves --out as it was
            stack.enter_context(executor)
        writer = stack.enter_context(RecordWriter(records_path, header=header, resume_at=resume_at, written=done))
        if done:
            log.info("--resume: %d of %d episodes are recorded in %s; running the other %d",
                     len(all_jobs) - len(jobs), len(all_jobs), records_path, len(jobs))
        bar = tqdm(total=len(all_jobs), initial=len(all_jobs) - len(jobs),
                   desc=f"bench {len(cells)} cells x {len(seeds)} episodes", unit="ep", disable=cfg.quiet, file=sys.stderr)
        try:
            for record in executor.episodes(jobs):
                if writer.append(record):  # False: a second record of an episode, dropped
                    bar.update()
                    first_s = time.perf_counter() - t0 if first_s is None else first_s
        except BaseException as e:  # Ctrl-C, or an episode that failed: what finished stays recorded
            bar.close()
            why = "interrupted" if isinstance(e, KeyboardInterrupt) else "stopped by an error"
            print(f"policy-steer bench: {why}; the finished episodes are in {records_path}: "
                  f"run the same command with --resume true to finish the run", file=sys.stderr, flush=True)
            raise
        bar.close()
    runs, meta = summarize(records_path, cells, owner)
    meta.update({"command": _command(), "config": {k: (list(v) if isinstance(v, list) else v) for k, v in asdict(cfg).items()},
                 "wall_s": time.perf_counter() - t0, "episodes_resumed": len(all_jobs) - len(jobs),
                 "executor": executor.name, "first_episode_s": first_s, "episodes_rerun": executor.rerun,
                 "duplicate_records_dropped": writer.duplicates})
    json_path, md_path = write_results(out, runs, meta)
    if cfg.plots:
        write_plots(runs, out)
    log.info("wrote %s, %s", json_path, md_path)
    return runs


def _previous_run(path: Path) -> Records | None:
    """The records of the run in ``path``; None when there are none to resume (no file, or a header
    that was never completed: the run starts afresh)."""
    if not path.exists():
        raise ConfigError(f"--resume: {path.parent} has results but no {RECORDS_FILE} (written before per-episode "
                          "records existed, or by another tool): nothing to resume; use --overwrite true or another --out")
    check_unlocked(path)
    if b"\n" not in path.read_bytes():
        return None
    return read_records(path)


def summarize(records_path: Path, cells: list[Cell], owner: dict[int, int]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The ``runs`` of results.json from the records file (each cell in grid order; a cell whose episodes
    are another's by construction names it in ``episodes_from``), and what the file says for the meta."""
    recs = read_records(records_path)
    by_cell = recs.by_cell()
    runs = []
    for i, cell in enumerate(cells):
        entry = run_entry(cell, [summary_of(r) for r in by_cell.get(owner[i], [])])
        if owner[i] != i:
            entry["episodes_from"] = f"mode={cells[owner[i]].mode}"
        runs.append(entry)
    meta = {"records": str(records_path.name), "records_version": recs.header["version"],
            "started": recs.header.get("created")}
    return runs, meta


def print_table(runs: list[dict[str, Any]]) -> None:
    print(markdown_table(runs), end="")
