"""Environment speed: control steps per second per task, physics only and with one camera, and the
time to record 10 demonstrations.

    .venv/bin/python benchmarks/env_speed.py [--steps 400] [--render_steps 100] [--episodes 10]
        [--image_size 96,96] [--tasks reach,push] [--out results/env_speed]

Speed on these shared machines is noisy, so every figure comes with a baseline measured in the same
run: the bare ``mj_step`` rate of the same model, and the ratio of a control step to the
``substeps`` bare physics steps it contains (the cost of IK, the servo ramp and the checks).
Writes ``env_speed.json`` and ``env_speed.md`` to ``--out`` and prints the table. A task whose env
cannot be built (e.g. ``lift`` without robosuite) is skipped with the reason.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402

from policy_steer.config import IntList, StrList, parse_config  # noqa: E402


@dataclass
class Config:
    steps: int = 400  # control steps timed without rendering
    render_steps: int = 100  # control steps timed with one camera
    episodes: int = 10  # demonstrations recorded for the recording time
    image_size: IntList = field(default_factory=lambda: IntList([96, 96]))
    camera: str = "front"
    tasks: StrList = field(default_factory=StrList)  # default: all of TASKS
    out: str = "results/env_speed"


def _timed_steps(env: Any, n: int, seed: int = 0) -> float:
    """Seconds per control step over ``n`` steps of seeded random actions (resets not timed)."""
    rng = np.random.default_rng(seed)
    space = env.action_space
    env.reset(seed=seed)
    total = 0.0
    for _ in range(n):
        a = rng.uniform(space.low, space.high).astype(np.float32)
        t = time.perf_counter()
        _, _, terminated, truncated, _ = env.step(a)
        total += time.perf_counter() - t
        if terminated or truncated:
            env.reset(seed=int(rng.integers(1 << 30)))
    return total / n


def _bare_physics(env: Any, n: int = 2000) -> float | None:
    """Seconds per bare mj_step of the env's model, from a reset state (None if not plain MuJoCo)."""
    u = env.unwrapped
    if not hasattr(u, "model") or not hasattr(u, "substeps"):
        return None
    import mujoco

    env.reset(seed=0)
    d = mujoco.MjData(u.model)
    mujoco.mj_copyData(d, u.model, u.data)
    t = time.perf_counter()
    for _ in range(n):
        mujoco.mj_step(u.model, d)
    return (time.perf_counter() - t) / n


def _record_seconds(task: str, episodes: int, cameras: list[str], image_size: list[int]) -> tuple[float, int]:
    import lerobot.datasets.lerobot_dataset  # noqa: F401 - import once, outside the timing

    from policy_steer.envs.recording import Config as RecordConfig
    from policy_steer.envs.recording import record

    with tempfile.TemporaryDirectory() as tmp:
        cfg = RecordConfig(
            task=task, episodes=episodes, out=str(Path(tmp) / "ds"), cameras=StrList(cameras),
            image_size=IntList(image_size), progress=False,
        )
        t = time.perf_counter()
        s = record(cfg)
        return time.perf_counter() - t, s.frames


def bench_task(task: str, cfg: Config) -> dict[str, Any]:
    from policy_steer.envs import make

    row: dict[str, Any] = {"task": task}
    try:
        env = make(task)
    except Exception as e:  # noqa: BLE001 - report any construction failure and go on
        row["skipped"] = f"{type(e).__name__}: {e}"
        return row
    sec = _timed_steps(env, cfg.steps)
    row["steps_per_s"] = 1.0 / sec
    bare = _bare_physics(env)
    if bare is not None:
        row["mj_step_per_s"] = 1.0 / bare
        row["step_over_bare_physics"] = sec / (bare * env.unwrapped.substeps)
    env.close()
    size = tuple(int(v) for v in cfg.image_size)
    env = make(task, cameras=(cfg.camera,), image_size=size)
    row["steps_per_s_camera"] = 1.0 / _timed_steps(env, cfg.render_steps)
    row["camera_ms_per_frame"] = 1000 * (1.0 / row["steps_per_s_camera"] - sec)
    env.close()
    row["record_s"], row["record_frames"] = _record_seconds(task, cfg.episodes, [], list(size))
    row["record_camera_s"], _ = _record_seconds(task, cfg.episodes, [cfg.camera], list(size))
    return row


def markdown(rows: list[dict[str, Any]], cfg: Config) -> str:
    h, w = cfg.image_size
    lines = [
        f"| task | steps/s (physics) | mj_step/s (baseline) | step / bare physics | steps/s ({cfg.camera} {h}x{w}) "
        f"| camera ms/frame | record {cfg.episodes} eps (s) | with camera (s) | frames |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "skipped" in r:
            lines.append(f"| {r['task']} | skipped: {r['skipped']} |  |  |  |  |  |  |  |")
            continue
        bare = f"{r['mj_step_per_s']:.0f}" if "mj_step_per_s" in r else "-"
        ratio = f"{r['step_over_bare_physics']:.2f}" if "step_over_bare_physics" in r else "-"
        lines.append(
            f"| {r['task']} | {r['steps_per_s']:.0f} | {bare} | {ratio} | {r['steps_per_s_camera']:.0f} | "
            f"{r['camera_ms_per_frame']:.1f} | {r['record_s']:.1f} | {r['record_camera_s']:.1f} | {r['record_frames']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    cfg = parse_config(Config, list(sys.argv[1:] if argv is None else argv), prog="env_speed")
    from policy_steer.envs import TASKS

    tasks = list(cfg.tasks) or list(TASKS)
    rows = []
    for task in tasks:
        print(f"benchmarking {task} ...", file=sys.stderr, flush=True)
        rows.append(bench_task(task, cfg))
    table = markdown(rows, cfg)
    print(table)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"gl": os.environ.get("MUJOCO_GL"), "cpus": os.cpu_count(), "config": {k: list(v) if isinstance(v, list) else v for k, v in vars(cfg).items()}}
    (out / "env_speed.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    (out / "env_speed.md").write_text(table + "\n")
    print(f"wrote {out / 'env_speed.json'} and {out / 'env_speed.md'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
