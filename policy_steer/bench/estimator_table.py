"""Issue 19's table: the VLASH future-state estimators side by side, from benchmark results.

    python -m policy_steer.bench.estimator_table RESULTS.json ... [--out table.md] [--against kinematic]

Every run of the given results files is placed by (task, variant, delay) and by what conditioned the
policy: ``sync`` (no estimator), or ``vlash`` with the estimator each results entry records (``estimator``,
with `` + mismatch`` when its arm model was perturbed, ``arm_mismatch``). Three tables: success with its
Wilson 95% interval, the mean estimate error |assumed ee - measured ee| at the chunk's first step
(metres), and the target check: ``--against`` (the robot-realistic default, with and without mismatch)
minus ``sync`` in points, ``ok`` when at least -5.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

ORDER = ["sync", "model", "model-robot", "model-robot + mismatch", "delta", "kinematic", "kinematic + mismatch"]


def label(run: dict[str, Any]) -> str:
    if run.get("mode") != "vlash":
        return str(run.get("mode"))
    name = str(run.get("estimator") or "?")
    return f"{name} + mismatch" if run.get("arm_mismatch") else name


def load(paths: list[Path]) -> dict[tuple[str, str, str], dict[str, dict[str, Any]]]:
    """(task, variant, latency) -> label -> run."""
    out: dict[tuple[str, str, str], dict[str, dict[str, Any]]] = {}
    for p in paths:
        for run in json.loads(Path(p).read_text())["runs"]:
            key = (run["task"], run["variant"], str(run["latency"]))
            lab = label(run)
            if lab in out.setdefault(key, {}):
                raise SystemExit(f"{p}: a second {lab!r} run for {key}")
            out[key][lab] = run
    return out


def _latency_key(lat: str) -> tuple[int, float, str]:
    try:
        return (0, float(lat), lat)
    except ValueError:
        return (1, 0.0, lat)


def tables(cells: dict[tuple[str, str, str], dict[str, dict[str, Any]]], against: str) -> str:
    labels = [lab for lab in ORDER if any(lab in c for c in cells.values())]
    labels += sorted({lab for c in cells.values() for lab in c} - set(labels))
    keys = sorted(cells, key=lambda k: (_latency_key(k[2]), k[0], k[1]))
    head = "| d | task | variant | " + " | ".join(labels) + " |\n|" + "---|" * (3 + len(labels)) + "\n"
    success, error = head, head
    for k in keys:
        c = cells[k]
        row = f"| {k[2]} | {k[0]} | {k[1]} | "
        success += row + " | ".join(
            f"{c[lab]['success_rate']:.2f} [{c[lab]['ci95'][0]:.2f}, {c[lab]['ci95'][1]:.2f}]" if lab in c else "-"
            for lab in labels) + " |\n"
        error += row + " | ".join(
            f"{c[lab]['state_estimate_error']:.4f}" if lab in c and c[lab].get("state_estimate_error") is not None else "-"
            for lab in labels) + " |\n"
    checks = [against, f"{against} + mismatch"]
    target = "| d | task | variant | sync | " + " | ".join(f"{lab} - sync (pts)" for lab in checks) + " |\n|" + "---|" * (4 + len(checks)) + "\n"
    for k in keys:
        c = cells[k]
        if "sync" not in c:
            continue
        s = c["sync"]["success_rate"]
        parts = []
        for lab in checks:
            if lab not in c:
                parts.append("-")
                continue
            diff = 100 * (c[lab]["success_rate"] - s)
            parts.append(f"{diff:+.0f} ({'ok' if diff >= -5 else 'MISSED'})")
        target += f"| {k[2]} | {k[0]} | {k[1]} | {s:.2f} | " + " | ".join(parts) + " |\n"
    return (f"## Success (95% CI)\n\n{success}\n## Estimate error, m (|assumed ee - measured ee| at a chunk's first step)\n\n"
            f"{error}\n## Target: {against} within 5 points of sync\n\n{target}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", nargs="+", type=Path)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--against", default="kinematic", help="the estimator checked against sync (default: kinematic)")
    args = ap.parse_args(argv)
    text = tables(load(args.results), args.against)
    if args.out:
        args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
