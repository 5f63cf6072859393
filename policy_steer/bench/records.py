"""Per-episode benchmark records: the contract between what runs episodes and what summarises them.

``policy-steer bench`` appends one record per finished episode to ``<out>/episodes.jsonl`` (JSON lines,
flushed and fsynced per line), and builds results.json, results.md and the plots from that file alone.
An interrupted run therefore loses at most the episodes in flight, and ``--resume`` finishes it. Any
executor (:mod:`policy_steer.bench.executors`: local worker processes, or Ray actors on a cluster) that
writes these records can be summarised the same way.

**Format** ``policy-steer-bench-records``, version :data:`VERSION` (= 1). UTF-8, one JSON object per
line, strict JSON (non-finite floats are written as ``null``). Line 1 is the header, every further
line an episode; a last line without its newline is an episode cut off by a kill and is ignored (and
cut away by ``--resume``).

Header::

    {"record": "header", "format": "policy-steer-bench-records", "version": 1,
     "created": "2026-01-31T12:00:00+00:00", "command": "policy-steer bench ...",
     "config": {...},          # the BenchConfig fields that decide what the episodes are (run_identity)
     "cells": [CELL, ...],     # the grid, in order; an episode's "cell" indexes it
     "seeds": [0, 1, ...],     # the seeds every cell runs
     "policies": {"<resolved checkpoint folder>": "<sha256 fingerprint of its files>", ...}}

``CELL`` = ``{"task", "variant", "policy", "steer", "mode", "latency", "settings": {axis or option:
value}}`` (strings, except the settings' values). Episode::

    {"record": "episode", "version": 1, "cell": 3, "cell_spec": CELL,
     "seed": 17,
     "outcome": {"success", "failure", "steps", "completion_steps", "stall_steps", "late_ticks",
                 "n_chunks", "dropped", "failed", "seam_jump", "within_chunk_jump",
                 "state_estimate_error", "reaction_steps", "reaction_opportunity_steps",
                 "goal_jump_step", "reaction_censored", "delay_estimate"},
     "actions": {"sha256": "<hex>", "steps": 120, "dim": 3, "dtype": "float32"},
     "steer_figures": {"taco.best_score": 0.8, ...},
     "timing": {"chunk_latency_ms": [...], "wall_s": 1.9, "steer_figures": {"vls.overhead_ms": ...}},
     "worker": "host:pid", "finished": "2026-01-31T12:00:03+00:00",
     "numerics": {"torch": "2.7.1", "cpu_capability": "AVX2", "threads": 1}}

- ``outcome`` holds the loop's figures of the episode (:meth:`policy_steer.runtime.loop.LoopResult.summary`
  without the latencies); it, ``seed``, ``cell``, ``cell_spec``, ``actions`` and ``steer_figures`` are
  deterministic: the same configuration, seed and policy give the same values on this machine.
- ``actions.sha256``: SHA-256 of the executed actions, one row per control step (what the robot sent:
  the loop's ``executed`` row when the robot changed it, else its commanded ``action``; held steps
  included), as a C-ordered little-endian float32 array of shape ``[steps, dim]``: the check that two
  runs did the same thing, step for step.
- ``timing`` holds what was measured on the wall clock (chunk compute times, the episode's wall time,
  and every steering figure whose name ends in ``_ms`` or ``_s``); it differs between runs.
- ``worker`` and ``finished`` say where and when; a reader may ignore them. ``numerics`` (added in the
  same version; absent from older records) says what decided the floating-point results where the
  episode ran: the torch version, the CPU kernel family torch dispatched to and the torch thread count.
  Records of the same episode agree bit for bit when these agree (see :mod:`policy_steer.bench.executors`);
  when two records differ, compare them first.

**Compatibility**: a reader accepts the versions it knows (:data:`VERSION`) and refuses others by name.
Adding a key does not change the version; removing one or changing a meaning does. A (cell, seed) pair
appears once; a reader keeps the first record of a pair.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import errno
import hashlib
import json
import math
import os
import socket
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from policy_steer.errors import ConfigError

FORMAT = "policy-steer-bench-records"
VERSION = 1
RECORDS_FILE = "episodes.jsonl"
HEADER, EPISODE = "header", "episode"
# BenchConfig fields that do not change what an episode does: where results go, where and in how many
# processes they run (a run started locally may be finished on a Ray cluster), what is printed, and the
# permission to load a checkpoint (issue 14's trust_checkpoint), and which episodes are recorded as bags.
NOT_IDENTITY = ("out", "resume", "overwrite", "workers", "executor", "ray_address", "episode_retries", "quiet", "plots",
                "trust_checkpoint", "record_bag", "record_episodes")
# BenchConfig fields added after runs were recorded, with the value that reproduces what those runs did (their
# defaults leave every chunk bit-identical): a header without the field resumes when the field has this value.
# A field whose default changes behaviour (the estimator's "auto" since #19) is not listed: such runs are refused.
NEUTRAL_WHEN_ABSENT = {"dtype": "float32", "compile": False, "activations": "exact", "steer_options": ""}
TIMING_SUFFIXES = ("_ms", "_s")  # steering figures with these name endings are wall-clock measurements
_BIG_FILE = 64 * 1024 * 1024  # files above this are fingerprinted by size and their first and last 4 MiB


# --- writing ---------------------------------------------------------------------------------------------

def run_identity(cfg: Any) -> dict[str, Any]:
    """The configuration fields that decide a run's episodes, as plain JSON data."""
    return _plain({k: v for k, v in asdict(cfg).items() if k not in NOT_IDENTITY})


