"""Executors (issue 16): local with 1 and 2 workers and Ray actors on a two-node cluster write identical
per-episode records, also when a worker (a local process, a Ray actor) is SIGKILLed mid-run: it loses
no episode and counts none twice; ``--resume``
after a SIGINT finishes the run with the records of an uninterrupted one; ``--executor ray`` without Ray
installed is one clear line.

The Ray cluster is ``ray.cluster_utils.Cluster`` with two nodes of one CPU each (real raylets and worker
processes on this machine), started once for the module. Episodes: push, nominal, the shipped
checkpoint, ``--plots false``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from policy_steer.bench.records import RECORDS_FILE, comparable, read_records
from policy_steer.cli.main import main

REPO = Path(__file__).resolve().parents[2]
N = 8  # episodes per run
RUN = ["--task", "push", "--episodes", str(N), "--plots", "false", "--quiet", "true"]
CLI = "import sys; from policy_steer.cli.main import main; sys.exit(main())"
MB = 1024 * 1024


def bench(out: Path, *args: str) -> int:
    return main(["bench", *RUN, "--out", str(out), *args])


def records_of(out: Path) -> dict[tuple[int, int], dict]:
    recs = read_records(out / RECORDS_FILE)
    assert not recs.cut_off and recs.duplicates == 0
    return {(r["cell"], r["seed"]): comparable(r) for r in recs.episodes}


def episode_lines(out: Path) -> list[bytes]:
    path = out / RECORDS_FILE
    if not path.exists():
        return []
    data = path.read_bytes()
    return [ln for ln in data[: data.rfind(b"\n") + 1].split(b"\n")[1:] if ln.strip()]


def meta_of(out: Path) -> dict:
    return json.loads((out / "results.json").read_text())["meta"]


def subprocess_env() -> dict[str, str]:
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1")


@pytest.fixture(scope="module")
def local_one_out(tmp_path_factory) -> Path:
    """The reference run: N episodes in this process (one local worker)."""
    out = tmp_path_factory.mktemp("local1")
    assert bench(out, "--workers", "1") == 0
    return out


@pytest.fixture(scope="module")
def local_one(local_one_out) -> dict[tuple[int, int], dict]:
    recs = records_of(local_one_out)
    assert sorted(recs) == [(0, s) for s in range(N)]
    return recs


@pytest.fixture(scope="module")
def ray_cluster():
    """Two Ray nodes of one CPU each on this machine (each a raylet with its own worker processes)."""
    cluster_utils = pytest.importorskip("ray.cluster_utils")
    cluster = cluster_utils.Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "object_store_memory": 80 * MB,
                                                                          "include_dashboard": False})
    try:
        cluster.add_node(num_cpus=1, object_store_memory=80 * MB)
        cluster.wait_for_nodes()
        yield cluster
    finally:
        import ray

        ray.shutdown()
        cluster.shutdown()


class KillFirstWorker:
    """While a bench runs into ``out``: SIGKILL the worker process that wrote the first episode record (the
    record names it, host:pid), while the other episodes are still queued or running."""

    def __init__(self, out: Path) -> None:
        self.out, self.killed = out, None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        while not self._stop.is_set():
            lines = episode_lines(self.out)
            if lines:
                self.killed = int(json.loads(lines[0])["worker"].rsplit(":", 1)[1])
                os.kill(self.killed, signal.SIGKILL)
                return
            time.sleep(0.005)

    def __enter__(self) -> KillFirstWorker:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(10)


def check_killed_run(out: Path, killer: KillFirstWorker, local_one: dict, executor: str) -> None:
    """Nothing lost, nothing twice, the reference's records, and the killed worker's episode ran again."""
    assert killer.killed is not None
    lines = [json.loads(ln) for ln in episode_lines(out)]
    assert len(lines) == N  # one line per episode
    assert records_of(out) == local_one
    meta = meta_of(out)
    assert meta["executor"] == executor and meta["episodes_rerun"] >= 1 and meta["duplicate_records_dropped"] == 0
    workers = {r["worker"] for r in lines}
    assert len(workers) >= 2 and any(w.endswith(f":{killed}") for w in workers for killed in [killer.killed])
    assert all(r["numerics"]["threads"] == 1 for r in lines)


def test_two_local_workers_write_the_reference_records_even_when_one_is_killed(local_one, tmp_path):
    out = tmp_path / "local2"
    with KillFirstWorker(out) as killer:
        assert bench(out, "--workers", "2") == 0
    check_killed_run(out, killer, local_one, "local")


def test_a_two_node_ray_cluster_writes_the_reference_records_even_when_a_worker_is_killed(local_one, ray_cluster,
                                                                                           tmp_path):
    """Each node has one CPU, so the two actors run on both nodes; the killed actor's episode in flight
    runs again on its replacement."""
    out = tmp_path / "ray"
    with KillFirstWorker(out) as killer:
        assert bench(out, "--workers", "2", "--executor", "ray", "--ray_address", ray_cluster.address) == 0
    check_killed_run(out, killer, local_one, "ray")


@pytest.mark.slow
def test_two_local_workers_write_identical_records(local_one, tmp_path):
    two = tmp_path / "local2"
    assert bench(two, "--workers", "2") == 0
    assert records_of(two) == local_one
    assert len({json.loads(ln)["worker"] for ln in episode_lines(two)}) == 2  # both processes ran episodes
    assert meta_of(two)["episodes_rerun"] == 0


@pytest.mark.slow
def test_local_and_a_two_node_ray_cluster_write_identical_records_and_summaries(local_one, local_one_out, ray_cluster,
                                                                                tmp_path):
    on_ray = tmp_path / "ray"
    assert bench(on_ray, "--workers", "2", "--executor", "ray", "--ray_address", ray_cluster.address) == 0
    assert records_of(on_ray) == local_one
    assert len({json.loads(ln)["worker"] for ln in episode_lines(on_ray)}) == 2
    assert meta_of(on_ray)["episodes_rerun"] == 0
    # the summaries are built from the records alike: equal but for the measured chunk latencies
    runs = [json.loads((o / "results.json").read_text())["runs"] for o in (local_one_out, on_ray)]
    assert [{k: v for k, v in r.items() if k != "chunk_latency_ms"} for r in runs[0]] == \
        [{k: v for k, v in r.items() if k != "chunk_latency_ms"} for r in runs[1]]


def interrupt_after_first_episode(out: Path, *args: str) -> tuple[int, str]:
    """Run ``policy-steer bench`` in a subprocess; SIGINT it once it has recorded an episode."""
    cmd = [sys.executable, "-c", CLI, "bench", *RUN, "--out", str(out), *args]
    proc = subprocess.Popen(cmd, cwd=REPO, env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None and not episode_lines(out):
            time.sleep(0.01)
        assert proc.poll() is None, "the bench ended before it could be interrupted"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
    return proc.returncode, err.decode(errors="replace")


def test_resume_after_sigint_gives_the_records_of_an_uninterrupted_run(local_one, tmp_path):
    out = tmp_path / "interrupted"
    code, err = interrupt_after_first_episode(out, "--workers", "1")
    assert code == 130, err[-2000:]
    assert "interrupted" in err and "--resume true" in err
    assert not (out / "results.json").exists()
    kept = (out / RECORDS_FILE).read_bytes()
    k = len(episode_lines(out))
    assert 1 <= k < N
    assert bench(out, "--workers", "1", "--resume", "true") == 0
    assert (out / RECORDS_FILE).read_bytes().startswith(kept)  # what was recorded stays as it was
    assert records_of(out) == local_one
    assert meta_of(out)["episodes_resumed"] == k


@pytest.mark.slow
def test_a_ray_run_interrupted_by_sigint_is_finished_by_a_local_resume(local_one, tmp_path):
    """Ray started by the bench itself (no --ray_address), interrupted; resumed with the local executor:
    the executor is not part of a run's identity, and the records are the reference's."""
    out = tmp_path / "ray-interrupted"
    code, err = interrupt_after_first_episode(out, "--workers", "2", "--executor", "ray")
    assert code == 130, err[-2000:]
    assert 1 <= len(episode_lines(out)) < N
    assert bench(out, "--workers", "1", "--resume", "true") == 0
    assert records_of(out) == local_one


def test_ray_missing_is_one_clear_line(tmp_path):
    """Ray is an optional extra: without it, --executor ray is refused in one line, before anything runs."""
    shim = "import sys; sys.modules['ray'] = None; " + CLI.removeprefix("import sys; ")  # `import ray` fails
    out = tmp_path / "no-ray"
    proc = subprocess.run([sys.executable, "-c", shim, "bench", *RUN, "--out", str(out), "--executor", "ray"],
                          cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    errors = [ln for ln in proc.stderr.splitlines() if "error" in ln.lower()]
    assert len(errors) == 1 and errors[0].startswith("policy-steer: error: --executor ray needs Ray"), proc.stderr
    assert 'pip install "policy-steer[ray]"' in errors[0] and "Traceback" not in proc.stderr
    assert not (out / RECORDS_FILE).exists()


@pytest.mark.parametrize("args, message", [
    (["--executor", "dask"], "unknown --executor 'dask'; use one of local, ray"),
    (["--ray_address", "127.0.0.1:6379"], "--ray_address needs --executor ray"),
    (["--executor", "ray", "--episode_retries", "-1"], "--episode_retries must be >= 0"),
    (["--executor", "ray", "--ray_address", "127.0.0.1:1"], "--ray_address 127.0.0.1:1: no Ray cluster answers there"),
])
def test_bad_executor_options_are_named(tmp_path, capsys, args, message):
    out = tmp_path / "bad"
    assert bench(out, *args) == 2
    err = capsys.readouterr().err
    assert f"policy-steer: error: {message}" in err and "Traceback" not in err
    assert not (out / RECORDS_FILE).exists()
