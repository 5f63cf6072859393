"""Several robots on one policy server: does ``serve --max_batch`` pay?

For 1, 4, 8 and 16 simulated robots, two real ``policy-steer serve`` processes (the shipped
checkpoints/push-diffusion by default), one with ``--max_batch 1`` (one chunk at a time) and one
batched (``--max_batch 16 --batch_window_ms 2``), answer robot processes over ZeroMQ on loopback.
Each robot is its own process with a real :class:`~policy_steer.transport.PolicyClient` (the client
the transport benchmark uses) on each server, holding the push task's first observation of its own
seed and the same seeded episode on both; it asks for a chunk, waits for it, "executes" it for
``--think_ms`` (0 by default: closed loop, every robot always has an observe in flight, the server
saturated) and asks again. The two servers take turns in blocks of ``--block_s`` seconds, in ABBA
order (this machine is shared: a drift in its load then hits both modes alike).

Figures per mode and robot count: chunks per second (all robots), each robot's p50 / p95 wait
(observe sent -> chunk received), the batch sizes the server reported (``info.batch``). Printed as
ratios batched / unbatched from the same run: throughput ratio > 1 and wait ratio < 1 mean batching
pays. Writes ``serve_batching.json``, ``.md`` and ``.png`` under ``--out`` (``serve_batching_taco.*``
with ``--steer taco``).

    nice -n 10 .venv/bin/python benchmarks/serve_batching.py                 # the full run
    .venv/bin/python benchmarks/serve_batching.py --quick                    # 1 and 4 robots, short blocks
    .venv/bin/python benchmarks/serve_batching.py --steer taco --candidates 8

``--server_threads`` (default 1) is the torch thread count of the server process (OMP_NUM_THREADS):
on a shared machine one thread keeps the figures comparable; robots take no torch time.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
OUT = REPO / "docs" / "results" / "batching"


def robot_observations(n: int, task: str) -> list[dict[str, np.ndarray]]:
    """The task's first observation for seeds 0..n-1 (each robot sees its own scene)."""
    from policy_steer import envs

    out = []
    for i in range(n):
        env = envs.make(task, "nominal")
        obs, _ = env.reset(seed=i)
        out.append({k: np.asarray(v) for k, v in obs.items() if k.startswith("observation.")})
        env.close()
    return out


def start_server(args: argparse.Namespace, max_batch: int) -> tuple[subprocess.Popen, str]:
    cmd = [
        sys.executable, "-m", "policy_steer.cli.main", "serve",
        "--policy", args.policy, "--bind", "tcp://127.0.0.1:*", "--seed", "0",
        "--steer", args.steer, "--max_batch", str(max_batch), "--batch_window_ms", str(args.batch_window_ms),
        # robots ping every 0.5 s; those of the previous robot count expire before the next count starts
        "--max_chunk_s", "1000", "--session_timeout_s", str(SESSION_TIMEOUT_S),
    ]
    if args.steer == "taco":
        cmd += ["--steer_settings", json.dumps({"candidates": args.candidates})]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.server_threads), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    seen = []
    for line in proc.stdout:  # the loader may print first; the server says "ready on <endpoint>"
        if "ready on" in line:
            return proc, line.split("ready on ")[1].split(",")[0].strip()
        seen.append(line)
    proc.kill()
    raise RuntimeError(f"the server did not start: {''.join(seen)[-2000:]!r}")


SESSION_TIMEOUT_S = 2.0
MODES = ("unbatched", "batched")


def schedule(blocks: int) -> list[str]:
    """ABBA order of the measured blocks, so a drift in the machine's load hits both modes alike."""
    order = []
    for i in range(blocks):
        order += list(MODES) if i % 2 == 0 else list(reversed(MODES))
    return order


