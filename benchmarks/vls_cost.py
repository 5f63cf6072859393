"""What a VLS chunk costs against the unsteered chunk, per way of making it cheaper, same process.

    .venv/bin/python benchmarks/vls_cost.py [--task push,pick-place] [--chunks 60] [--out docs/results/vls_cost]

For each task's shipped policy (``checkpoints/<task>-diffusion``) on its ``obstacle`` variant, one
seeded episode start gives the observation and the episode context (the scene VLS writes its reward
program from); the previous plan's unexecuted tail (rows ``n_action_steps ..`` of an unsteered
chunk) is the prefix a sync runtime sends. Every configuration below (B = 4 particles unless named)
is built on the same loaded policy and timed on that same observation; the configurations run
interleaved in rounds and the medians are compared, so machine noise hits all of them alike. Each
figure is printed as a ratio to the unsteered chunk (``none``) of the same run.

Configurations: today's default (gradient through the denoiser on every step); the gradient through
x0_hat only (``vls_through=x0_hat`` / ``x0_hat_scaled``: no backward pass through the denoiser); the
gradient on fewer steps (``vls_guide_from`` / ``vls_guide_until``); no gradient at all (FK and selection only); a warm start from
the previous plan (``warm+vls``, :mod:`policy_steer.steering.warm_start`) alone and combined; and the
unsteered policy with four samples (what batching the particles costs by itself). The particles are
one batch already: one forward per step for all B (and one backward for all B), which the ``none B=4``
row shows against ``none``.

Also counted per chunk: denoiser calls, and how many of them were built with autograd (a backward
pass follows each of those). Writes ``vls_cost.json`` and ``vls_cost.md`` under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

# name -> (steer, settings); "none" is the baseline every ratio divides by.
CONFIGS: dict[str, tuple[str, dict[str, Any]]] = {
    "none": ("none", {}),
    "none B=4 (the batch alone)": ("taco", {"candidates": 4, "verifier": "random"}),
    "vls (today's default)": ("vls", {}),
    "vls through=x0_hat": ("vls", {"vls_through": "x0_hat"}),
    "vls through=x0_hat_scaled": ("vls", {"vls_through": "x0_hat_scaled"}),
    "vls guide [0.2, 1)": ("vls", {"vls_guide_from": 0.2}),
    "vls guide [0.5, 1)": ("vls", {"vls_guide_from": 0.5}),
    "vls guide [0.7, 1)": ("vls", {"vls_guide_from": 0.7}),
    "vls guide [0.2, 0.8)": ("vls", {"vls_guide_from": 0.2, "vls_guide_until": 0.8}),
    "vls x0_hat_scaled, guide [0.2, 0.8)": ("vls", {"vls_through": "x0_hat_scaled", "vls_guide_from": 0.2,
                                                     "vls_guide_until": 0.8}),
    "vls gradient off": ("vls", {"gradient": "off"}),
    "warm(0.5) alone, B=1": ("warm", {"warm_from": 0.5}),
    "warm(0.2)+vls": ("warm+vls", {"warm_from": 0.2}),
    "warm(0.5)+vls": ("warm+vls", {"warm_from": 0.5}),
    "warm(0.5)+vls through=x0_hat": ("warm+vls", {"warm_from": 0.5, "vls_through": "x0_hat"}),
    "warm(0.7)+vls": ("warm+vls", {"warm_from": 0.7}),
}


class CountingDenoiser:
    """Counts the policy's denoiser calls, and those built with autograd, by wrapping its methods."""

    def __init__(self, policy) -> None:
        self.calls = 0
        self.with_grad = 0
        for name in ("denoise", "denoise_with_features"):
            original = getattr(type(policy), name)

            def counted(*args, _original=original, **kwargs):
                self.calls += 1
                self.with_grad += int(torch.is_grad_enabled() and args[0].requires_grad)
                return _original(policy, *args, **kwargs)

            setattr(policy, name, counted)

    def take(self) -> tuple[int, int]:
        out = (self.calls, self.with_grad)
        self.calls = self.with_grad = 0
        return out


def episode_start(task: str, seed: int) -> tuple[dict, Any]:
    from policy_steer.envs import make

    env = make(task, "obstacle")
    env.reset(seed=seed)
    obs = {**{k: np.array(v, copy=True) for k, v in env.unwrapped.observe().items()},
           "task": env.unwrapped.instruction, "step": 0}
    return obs, env.unwrapped.episode_context(seed)


