"""Executor speed: episodes per second of ``policy-steer bench`` with the local executor and with Ray on the
same cores, the time to the first recorded episode, and a simulated two-node Ray cluster against one node.

    nice -n 10 .venv/bin/python benchmarks/executor_speed.py [--episodes 64] [--workers 2] [--rounds 2]
        [--task push] [--out docs/results/executors]

Runs (each a real ``bench`` run of the shipped checkpoint, nominal variant, no steering, ``--plots false``):

- ``local``: ``--workers W`` local processes; ``ray``: ``--executor ray --workers W`` (Ray started here
  with W CPUs). Their ratio is the Ray executor's overhead on the same cores.
- ``ray-1node`` / ``ray-2nodes``: ``ray.cluster_utils.Cluster`` with one node of one CPU (one actor)
  and with two nodes of one CPU each (two actors, one per node); their ratio is what a second node
  brings. On one machine both nodes share its cores (and its other load), so this measures the
  executor's scaling, not a real network.

Per run: episodes per second over the whole run (start-up included), the steady rate once every worker
runs (the episodes recorded after each worker's first one, over the time from then to the last; arrival
times are taken by watching the records file), and the time to the first recorded episode (start-up:
processes or Ray, policy load, first episode). The machine is shared and noisy: the four runs are repeated
``--rounds`` times, interleaved, and the table shows each run's best round (highest rates, shortest time
to the first episode; every round is in the JSON); read the ratios, measured in the same run. Every run's per-episode records must equal the local run's (checked; reported as ``records_equal``).
Writes ``executor_speed.json`` and ``executor_speed.md`` to ``--out`` and prints the table.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

from policy_steer.config import StrList, parse_config  # noqa: E402

MB = 1024 * 1024


@dataclass
class Config:
    episodes: int = 64  # episodes per run
    workers: int = 2  # local processes / Ray actors for the same-cores comparison
    rounds: int = 2  # the four runs, interleaved, this many times (the best round of each is reported)
    task: str = "push"
    out: str = "docs/results/executors"


def _bench(cfg: Config, out: Path, **kw: Any) -> dict[str, Any]:
    """One bench run into ``out``; its meta and per-episode records (deterministic fields)."""
    from policy_steer.bench.config import BenchConfig
    from policy_steer.bench.records import RECORDS_FILE, comparable, read_records
    from policy_steer.bench.runner import run_bench

    bc = BenchConfig(task=StrList([cfg.task]), episodes=cfg.episodes, out=str(out), plots=False, quiet=True, **kw)
    arrivals: list[tuple[float, str]] = []  # (seconds since the start, worker) of each record, as it lands
    done = threading.Event()
    t0 = time.perf_counter()
    watcher = threading.Thread(target=_watch, args=(out / RECORDS_FILE, t0, arrivals, done), daemon=True)
    watcher.start()
    try:
        run_bench(bc)
    finally:
        done.set()
        watcher.join()
    wall = time.perf_counter() - t0
    meta = json.loads((out / "results.json").read_text())["meta"]
    recs = read_records(out / RECORDS_FILE)
    assert len(arrivals) == len(recs.episodes), (len(arrivals), len(recs.episodes))
    # steady: after the moment every worker has delivered once (all of them loaded and running)
    warm = max(min(t for t, w in arrivals if w == worker) for worker in {w for _, w in arrivals})
    after = [t for t, _ in arrivals if t > warm]
    return {
        "wall_s": wall, "first_episode_s": float(meta["first_episode_s"]), "episodes": len(recs.episodes),
        "episodes_per_s": len(recs.episodes) / wall, "all_workers_running_s": warm,
        "steady_episodes_per_s": len(after) / (after[-1] - warm) if after else float("nan"),
        "workers": kw.get("workers"), "episodes_rerun": meta["episodes_rerun"],
        "_records": {(r["cell"], r["seed"]): comparable(r) for r in recs.episodes},
    }


def _watch(path: Path, t0: float, arrivals: list[tuple[float, str]], done: threading.Event) -> None:
    """Timestamp each episode record as it lands in ``path`` (polled every 2 ms; one last read at the end)."""
    seen = 0
    while True:
        finished = done.is_set()
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            data = b""
        now = time.perf_counter() - t0
        lines = [ln for ln in data[: data.rfind(b"\n") + 1].split(b"\n")[1:] if ln.strip()]
        for ln in lines[seen:]:
            arrivals.append((now, json.loads(ln)["worker"]))
        seen = len(lines)
        if finished:
            return
        time.sleep(0.002)


def _on_cluster(cfg: Config, out: Path, nodes: int) -> dict[str, Any]:
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "object_store_memory": 80 * MB,
                                                            "include_dashboard": False})
    try:
        for _ in range(nodes - 1):
            cluster.add_node(num_cpus=1, object_store_memory=80 * MB)
        cluster.wait_for_nodes()
        return _bench(cfg, out, workers=nodes, executor="ray", ray_address=cluster.address)
    finally:
        import ray

        ray.shutdown()
        cluster.shutdown()


def main(argv: list[str] | None = None) -> int:
    cfg = parse_config(Config, argv if argv is not None else sys.argv[1:], prog="executor_speed")
    load_before = os.getloadavg()
    rounds: list[dict[str, dict[str, Any]]] = []
    for i in range(cfg.rounds):
        with tempfile.TemporaryDirectory(prefix="executor_speed_") as tmp:
            this = {"local": _bench(cfg, Path(tmp) / "local", workers=cfg.workers, executor="local"),
                    "ray": _bench(cfg, Path(tmp) / "ray", workers=cfg.workers, executor="ray"),
                    "ray-1node": _on_cluster(cfg, Path(tmp) / "ray1", nodes=1),
                    "ray-2nodes": _on_cluster(cfg, Path(tmp) / "ray2", nodes=2)}
        reference = rounds[0]["local"]["_records"] if rounds else this["local"]["_records"]
        for r in this.values():
            r["records_equal"] = r["_records"] == reference
        rounds.append(this)
        print(f"round {i + 1}/{cfg.rounds}: " + ", ".join(f"{k} {r['steady_episodes_per_s']:.2f} ep/s" for k, r in this.items()),
              file=sys.stderr, flush=True)
    for this in rounds:
        for r in this.values():
            r.pop("_records")
    runs = {name: _best([this[name] for this in rounds]) for name in rounds[0]}
    ratios = {
        "ray_vs_local_episodes_per_s": runs["ray"]["episodes_per_s"] / runs["local"]["episodes_per_s"],
        "ray_vs_local_steady_episodes_per_s": runs["ray"]["steady_episodes_per_s"] / runs["local"]["steady_episodes_per_s"],
        "ray_vs_local_first_episode_s": runs["ray"]["first_episode_s"] / runs["local"]["first_episode_s"],
        "two_nodes_vs_one_episodes_per_s": runs["ray-2nodes"]["episodes_per_s"] / runs["ray-1node"]["episodes_per_s"],
        "two_nodes_vs_one_steady_episodes_per_s":
            runs["ray-2nodes"]["steady_episodes_per_s"] / runs["ray-1node"]["steady_episodes_per_s"],
    }
    result = {"config": vars(cfg), "runs": runs, "ratios": ratios, "rounds": rounds,
              "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                          "loadavg_before": load_before, "loadavg_after": os.getloadavg()},
              "command": "nice -n 10 .venv/bin/python benchmarks/executor_speed.py " + " ".join(argv or sys.argv[1:])}
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "executor_speed.json").write_text(json.dumps(result, indent=2) + "\n")
    md = _markdown(cfg, runs, ratios, result["machine"])
    (out / "executor_speed.md").write_text(md)
    print(md, end="")
    return 0 if all(r["records_equal"] for r in runs.values()) else 1


def _best(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One run's best figures over the rounds (the least disturbed by the machine's other load)."""
    return {**runs[0], "episodes_per_s": max(r["episodes_per_s"] for r in runs),
            "steady_episodes_per_s": max(r["steady_episodes_per_s"] for r in runs),
            "first_episode_s": min(r["first_episode_s"] for r in runs), "wall_s": min(r["wall_s"] for r in runs),
            "all_workers_running_s": min(r["all_workers_running_s"] for r in runs),
            "episodes_rerun": sum(r["episodes_rerun"] for r in runs),
            "records_equal": all(r["records_equal"] for r in runs)}


def _markdown(cfg: Config, runs: dict[str, dict[str, Any]], ratios: dict[str, float], machine: dict[str, Any]) -> str:
    lines = [f"# Executor speed: {cfg.episodes} episodes of {cfg.task} (nominal, no steering), best of {cfg.rounds} rounds",
             "",
             f"{machine['cpus']} CPUs, shared (load average {machine['loadavg_before'][0]:.1f} before, "
             f"{machine['loadavg_after'][0]:.1f} after). Read the ratios: they are measured in the same run.", "",
             "| run | workers | episodes/s (whole run) | episodes/s (all workers running) | first episode (s) | "
             "all workers running (s) | wall (s) | records = local |",
             "|---|---|---|---|---|---|---|---|"]
    for name, r in runs.items():
        lines.append(f"| {name} | {r['workers']} | {r['episodes_per_s']:.2f} | {r['steady_episodes_per_s']:.2f} | "
                     f"{r['first_episode_s']:.1f} | {r['all_workers_running_s']:.1f} | {r['wall_s']:.1f} | "
                     f"{'yes' if r['records_equal'] else 'NO'} |")
    lines += ["", "| ratio | value |", "|---|---|"]
    lines += [f"| {k} | {v:.2f} |" for k, v in ratios.items()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
