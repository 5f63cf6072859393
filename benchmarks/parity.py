"""Deployment parity: a served robot gets what the benchmark measures.

    .venv/bin/python benchmarks/parity.py [--episodes 50] [--seed_start 3000] [--out results/parity]
        [--cells push:obstacle,pick-place:nominal] [--steer none,vls,taco]

For every cell (task, variant) and steering method, the same seeded episodes run two ways:

- ``bench``: ``policy-steer bench --mode sync`` (policy and simulator in one process, virtual clock);
- ``served``: ``policy-steer serve`` (the shipped ``<task>-diffusion`` with that steering) and
  ``policy-steer sim-robot --mode sync --clock virtual`` as two OS processes talking protocol v2 over
  loopback ZeroMQ. The virtual clock pauses simulated time while a chunk is computed, so wall-clock
  waiting cannot change the outcome; the robot sends its episode context (instruction, the scene read
  from the simulator, its robot description, the episode seed) at every episode start and the scene
  again before every request.

Both paths seed the sampler's noise with the episode seed at the episode start (the ``episode``
message carries it), so the noise streams match and the per-episode outcomes can be compared one by
one, not only as rates. Printed and written to ``--out`` (JSON, Markdown, PNG): success with Wilson
95% intervals per path, whether the intervals overlap, how many episodes agree, and the VLS gain
over unsteered through the server.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from policy_steer.bench.plots import save_figure  # noqa: E402
from policy_steer.bench.results import wilson_ci  # noqa: E402
from tqdm import tqdm  # noqa: E402

BIN = REPO / ".venv" / "bin" / "policy-steer"
STEER_SETTINGS = {"none": {}, "vls": {}, "taco": {"candidates": 16}}
BENCH_FLAGS = {"none": [], "vls": [], "taco": ["--candidates", "16"]}


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", MUJOCO_GL=env.get("MUJOCO_GL", "egl"),
               PYOPENGL_PLATFORM=env.get("PYOPENGL_PLATFORM", "egl"))
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


Outcome = tuple[bool, int]  # (success, completion steps: the episode's steps, a failure counting as the time-out)


def run_bench(task: str, variant: str, steer: str, episodes: int, seed: int, out: Path, workers: int) -> dict[int, Outcome]:
    """Per-seed outcome of ``policy-steer bench`` (one process, virtual clock)."""
    cmd = [str(BIN), "bench", "--task", task, "--variant", variant, "--steer", steer, *BENCH_FLAGS[steer],
           "--mode", "sync", "--episodes", str(episodes), "--seed_start", str(seed), "--workers", str(workers),
           "--out", str(out), "--overwrite", "true"]  # this script's own folder (it refuses an earlier run)
    subprocess.run(cmd, cwd=REPO, env=_env(), check=True, stdout=subprocess.DEVNULL)
    run = json.loads((out / "results.json").read_text())["runs"][0]
    return {int(s): (bool(ok), int(n)) for s, ok, n in
            zip(run["seeds"], run["per_episode_success"], run["per_episode_completion_steps"])}


def run_served(task: str, variant: str, steer: str, episodes: int, seed: int, out: Path) -> dict[int, Outcome]:
    """Per-seed outcome through ``serve`` + ``sim-robot`` (two processes, protocol v2 over loopback)."""
    from policy_steer import envs

    env = envs.make(task, variant, render_mode=None)
    timeout = int(env.unwrapped.max_episode_steps)
    env.close()
    out.mkdir(parents=True, exist_ok=True)
    endpoint = f"tcp://127.0.0.1:{_free_port()}"
    server = subprocess.Popen(
        [str(BIN), "serve", "--policy", str(REPO / "checkpoints" / f"{task}-diffusion"), "--bind", endpoint,
         "--steer", steer, "--steer_settings", json.dumps(STEER_SETTINGS[steer])],
        cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        deadline = time.monotonic() + 120
        for line in server.stdout:  # wait for "ready"
            if "ready on" in line:
                break
            if time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
        report = out / "sim_robot.json"
        subprocess.run(
            [str(BIN), "sim-robot", "--task", task, "--variant", variant, "--server", endpoint, "--mode", "sync",
             "--clock", "virtual", "--episodes", str(episodes), "--seed", str(seed), "--report", str(report)],
            cwd=REPO, env=_env(), check=True, stdout=subprocess.DEVNULL,
        )
        eps = json.loads(report.read_text())["episodes"]
        return {int(e["seed"]): (bool(e["success"]), int(e["steps"]) if e["success"] else max(int(e["steps"]), timeout))
                for e in eps}
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()


def summarize(bench: dict[int, Outcome], served: dict[int, Outcome]) -> dict:
    seeds = sorted(bench)
    nb = sum(bench[s][0] for s in seeds)
    ns = sum(served[s][0] for s in seeds if s in served)
    cb, cs = wilson_ci(nb, len(seeds)), wilson_ci(ns, len(seeds))
    return {
        "episodes": len(seeds), "bench_success": nb / len(seeds), "bench_ci95": cb,
        "served_success": ns / len(seeds), "served_ci95": cs,
        "inside_each_other": cb[0] <= ns / len(seeds) <= cb[1] and cs[0] <= nb / len(seeds) <= cs[1],
        "same_success": sum(bench[s][0] == served.get(s, (None,))[0] for s in seeds),
        "same_outcome": sum(bench[s] == served.get(s) for s in seeds),  # success and completion steps
        "seeds": seeds, "bench": [list(bench[s]) for s in seeds],
        "served": [list(served[s]) if s in served else None for s in seeds],
    }


def markdown(rows: list[dict]) -> str:
    lines = ["| task | variant | steer | episodes | bench | bench 95% | served | served 95% | inside each other | "
             "same success | same success and steps |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['task']} | {r['variant']} | {r['steer']} | {r['episodes']} | {r['bench_success']:.2f} | "
            f"[{r['bench_ci95'][0]:.2f}, {r['bench_ci95'][1]:.2f}] | {r['served_success']:.2f} | "
            f"[{r['served_ci95'][0]:.2f}, {r['served_ci95'][1]:.2f}] | {'yes' if r['inside_each_other'] else 'NO'} | "
            f"{r['same_success']}/{r['episodes']} | {r['same_outcome']}/{r['episodes']} |"
        )
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(rows)), 4))
    x = np.arange(len(rows))
    for off, key, label in ((-0.18, "bench", "bench (one process)"), (0.18, "served", "serve + sim-robot (protocol v2)")):
        rate = np.array([r[f"{key}_success"] for r in rows])
        ci = np.array([r[f"{key}_ci95"] for r in rows])
        ax.bar(x + off, rate, 0.36, yerr=[rate - ci[:, 0], ci[:, 1] - rate], capsize=3, label=label)
    ax.set_xticks(x, [f"{r['task']}\n{r['variant']}\n{r['steer']}" for r in rows], fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("success (Wilson 95%)")
    ax.set_title(f"deployment parity, {rows[0]['episodes']} seeded episodes per bar")
    ax.legend(fontsize=8, loc="lower right")
    return save_figure(fig, path)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--episodes", type=int, default=50, help="seeded episodes per cell and path (default 50)")
    ap.add_argument("--seed_start", type=int, default=3000, help="first seed (default 3000)")
    ap.add_argument("--cells", default="push:obstacle,pick-place:nominal", help="task:variant list (default %(default)s)")
    ap.add_argument("--steer", default="none,vls,taco", help="steering methods (default %(default)s; taco runs M = 16)")
    ap.add_argument("--workers", type=int, default=2, help="bench worker processes (default 2)")
    ap.add_argument("--out", default="results/parity", help="output folder (default %(default)s)")
    ap.add_argument("--overwrite", action="store_true", help="replace an earlier run in --out (default: refuse)")
    args = ap.parse_args()
    out = Path(args.out)
    if (out / "parity.json").exists() and not args.overwrite:
        print(f"parity: {out} holds an earlier run (parity.json); pass --overwrite or another --out", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    rows = []

    jobs = [(*cell.split(":"), steer) for cell in args.cells.split(",") for steer in args.steer.split(",")]
    for task, variant, steer in tqdm(jobs, desc="parity cells", unit="cell"):
        tag = f"{task}_{variant}_{steer}"
        t0 = time.monotonic()
        bench = run_bench(task, variant, steer, args.episodes, args.seed_start, out / tag / "bench", args.workers)
        t1 = time.monotonic()
        served = run_served(task, variant, steer, args.episodes, args.seed_start, out / tag / "served")
        t2 = time.monotonic()
        row = {"task": task, "variant": variant, "steer": steer, **summarize(bench, served),
               "bench_s": round(t1 - t0, 1), "served_s": round(t2 - t1, 1)}
        rows.append(row)
        tqdm.write(f"{tag}: bench {row['bench_success']:.2f} served {row['served_success']:.2f} "
                   f"same outcome {row['same_outcome']}/{row['episodes']} ({row['bench_s']} s, {row['served_s']} s)")
    gains = {}
    for cell in {(r["task"], r["variant"]) for r in rows}:
        by = {r["steer"]: r for r in rows if (r["task"], r["variant"]) == cell}
        if "none" in by and "vls" in by:
            gains[f"{cell[0]}:{cell[1]}"] = round(by["vls"]["served_success"] - by["none"]["served_success"], 3)
    table = markdown(rows)
    text = (f"{table}\n\nVLS gain over unsteered through the server (points of success): "
            + ", ".join(f"{k} {v * 100:+.0f}" for k, v in gains.items()) + "\n")
    print(text)
    (out / "parity.md").write_text(f"# Deployment parity\n\nCommand: `{' '.join(sys.argv)}`\n\n{text}")
    (out / "parity.json").write_text(json.dumps({"rows": rows, "vls_gain_served": gains, "argv": sys.argv}, indent=1))
    plot(rows, out / "parity.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
