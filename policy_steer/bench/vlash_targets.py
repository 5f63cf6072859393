"""Issue 6's targets at one delay, from a delay benchmark's results.json.

    python -m policy_steer.bench.vlash_targets results/vlash_main/results.json [--latency 4] [--out targets.md]
        [--merge-out DIR]   (several results.json: their runs in one benchmark folder with plots; runs of
                             the same cell on disjoint seeds are pooled into one, see
                             policy_steer.bench.results.pool_runs)

For every (task, variant, policy) with ``sync``, ``async`` and ``vlash`` cells at the delay (a ``vlash``
cell with a steering strategy, e.g. ``--steer rtc``, is compared with ``sync``/``async`` under the same
strategy where those ran, else with the unsteered ones):

- success: ``vlash`` within 5 points of ``sync`` (and the paired difference on the same seeds);
- completion: ``vlash`` within 10% of the stall-free ideal, ``sync``'s completion minus its stall steps.
  That ideal is biased low wherever ``sync`` times out (a censored episode loses its remaining
  steps, d / (K + d) of them stalls), so two fairer references are shown next to it: the
  completion at d = 0 (no delay at all; the same episodes in every mode) and, on the seeds where
  both succeed, ``sync``'s own stall-free steps against ``vlash``'s steps (paired);
- seam jump: ``vlash`` at most half of ``async``'s; next to it the seam jump at d = 0 (the policy's
  own chunk-to-chunk jump, a floor no mode can go below) and the within-chunk jump;
- reaction (moving-goal): ``vlash`` at most a third of ``sync``'s; next to it the first step a
  reaction is possible (the structure of the loop, whatever the policy does), censored episodes, and about the
  best any loop could reach at this delay: a chunk asked on the step after the jump starts d + 1 steps
  later, plus the arm's own response time (``vlash``'s reaction minus its first chance).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np


def _cells(runs: list[dict[str, Any]]) -> dict[tuple, dict[tuple[str, str], dict[float, dict[str, Any]]]]:
    """(task, variant, policy) -> (mode, steer) -> latency -> run."""
    out: dict[tuple, dict[tuple[str, str], dict[float, dict[str, Any]]]] = {}
    for r in runs:
        if not isinstance(r.get("latency_steps"), (int, float)):
            continue
        key = (r["task"], r["variant"], Path(str(r["policy"])).name)
        out.setdefault(key, {}).setdefault((r["mode"], r.get("steer", "none")), {})[r["latency_steps"]] = r
    return out


def _baseline(modes: dict[tuple[str, str], dict[float, dict[str, Any]]], mode: str, steer: str, d: float):
    """The ``mode`` cell at delay d with the same steering, else the unsteered one (None: neither ran)."""
    for st in (steer, "none"):
        if d in modes.get((mode, st), {}):
            return modes[(mode, st)][d]
    return None


def _f(v: Any, nd: int = 2) -> str:
    return "-" if v is None else f"{v:.{nd}f}"


def _ok(cond: bool | None) -> str:
    return "-" if cond is None else ("met" if cond else "**not met**")


def _paired(a: dict[str, Any], b: dict[str, Any]) -> dict[str, np.ndarray] | None:
    """Per-seed arrays of two runs on the same seeds (None if the seeds differ or arrays are missing)."""
    if a.get("seeds") != b.get("seeds") or "per_episode_completion_steps" not in a or "per_episode_completion_steps" not in b:
        return None
    g = lambda r, k: np.asarray(r[k], dtype=float)  # noqa: E731
    return {
        "sa": g(a, "per_episode_success"), "sb": g(b, "per_episode_success"),
        "ca": g(a, "per_episode_completion_steps"), "cb": g(b, "per_episode_completion_steps"),
        "stall_a": g(a, "per_episode_stall_steps"),
    }


def targets(runs: list[dict[str, Any]], d: float = 4) -> tuple[str, list[dict[str, Any]]]:
    lines = [f"# Issue 6 targets at d = {d:g}", ""]
    rows: list[dict[str, Any]] = []
    groups = _cells(runs)
    cells = [(key, modes, steer) for key, modes in groups.items() for (mode, steer) in sorted(modes) if mode == "vlash"]
    for (task, variant, policy), modes, steer in cells:
        # vlash with a steering strategy (e.g. rtc) is compared with sync/async under the same strategy
        # where those ran, else with the unsteered ones
        s, a = _baseline(modes, "sync", steer, d), _baseline(modes, "async", steer, d)
        v = modes[("vlash", steer)].get(d)
        if s is None or a is None or v is None:
            continue
        zero = _baseline(modes, "sync", steer, 0)
        row: dict[str, Any] = {"task": task, "variant": variant, "policy": policy, "steer": steer, "latency_steps": d,
                               "episodes": v["episodes"]}
        # success
        pts = 100 * (v["success_rate"] - s["success_rate"])
        row["success"] = {"sync": s["success_rate"], "sync_ci95": s["ci95"], "vlash": v["success_rate"],
                          "vlash_ci95": v["ci95"], "async": a["success_rate"], "points": pts, "met": pts >= -5}
        p = _paired(s, v)
        if p is not None:
            row["success"]["only_sync"] = int(np.sum((p["sa"] == 1) & (p["sb"] == 0)))
            row["success"]["only_vlash"] = int(np.sum((p["sa"] == 0) & (p["sb"] == 1)))
        # completion
        ideal = s["mean_completion_steps"] - s["mean_stall_steps"]
        comp = v["mean_completion_steps"]
        row["completion"] = {"sync": s["mean_completion_steps"], "sync_stall": s["mean_stall_steps"], "ideal": ideal,
                             "vlash": comp, "async": a["mean_completion_steps"], "vlash_over_ideal": comp / ideal - 1,
                             "met": comp <= 1.10 * ideal, "speedup_vs_sync": s["mean_completion_steps"] / comp,
                             "d0": zero["mean_completion_steps"] if zero else None}
        if p is not None:
            both = (p["sa"] == 1) & (p["sb"] == 1)
            if both.any():
                ideal_b = float(np.mean(p["ca"][both] - p["stall_a"][both]))
                row["completion"].update({"paired_n": int(both.sum()), "paired_sync_stall_free": ideal_b,
                                          "paired_vlash": float(np.mean(p["cb"][both])),
                                          "paired_vlash_over_ideal": float(np.mean(p["cb"][both])) / ideal_b - 1})
        # seam jump
        row["seam_jump"] = {"async": a["seam_jump"], "vlash": v["seam_jump"], "sync": s["seam_jump"],
                            "d0": zero["seam_jump"] if zero else None, "within_chunk_vlash": v.get("within_chunk_jump"),
                            "met": (v["seam_jump"] <= 0.5 * a["seam_jump"]) if v["seam_jump"] and a["seam_jump"] else None}
        row["state_estimate_error"] = {"async": a["state_estimate_error"], "vlash": v["state_estimate_error"]}
        # reaction
        if v.get("reaction_steps") is not None and s.get("reaction_steps") is not None:
            row["reaction"] = {"sync": s["reaction_steps"], "vlash": v["reaction_steps"], "async": a["reaction_steps"],
                               "sync_first_chance": s.get("reaction_opportunity_steps"),
                               "vlash_first_chance": v.get("reaction_opportunity_steps"),
                               "censored": {m: r.get("reaction_censored") for m, r in (("sync", s), ("async", a), ("vlash", v))},
                               "ratio": v["reaction_steps"] / s["reaction_steps"],
                               "met": v["reaction_steps"] <= s["reaction_steps"] / 3}
            first = v.get("reaction_opportunity_steps")
            if first is not None:
                # No loop reacts before a chunk conditioned on an observation after the jump runs: that
                # is at best d + 1 steps after it; then the arm still needs vlash's own response time
                # (reaction - first chance) to move measurably toward the new goal.
                best = d + 1 + (v["reaction_steps"] - first)
                row["reaction"].update({"best_reachable": best, "best_reachable_ratio": best / s["reaction_steps"]})
        rows.append(row)

        c, sj = row["completion"], row["seam_jump"]
        lines += [f"## {task} / {variant} / {policy}" + ("" if steer == "none" else f" / {steer}") + f" (n = {v['episodes']})", ""]
        lines.append(f"- success: sync {s['success_rate']:.2f} {_ci(s)}, async {a['success_rate']:.2f}, vlash "
                     f"{v['success_rate']:.2f} {_ci(v)}: vlash - sync = {pts:+.0f} points (target >= -5): {_ok(row['success']['met'])}"
                     + (f"; seeds won only by sync {row['success']['only_sync']}, only by vlash {row['success']['only_vlash']}"
                        if "only_sync" in row["success"] else ""))
        lines.append(f"- completion: sync {c['sync']:.1f} steps with {c['sync_stall']:.1f} stalled, so the stall-free ideal is "
                     f"{ideal:.1f}; vlash {comp:.1f} ({100 * c['vlash_over_ideal']:+.0f}% of the ideal, target <= +10%): "
                     f"{_ok(c['met'])}; speed-up over sync {c['speedup_vs_sync']:.2f}x; async {c['async']:.1f}; "
                     f"d = 0: {_f(c['d0'], 1)}"
                     + (f"; paired on the {c['paired_n']} seeds both solve: sync stall-free {c['paired_sync_stall_free']:.1f}, "
                        f"vlash {c['paired_vlash']:.1f} ({100 * c['paired_vlash_over_ideal']:+.0f}%)" if "paired_n" in c else ""))
        lines.append(f"- seam jump (m): async {_f(sj['async'], 4)}, vlash {_f(sj['vlash'], 4)} (target <= half of async's): "
                     f"{_ok(sj['met'])}; sync {_f(sj['sync'], 4)}; at d = 0 {_f(sj['d0'], 4)} (the floor); vlash within a chunk "
                     f"{_f(sj['within_chunk_vlash'], 4)}")
        lines.append(f"- state estimate error (m): async {_f(a['state_estimate_error'], 4)}, vlash {_f(v['state_estimate_error'], 4)}")
        if "reaction" in row:
            rx = row["reaction"]
            lines.append(f"- reaction (steps): sync {rx['sync']:.1f}, async {rx['async']:.1f}, vlash {rx['vlash']:.1f} "
                         f"(ratio {rx['ratio']:.2f}, target <= 0.33): {_ok(rx['met'])}; first chance to react: sync "
                         f"{_f(rx['sync_first_chance'], 1)}, vlash {_f(rx['vlash_first_chance'], 1)}; censored {rx['censored']}"
                         + (f"; best reachable at this delay (a chunk asked the step after the jump, d + 1 + vlash's "
                            f"response {rx['vlash'] - rx['vlash_first_chance']:.1f}): {rx['best_reachable']:.1f} steps, ratio "
                            f"{rx['best_reachable_ratio']:.2f}" if "best_reachable" in rx else ""))
        lines.append("")
    return "\n".join(lines) + "\n", rows


def _ci(r: dict[str, Any]) -> str:
    lo, hi = r["ci95"]
    return f"[{lo:.2f}, {hi:.2f}]"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", nargs="+", help="results.json files (their runs are pooled)")
    ap.add_argument("--latency", type=float, default=4)
    ap.add_argument("--out", default=None, help="write the Markdown here (and the figures as JSON beside it)")
    ap.add_argument("--merge-out", default=None,
                    help="also write the pooled runs as one benchmark folder (results.json, results.md, plots)")
    args = ap.parse_args(argv)
    from policy_steer.bench.results import merge_benchmarks

    runs, _ = merge_benchmarks([Path(p) for p in args.results], Path(args.merge_out) if args.merge_out else None)
    md, rows = targets(runs, args.latency)
    if args.out:
        Path(args.out).write_text(md)
        Path(args.out).with_suffix(".json").write_text(json.dumps(rows, indent=2) + "\n")
    print(md, end="")


if __name__ == "__main__":
    main()
