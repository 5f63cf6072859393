"""``bench --out`` never overwrites results (issue 14, hole 5), records every episode as it finishes, and
``--resume`` finishes an interrupted run with the same per-episode records an uninterrupted run gives."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from policy_steer.bench.records import (RECORDS_FILE, VERSION, RecordWriter, actions_digest, comparable, read_records,
                                        summary_of)
from policy_steer.cli.main import main
from policy_steer.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
FAST = ["--task", "reach", "--workers", "1", "--quiet", "true"]


def bench(out: Path, *args: str) -> int:
    return main(["bench", *FAST, "--out", str(out), *args])


def episode_lines(out: Path) -> list[bytes]:
    data = (out / RECORDS_FILE).read_bytes()
    return [ln for ln in data.split(b"\n")[1:] if ln.strip()]


def by_key(records: list[dict]) -> dict[tuple[int, int], dict]:
    return {(r["cell"], r["seed"]): r for r in records}


def test_bench_into_a_folder_with_results_is_refused_and_leaves_it_untouched(tmp_path, capsys):
    out = tmp_path / "res"
    assert bench(out, "--episodes", "2", "--plots", "true") == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    assert {"results.json", "results.md", RECORDS_FILE} <= set(before) and any(n.endswith(".png") for n in before)
    capsys.readouterr()
    # the attack of the issue: a second run with other seeds into the same folder
    assert bench(out, "--episodes", "2", "--seed_start", "100") == 2
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("policy-steer: error:")]
    assert len(lines) == 1 and "holds the results of an earlier run" in lines[0] and "--resume" in lines[0]
    assert "--overwrite" in lines[0] and "Traceback" not in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # byte-identical, nothing added
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == mtimes
    # --resume with another configuration: refused, naming the difference, the folder untouched
    assert bench(out, "--episodes", "2", "--seed_start", "100", "--resume", "true") == 2
    err = capsys.readouterr().err
    assert "--seed_start 100 (the run has 0)" in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert bench(out, "--episodes", "2", "--resume", "true", "--overwrite", "true") == 2
    assert "exclude each other" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_overwrite_replaces_the_results(tmp_path):
    out = tmp_path / "res"
    assert bench(out, "--episodes", "2", "--plots", "true") == 0
    (out / "notes.txt").write_text("mine")  # not the benchmark's: kept
    assert bench(out, "--episodes", "1", "--seed_start", "7", "--overwrite", "true", "--plots", "false") == 0
    (run,) = json.loads((out / "results.json").read_text())["runs"]
    assert run["seeds"] == [7]
    recs = read_records(out / RECORDS_FILE)
    assert [r["seed"] for r in recs.episodes] == [7] and recs.header["seeds"] == [7]
    assert not list(out.glob("*.png"))  # the old plots went with the old results
    assert (out / "notes.txt").read_text() == "mine"


def test_a_fresh_or_empty_folder_needs_no_flag(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert bench(empty, "--episodes", "1", "--plots", "false") == 0
    assert bench(tmp_path / "new" / "deeper", "--episodes", "1", "--plots", "false", "--resume", "true") == 0
    assert (tmp_path / "new" / "deeper" / "results.json").exists()


def test_resume_after_a_kill_finishes_only_the_missing_episodes(tmp_path):
    """Kill the bench process after a few episodes: the records hold them; --resume runs only the others,
    and every per-episode record equals the one of an uninterrupted run on the same seeds."""
    out = tmp_path / "killed"
    n = 5
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-c", "import sys; from policy_steer.cli.main import main; sys.exit(main())",
           "bench", *FAST, "--episodes", str(n), "--out", str(out), "--plots", "false"]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            if (out / RECORDS_FILE).exists() and len(episode_lines(out)) >= 2:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the bench ended before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
    assert not (out / "results.json").exists()
    kept = episode_lines(out)
    k = len(kept)
    assert 2 <= k < n
    first_lines = (out / RECORDS_FILE).read_bytes()
    with (out / RECORDS_FILE).open("ab") as f:  # an episode in flight, cut off mid-line by the kill
        f.write(b'{"record":"episode","version":1,"cell":0,"se')
    assert bench(out, "--episodes", str(n), "--plots", "false") == 2  # still refused without --resume
    assert bench(out, "--episodes", str(n), "--plots", "false", "--resume", "true") == 0
    data = (out / RECORDS_FILE).read_bytes()
    assert data.startswith(first_lines)  # the recorded episodes were kept as they were, the cut line dropped
    recs = read_records(out / RECORDS_FILE)
    assert not recs.cut_off and recs.duplicates == 0
    assert sorted(r["seed"] for r in recs.episodes) == list(range(n))  # the missing ones, once each
    meta = json.loads((out / "results.json").read_text())["meta"]
    assert meta["episodes_resumed"] == k
    # the same seeds in one uninterrupted run
    whole = tmp_path / "whole"
    assert bench(whole, "--episodes", str(n), "--plots", "false") == 0
    a, b = by_key(recs.episodes), by_key(read_records(whole / RECORDS_FILE).episodes)
    assert a.keys() == b.keys()
    for key in a:
        assert comparable(a[key]) == comparable(b[key]), key
    ra, rb = (json.loads((o / "results.json").read_text())["runs"][0] for o in (out, whole))
    for field in ("seeds", "per_episode_success", "per_episode_completion_steps", "per_episode_stall_steps",
                  "successes", "mean_episode_steps", "seam_jump", "ci95"):
        assert ra[field] == rb[field], field


def test_results_are_built_from_the_records(tmp_path):
    """results.json's per-episode figures are exactly what the records hold."""
    from policy_steer.bench.cells import expand_cells
    from policy_steer.bench.config import BenchConfig
    from policy_steer.bench.results import run_entry
    from policy_steer.config import StrList

    out = tmp_path / "res"
    assert bench(out, "--episodes", "2", "--plots", "false") == 0
    recs = read_records(out / RECORDS_FILE)
    (cell,) = expand_cells(BenchConfig(task=StrList(["reach"]), episodes=2))
    expected = run_entry(cell, [summary_of(r) for r in recs.episodes])
    (run,) = json.loads((out / "results.json").read_text())["runs"]
    assert json.loads(json.dumps(expected)) == run
    for r in recs.episodes:
        assert set(r) >= {"record", "version", "cell", "cell_spec", "seed", "outcome", "actions", "steer_figures",
                          "timing", "worker", "finished"}
        assert r["version"] == VERSION and r["actions"]["steps"] == r["outcome"]["steps"]
        assert len(r["actions"]["sha256"]) == 64 and r["actions"]["dtype"] == "float32"


