"""What a TACO chunk (M candidates) costs against the unsteered chunk, per compute setting, and what
each setting changes: the same-process ratio benchmark of issue 15's cheaper TACO and bf16 / compile.

    .venv/bin/python benchmarks/taco_cost.py [--policy checkpoints/push-diffusion --policy checkpoints/push-flow]
        [--candidates 16] [--rounds 15] [--chunks 20] [--compile] [--settings fp32,compiled+sigmoid]
        [--out docs/results/taco_cost]

For every policy, one adapter per compute setting (``load_policy(dtype=, activations=, compile=)``):

- ``fp32`` (today's default), ``sigmoid`` (tanh-based activations rewritten through the sigmoid,
  :mod:`policy_steer.policies.precision`), ``bf16``, ``bf16+sigmoid``, and with ``--compile``
  ``compiled`` and ``compiled+sigmoid`` (each compile's seconds are recorded); ``--settings`` picks a
  subset (``fp32`` is always measured: it is the baseline).

Timing: the unsteered chunk (M = 1) and the TACO chunk (M candidates, the policy's fitted CFN when it
has one, else the ``random`` verifier) of every setting, interleaved round by round so machine noise
hits all alike; medians, and every median as a ratio to the float32 unsteered chunk measured in the
same run (``ratio_to_fp32_m1``) and to the same setting's own unsteered chunk (``ratio_to_own_m1``).

Fidelity (``--chunks`` N): N observations of the policy's task (env resets, seeds 0..N-1); for each,
the unsteered chunk and the TACO chunk of every setting from the same noise (the generator seeded with
the chunk's index): max |action difference| against float32 in policy output units (also divided by
the largest |action| of the float32 chunks), and how often the TACO winner is the same candidate.

Written: ``taco_cost.json`` and ``taco_cost.md`` under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MUJOCO_GL", "egl")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SETTINGS: dict[str, dict[str, Any]] = {
    "fp32": {},
    "sigmoid": {"activations": "sigmoid"},
    "bf16": {"dtype": "bfloat16"},
    "bf16+sigmoid": {"dtype": "bfloat16", "activations": "sigmoid"},
}
COMPILED: dict[str, dict[str, Any]] = {
    "compiled": {"compile": True},
    "compiled+sigmoid": {"compile": True, "activations": "sigmoid"},
}


def observations(adapter, n: int) -> list[dict[str, Any]]:
    """n observations of the policy's task (its checkpoint says which; push otherwise), env seeds 0..n-1."""
    from policy_steer.envs import make
    from policy_steer.policies.observation import camera_env_kwargs

    env = make(adapter.trained_task or "push", "nominal", **camera_env_kwargs(adapter.spec.observation))
    out = []
    for seed in range(n):
        obs, _ = env.reset(seed=seed)
        out.append({**obs, "task": env.unwrapped.instruction, "step": 0})
    env.close()
    return out


def steered(adapter, m: int, seed: int = 0):
    """The unsteered policy (m = 1) or TACO with m candidates (CFN when fitted, else random)."""
    from policy_steer.steered_policy import SteeredPolicy
    from policy_steer.steering.taco import TacoSelection, load_verifier

    if m == 1:
        return SteeredPolicy(adapter, seed=seed)
    kind = "cfn" if adapter.path and (Path(adapter.path) / "verifier" / "cfn.safetensors").is_file() else "random"
    return SteeredPolicy(adapter, [TacoSelection(load_verifier(kind, adapter), m)], seed=seed)


def chunk(sp, obs: dict[str, Any], seed: int):
    """One chunk from a fresh episode whose noise stream is seeded with ``seed``."""
    sp.start_episode(None, seed=seed)
    return sp.predict_chunk(obs)


def load(policy: str, settings: dict[str, dict[str, Any]]) -> tuple[dict[str, Any], dict[str, float]]:
    from policy_steer.policies import load_policy

    adapters, load_s = {}, {}
    for name, kw in settings.items():
        t0 = time.perf_counter()
        adapters[name] = load_policy(policy, **kw)
        load_s[name] = time.perf_counter() - t0
    return adapters, load_s


def timing(adapters: dict[str, Any], obs: dict[str, Any], m: int,
           rounds: int) -> tuple[list[dict[str, Any]], dict[str, float]]:
    calls = {}
    for name, a in adapters.items():
        for mm in (1, m):
            sp = steered(a, mm)
            calls[(name, mm)] = (lambda sp=sp: chunk(sp, obs, 0))
    first_s = {}
    for key, fn in calls.items():  # the first call of each shape pays a compile
        t0 = time.perf_counter()
        fn()
        first_s[f"{key[0]}_m{key[1]}"] = time.perf_counter() - t0
        fn()
    times: dict[tuple[str, int], list[float]] = {k: [] for k in calls}
    for _ in range(rounds):
        for key, fn in calls.items():
            t0 = time.perf_counter()
            fn()
            times[key].append((time.perf_counter() - t0) * 1e3)
    med = {k: statistics.median(v) for k, v in times.items()}
    base = med[("fp32", 1)]
    rows = []
    for (name, mm), p50 in med.items():
        rows.append({"setting": name, "candidates": mm, "p50_ms": p50,
                     "p95_ms": float(np.percentile(times[(name, mm)], 95)),
                     "ratio_to_fp32_m1": p50 / base, "ratio_to_own_m1": p50 / med[(name, 1)]})
    return rows, first_s


