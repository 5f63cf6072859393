"""PNG plots of benchmark runs: success per variant with 95% intervals, curves along numeric axes, and
robustness curves along swept variant parameters (:mod:`policy_steer.bench.robustness`)."""

from __future__ import annotations

import itertools
from collections import defaultdict
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from policy_steer.bench.robustness import mark_swept, plot_robustness  # noqa: E402

_IDENTITY = ("task", "variant", "swept", "policy", "steer", "mode", "latency_steps", "candidates", "verifier",
             "particles", "fk", "gradient")
_NUMERIC_AXES = ("candidates", "particles", "latency_steps")


def save_figure(fig, path: Path) -> Path:
    """Lay ``fig`` out, write it as a PNG at ``path`` and close it."""
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _label(run: dict[str, Any], skip: tuple[str, ...]) -> str:
    parts = []
    for k in _IDENTITY:
        if k in skip or run.get(k) is None:
            continue
        v = Path(run[k]).name if k == "policy" else run[k]
        parts.append(f"{k}={v}")
    return ", ".join(parts)


def _varying(runs: list[dict[str, Any]]) -> set[str]:
    return {k for k in _IDENTITY if len({str(r.get(k)) for r in runs}) > 1}


def _err(run: dict[str, Any]) -> tuple[float, float]:
    p, (lo, hi) = run["success_rate"], run["ci95"]
    return p - lo, hi - p


def plot_success_by_variant(runs: list[dict[str, Any]], path: Path) -> Path:
    tasks = sorted({r["task"] for r in runs})
    fig, axes = plt.subplots(len(tasks), 1, figsize=(max(6, 1.6 * len({r['variant'] for r in runs}) + 4), 3.6 * len(tasks)),
                             squeeze=False)
    fixed = tuple(k for k in _IDENTITY if k not in _varying(runs)) + ("task", "variant")
    for ax, task in zip(axes[:, 0], tasks):
        tr = [r for r in runs if r["task"] == task]
        variants = list(dict.fromkeys(r["variant"] for r in tr))
        labels = list(dict.fromkeys(_label(r, fixed) or "policy" for r in tr))
        width = 0.8 / max(1, len(labels))
        for j, lab in enumerate(labels):
            xs, ys, errs = [], [], [[], []]
            for i, v in enumerate(variants):
                match = [r for r in tr if r["variant"] == v and (_label(r, fixed) or "policy") == lab]
                if not match:
                    continue
                r = match[0]
                lo, hi = _err(r)
                xs.append(i + (j - (len(labels) - 1) / 2) * width)
                ys.append(r["success_rate"])
                errs[0].append(lo)
                errs[1].append(hi)
            ax.bar(xs, ys, width=width, yerr=errs, capsize=3, label=lab)
        ax.set_xticks(range(len(variants)), variants)
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("success rate")
        ax.set_title(f"{task} (95% Wilson intervals, n={tr[0]['episodes']} per bar)")
        if len(labels) > 1:
            ax.legend(fontsize=7, loc="upper right")
    return save_figure(fig, path)