def robot(endpoints: dict, obs: dict, seed: int, plan: list[str], block_s: float, think_s: float, warmup: int,
          barrier, results) -> None:
    """One simulated robot with a client on each server and the same seeded episode on both; in each
    block (all robots start it together) it asks the block's server for a chunk, waits for it,
    (executes it) and asks again."""
    from policy_steer.transport import PolicyClient
    from policy_steer.types import EpisodeContext

    clients = {m: PolicyClient(endpoint=e, timeout_s=120.0, name=f"robot-{seed}") for m, e in endpoints.items()}
    out = {m: {"waits": [], "done": 0, "batches": []} for m in clients}
    try:
        step = 0
        for c in clients.values():
            c.connect(timeout_s=300.0)
            c.start_episode(EpisodeContext(instruction="push the block into the target", seed=seed))
            for _ in range(warmup):
                c.request_chunk(obs, step=step)
                step += 1
        for mode in plan:
            barrier.wait(timeout=600)
            c, mine = clients[mode], out[mode]
            start = time.monotonic()
            while time.monotonic() - start < block_s:
                t0 = time.monotonic()
                chunk = c.request_chunk(obs, step=step)
                t1 = time.monotonic()
                mine["waits"].append(t1 - t0)
                mine["done"] += int(t1 - start <= block_s)  # the last one may end after the block
                mine["batches"].append(int(chunk.info.get("batch", 1)))
                step += 1
                if think_s > 0:
                    time.sleep(think_s)
    finally:
        for c in clients.values():
            c.close()
    results.put({"seed": seed, **out})


def measure(args: argparse.Namespace, endpoints: dict, observations: list[dict], robots: int) -> dict:
    """Both modes for ``robots`` robots, in alternating blocks; figures per mode."""
    plan = schedule(args.blocks)
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(robots), ctx.Queue()
    procs = [
        ctx.Process(target=robot, args=(endpoints, observations[i], i, plan, args.block_s, args.think_ms / 1e3,
                                        args.warmup, barrier, results))
        for i in range(robots)
    ]
    for p in procs:
        p.start()
    got = sorted((results.get(timeout=1800) for _ in procs), key=lambda r: r["seed"])
    for p in procs:
        p.join(60)
    time.sleep(SESSION_TIMEOUT_S + 1.0)  # their sessions expire: the next count starts on empty servers
    figures = {}
    for mode in MODES:
        per_robot = [
            {"p50_ms": float(np.percentile(np.asarray(r[mode]["waits"]) * 1e3, 50)),
             "p95_ms": float(np.percentile(np.asarray(r[mode]["waits"]) * 1e3, 95)),
             "chunks": len(r[mode]["waits"])}
            for r in got
        ]
        sizes = [b for r in got for b in r[mode]["batches"]]
        figures[mode] = {
            "chunks_per_s": sum(r[mode]["done"] for r in got) / (args.blocks * args.block_s),
            "per_robot": per_robot,
            "p50_ms": float(np.median([r["p50_ms"] for r in per_robot])),  # the median robot's p50
            "p95_ms": float(max(r["p95_ms"] for r in per_robot)),  # the worst robot's p95
            "mean_batch": float(np.mean(sizes)) if sizes else 0.0,
        }
    return figures


def run(args: argparse.Namespace) -> dict:
    counts = [int(n) for n in args.robots.split(",")]
    if max(counts) > args.max_batch:
        print(f"note: more robots ({max(counts)}) than --max_batch {args.max_batch}", flush=True)
    observations = robot_observations(max(counts), args.task)
    servers = {"unbatched": start_server(args, 1), "batched": start_server(args, args.max_batch)}
    endpoints = {m: e for m, (_, e) in servers.items()}
    rows = []
    try:
        for n in counts:
            f = measure(args, endpoints, observations, n)
            one, many = f["unbatched"], f["batched"]
            row = {
                "robots": n,
                "unbatched": one,
                "batched": many,
                "throughput_ratio": many["chunks_per_s"] / one["chunks_per_s"],
                "p50_ratio": many["p50_ms"] / one["p50_ms"],
                "p95_ratio": many["p95_ms"] / one["p95_ms"],
            }
            rows.append(row)
            print(
                f"{n:2d} robots: {one['chunks_per_s']:6.1f} -> {many['chunks_per_s']:6.1f} chunks/s "
                f"(x{row['throughput_ratio']:.2f}); p50 wait {one['p50_ms']:.0f} -> {many['p50_ms']:.0f} ms "
                f"(x{row['p50_ratio']:.2f}); worst p95 {one['p95_ms']:.0f} -> {many['p95_ms']:.0f} ms "
                f"(x{row['p95_ratio']:.2f}); mean batch {many['mean_batch']:.1f}",
                flush=True,
            )
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            proc.wait(30)
    return {
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
        "cpu_count": os.cpu_count(),
        "rows": rows,
    }