def fidelity(adapters: dict[str, Any], obs_list: list[dict[str, Any]], m: int) -> dict[str, dict[str, Any]]:
    """Every setting against fp32 on the same observations and noise (see the module docstring)."""
    ref_m1, ref_taco = steered(adapters["fp32"], 1), steered(adapters["fp32"], m)
    refs = [(chunk(ref_m1, o, i), chunk(ref_taco, o, i)) for i, o in enumerate(obs_list)]
    scale = max(float(np.abs(r[0].actions).max()) for r in refs)
    out = {}
    for name, a in adapters.items():
        if name == "fp32":
            continue
        sp1, spm = steered(a, 1), steered(a, m)
        d1, d_same, same = [], [], 0
        for i, o in enumerate(obs_list):
            c1, cm = chunk(sp1, o, i), chunk(spm, o, i)
            d1.append(float(np.abs(c1.actions - refs[i][0].actions).max()))
            if cm.info["winner"] == refs[i][1].info["winner"]:  # else the chunks are different candidates
                same += 1
                d_same.append(float(np.abs(cm.actions - refs[i][1].actions).max()))
        out[name] = {"chunks": len(obs_list), "max_abs_m1": max(d1), "mean_abs_m1_max": float(np.mean(d1)),
                     "max_rel_m1": max(d1) / scale, "action_scale": scale, "same_winner": same / len(obs_list),
                     "max_abs_taco_same_winner": max(d_same, default=0.0)}
    return out


def measure(policy: str, m: int, rounds: int, n_chunks: int, compile_: bool,
            only: list[str] | None = None) -> dict[str, Any]:
    settings = {**SETTINGS, **(COMPILED if compile_ else {})}
    if only:
        settings = {k: v for k, v in {**SETTINGS, **COMPILED}.items() if k == "fp32" or k in only}
    adapters, load_s = load(policy, settings)
    obs_list = observations(adapters["fp32"], max(1, n_chunks))
    rows, first_s = timing(adapters, obs_list[0], m, rounds)
    fid = fidelity(adapters, obs_list, m) if n_chunks > 0 else {}
    name = Path(policy).name
    for r in rows:
        r["policy"] = name
        print(f"{name:<16} {r['setting']:<17} M={r['candidates']:<3} p50 {r['p50_ms']:8.1f} ms  "
              f"x{r['ratio_to_fp32_m1']:5.2f} of fp32 M=1  x{r['ratio_to_own_m1']:5.2f} of own M=1", flush=True)
    for k, f in fid.items():
        print(f"{name:<16} {k:<17} max |da| M=1 {f['max_abs_m1']:.2e} (rel {f['max_rel_m1']:.2e})  "
              f"TACO winner same {f['same_winner']:.2f}", flush=True)
    return {"policy": name, "path": str(policy), "family": adapters["fp32"].spec.family, "candidates": m,
            "rows": rows, "fidelity": fid, "load_s": load_s, "first_call_s": first_s}


def markdown(results: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = [f"# TACO cost and compute settings ({meta['threads']} torch thread(s), {meta['rounds']} rounds)", "",
             f"`{meta['command']}`", "",
             "| policy | setting | M | p50 (ms) | p95 (ms) | / fp32 M=1 | / own M=1 |", "|---|---|---|---|---|---|---|"]
    for res in results:
        for r in res["rows"]:
            lines.append(f"| {r['policy']} | {r['setting']} | {r['candidates']} | {r['p50_ms']:.1f} | {r['p95_ms']:.1f} | "
                         f"{r['ratio_to_fp32_m1']:.2f} | {r['ratio_to_own_m1']:.2f} |")
    lines += ["", "| policy | setting | chunks | max abs action diff M=1 | rel. to max abs action | "
              "same TACO winner | max abs diff, same winner |", "|---|---|---|---|---|---|---|"]
    for res in results:
        for name, f in res["fidelity"].items():
            lines.append(f"| {res['policy']} | {name} | {f['chunks']} | {f['max_abs_m1']:.2e} | {f['max_rel_m1']:.2e} | "
                         f"{f['same_winner']:.2f} | {f['max_abs_taco_same_winner']:.2e} |")
    first = [(res["policy"], k, v) for res in results for k, v in res["first_call_s"].items() if "compiled" in k]
    if first:
        lines += ["", "First chunk of each compiled shape (includes the compile): " +
                  "; ".join(f"{p} {k} {v:.0f} s" for p, k, v in first)]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--policy", action="append", default=[], help="checkpoint folder (repeatable)")
    ap.add_argument("--candidates", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--chunks", type=int, default=20, help="observations for the fidelity figures (0: none)")
    ap.add_argument("--compile", action="store_true", help="also the torch.compile settings (minutes of compiling)")
    ap.add_argument("--settings", default="", help="comma list of settings to measure (default: all; fp32 always)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the machine is shared)")
    ap.add_argument("--out", default="docs/results/taco_cost")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    policies = args.policy or [str(REPO / "checkpoints" / n) for n in ("push-diffusion", "push-flow")]
    only = [x.strip() for x in args.settings.split(",") if x.strip()]
    unknown = [x for x in only if x not in {**SETTINGS, **COMPILED}]
    if unknown:
        ap.error(f"--settings {','.join(unknown)}: use {', '.join({**SETTINGS, **COMPILED})}")
    results = [measure(p, args.candidates, args.rounds, args.chunks, args.compile, only) for p in policies]
    meta = {"command": "python benchmarks/taco_cost.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "threads": args.threads, "rounds": args.rounds, "torch": torch.__version__,
            "cpu_capability": torch.backends.cpu.get_cpu_capability()}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "taco_cost.json").write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")
    md = markdown(results, meta)
    (out / "taco_cost.md").write_text(md)
    print(md, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