def plot_along_axis(runs: list[dict[str, Any]], axis: str, metric: str, path: Path, ylabel: str) -> Path | None:
    """One line per configuration (everything but ``axis``), ``metric`` against ``axis``."""
    numeric = [r for r in runs if isinstance(r.get(axis), (int, float)) and r.get(metric) is not None]
    if len({r[axis] for r in numeric}) < 2:
        return None
    lines: dict[str, list[dict[str, Any]]] = defaultdict(list)
    fixed = tuple(k for k in _IDENTITY if k not in _varying(numeric)) + (axis,)
    for r in numeric:
        lines[_label(r, fixed) or "policy"].append(r)
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for lab, rs in lines.items():
        rs = sorted(rs, key=lambda r: r[axis])
        xs = [r[axis] for r in rs]
        if metric == "success_rate":
            ys = [r["success_rate"] for r in rs]
            e = np.array([_err(r) for r in rs]).T
            ax.errorbar(xs, ys, yerr=e, marker="o", capsize=3, label=lab)
        else:
            v = [r[metric] for r in rs]
            ys = [x["p50"] if isinstance(x, dict) else x for x in v]
            ax.plot(xs, ys, marker="o", label=lab)
    ax.set_xlabel(axis)
    ax.set_ylabel(ylabel)
    if metric == "success_rate":
        ax.set_ylim(0, 1.05)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def plot_latency_panels(runs: list[dict[str, Any]], metric: str, path: Path, ylabel: str) -> Path | None:
    """``metric`` against ``latency_steps``: one panel per (task, policy) row and variant column, one line per
    mode (and per any other setting that varies). Completion panels add sync's stall-free ideal
    (sync's completion minus its stall steps) as a dashed line."""
    numeric = [r for r in runs if isinstance(r.get("latency_steps"), (int, float)) and r.get(metric) is not None]
    if len({r["latency_steps"] for r in numeric}) < 2:
        return None
    rows = list(dict.fromkeys((r["task"], r["policy"]) for r in numeric))
    cols = list(dict.fromkeys(r["variant"] for r in numeric))
    fixed = tuple(k for k in _IDENTITY if k not in _varying(numeric)) + ("task", "policy", "variant", "latency_steps")
    fig, axes = plt.subplots(len(rows), len(cols), figsize=(4.6 * len(cols), 3.4 * len(rows)), squeeze=False)
    for (i, (task, policy)), (j, variant) in itertools.product(enumerate(rows), enumerate(cols)):
        ax = axes[i, j]
        cell = [r for r in numeric if (r["task"], r["policy"], r["variant"]) == (task, policy, variant)]
        lines: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for r in cell:
            lines[_label(r, fixed) or "policy"].append(r)
        for lab, rs in lines.items():
            rs = sorted(rs, key=lambda r: r["latency_steps"])
            xs = [r["latency_steps"] for r in rs]
            if metric == "success_rate":
                ax.errorbar(xs, [r["success_rate"] for r in rs], yerr=np.array([_err(r) for r in rs]).T,
                            marker="o", capsize=3, label=lab)
            else:
                ax.plot(xs, [r[metric] for r in rs], marker="o", label=lab)
            if metric == "mean_completion_steps" and rs[0].get("mode") == "sync" and all(
                    r.get("mean_stall_steps") is not None for r in rs):
                # The stall-free ideal. Time-outs censor it: a sync episode that runs out of
                # time loses its remaining steps, so completion minus stalls falls below what the
                # policy needs without delay; the no-delay completion is drawn beside it.
                ideal = [r[metric] - r["mean_stall_steps"] for r in rs]
                ax.plot(xs, ideal, ls="--", color="gray", label=f"{lab}: stall-free ideal (completion - stalls)")
                zero = [r for r in rs if r["latency_steps"] == 0]
                if zero:
                    ax.axhline(zero[0][metric], ls=":", color="black", lw=1, label="no delay (d = 0)")
        ax.set_title(f"{task} / {variant} / {Path(str(policy)).name}", fontsize=9)
        ax.set_xlabel("latency (control steps)")
        ax.set_ylabel(ylabel)
        if metric == "success_rate":
            ax.set_ylim(0, 1.05)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return save_figure(fig, path)


# Along latency, curves are drawn per (task, policy, variant) panel with one line per mode.
_LATENCY_PANELS = (
    ("success_rate", "success rate", "success"),
    ("mean_completion_steps", "completion (control steps)", "completion"),
    ("seam_jump", "seam jump (m)", "seam_jump"),
    ("reaction_steps", "reaction (control steps)", "reaction"),
)


def write_plots(runs: list[dict[str, Any]], out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    mark_swept(runs)  # bars of a swept variant are told apart by their parameters
    paths = [plot_success_by_variant(runs, out / "success_by_variant.png")]
    paths += plot_robustness(runs, out)  # success against each swept variant parameter
    for axis in _NUMERIC_AXES:
        for metric, ylabel, name in (
            ("success_rate", "success rate", "success"),
            ("chunk_latency_ms", "chunk latency p50 (ms)", "latency"),
        ):
            if axis == "latency_steps" and metric == "success_rate":
                continue  # drawn per panel below
            p = plot_along_axis(runs, axis, metric, out / f"{name}_vs_{axis}.png", ylabel)
            if p:
                paths.append(p)
    for metric, ylabel, name in _LATENCY_PANELS:
        p = plot_latency_panels(runs, metric, out / f"{name}_vs_latency_steps.png", ylabel)
        if p:
            paths.append(p)
    return paths