def markdown(results: dict) -> str:
    s = results["settings"]
    lines = [
        f"# serve --max_batch: {Path(s['policy']).name}, steer {s['steer']}"
        + (f" (M = {s['candidates']})" if s["steer"] == "taco" else ""),
        "",
        f"Robots in closed loop (think {s['think_ms']:g} ms); per robot count, {s['blocks']} blocks of "
        f"{s['block_s']:g} s per mode in ABBA order on two servers started once; "
        f"batched = `--max_batch {s['max_batch']} --batch_window_ms {s['batch_window_ms']:g}`, "
        f"unbatched = `--max_batch 1`; server threads {s['server_threads']}, {results['cpu_count']} CPUs.",
        "",
        "| robots | chunks/s unbatched | chunks/s batched | throughput ratio | p50 wait ms (1 / batched) | p50 ratio "
        "| worst p95 ms (1 / batched) | p95 ratio | mean batch |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results["rows"]:
        one, many = r["unbatched"], r["batched"]
        lines.append(
            f"| {r['robots']} | {one['chunks_per_s']:.1f} | {many['chunks_per_s']:.1f} | **{r['throughput_ratio']:.2f}x** "
            f"| {one['p50_ms']:.0f} / {many['p50_ms']:.0f} | {r['p50_ratio']:.2f}x "
            f"| {one['p95_ms']:.0f} / {many['p95_ms']:.0f} | {r['p95_ratio']:.2f}x | {many['mean_batch']:.1f} |"
        )
    lines += ["", "p50: the median robot's p50 wait; p95: the worst robot's p95 wait (observe sent -> chunk received)."]
    return "\n".join(lines) + "\n"


def plot(results: dict, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = results["rows"]
    n = [r["robots"] for r in rows]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for key, label, color in (("unbatched", "--max_batch 1", "tab:gray"), ("batched", "batched", "tab:blue")):
        ax1.plot(n, [r[key]["chunks_per_s"] for r in rows], "o-", color=color, label=label)
        ax2.plot(n, [r[key]["p50_ms"] for r in rows], "o-", color=color, label=f"{label}: median robot's p50")
        ax2.plot(n, [r[key]["p95_ms"] for r in rows], "s--", color=color, label=f"{label}: worst robot's p95")
    for r in rows:
        ax1.annotate(f"x{r['throughput_ratio']:.2f}", (r["robots"], r["batched"]["chunks_per_s"]),
                     textcoords="offset points", xytext=(0, 6), ha="center", fontsize=8)
    ax1.set_xlabel("robots")
    ax1.set_ylabel("chunks per second (all robots)")
    ax2.set_xlabel("robots")
    ax2.set_ylabel("wait per chunk, ms")
    ax2.set_yscale("log")
    for ax in (ax1, ax2):
        ax.set_xticks(n)
        ax.legend(fontsize=8)
    s = results["settings"]
    fig.suptitle(f"one policy server, several robots: {Path(s['policy']).name}, steer {s['steer']}")
    fig.tight_layout()
    fig.savefig(png, dpi=120)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--policy", default=str(REPO / "checkpoints" / "push-diffusion"))
    parser.add_argument("--task", default="push", help="the task whose observations the robots send")
    parser.add_argument("--steer", default="none", choices=("none", "taco"))
    parser.add_argument("--candidates", type=int, default=8, help="TACO's M (--steer taco)")
    parser.add_argument("--robots", default="1,4,8,16")
    parser.add_argument("--blocks", type=int, default=4, help="measured blocks per mode and robot count (ABBA order)")
    parser.add_argument("--block_s", type=float, default=3.0, help="seconds per block")
    parser.add_argument("--warmup", type=int, default=3, help="chunks per robot before the measured window")
    parser.add_argument("--think_ms", type=float, default=0.0, help="a robot executes its chunk this long")
    parser.add_argument("--max_batch", type=int, default=16)
    parser.add_argument("--batch_window_ms", type=float, default=2.0)
    parser.add_argument("--server_threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="1 and 4 robots, 2 blocks of 1.5 s per mode")
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args()
    if args.quick:
        args.robots, args.blocks, args.block_s, args.warmup = "1,4", 2, 1.5, 2
    results = run(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = "serve_batching" if args.steer == "none" else f"serve_batching_{args.steer}"
    (out / f"{stem}.json").write_text(json.dumps(results, indent=2) + "\n")
    md = markdown(results)
    (out / f"{stem}.md").write_text(md)
    plot(results, out / f"{stem}.png")
    print(md)
    print(f"wrote {out}/{stem}.json, .md, .png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
