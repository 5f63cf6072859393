"""The TACO benchmark, read back: success against M per verifier, latency against M, and the issue's target.

    python -m policy_steer.steering.taco.report results/taco/results.json [--out results/taco/taco.md]

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
        cell = {(int(r["candidates"]), r["verifier"]): r for r in taco}
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
                r, r1 = cell.get((m, v)), cell.get((min(ms), v))
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
        }
        verdicts.append(v)
        lines.append(
            f"\nM={target_m} CFN vs M=1: {_yes(v['cfn_beats_m1_by_10_points'])} (difference {_pts(v[f'cfn_m{target_m}_minus_m1'])}); "
            f"CFN vs random at M={target_m}: {_yes(v['cfn_beats_random'])} (difference {_pts(v['cfn_minus_random'])})"
        )
    return "\n".join(lines).lstrip() + "\n", verdicts


def _yes(b: bool | None) -> str:
    return "not measured" if b is None else ("yes" if b else "no")


def _pts(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:+.0f} points"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="summarise a TACO benchmark results.json")
    ap.add_argument("results")
    ap.add_argument("--out", default=None, help="Markdown file to write (default: beside results.json)")
    ap.add_argument("--target-m", type=int, default=16)
    args = ap.parse_args(argv)
    path = Path(args.results)
    data = json.loads(path.read_text())
    md, verdicts = summarize(data["runs"], args.target_m)
    out = Path(args.out) if args.out else path.with_name("taco.md")
    out.write_text("# TACO benchmark\n\n" + (data.get("meta", {}).get("command") or "") + "\n\n" + md)
    (out.with_suffix(".json")).write_text(json.dumps(verdicts, indent=2) + "\n")
    print(md, end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
