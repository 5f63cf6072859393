"""Robustness curves: success against a swept variant parameter, and where each method breaks.

Reads only ``runs`` entries (:func:`policy_steer.bench.results.run_entry`): each carries its variant's
whole parameter set (``params``). A parameter is *swept* in a (task, variant) when its value differs
between the runs of that (task, variant). Along each swept parameter there is one curve per
configuration (steer, mode, latency, and the TACO / VLS axes), drawn with its 95% Wilson band
(:func:`plot_robustness`), and one row per curve in results.md (:func:`robustness_table`):

- ``nominal``: the success of the same configuration on the ``nominal`` variant when the benchmark ran
  it, else at the mildest point of the curve (its smallest value; a sweep from 0 (``surface.scale=0``)
  is the nominal problem itself).
- ``breaks at``: the parameter value at which the success falls below half of ``nominal``, walking from
  the mildest value to the hardest, linearly interpolated between the last point at or above half and
  the first one below. Which end is mild is read from the curve: larger is harder unless the success
  at the largest value is clearly higher than at the smallest, their 95% intervals apart (then smaller
  is harder, e.g. a pillar's distance from the path). Its interval is where the upper and the lower ends of the 95% band cross the same
  level. ``>`` / ``<`` (past the hardest value tested): it never fell below half in the range tested;
  ``<=`` / ``>=`` (at the mildest value): it is already below there. The interval ignores the
  uncertainty of ``nominal`` itself.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

# What tells two curves of one sweep apart (besides the swept parameter).
LINE_KEYS = ("policy", "steer", "mode", "latency_steps", "candidates", "verifier", "particles", "fk", "gradient")


def mark_swept(runs: list[dict[str, Any]]) -> dict[tuple[str, str], list[str]]:
    """Set ``run["swept"]`` (``"obstacle.height=0.08"``: the parameters that vary within its task and
    variant) on every run of a sweep; returns {(task, variant): [swept parameter names]}."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in runs:
        groups[(r.get("task"), r.get("variant"))].append(r)
    swept: dict[tuple[str, str], list[str]] = {}
    for key, rs in groups.items():
        names = list(dict.fromkeys(k for r in rs for k in (r.get("params") or {})))
        varying = [k for k in names if len({(r.get("params") or {}).get(k) for r in rs}) > 1]
        swept[key] = varying
        for r in rs:
            p = r.get("params") or {}
            label = ";".join(f"{k}={p[k]:g}" for k in varying if k in p)
            if label:  # only runs of a sweep get the key: a run without one is written as run_entry made it
                r["swept"] = label
    return {k: v for k, v in swept.items() if v}


def _line(run: dict[str, Any]) -> tuple:
    return tuple(str(run.get(k)) for k in LINE_KEYS)


def _varying(runs: list[dict[str, Any]], curve: dict[str, Any]) -> set[str]:
    """The configuration keys that differ between the runs of the curve's task and variant."""
    rs = [r for r in runs if r.get("task") == curve["task"] and r.get("variant") == curve["variant"]]
    return {k for k in LINE_KEYS if len({str(r.get(k)) for r in rs}) > 1}


def line_label(run: dict[str, Any], varying: set[str]) -> str:
    keys = [k for k in LINE_KEYS if k in varying and run.get(k) is not None] or ["steer"]
    return ", ".join(f"{k}={Path(str(run.get(k))).name if k == 'policy' else run.get(k)}" for k in keys)


