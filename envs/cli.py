"""``policy-steer envs list`` and ``policy-steer envs show``.

``envs list`` prints a table of the tasks: gymnasium id, variants, state / environment-state / action
dims, control rate, episode limit, instruction, and every variant's parameters (name, default, range,
meaning; :mod:`policy_steer.envs.variants`). ``envs show`` renders a picture of a task variant after a
seeded reset (``--out shot.png``), at any parameter setting (``--variant_params
"obstacle.height=0.22;obstacle.width=0.2"``), and, with ``--video out.mp4``, an episode of the scripted
expert (H.264 through PyAV).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from policy_steer.config import IntList
from policy_steer.errors import ConfigError


@dataclass
class ListConfig:
    json: bool = False  # print JSON instead of a table


@dataclass
class ShowConfig:
    task: str = "push"  # reach | push | pick-place | lift
    variant: str = "nominal"  # nominal | obstacle | shifted-surface | clutter | moving-goal
    # the variant's parameters, "name=value" joined by ";" (e.g. "obstacle.height=0.22"); see `envs list`
    variant_params: str = ""
    seed: int = 0  # seed of the reset
    out: str = "shot.png"  # picture after the reset ("" for none)
    video: str = ""  # an .mp4 of the scripted expert's episode ("" for none)
    camera: str = "front"  # the camera rendered: front | wrist
    size: IntList = field(default_factory=lambda: IntList([480, 640]))  # height,width


def describe_task(task: str) -> dict[str, Any]:
    """Shapes and settings of ``task`` (builds the env once; an env that cannot be built says why)."""
    from policy_steer.envs import TASKS, VARIANTS, make

    row: dict[str, Any] = {"task": task, "id": TASKS[task], "variants": list(VARIANTS)}
    try:
        from gymnasium.envs.registration import load_env_creator

        from policy_steer.envs import ENTRY_POINTS

        defaults = load_env_creator(ENTRY_POINTS[task]).default_variant_params
        row["variant_params"] = {v: type(p).describe() for v, p in defaults.items()}
        # a task's own defaults may differ from the dataclass's (moving-goal's steps): list the task's
        for v, p in defaults.items():
            for r in row["variant_params"][v]:
                r["default"] = p.as_dict()[r["name"]]
        env = make(task)
    except Exception as e:  # e.g. lift without a working robosuite: list it, say why
        row["error"] = f"{type(e).__name__}: {e}"
        return row
    u = env.unwrapped
    row.update(
        state_dim=int(u.observation_space["observation.state"].shape[0]),
        env_state_dim=int(u.observation_space["observation.environment_state"].shape[0]),
        action_dim=int(u.action_dim),
        action_mode=u.action_mode,
        control_hz=float(u.control_hz),
        max_episode_steps=int(u.max_episode_steps),
        instruction=u.instruction,
        state_layout={k: [s.start, s.stop] for k, s in u.state_layout.items()},
    )
    env.close()
    return row


def run_list(cfg: ListConfig) -> int:
    from policy_steer.envs import TASKS

    rows = [describe_task(t) for t in TASKS]
    if cfg.json:
        import json

        print(json.dumps(rows, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title="policy-steer tasks")
    for col in ("task", "gym id", "state", "env", "action", "Hz", "steps"):
        table.add_column(col, no_wrap=True)
    for r in rows:
        if "error" in r:
            table.add_row(r["task"], r["id"], "-", "-", "-", "-", "-")
            continue
        table.add_row(
            r["task"], r["id"], str(r["state_dim"]), str(r["env_state_dim"]),
            str(r["action_dim"]), f"{r['control_hz']:g}", str(r["max_episode_steps"]),
        )
    console = Console()
    console.print(table)
    console.print("variants: " + ", ".join(rows[0]["variants"]))
    console.print("state / env: dims of observation.state / observation.environment_state; action: delta "
                  "[dx, dy, dz] (+ gripper); steps: episode limit", markup=False)
    console.print("images (on request): observation.images.<front|wrist>, uint8 [h, w, 3]", markup=False)
    for r in rows:
        if "error" in r:
            console.print(f"{r['task']}: unavailable ({r['error']})", markup=False)
            continue
        layout = ", ".join(f"{k}[{a}:{b}]" for k, (a, b) in r["state_layout"].items())
        console.print(f"{r['task']}: {r['instruction']!r}; state {layout}", markup=False)
    params = Table(title="variant parameters (make(task, variant, variant_params={name: value}); "
                         "bench --variant_params name=v1,v2; envs show --variant_params name=v)")
    for col in ("task", "variant", "parameter", "default", "range", "meaning"):
        params.add_column(col, no_wrap=col != "meaning")
    for r in rows:
        for variant, ps in (r.get("variant_params") or {}).items():
            for p in ps:
                lo, hi = p["range"]
                params.add_row(r["task"], variant, p["name"], f"{p['default']:g}", f"[{lo:g}, {hi:g}] {p['unit']}".rstrip(), p["doc"])
    console.print(params)
    return 0


def write_png(image: np.ndarray, path: str | Path) -> None:
    from PIL import Image

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)


def write_mp4(frames: list[np.ndarray], path: str | Path, fps: int) -> None:
    """uint8 [h, w, 3] frames -> an H.264 .mp4 (PyAV, which lerobot ships)."""
    import av

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    h, w = frames[0].shape[:2]
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = w - w % 2, h - h % 2  # yuv420p needs even sizes
        stream.pix_fmt = "yuv420p"
        for f in frames:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(f[: stream.height, : stream.width]), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())


def run_show(cfg: ShowConfig) -> int:
    from policy_steer.envs import make
    from policy_steer.envs.experts import make_expert
    from policy_steer.envs.variants import parse_setting

    if not cfg.out and not cfg.video:
        raise ConfigError("nothing to do: give --out FILE.png and/or --video FILE.mp4")
    if len(cfg.size) != 2 or min(cfg.size) < 8:
        raise ConfigError(f"--size must be height,width (each >= 8), got {list(cfg.size)}")
    size = (int(cfg.size[0]), int(cfg.size[1]))
    env = make(cfg.task, cfg.variant, render_size=size, variant_params=parse_setting(cfg.variant_params))
    u = env.unwrapped

    def frame() -> np.ndarray:
        # The plain-MuJoCo tasks render any of their cameras; other envs render their default view.
        if hasattr(u, "render_camera"):
            return u.render_camera(cfg.camera, size)
        return env.render()

    obs, _ = env.reset(seed=cfg.seed)
    if cfg.out:
        write_png(frame(), cfg.out)
        shown = ", ".join(f"{k}={v:g}" for k, v in (u.variant_params.as_dict() if u.variant_params else {}).items())
        print(f"wrote {cfg.out} ({cfg.task}/{cfg.variant}, seed {cfg.seed}, camera {cfg.camera}"
              + (f"; {shown}" if shown else "") + ")")
    if cfg.video:
        expert = make_expert(cfg.task)
        expert.reset(env, cfg.seed)
        frames = [frame()]
        while True:
            obs, _, terminated, truncated, info = env.step(expert.act(obs))
            frames.append(frame())
            if terminated or truncated:
                break
        write_mp4(frames, cfg.video, fps=int(round(u.control_hz)))
        outcome = "success" if info.get("success") else f"failure ({info.get('failure') or 'time limit'})"
        print(f"wrote {cfg.video}: {len(frames) - 1} steps of the scripted expert, {outcome}")
    env.close()
    return 0


COMMANDS = {"envs list": (ListConfig, run_list), "envs show": (ShowConfig, run_show)}
