"""A picture of a recorded episode drawn from the bag's own messages (``bag summary DIR --figure FILE``).

One job: read ``/policy_steer/candidates``, ``/policy_steer/executed_path`` and ``/diagnostics`` back
with ``rosbags``' reader and draw, with matplotlib (Agg, no display):

- left, the top view (x, y in the world frame): the scene's obstacles and objects as their boxes,
  every chunk's candidate end-effector trajectories in their markers' colours (red: lowest score of the
  chunk, green: highest), the executed candidate of each chunk in black, the measured path in blue;
- right, each chunk's candidate scores (TACO counts or VLS rewards, from the marker texts the recorder
  wrote) against the chunk's time, the executed one circled.

What a marker's text says is parsed as a number only (``name=value``); nothing read is executed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def _read(path: Path) -> dict[str, list[tuple[int, Any]]]:
    from rosbags.rosbag2 import Reader
    from rosbags.typesys import Stores, get_typestore

    ts = get_typestore(Stores.ROS2_HUMBLE)
    want = {"/policy_steer/candidates", "/policy_steer/executed_path"}
    out: dict[str, list[tuple[int, Any]]] = {t: [] for t in want}
    with Reader(path) as reader:
        conns = [c for c in reader.connections if c.topic in want]
        for conn, t, raw in reader.messages(connections=conns):
            out[conn.topic].append((t, ts.deserialize_cdr(raw, conn.msgtype)))
    return out


def _score(text: str) -> float | None:
    """``taco=0.123`` -> 0.123 (the recorder's candidate marker text); None when it holds no number."""
    _, _, value = text.partition("=")
    try:
        return float(value)
    except ValueError:
        return None


def render(bag: str | Path, out: str | Path, title: str | None = None) -> Path:
    """Draw ``bag`` (one rosbag2 folder written by the recorder) into the PNG ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    from policy_steer.errors import ConfigError

    bag = Path(bag)
    msgs = _read(bag)
    sets = msgs["/policy_steer/candidates"]
    if not sets:
        raise ConfigError(f"{bag} holds no /policy_steer/candidates messages: nothing to draw")
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4.8), gridspec_kw={"width_ratios": [1.25, 1]})
    scene_drawn = False
    for k, (t, arr) in enumerate(sets):
        for mk in arr.markers:
            if mk.ns in ("obstacles", "objects") and not scene_drawn:
                p, s = mk.pose.position, mk.scale
                face = (mk.color.r, mk.color.g, mk.color.b, 0.35)
                ax.add_patch(Rectangle((p.x - s.x / 2, p.y - s.y / 2), s.x, s.y, facecolor=face,
                                       edgecolor=(mk.color.r, mk.color.g, mk.color.b), lw=1))
                ax.annotate(mk.text, (p.x, p.y), fontsize=7, ha="center", va="center")
            elif mk.ns in ("candidates", "particles") and mk.points:
                xy = np.array([[q.x, q.y] for q in mk.points])
                ax.plot(xy[:, 0], xy[:, 1], color=(mk.color.r, mk.color.g, mk.color.b), lw=1.0, alpha=0.8)
            elif mk.ns == "executed" and mk.points:
                xy = np.array([[q.x, q.y] for q in mk.points])
                ax.plot(xy[:, 0], xy[:, 1], color="black", lw=2.2, alpha=0.9, label="executed candidate" if k == 0 else None)
        scene_drawn = True
        scores = [(mk.id, _score(mk.text)) for mk in arr.markers if mk.ns in ("candidates", "particles")]
        chosen = [mk.id for mk in arr.markers if mk.ns == "executed"]
        xs = [t / 1e9] * len(scores)
        ys = [s for _, s in scores]
        if ys and all(v is not None for v in ys):
            bx.scatter(xs, ys, s=14, c=[(mk.color.r, mk.color.g, mk.color.b) for mk in arr.markers
                                        if mk.ns in ("candidates", "particles")])
            for cid, s in scores:
                if cid in chosen:
                    bx.scatter([t / 1e9], [s], s=80, facecolors="none", edgecolors="black", lw=1.5,
                               label="executed" if k == 0 else None)
    paths = msgs["/policy_steer/executed_path"]
    if paths:
        poses = paths[-1][1].poses
        xy = np.array([[p.pose.position.x, p.pose.position.y] for p in poses])
        ax.plot(xy[:, 0], xy[:, 1], color="tab:blue", lw=1.5, ls="--", label="measured end effector")
    lines = [ln.get_xydata() for ln in ax.get_lines()]
    if lines:  # frame the trajectories and the objects near them, not the whole table
        pts = np.concatenate(lines)
        lo, hi = pts.min(axis=0), pts.max(axis=0)
        pad = max(0.05, 0.15 * float(np.max(hi - lo)))
        ax.set_xlim(lo[0] - pad, hi[0] + pad)
        ax.set_ylim(lo[1] - pad, hi[1] + pad)
    ax.set_aspect("equal", adjustable="box")
    ax.set_xlabel("x (m)")
    ax.set_ylabel("y (m)")
    ax.set_title("candidates per chunk (red: low score, green: high)", fontsize=9)
    ax.legend(fontsize=7, loc="best")
    bx.set_xlabel("chunk time (s, the loop's clock)")
    text = next((mk.text for mk in sets[0][1].markers if mk.ns in ("candidates", "particles")), "score=")
    bx.set_ylabel(text.partition("=")[0] + " score per candidate")
    bx.set_title("every candidate's score; the executed one circled", fontsize=9)
    bx.legend(fontsize=7, loc="best")
    fig.suptitle(title or f"{bag.name}: {len(sets)} chunks", fontsize=10)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
