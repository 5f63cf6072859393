"""The TACO benchmark, read back: success against M per verifier, latency against M, and the issue's target.

    python -m policy_steer.steering.taco.report results/taco/results.json [--out results/taco/taco.md]
    python -m policy_steer.steering.taco.report A/results.json B/results.json --merged-out results/taco_all

Several results.json files of the same grid run on consecutive seed ranges (``--seed_start 1000
--episodes 50``, then ``--seed_start 1050 --episodes 50``) are merged cell by cell first (see
:func:`policy_steer.bench.results.pool_runs`); ``--merged-out`` writes the merged results.json / results.md / plots there.

Reads the ``runs`` of a ``policy-steer bench ... --steer none,taco --candidates 1,...`` run and, per
(task, variant, policy), prints:

- success (95% Wilson interval) for each verifier at each M, with the unsteered policy (``none``)
  as the M = 1 reference where it was run;
- the chunk latency (p50) as a ratio to M = 1 of the same verifier, measured in the same run;
- the target of the issue: at M = 16 the CFN raises success by >= 10 points over M = 1 with
  non-overlapping 95% intervals, and beats random choice at M = 16 (also non-overlapping); each
  check says yes or no, so tasks where TACO does not help are reported as such.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path
from typing import Any


def _key(r: dict) -> tuple:
    return (r["task"], r["variant"], Path(str(r["policy"])).name, r.get("mode", "sync"), str(r.get("latency_steps", 0)))


def _fmt(r: dict | None) -> str:
    if r is None:
        return "-"
    lo, hi = r["ci95"]
    return f"{r['success_rate']:.2f} [{lo:.2f}, {hi:.2f}]"


def _above(a: dict | None, b: dict | None, points: float = 0.0) -> bool | None:
    """a better than b by >= points with non-overlapping 95% intervals (None: not measured)."""
    if a is None or b is None:
        return None
    return a["success_rate"] - b["success_rate"] >= points and a["ci95"][0] > b["ci95"][1]


def _by_m_and_verifier(taco: list[dict[str, Any]]) -> dict[tuple[int, str], dict[str, Any]]:
    """{(M, verifier): run} of one (task, variant, ...) group. M = 1 has nothing to choose: one M = 1
    run (cfn's, else any verifier's) stands for every verifier that has none of its own."""
    cell = {(int(r["candidates"]), r["verifier"]): r for r in taco}
    m1 = cell.get((1, "cfn")) or next((r for r in taco if int(r["candidates"]) == 1), None)
    if m1 is not None:
        for v in {r["verifier"] for r in taco}:
            cell.setdefault((1, v), m1)
    return cell


def plot_taco(runs: list[dict[str, Any]], path: Path) -> Path | None:
    """Success (95% intervals) and chunk latency / M=1 against M: one column per (task, variant), one
    line per verifier; M = 1 (no choice to make) is drawn for every verifier that ran it."""
    from policy_steer.bench.plots import save_figure  # first: it selects the Agg backend

    import matplotlib.pyplot as plt
    import numpy as np

    taco = [r for r in runs if r.get("steer") == "taco" and r.get("candidates") is not None]
    groups = list(dict.fromkeys(_key(r) for r in taco))
    if not groups:
        return None
    fig, axes = plt.subplots(2, len(groups), figsize=(4.2 * len(groups), 6.4), squeeze=False)
    for j, key in enumerate(groups):
        rs = [r for r in taco if _key(r) == key]
        cell = _by_m_and_verifier(rs)
        for i, v in enumerate(sorted({r["verifier"] for r in rs})):
            line = [cell[mv] for mv in sorted(mv for mv in cell if mv[1] == v)]
            xs = np.array([int(r["candidates"]) for r in line], dtype=float) * (1 + 0.03 * (i - 1))
            ys = [r["success_rate"] for r in line]
            err = np.array([[r["success_rate"] - r["ci95"][0], r["ci95"][1] - r["success_rate"]] for r in line]).T
            axes[0, j].errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=v)
            b = (cell.get((1, v)) or {}).get("chunk_latency_ms", {}).get("p50")
            lat = [(r.get("chunk_latency_ms") or {}).get("p50") for r in line]
            if b:
                axes[1, j].plot([int(r["candidates"]) for r in line], [x / b if x else np.nan for x in lat], marker="o", label=v)
        task, variant, policy = key[:3]
        axes[0, j].set_title(f"{task} / {variant} ({policy}, n={rs[0]['episodes']})", fontsize=9)
        axes[0, j].set_ylim(0, 1.05)
        axes[0, j].set_ylabel("success (95% Wilson)")
        axes[1, j].set_ylabel("chunk latency p50 / M=1")
        for ax in axes[:, j]:
            ax.set_xscale("log", base=2)
            ax.set_xlabel("candidates M")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    return save_figure(fig, path)


def summarize(runs: list[dict[str, Any]], target_m: int = 16) -> tuple[str, list[dict[str, Any]]]:
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in runs:
        if r.get("steer") in ("none", "taco"):
            groups[_key(r)].append(r)
    lines: list[str] = []
    verdicts: list[dict[str, Any]] = []
    for key, rs in sorted(groups.items()):
        task, variant, policy, mode, lat = key
        base = next((r for r in rs if r["steer"] == "none"), None)
        taco = [r for r in rs if r["steer"] == "taco"]
        ms = sorted({int(r["candidates"]) for r in taco})
        verifiers = sorted({r["verifier"] for r in taco})
        cell = _by_m_and_verifier(taco)
        lines.append(f"\n### {task} / {variant} ({policy}, {mode}, latency {lat}; {rs[0]['episodes']} episodes per cell)\n")
        lines.append("| M | " + " | ".join(f"{v} success" for v in verifiers) + " | " +
                     " | ".join(f"{v} latency / M=1" for v in verifiers) + " |")
        lines.append("|---|" + "---|" * (2 * len(verifiers)))
        if base is not None:
            lines.append("| none | " + " | ".join(_fmt(base) for _ in verifiers) + " | " + " | ".join("-" for _ in verifiers) + " |")
        for m in ms:
            row = [_fmt(cell.get((m, v))) for v in verifiers]
            lat_cells = []
            for v in verifiers:
                r, r1 = cell.get((m, v)), cell.get((1, v))
                p, p1 = (r or {}).get("chunk_latency_ms", {}).get("p50"), (r1 or {}).get("chunk_latency_ms", {}).get("p50")
                lat_cells.append(f"{p / p1:.2f}" if p and p1 else "-")
            lines.append(f"| {m} | " + " | ".join(row) + " | " + " | ".join(lat_cells) + " |")
        ref = cell.get((1, "cfn")) or base
        at = cell.get((target_m, "cfn"))
        v = {
            "task": task, "variant": variant, "policy": policy,
            f"cfn_m{target_m}_minus_m1": None if at is None or ref is None else at["success_rate"] - ref["success_rate"],
            "cfn_beats_m1_by_10_points": _above(at, ref, 0.10),
            "cfn_beats_random": _above(at, cell.get((target_m, "random"))),
            "cfn_minus_random": None if at is None or cell.get((target_m, "random")) is None
            else at["success_rate"] - cell[(target_m, "random")]["success_rate"],
            "p_cfn_vs_m1": _fisher(at, ref),
            "p_cfn_vs_random": _fisher(at, cell.get((target_m, "random"))),
        }
        verdicts.append(v)
        lines.append(
            f"\nM={target_m} CFN vs M=1: {_yes(v['cfn_beats_m1_by_10_points'])} (difference {_pts(v[f'cfn_m{target_m}_minus_m1'])}); "
            f"CFN vs random at M={target_m}: {_yes(v['cfn_beats_random'])} (difference {_pts(v['cfn_minus_random'])}); "
            f"Fisher exact p: vs M=1 {_p(v['p_cfn_vs_m1'])}, vs random {_p(v['p_cfn_vs_random'])}"
        )
    return "\n".join(lines).lstrip() + "\n", verdicts


def _fisher(a: dict | None, b: dict | None) -> float | None:
    """Two-sided Fisher exact p of two success counts (None: not measured)."""
    if a is None or b is None:
        return None
    from scipy.stats import fisher_exact

    table = [[a["successes"], a["episodes"] - a["successes"]], [b["successes"], b["episodes"] - b["successes"]]]
    return float(fisher_exact(table).pvalue)


def _p(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def _yes(b: bool | None) -> str:
    return "not measured" if b is None else ("yes" if b else "no")


def _pts(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:+.0f} points"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="summarise a TACO benchmark results.json")
    ap.add_argument("results", nargs="+", help="results.json (several: consecutive seed ranges of one grid)")
    ap.add_argument("--out", default=None, help="Markdown file to write (default: taco.md beside the (merged) results)")
    ap.add_argument("--merged-out", default=None, help="folder for the merged results.json/results.md/plots")
    ap.add_argument("--target-m", type=int, default=16)
    args = ap.parse_args(argv)
    from policy_steer.bench.results import merge_benchmarks

    paths = [Path(p) for p in args.results]
    folder = Path(args.merged_out) if args.merged_out else paths[0].parent
    runs, commands = merge_benchmarks(paths, folder if args.merged_out else None)
    md, verdicts = summarize(runs, args.target_m)
    out = Path(args.out) if args.out else folder / "taco.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    plot = plot_taco(runs, out.with_suffix(".png"))
    head = "\n".join(f"    {c}" for c in commands)
    out.write_text("# TACO benchmark\n\n" + head + "\n\n" + md + (f"\n![success and latency vs M]({plot.name})\n" if plot else ""))
    (out.with_suffix(".json")).write_text(json.dumps(verdicts, indent=2) + "\n")
    print(md, end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