def test_the_record_format_contract(tmp_path):
    """The documented recipe of the actions' hash, refusal of an unknown version, one writer per folder."""
    class Step:
        def __init__(self, action, executed=None):
            self.action, self.executed = action, executed

    steps = [Step([0.1, 0.2]), Step([0.3, 0.4], executed=[0.25, 0.4]), Step([0.0, 0.0])]
    rows = np.array([[0.1, 0.2], [0.25, 0.4], [0.0, 0.0]], dtype="<f4")
    digest = actions_digest(steps)
    assert digest == {"sha256": hashlib.sha256(rows.tobytes()).hexdigest(), "steps": 3, "dim": 2, "dtype": "float32"}

    path = tmp_path / RECORDS_FILE
    header = {"record": "header", "format": "policy-steer-bench-records", "version": VERSION, "config": {}, "cells": []}
    with RecordWriter(path, header=header) as w:
        with pytest.raises(ConfigError, match="another benchmark is writing"):
            RecordWriter(path, header=header)
        w.append({"record": "episode", "version": VERSION, "cell": 0, "seed": 1, "outcome": {"x": float("nan")}})
    recs = read_records(path)
    assert recs.episodes[0]["outcome"] == {"x": None}  # strict JSON
    path.write_text(json.dumps({**header, "version": 99}) + "\n")
    with pytest.raises(ConfigError, match="records version 99"):
        read_records(path)


def test_a_header_older_than_a_field_resumes_only_under_the_value_the_run_used():
    from policy_steer.bench.records import differences

    old = {"config": {"task": ["push"], "estimator": "model"}, "seeds": [0, 1], "cells": [], "policies": {}}
    same = {"config": {**old["config"], "dtype": "float32", "compile": False, "steer_options": ""},
            "seeds": [0, 1], "cells": [], "policies": {}}
    assert differences(old, same) == []
    bf16 = {**same, "config": {**same["config"], "dtype": "bfloat16"}}
    assert [d for d in differences(old, bf16) if "--dtype" in d and "before this option existed" in d]
    # a field whose default changes behaviour is never assumed
    newer = {**same, "config": {**same["config"], "arm_mismatch": 0.0}}
    assert any("--arm_mismatch" in d for d in differences(old, newer))