def cell_dict(cell: Any) -> dict[str, Any]:
    """A :class:`~policy_steer.bench.cells.Cell` as plain JSON data."""
    return _plain({"task": cell.task, "variant": cell.variant, "policy": cell.policy, "steer": cell.steer,
                   "mode": cell.mode, "latency": cell.latency, "settings": dict(cell.settings)})


def header_record(cfg: Any, cells: list[Any], seeds: list[int], policies: dict[str, str], command: str) -> dict[str, Any]:
    return {"record": HEADER, "format": FORMAT, "version": VERSION, "created": _now(), "command": command,
            "config": run_identity(cfg), "cells": [cell_dict(c) for c in cells], "seeds": list(seeds),
            "policies": dict(policies)}


def actions_digest(steps: list[Any]) -> dict[str, Any]:
    """``actions`` of an episode record from the loop's step records (see the module docstring)."""
    rows = [s.executed if getattr(s, "executed", None) is not None else s.action for s in steps]
    arr = np.ascontiguousarray(np.asarray(rows, dtype="<f4").reshape(len(rows), -1) if rows else np.zeros((0, 0), "<f4"))
    return {"sha256": hashlib.sha256(arr.tobytes()).hexdigest(), "steps": int(arr.shape[0]),
            "dim": int(arr.shape[1]), "dtype": "float32"}


def episode_record(cell_index: int, cell: Any, seed: int, result: Any, steer_figures: dict[str, float],
                   wall_s: float) -> dict[str, Any]:
    """The record of one finished episode (``result``: the loop's result, run with its step records)."""
    summary = dict(result.summary())
    latencies = summary.pop("chunk_latency_ms")
    summary.pop("seed", None)
    measured = {k: v for k, v in steer_figures.items() if k.endswith(TIMING_SUFFIXES)}
    return _plain({
        "record": EPISODE, "version": VERSION, "cell": int(cell_index), "cell_spec": cell_dict(cell), "seed": int(seed),
        "outcome": summary, "actions": actions_digest(result.records),
        "steer_figures": {k: v for k, v in steer_figures.items() if k not in measured},
        "timing": {"chunk_latency_ms": latencies, "wall_s": float(wall_s), "steer_figures": measured},
        "worker": f"{socket.gethostname()}:{os.getpid()}", "finished": _now(), "numerics": numerics(),
    })