def measure(task: str, chunks: int, rounds: int, seed: int, configs: dict[str, tuple[str, dict]]) -> dict:
    from policy_steer.policies import load_policy
    from policy_steer.steered_policy import SteeredPolicy

    base = load_policy(f"checkpoints/{task}-diffusion")
    counter = CountingDenoiser(base)
    obs, context = episode_start(task, seed)
    n_exec = base.spec.n_action_steps
    plain = SteeredPolicy(base, seed=seed)
    prefix = plain.predict_chunk(obs).actions[n_exec:]  # the previous plan's unexecuted tail, sync runtime
    policies = {}
    for name, (steer, settings) in configs.items():
        sp = SteeredPolicy.from_method(base, steer, settings, seed=seed)
        sp.start_episode(context, seed=seed)
        policies[name] = sp

    def chunk(name: str):
        return policies[name].predict_chunk(obs, prefix=prefix, start_step=0, prefix_start=0)

    counts, infos = {}, {}
    for name in configs:  # warm up, and count the calls of one chunk
        for _ in range(2):
            counter.take()
            infos[name] = chunk(name).info
            counts[name] = counter.take()
    times: dict[str, list[float]] = {n: [] for n in configs}
    per_round = max(1, chunks // rounds)
    for _ in range(rounds):
        for name in configs:
            for _ in range(per_round):
                t0 = time.perf_counter()
                chunk(name)
                times[name].append(time.perf_counter() - t0)
    base_ms = statistics.median(times["none"]) * 1e3
    rows = []
    for name, (steer, settings) in configs.items():
        ms = statistics.median(times[name]) * 1e3
        vls = infos[name].get("steer", {}).get("vls", {})
        rows.append({
            "task": task, "config": name, "steer": steer, "settings": settings, "chunks": len(times[name]),
            "ms_p50": ms, "ratio": ms / base_ms, "denoiser_calls": counts[name][0], "calls_with_grad": counts[name][1],
            "guided_steps": vls.get("guided_steps"), "vls_overhead_ms": vls.get("overhead_ms"),
            "steps_run": infos[name].get("steer", {}).get("warm", {}).get("steps_run"),
        })
    return {"task": task, "policy": f"checkpoints/{task}-diffusion", "seed": seed, "num_steps": base.spec.num_steps,
            "none_ms_p50": base_ms, "rows": rows}


def markdown(results: list[dict], command: str) -> str:
    lines = ["# VLS cost: chunk latency as a ratio to the unsteered chunk, same process", "", f"    {command}", ""]
    for r in results:
        lines += [f"## {r['task']} ({r['policy']}, obstacle, seed {r['seed']}; unsteered p50 {r['none_ms_p50']:.1f} ms)", "",
                  "| configuration | ratio | ms p50 | denoiser calls (with autograd) | guided steps | VLS reward/FK ms |",
                  "|---|---|---|---|---|---|"]
        for row in r["rows"]:
            ov = "-" if row["vls_overhead_ms"] is None else f"{row['vls_overhead_ms']:.1f}"
            gs = "-" if row["guided_steps"] is None else str(row["guided_steps"])
            lines.append(f"| {row['config']} | {row['ratio']:.2f}x | {row['ms_p50']:.1f} | "
                         f"{row['denoiser_calls']} ({row['calls_with_grad']}) | {gs} | {ov} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", default="push,pick-place")
    ap.add_argument("--chunks", type=int, default=60, help="timed chunks per configuration")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--seed", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--only", default="", help="configuration names separated by ';' (default: all; none is always run)")
    ap.add_argument("--out", default="results/vls_cost")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    configs = CONFIGS
    if args.only:
        wanted = {"none", *[n.strip() for n in args.only.split(";") if n.strip()]}
        missing = wanted - set(CONFIGS)
        if missing:
            raise SystemExit(f"unknown configurations {sorted(missing)}; use some of {list(CONFIGS)}")
        configs = {n: c for n, c in CONFIGS.items() if n in wanted}
    results = [measure(t.strip(), args.chunks, args.rounds, args.seed, configs) for t in args.task.split(",") if t.strip()]
    command = "python benchmarks/vls_cost.py " + " ".join(
        f"--{k} {v}" for k, v in (("task", args.task), ("chunks", args.chunks), ("rounds", args.rounds), ("seed", args.seed)))
    if args.only:
        command += f' --only "{args.only}"'
    md = markdown(results, command)
    print(md)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "vls_cost.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "vls_cost.md").write_text(md + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