def curves(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per (task, variant, swept parameter, configuration): ``points`` [(x, rate, lo, hi), ...]
    sorted by x (the other swept parameters held at each value: a product sweep gives one curve per
    combination of the others), ``nominal`` and the breaking point."""
    swept = mark_swept(runs)
    out = []
    for (task, variant), names in swept.items():
        rs = [r for r in runs if r.get("task") == task and r.get("variant") == variant]
        for name in names:
            others = [k for k in names if k != name]
            lines: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
            for r in rs:
                rest = tuple((k, r["params"].get(k)) for k in others)
                lines[(_line(r), rest)].append(r)
            for (line, rest), members in lines.items():
                members = sorted(members, key=lambda r: r["params"][name])
                pts = [(float(r["params"][name]), r["success_rate"], r["ci95"][0], r["ci95"][1]) for r in members]
                nominal, source = _nominal(runs, members[0], pts)
                out.append({
                    "task": task, "variant": variant, "parameter": name, "fixed": dict(rest), "run": members[0],
                    "points": pts, "episodes": [r["episodes"] for r in members], "nominal": nominal,
                    "nominal_from": source, **breaking_point(pts, nominal),
                })
    return out


def _nominal(runs: list[dict[str, Any]], run: dict[str, Any], pts: list[tuple]) -> tuple[float, str]:
    for r in runs:
        if r.get("task") == run.get("task") and r.get("variant") == "nominal" and _line(r) == _line(run):
            return float(r["success_rate"]), "nominal variant"
    return float(pts[0][1]), "mildest point"


def _crossing(xs: list[float], ys: list[float], level: float) -> tuple[str, float | None]:
    """Where ``ys`` first falls below ``level`` along ``xs`` (interpolated): ("at", x), ("below", x0)
    when already below at the first point, ("above", None) when never."""
    if ys[0] < level:
        return "below", xs[0]
    for i in range(1, len(xs)):
        if ys[i] < level:
            x0, x1, y0, y1 = xs[i - 1], xs[i], ys[i - 1], ys[i]
            return "at", x0 + (x1 - x0) * (y0 - level) / (y0 - y1) if y0 != y1 else x1
    return "above", None


def breaking_point(pts: list[tuple[float, float, float, float]], nominal: float) -> dict[str, Any]:
    """``breaks``: (kind, x) of the rate's crossing of half ``nominal``; ``breaks_lo`` / ``breaks_hi``:
    the crossings of the band's lower and upper ends (the interval). See the module docstring."""
    # smaller is harder only when the success at the largest value is clearly higher (the two ends' 95%
    # intervals apart): a flat, noisy curve keeps the default reading
    harder_up = not pts[-1][2] > pts[0][3]
    order = pts if harder_up else pts[::-1]  # from the mildest value to the hardest
    xs = [p[0] for p in order]
    level = nominal / 2
    return {"level": level, "harder": "larger" if harder_up else "smaller",
            "breaks": _crossing(xs, [p[1] for p in order], level),
            "breaks_lo": _crossing(xs, [p[2] for p in order], level), "breaks_hi": _crossing(xs, [p[3] for p in order], level)}


def _fmt_cross(c: tuple[str, float | None], xs: list[float], harder: str = "larger") -> str:
    kind, x = c
    up = harder == "larger"
    if kind == "above":
        return f"> {max(xs):g}" if up else f"< {min(xs):g}"
    if kind == "below":
        return f"<= {x:g}" if up else f">= {x:g}"
    return f"{x:.3g}"


def robustness_table(runs: list[dict[str, Any]]) -> str:
    """The results.md section (empty when nothing was swept)."""
    cs = curves(runs)
    if not cs:
        return ""
    lines = ["## Robustness: where each method falls below half its nominal success", "",
             "| task | variant | parameter | configuration | points (value: success) | nominal | breaks at | 95% interval |",
             "|---|---|---|---|---|---|---|---|"]
    for c in cs:
        xs = [p[0] for p in c["points"]]
        pts = ", ".join(f"{x:g}: {y:.2f}" for x, y, _, _ in c["points"])
        conf = line_label(c["run"], _varying(runs, c)) + "".join(f", {k}={v:g}" for k, v in c["fixed"].items())
        h = c["harder"]
        lo, hi = _fmt_cross(c["breaks_lo"], xs, h), _fmt_cross(c["breaks_hi"], xs, h)
        if h == "smaller":  # the band's lower end crosses first, at the larger value
            lo, hi = hi, lo
        lines.append(f"| {c['task']} | {c['variant']} | {c['parameter']} ({h} is harder) | {conf} | {pts} | "
                     f"{c['nominal']:.2f} ({c['nominal_from']}) | {_fmt_cross(c['breaks'], xs, h)} | [{lo}, {hi}] |")
    n = sorted({e for c in cs for e in c["episodes"]})
    lines += ["", f"Episodes per point: {', '.join(map(str, n))}; the same seeds at every point (paired curves). "
              "Breaking point: where the success falls below half of nominal going from the mild end to the hard end "
              "(read from the curve, named per row); see policy_steer/bench/robustness.py.", ""]
    return "\n".join(lines)


def plot_robustness(runs: list[dict[str, Any]], out: Path) -> list[Path]:
    """One PNG per (task, variant, swept parameter): ``robustness_<task>_<variant>_vs_<parameter>.png``,
    success with its 95% band per configuration, and each configuration's half-nominal level dotted."""
    import matplotlib.pyplot as plt

    from policy_steer.bench.plots import save_figure

    cs = curves(runs)
    by_plot: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for c in cs:
        by_plot[(c["task"], c["variant"], c["parameter"])].append(c)
    paths = []
    for (task, variant, name), group in by_plot.items():
        fig, ax = plt.subplots(figsize=(7, 4.2))
        for i, c in enumerate(group):
            color = f"C{i % 10}"
            xs = [p[0] for p in c["points"]]
            label = line_label(c["run"], _varying(runs, c)) + "".join(f", {k}={v:g}" for k, v in c["fixed"].items())
            ax.plot(xs, [p[1] for p in c["points"]], marker="o", color=color, label=label)
            ax.fill_between(xs, [p[2] for p in c["points"]], [p[3] for p in c["points"]], color=color, alpha=0.15)
            ax.axhline(c["level"], color=color, ls=":", lw=1)
            if c["breaks"][0] == "at":
                ax.axvline(c["breaks"][1], color=color, ls="--", lw=0.8)
        n = sorted({e for c in group for e in c["episodes"]})
        ax.set_title(f"{task} / {variant}: success vs {name} (95% Wilson band, n={'/'.join(map(str, n))} per point)", fontsize=9)
        ax.set_xlabel(name)
        ax.set_ylabel("success rate")
        ax.set_ylim(0, 1.05)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        safe = name.replace(".", "_")
        paths.append(save_figure(fig, out / f"robustness_{task}_{variant}_vs_{safe}.png"))
    return paths