def numerics() -> dict[str, Any]:
    """What decides this process's floating-point results besides the inputs (the ``numerics`` of a record)."""
    import torch

    return {"torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "threads": torch.get_num_threads()}


def comparable(record: dict[str, Any]) -> dict[str, Any]:
    """An episode record without what differs between runs of the same configuration (timing, where, when,
    on which numerics)."""
    return {k: v for k, v in record.items() if k not in ("timing", "worker", "finished", "numerics")}


def summary_of(record: dict[str, Any]) -> dict[str, Any]:
    """An episode record -> the episode summary :func:`policy_steer.bench.results.run_entry` reads."""
    timing = record.get("timing") or {}
    return {**record["outcome"], "seed": record["seed"], "chunk_latency_ms": list(timing.get("chunk_latency_ms") or []),
            "steer_info": {**(record.get("steer_figures") or {}), **(timing.get("steer_figures") or {})}}


def policy_fingerprint(folder: str | Path) -> str:
    """SHA-256 over a checkpoint folder's files (relative path, size and content; files over 64 MiB by
    their first and last 4 MiB): a resumed run refuses a checkpoint that changed."""
    folder = Path(folder)
    h = hashlib.sha256()
    files = [folder] if folder.is_file() else sorted(p for p in folder.rglob("*") if p.is_file())
    for p in files:
        size = p.stat().st_size
        h.update(f"{p.relative_to(folder) if p != folder else p.name}\0{size}\0".encode())
        with p.open("rb") as f:
            if size <= _BIG_FILE:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
            else:
                h.update(f.read(4 << 20))
                f.seek(size - (4 << 20))
                h.update(f.read(4 << 20))
    return h.hexdigest()


class RecordWriter:
    """Appends records to ``path``, one line each, flushed and fsynced; holds an exclusive lock on the
    file so that two benchmarks never write one folder. ``header``: start a new file with it;
    ``resume_at``: continue an existing file, cut to that many bytes (its complete lines); ``written``:
    the (cell, seed) pairs those lines hold.

    An episode is written once: a second record of a (cell, seed) pair (an episode re-run after its
    worker was reported dead although it had finished) is dropped and counted in :attr:`duplicates`."""

    def __init__(self, path: str | Path, header: dict[str, Any] | None = None, resume_at: int | None = None,
                 written: set[tuple[int, int]] | None = None) -> None:
        self.path = Path(path)
        self.written: set[tuple[int, int]] = set(written or ())
        self.duplicates = 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = self.path.open("a+b")  # not "wb": nothing is cut before the lock is held
        try:
            _lock(self._f, self.path)
            self._f.truncate(resume_at or 0)
            self._f.seek(0, os.SEEK_END)
            if header is not None:
                self.append(header)
        except BaseException:
            self._f.close()
            raise

    def append(self, record: dict[str, Any]) -> bool:
        """Write ``record``; False (nothing written) for an episode whose (cell, seed) is written already."""
        if record.get("record") == EPISODE:
            key = (record["cell"], record["seed"])
            if key in self.written:
                self.duplicates += 1
                return False
            self.written.add(key)
        line = json.dumps(_plain(record), allow_nan=False, separators=(",", ":")) + "\n"
        self._f.write(line.encode())
        self._f.flush()
        os.fsync(self._f.fileno())
        return True

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def check_unlocked(path: str | Path) -> None:
    """:class:`ConfigError` when a running benchmark holds ``path`` (before deleting or replacing it)."""
    path = Path(path)
    if not path.exists():
        return
    with path.open("rb") as f:
        _lock(f, path)


# --- reading ---------------------------------------------------------------------------------------------

@dataclass
class Records:
    """A records file read back: its header, its episode records (first of each (cell, seed)), how many
    bytes its complete lines take, and whether a cut-off last line was dropped."""

    path: Path
    header: dict[str, Any]
    episodes: list[dict[str, Any]] = field(default_factory=list)
    complete_bytes: int = 0
    cut_off: bool = False
    duplicates: int = 0

    def done(self) -> set[tuple[int, int]]:
        return {(r["cell"], r["seed"]) for r in self.episodes}

    def by_cell(self) -> dict[int, list[dict[str, Any]]]:
        out: dict[int, list[dict[str, Any]]] = {}
        for r in self.episodes:
            out.setdefault(r["cell"], []).append(r)
        return out


def read_records(path: str | Path) -> Records:
    """Read a records file; :class:`ConfigError` naming the file and line when it is not one."""
    path = Path(path)
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1  # complete lines end here; after it, a line a kill cut off
    lines = data[:end].split(b"\n")[:-1] if end else []
    if not lines:
        raise ConfigError(f"{path} holds no header line: not a {FORMAT} file")
    try:
        header = json.loads(lines[0])
    except ValueError as e:
        raise ConfigError(f"{path}:1: not JSON ({e})") from None
    if not isinstance(header, dict) or header.get("record") != HEADER or header.get("format") != FORMAT:
        raise ConfigError(f"{path}:1: not a {FORMAT} header")
    check_version(header, f"{path}:1")
    recs = Records(path, header, complete_bytes=end, cut_off=end < len(data))
    seen: set[tuple[int, int]] = set()
    for n, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        try:
            r = json.loads(line)
        except ValueError as e:
            raise ConfigError(f"{path}:{n}: not JSON ({e})") from None
        if not isinstance(r, dict) or r.get("record") != EPISODE:
            raise ConfigError(f"{path}:{n}: not an episode record")
        check_version(r, f"{path}:{n}")
        key = (r.get("cell"), r.get("seed"))
        if key in seen:
            recs.duplicates += 1
            continue
        seen.add(key)
        recs.episodes.append(r)
    return recs


def check_version(record: dict[str, Any], where: str) -> None:
    if record.get("version") != VERSION:
        raise ConfigError(f"{where}: records version {record.get('version')!r}; this policy-steer reads version {VERSION}")


def differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """What differs between the header of a run and the header a new invocation would write: each
    configuration field by name, else the grid or the seeds, else the policies' fingerprints."""
    diffs = []
    oc, nc = old.get("config") or {}, new.get("config") or {}
    for k in sorted((set(oc) | set(nc)) - set(NOT_IDENTITY)):  # a header may predate a field's move to NOT_IDENTITY
        if k not in oc and k in NEUTRAL_WHEN_ABSENT and nc.get(k) == NEUTRAL_WHEN_ABSENT[k]:
            continue  # the run predates the field, and its value here is what the run did
        if k not in oc:
            # A field added since the run began: its default may not mean what the run did (e.g. the estimator
            # "auto" picks differently), so the run is not resumed under it.
            diffs.append(f"--{k} {_show(nc.get(k))} (the run was recorded before this option existed)")
        elif oc.get(k) != nc.get(k, "<unset>"):
            diffs.append(f"--{k} {_show(nc.get(k, '<unset>'))} (the run has {_show(oc.get(k))})")
    if diffs:
        return diffs
    if old.get("seeds") != new.get("seeds"):
        diffs.append(f"seeds {_show(new.get('seeds'))} (the run has {_show(old.get('seeds'))})")
    ocells, ncells = old.get("cells") or [], new.get("cells") or []
    if ocells != ncells:
        i = next((i for i, (a, b) in enumerate(zip(ocells, ncells)) if a != b), min(len(ocells), len(ncells)))
        a = ocells[i] if i < len(ocells) else None
        b = ncells[i] if i < len(ncells) else None
        diffs.append(f"cell {i} is {_show(b)} (the run has {_show(a)}; e.g. the default policy resolves to another folder)")
    op, np_ = old.get("policies") or {}, new.get("policies") or {}
    for k in sorted(set(op) | set(np_)):
        if op.get(k) != np_.get(k):
            diffs.append(f"the checkpoint {k} changed since the run began (its files' fingerprint differs)")
    return diffs


# --- helpers ---------------------------------------------------------------------------------------------

def _plain(v: Any) -> Any:
    """JSON data: lists for tuples and list subclasses, None for non-finite floats, numbers for numpy's."""
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, np.ndarray):
        return _plain(v.tolist())
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        f = float(v)
        return f if math.isfinite(f) else None
    if v is None or isinstance(v, str):
        return v
    if isinstance(v, Path):
        return str(v)
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return _plain(asdict(v))
    return str(v)


def _show(v: Any) -> str:
    text = json.dumps(v)
    return text if len(text) <= 200 else text[:197] + "..."


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _lock(f: Any, path: Path) -> None:
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        return
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            raise ConfigError(f"another benchmark is writing {path}; wait for it or choose another --out") from None
        raise
