"""What recording a ROS 2 bag costs: episode time with and without ``--record_bag``, and bag size.

    .venv/bin/python benchmarks/bag_cost.py [--episodes 10] [--seed_start 0] [--out docs/results/recording]

For each cell (task, variant, policy, steering) the same seeded episodes run in this process, each seed
twice: without a recorder and with one writing a rosbag2/MCAP folder (what ``bench --record_bag`` does
per episode: :class:`policy_steer.recording.Recorder` as the loop's observer, and, for TACO, the policy
keeping every candidate). The order of the two alternates from seed to seed, so drift of this shared
machine's load hits both alike. Printed and written to ``--out`` (JSON and Markdown):

- ``loop``: the episode's wall time (the loop, simulator and policy included), median over seeds, and
  the ratio recorded / plain per seed (median, and the 10th and 90th percentiles);
- ``observer``: the time the control thread spent inside the recorder's calls (copying the state and
  the frames, queueing), per control step: what recording adds to the loop itself; the rest of the
  ratio is the writer thread competing for this machine's cores (and Python's GIL) while it serialises;
- ``close``: the time to drain the writer and close the bag after the episode (not on the control path);
- the bag's size on disk per episode and per control step, the messages written and dropped;
- whether every recorded episode executed the same actions as its plain twin (it must: the recorder
  only observes).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CELLS = [  # (task, variant, policy, steer, settings)
    ("push", "obstacle", "push-diffusion", "none", {}),
    ("push", "obstacle", "push-diffusion", "taco", {"candidates": 4}),
    ("reach", "moving-goal", "reach-image-diffusion", "none", {}),  # a 64x64 camera: an Image per step
]


class Timed:
    """A loop observer that times every call it passes on to the recorder (on the control thread)."""

    def __init__(self, rec) -> None:
        self.rec = rec
        self.seconds = 0.0
        self.steps = 0

    def _t(self, fn, *args) -> None:
        t0 = time.perf_counter()
        fn(*args)
        self.seconds += time.perf_counter() - t0

    def started(self, context, hz):
        self._t(self.rec.started, context, hz)

    def context(self, context, stamp):
        self._t(self.rec.context, context, stamp)

    def observed(self, step, obs, stamp):
        self._t(self.rec.observed, step, obs, stamp)

    def chunk(self, record, chunk, stamp):
        self._t(self.rec.chunk, record, chunk, stamp)

    def stepped(self, record, executed):
        self.steps += 1
        self._t(self.rec.stepped, record, executed)

    def ended(self, result):
        self._t(self.rec.ended, result)


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def run(episodes: int, seed_start: int, out: Path) -> dict:
    os.environ.setdefault("MUJOCO_GL", "egl")
    import torch

    torch.set_num_threads(1)
    from policy_steer.envs import make
    from policy_steer.policies.loading import load_policy
    from policy_steer.policies.observation import camera_env_kwargs
    from policy_steer.recording import BagSink, Recorder
    from policy_steer.runtime.sim_loop import RuntimeConfig, run_episode
    from policy_steer.steered_policy import SteeredPolicy

    tmp = Path(tempfile.mkdtemp(prefix="bag_cost_"))
    rows = []
    try:
        for task, variant, name, steer, settings in CELLS:
            base = load_policy(str(REPO / "checkpoints" / name))
            policy = SteeredPolicy.from_method(base, steer, settings)
            env = make(task, variant, **camera_env_kwargs(base.spec.observation))
            run_episode(env, policy, RuntimeConfig(), seed_start, reaction=False)  # warm-up (untimed): first calls are slow
            plain_t, rec_t, close_t, ratios, sizes, per_step, written, dropped, same = [], [], [], [], [], [], [], [], []
            observer_us = []
            for i in range(episodes):
                seed = seed_start + i
                runs = {}
                for recorded in ((False, True) if i % 2 == 0 else (True, False)):
                    rec = Recorder([BagSink(tmp / f"{task}_{variant}_{steer}_{seed}")]) if recorded else None
                    timed = Timed(rec) if recorded else None
                    policy.keep_candidates = recorded
                    t0 = time.perf_counter()
                    result = run_episode(env, policy, RuntimeConfig(), seed, record_steps=True, reaction=False, observer=timed)
                    t1 = time.perf_counter()
                    stats = rec.close() if rec is not None else None
                    t2 = time.perf_counter()
                    runs[recorded] = (result, t1 - t0, t2 - t1, stats)
                    if timed is not None:
                        observer_us.append(timed.seconds / max(1, timed.steps) * 1e6)
                policy.keep_candidates = False
                (r0, p_s, _, _), (r1, r_s, c_s, stats) = runs[False], runs[True]
                bag = tmp / f"{task}_{variant}_{steer}_{seed}"
                plain_t.append(p_s)
                rec_t.append(r_s)
                close_t.append(c_s)
                ratios.append(r_s / p_s)
                sizes.append(_size(bag))
                per_step.append(_size(bag) / max(1, r1.steps))
                written.append(stats["written"])
                dropped.append(stats["dropped"])
                same.append([r.action for r in r0.records] == [r.action for r in r1.records])
                shutil.rmtree(bag)
            row = {
                "task": task, "variant": variant, "policy": name, "steer": steer, "settings": settings,
                "episodes": episodes, "seeds": [seed_start, seed_start + episodes - 1],
                "plain_s_median": float(np.median(plain_t)), "recorded_s_median": float(np.median(rec_t)),
                "ratio_median": float(np.median(ratios)), "ratio_p10": float(np.percentile(ratios, 10)),
                "ratio_p90": float(np.percentile(ratios, 90)), "close_s_median": float(np.median(close_t)),
                "observer_us_per_step_median": float(np.median(observer_us)),
                "observer_us_per_step_max": float(np.max(observer_us)),
                "bag_kb_median": float(np.median(sizes)) / 1024, "bag_kb_max": float(np.max(sizes)) / 1024,
                "bag_bytes_per_step_median": float(np.median(per_step)),
                "messages_median": float(np.median(written)), "dropped_total": int(sum(dropped)),
                "same_actions": all(same),
            }
            rows.append(row)
            print(_line(row), flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    doc = {"command": "benchmarks/bag_cost.py " + " ".join(sys.argv[1:]), "cells": rows,
           "machine": f"{os.cpu_count()} CPUs, torch threads 1, shared"}
    out.mkdir(parents=True, exist_ok=True)
    (out / "bag_cost.json").write_text(json.dumps(doc, indent=1))
    (out / "bag_cost.md").write_text(_markdown(doc))
    print(f"wrote {out / 'bag_cost.json'} and {out / 'bag_cost.md'}")
    return doc


def _line(r: dict) -> str:
    return (f"{r['task']}/{r['variant']} {r['policy']} {r['steer']}: episode {r['plain_s_median']:.2f} s plain, "
            f"{r['recorded_s_median']:.2f} s recorded (ratio {r['ratio_median']:.3f} [{r['ratio_p10']:.3f}, "
            f"{r['ratio_p90']:.3f}]), control thread {r['observer_us_per_step_median']:.0f} us/step, close {r['close_s_median'] * 1e3:.0f} ms, bag {r['bag_kb_median']:.0f} KB "
            f"({r['bag_bytes_per_step_median']:.0f} B/step), dropped {r['dropped_total']}, same actions {r['same_actions']}")


def _markdown(doc: dict) -> str:
    lines = [
        "# Recording cost (`--record_bag`)", "",
        f"`{doc['command']}` ({doc['machine']}). Each seed ran plain and recorded in this process, in alternating "
        "order; the ratio is recorded / plain per seed (median, [p10, p90]). The bag is closed after the episode "
        "(`close`, not on the control path).", "",
        "| task | variant | policy | steer | episodes | plain s | recorded s | ratio | [p10, p90] | control thread us/step | close ms | bag KB | B/step | messages | dropped | same actions |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in doc["cells"]:
        steer = r["steer"] + (f" M={r['settings']['candidates']}" if "candidates" in r["settings"] else "")
        lines.append(
            f"| {r['task']} | {r['variant']} | {r['policy']} | {steer} | {r['episodes']} | {r['plain_s_median']:.2f} | "
            f"{r['recorded_s_median']:.2f} | {r['ratio_median']:.3f} | [{r['ratio_p10']:.3f}, {r['ratio_p90']:.3f}] | {r['observer_us_per_step_median']:.0f} | "
            f"{r['close_s_median'] * 1e3:.0f} | {r['bag_kb_median']:.0f} | {r['bag_bytes_per_step_median']:.0f} | "
            f"{r['messages_median']:.0f} | {r['dropped_total']} | {r['same_actions']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--episodes", type=int, default=10)
    ap.add_argument("--seed_start", type=int, default=0)
    ap.add_argument("--out", default=str(REPO / "docs" / "results" / "recording"))
    a = ap.parse_args()
    run(a.episodes, a.seed_start, Path(a.out))


if __name__ == "__main__":
    main()
