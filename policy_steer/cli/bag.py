"""``policy-steer bag summary DIR``: what a recorded bag holds, for people without Foxglove at hand.

``DIR`` is a rosbag2 folder (``--record_bag`` of ``sim-robot``, ``robot`` or ``serve``) or a folder of
them (``bench --record_bag``). Prints, per bag, the topics with their message types and counts, the
duration on the loop's clock, and the episode's outcome (:mod:`policy_steer.recording.summary`);
``--json true`` prints the same as one JSON document. ``--figure FILE.png`` also draws the first bag's
candidates, scene and path from its own messages (:mod:`policy_steer.recording.figure`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass


@dataclass
class Config:
    path: str = ""  # a bag folder (metadata.yaml inside) or a folder holding bag folders
    json: bool = False  # print JSON instead of text
    figure: str | None = None  # also draw the (first) bag's candidates, scene and path into this PNG

    POSITIONAL = "path"


def run(cfg: Config) -> int:
    from policy_steer.errors import ConfigError
    from policy_steer.recording.summary import bag_folders, summarize, summary_lines

    if not cfg.path:
        raise ConfigError("bag summary needs a bag folder: policy-steer bag summary DIR")
    folders = bag_folders(cfg.path)
    summaries = [summarize(p) for p in folders]
    if cfg.figure:
        from policy_steer.recording.figure import render

        s = summaries[0]
        o = s["outcome"] or {}
        title = (f"{s['task']} / {s['variant']}, seed {o.get('seed')}: "
                 f"{'success' if o.get('success') else 'failure'} in {o.get('steps')} steps ({folders[0].name})")
        print(f"wrote {render(folders[0], cfg.figure, title)}")
    if cfg.json:
        print(json.dumps(summaries, indent=1))
        return 0
    for s in summaries:
        print("\n".join(summary_lines(s)))
    if len(summaries) > 1:
        ok = sum(bool(s["outcome"] and s["outcome"].get("success")) for s in summaries)
        print(f"{len(summaries)} bags, {ok} successful episodes")
    return 0
