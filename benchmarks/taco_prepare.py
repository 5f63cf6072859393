"""TACO's batched candidates: prepare the observation once and expand it, against preparing it M times.

    .venv/bin/python benchmarks/taco_prepare.py [--policy checkpoints/push-diffusion --policy checkpoints/push-flow]
        [--candidates 1,2,4,8,16,32] [--rounds 7] [--out results/taco_prepare]

For every policy and M, one TACO chunk (M candidates, one batched sampling loop, selection) is timed
two ways in the same run, interleaved round by round so machine noise hits both alike:

- ``once``: ``SteeredPolicy.predict_chunk``: prepare once, ``expand(ctx, M)``, sample, select;
- ``per_candidate``: the same, plus M - 1 further ``prepare`` calls of the same observation: the
  cost of computing the observation prefix for each candidate, as TACO's released code does (it
  repeats the observation M times through the whole model).

Printed and written (JSON + Markdown): median ms of each, the ratio per_candidate / once (what
preparing once saves), and the chunk latency against M as a ratio to M = 1 (both measured here).
Without ``--policy`` it uses the shipped push checkpoints when they exist, else tiny random ones
(a DiffusionPolicy and, when the test builders are importable, a tiny pi0 whose prefix is a VLM).
The verifier is ``random`` unless the policy has a fitted ``verifier/`` (then ``cfn``): the cost
of scoring is part of a TACO chunk, but it does not depend on how the prefix was computed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def default_policies(tmp: Path) -> list[str]:
    shipped = [REPO / "checkpoints" / n for n in ("push-diffusion", "push-flow")]
    found = [str(p) for p in shipped if (p / "config.json").is_file()]
    if found:
        return found
    from tests.fixtures.tiny_policies import build_tiny_diffusion

    out = [str(build_tiny_diffusion(tmp / "tiny-diffusion"))]
    try:
        from tests.policies.flow_checkpoints import build_tiny_pi

        out.append(str(build_tiny_pi(tmp / "tiny-pi0" / "ckpt", "pi0")))
    except Exception as e:  # the flow builders are optional here
        print(f"(no tiny pi0: {type(e).__name__}: {e})", file=sys.stderr)
    return out


def label(policy_path: str) -> str:
    p = Path(policy_path)
    return f"{p.parent.name}/{p.name}" if p.name == "ckpt" else p.name


def observation(adapter) -> dict:
    rng = np.random.default_rng(0)
    obs = {}
    for k, f in adapter.spec.observation.items():
        obs[k] = rng.integers(0, 255, f.shape).astype(np.uint8) if f.dtype == "|u1" else rng.standard_normal(f.shape).astype(np.float32)
    obs["task"] = "push the block into the target region"
    obs["step"] = 0
    return obs


def steered(adapter, m: int):
    from policy_steer.steered_policy import SteeredPolicy
    from policy_steer.steering.taco import TacoSelection, load_verifier

    kind = "cfn" if (Path(adapter.path) / "verifier" / "cfn.safetensors").is_file() else "random"
    return SteeredPolicy(adapter, [TacoSelection(load_verifier(kind, adapter), m)], seed=0), kind


def measure(policy_path: str, ms: list[int], rounds: int) -> list[dict]:
    from policy_steer.policies import load_policy

    adapter = load_policy(policy_path)
    obs = observation(adapter)
    rows = []
    for m in ms:
        sp, kind = steered(adapter, m)

        def once() -> None:
            sp.predict_chunk(obs)

        def per_candidate() -> None:
            for _ in range(m - 1):
                adapter.prepare(obs)
            sp.predict_chunk(obs)

        for _ in range(2):  # warm up
            once()
            per_candidate()
        t_once, t_rep, t_prep = [], [], []
        for _ in range(rounds):
            for fn, acc in ((once, t_once), (per_candidate, t_rep)):
                t0 = time.perf_counter()
                fn()
                acc.append((time.perf_counter() - t0) * 1e3)
            t0 = time.perf_counter()
            adapter.prepare(obs)
            t_prep.append((time.perf_counter() - t0) * 1e3)
        row = {
            "policy": label(policy_path), "family": adapter.spec.family, "verifier": kind, "candidates": m,
            "once_ms": statistics.median(t_once), "per_candidate_ms": statistics.median(t_rep),
            "prepare_ms": statistics.median(t_prep),
        }
        row["ratio_per_candidate_over_once"] = row["per_candidate_ms"] / row["once_ms"]
        row["saved_by_preparing_once"] = 1.0 - row["once_ms"] / row["per_candidate_ms"]
        rows.append(row)
        print(f"{row['policy']:<22} M={m:<3} once {row['once_ms']:8.1f} ms  per-candidate {row['per_candidate_ms']:8.1f} ms  "
              f"ratio {row['ratio_per_candidate_over_once']:.2f}", flush=True)
    base = next(r["once_ms"] for r in rows if r["candidates"] == min(ms))
    for r in rows:
        r["latency_ratio_to_m1"] = r["once_ms"] / base
    return rows


def markdown(rows: list[dict]) -> str:
    lines = [
        "| policy | M | once (ms) | prepare per candidate (ms) | ratio | saved | latency / M=1 |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['policy']} | {r['candidates']} | {r['once_ms']:.1f} | {r['per_candidate_ms']:.1f} | "
            f"{r['ratio_per_candidate_over_once']:.2f} | {100 * r['saved_by_preparing_once']:.0f}% | {r['latency_ratio_to_m1']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--policy", action="append", default=[], help="checkpoint folder (repeatable)")
    ap.add_argument("--candidates", default="1,2,4,8,16,32")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the machine is shared)")
    ap.add_argument("--out", default="results/taco_prepare")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    ms = [int(x) for x in args.candidates.split(",") if x.strip()]
    with tempfile.TemporaryDirectory() as tmp:
        policies = args.policy or default_policies(Path(tmp))
        rows = [r for p in policies for r in measure(p, ms, args.rounds)]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"command": "python benchmarks/taco_prepare.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "threads": args.threads, "rounds": args.rounds, "torch": torch.__version__}
    (out / "taco_prepare.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    md = markdown(rows)
    (out / "taco_prepare.md").write_text("# TACO: prepare once vs per candidate\n\n" + md)
    print(md, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
