"""From episode summaries to ``runs`` entries, results.json and results.md.

``policy-steer bench`` builds the summaries from its per-episode records
(:func:`policy_steer.bench.records.summary_of`), so everything here reads only what a record holds.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import binomtest

from policy_steer.bench.cells import Cell
from policy_steer.bench.robustness import mark_swept, robustness_table


def wilson_ci(successes: int, n: int) -> list[float]:
    """95% Wilson score interval [lo, hi] of a success rate."""
    if n == 0:
        return [0.0, 1.0]
    ci = binomtest(successes, n).proportion_ci(confidence_level=0.95, method="wilson")
    return [float(ci.low), float(ci.high)]


def latency_steps(spec: str) -> float | str:
    """The latency axis as a number where it is one (fixed N; uniform: the mean), else the spec."""
    if re.fullmatch(r"\d+", spec):
        return int(spec)
    m = re.fullmatch(r"uniform:(\d+)-(\d+)", spec)
    if m:
        return (int(m.group(1)) + int(m.group(2))) / 2
    return spec


def _mean(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return float(np.mean(vals)) if vals else None


def _one(values: list[Any]) -> Any:
    """The value every episode shares; several: all of them, joined by '/' (None when none has one)."""
    vals = sorted({str(v) for v in values if v is not None})
    return "/".join(vals) if vals else None


def run_entry(cell: Cell, episodes: list[dict[str, Any]]) -> dict[str, Any]:
    episodes = sorted(episodes, key=lambda e: e["seed"])
    n = len(episodes)
    k = sum(bool(e["success"]) for e in episodes)
    lat = [x for e in episodes for x in e["chunk_latency_ms"]]
    entry = cell.describe()
    entry["params"] = cell.variant_params  # the variant's whole parameter set (issue 18; {} for nominal)
    methods, settings = {m.strip() for m in cell.steer.split("+")}, cell.settings_dict
    if "vls" in methods:  # VLS options recorded with the axes (issue 5: reward_backend per run)
        entry["reward_backend"] = settings.get("reward_backend") or "offline"
        entry["guidance_scale"] = settings.get("guidance_scale")
    if methods & {"rtc", "rtc-cheap"}:  # the inpainting options decide the seam, so each run names them
        entry.update({k: settings.get(k) for k in ("rtc_max_weight", "rtc_soft_mask", "rtc_soft_rows")})
    entry.update({
        "latency_steps": latency_steps(cell.latency),
        "episodes": n,
        "successes": k,
        "success_rate": k / n if n else 0.0,
        "ci95": wilson_ci(k, n),
        "mean_episode_steps": _mean([e["steps"] for e in episodes]),
        # reset to success or time-out, stalls included: an episode that did not succeed counts as the
        # time-out (older summaries without ``completion_steps``: the episode's steps)
        "mean_completion_steps": _mean([e.get("completion_steps", e["steps"]) for e in episodes]),
        "mean_success_steps": _mean([e["steps"] for e in episodes if e["success"]]),
        "mean_stall_steps": _mean([e["stall_steps"] for e in episodes]),
        "seam_jump": _mean([e["seam_jump"] for e in episodes]),
        "within_chunk_jump": _mean([e.get("within_chunk_jump") for e in episodes]),
        "state_estimate_error": _mean([e["state_estimate_error"] for e in episodes]),
        # vlash: the estimator each episode really ran (auto resolved), and its arm model's mismatch
        "estimator": _one([e.get("estimator") for e in episodes]),
        "arm_mismatch": _one([e.get("arm_mismatch") for e in episodes]),
        "reaction_steps": _mean([e["reaction_steps"] for e in episodes]),
        "reaction_opportunity_steps": _mean([e.get("reaction_opportunity_steps") for e in episodes]),
        "reaction_censored": (sum(bool(e.get("reaction_censored")) for e in episodes)
                              if any(e.get("goal_jump_step") is not None for e in episodes) else None),
        "chunk_latency_ms": {
            "p50": float(np.percentile(lat, 50)) if lat else None,
            "p95": float(np.percentile(lat, 95)) if lat else None,
            "mean": float(np.mean(lat)) if lat else None,
        },
        "failures": dict(Counter(e["failure"] for e in episodes if not e["success"] and e["failure"])),
        "seeds": [e["seed"] for e in episodes],
        "per_episode_success": [bool(e["success"]) for e in episodes],
        "per_episode_completion_steps": [e.get("completion_steps", e["steps"]) for e in episodes],
        "per_episode_stall_steps": [e["stall_steps"] for e in episodes],
        "per_episode_reaction_steps": [e.get("reaction_steps") for e in episodes],
    })
    figures: dict[str, list[float]] = {}
    for e in episodes:
        for key, v in (e.get("steer_info") or {}).items():
            figures.setdefault(key, []).append(v)
    entry["steer_figures"] = {key: float(np.mean(v)) for key, v in figures.items()}
    return entry


# Columns of results.md, in order; a column is shown only if some run has a value for it.
_COLUMNS = [
    ("task", "task"), ("variant", "variant"), ("swept", "params"), ("policy", "policy"), ("steer", "steer"),
    ("candidates", "M"), ("verifier", "verifier"), ("particles", "B"), ("fk", "FK"), ("gradient", "grad"),
    ("mode", "mode"), ("estimator", "estimator"), ("arm_mismatch", "mismatch"), ("latency_steps", "d"), ("success_rate", "success"), ("ci95", "95% CI"),
    ("mean_completion_steps", "steps"), ("mean_stall_steps", "stall"), ("seam_jump", "seam jump"),
    ("within_chunk_jump", "in-chunk jump"), ("state_estimate_error", "est. err (m)"), ("reaction_steps", "reaction"),
    ("reaction_opportunity_steps", "first chance"), ("chunk_latency_ms", "chunk ms p50"),
    ("vs_unsteered", "vs none: pts / latency x"),
]


# What names a cell in results.json: its fixed axes and every steering axis (TACO, VLS).
CELL_IDENTITY = ("task", "variant", "variant_params", "policy", "steer", "mode", "latency", "estimator", "arm_mismatch",
                 "candidates", "verifier", "particles", "fk", "gradient")
# Per-episode means, pooled weighted by episodes.
_BY_EPISODE = ("mean_episode_steps", "mean_completion_steps", "mean_stall_steps", "seam_jump", "within_chunk_jump",
               "state_estimate_error")
# Means over the episodes that reacted (episodes minus the censored ones).
_BY_REACTION = ("reaction_steps", "reaction_opportunity_steps")
# Per-episode lists, kept aligned with ``seeds``.
_PER_EPISODE = ("seeds", "per_episode_success", "per_episode_completion_steps", "per_episode_stall_steps",
                "per_episode_reaction_steps")


def _weighted(pairs: list[tuple[float | None, float]]) -> float | None:
    pairs = [(v, w) for v, w in pairs if v is not None]
    total = sum(w for _, w in pairs)
    return sum(v * w for v, w in pairs) / total if pairs and total else None


def pool_runs(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Runs of the same cell on disjoint seeds (a benchmark topped up with more seeds, or one grid run
    in seed ranges) as one run each, in order of first appearance.

    Successes, the Wilson interval and the per-episode lists (sorted by seed) are exact; means are
    weighted by episodes (``mean_success_steps`` by successes, reaction figures by the uncensored
    episodes), chunk-latency percentiles are episode-weighted means of the parts (approximate: the
    per-chunk latencies are not in results.json), failures add up. A cell that appears once is
    returned unchanged; a seed in two runs of one cell is an error."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in runs:
        groups.setdefault(tuple(str(r.get(k)) for k in CELL_IDENTITY), []).append(r)
    out = []
    for key, rs in groups.items():
        if len(rs) == 1:
            out.append(rs[0])
            continue
        seeds = [s for r in rs for s in r.get("seeds", [])]
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"cell {dict(zip(CELL_IDENTITY, key))}: the same seed in two runs (their seeds overlap)")
        p = {k: v for k, v in rs[0].items() if k != "vs_unsteered"}  # a comparison of one part only
        n = sum(r["episodes"] for r in rs)
        k = sum(r["successes"] for r in rs)
        p.update({"episodes": n, "successes": k, "success_rate": k / n, "ci95": wilson_ci(k, n), "pooled_from": len(rs)})
        for f in _BY_EPISODE:
            if any(f in r for r in rs):
                p[f] = _weighted([(r.get(f), r["episodes"]) for r in rs])
        if any("mean_success_steps" in r for r in rs):
            p["mean_success_steps"] = _weighted([(r.get("mean_success_steps"), r["successes"]) for r in rs])
        for f in _BY_REACTION:
            if any(f in r for r in rs):
                p[f] = _weighted([(r.get(f), r["episodes"] - (r.get("reaction_censored") or 0)) for r in rs])
        if any(r.get("reaction_censored") is not None for r in rs):
            p["reaction_censored"] = sum(r.get("reaction_censored") or 0 for r in rs)
        if any("chunk_latency_ms" in r for r in rs):
            p["chunk_latency_ms"] = {q: _weighted([((r.get("chunk_latency_ms") or {}).get(q), r["episodes"]) for r in rs])
                                     for q in ("p50", "p95", "mean")}
        if any("failures" in r for r in rs):
            p["failures"] = dict(sum((Counter(r.get("failures") or {}) for r in rs), Counter()))
        if any("steer_figures" in r for r in rs):
            figs = dict.fromkeys(f for r in rs for f in (r.get("steer_figures") or {}))
            p["steer_figures"] = {f: _weighted([((r.get("steer_figures") or {}).get(f), r["episodes"]) for r in rs])
                                  for f in figs}
        lists = [f for f in _PER_EPISODE if all(f in r for r in rs)]
        for f in lists:
            p[f] = [v for r in rs for v in r[f]]
        aligned = [f for f in lists if len(p[f]) == len(seeds)]
        if "seeds" in aligned:  # one order for all: by seed
            order = sorted(range(len(seeds)), key=seeds.__getitem__)
            for f in aligned:
                p[f] = [p[f][i] for i in order]
        out.append(p)
    return out


def _fmt(key: str, v: Any) -> str:
    if v is None:
        return "-"
    if key == "ci95":
        return f"[{v[0]:.2f}, {v[1]:.2f}]"
    if key == "chunk_latency_ms":
        return "-" if v.get("p50") is None else f"{v['p50']:.1f}"
    if key == "vs_unsteered":
        ratio = v.get("latency_ratio_p50")
        return f"{v['success_points']:+.0f} / " + ("-" if ratio is None else f"{ratio:.1f}")
    if key == "policy":
        return Path(str(v)).name
    if isinstance(v, float):
        return f"{v:.4f}" if key in ("seam_jump", "within_chunk_jump", "state_estimate_error") else f"{v:.2f}"
    return str(v)


def markdown_table(runs: list[dict[str, Any]]) -> str:
    cols = [(k, h) for k, h in _COLUMNS if any(r.get(k) is not None for r in runs)]
    lines = ["| " + " | ".join(h for _, h in cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for r in runs:
        lines.append("| " + " | ".join(_fmt(k, r.get(k)) for k, _ in cols) + " |")
    return "\n".join(lines) + "\n"


_SAME_CELL = ("task", "variant", "variant_params", "policy", "mode", "latency")


def compare_to_unsteered(runs: list[dict[str, Any]]) -> None:
    """Add ``vs_unsteered`` to every steered run that has a ``steer: none`` run of the same task,
    variant, policy, mode and latency in this benchmark: the success difference in points (same
    seeds) and the per-chunk latency as a ratio (p50 and mean, measured in the same run)."""
    base = {tuple(r.get(k) for k in _SAME_CELL): r for r in runs if r.get("steer") == "none"}
    for r in runs:
        b = base.get(tuple(r.get(k) for k in _SAME_CELL))
        if b is None or r is b:
            continue
        lat, blat = r.get("chunk_latency_ms") or {}, b.get("chunk_latency_ms") or {}
        ratio = {k: (lat[k] / blat[k]) if lat.get(k) and blat.get(k) else None for k in ("p50", "mean")}
        r["vs_unsteered"] = {
            "success_points": 100.0 * (r["success_rate"] - b["success_rate"]),
            "same_seeds": r.get("seeds") == b.get("seeds"),
            "latency_ratio_p50": ratio["p50"],
            "latency_ratio_mean": ratio["mean"],
        }


def write_results(out: Path, runs: list[dict[str, Any]], meta: dict[str, Any]) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    compare_to_unsteered(runs)
    mark_swept(runs)  # the "params" column: what a sweep changed
    json_path, md_path = out / "results.json", out / "results.md"
    md = f"# policy-steer benchmark\n\n{meta.get('command', '')}\n\n" + markdown_table(runs)
    table = robustness_table(runs)
    md += f"\n{table}" if table else ""
    _replace(json_path, json.dumps({"meta": meta, "runs": runs}, indent=2, default=_jsonable) + "\n")
    _replace(md_path, md)
    return json_path, md_path


def _replace(path: Path, text: str) -> None:
    """Write ``path`` whole or not at all (a kill during the write leaves the previous file)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def merge_benchmarks(paths: list[Path], out: Path | None = None) -> tuple[list[dict[str, Any]], list[str]]:
    """The runs of several results.json, pooled cell by cell (:func:`pool_runs`), and their commands.

    With ``out``, the pooled runs are also written there as one benchmark folder (results.json,
    results.md and the plots), its meta naming every command and source file."""
    docs = [json.loads(Path(p).read_text()) for p in paths]
    runs = pool_runs([r for d in docs for r in d["runs"]])
    commands = [d.get("meta", {}).get("command") or "" for d in docs]
    if out is not None:
        from policy_steer.bench.plots import write_plots  # plots need matplotlib; reading results does not

        meta = {"command": "\n\n".join(commands), "merged_from": [str(p) for p in paths],
                "wall_s": sum(d.get("meta", {}).get("wall_s", 0.0) for d in docs)}
        write_results(Path(out), runs, meta)
        write_plots(runs, Path(out))
    return runs, commands


def _jsonable(v: Any) -> Any:
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating,)):
        return None if math.isnan(v) else float(v)
    if isinstance(v, Path):
        return str(v)
    return str(v)
