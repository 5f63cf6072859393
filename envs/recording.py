"""``policy-steer record``: scripted demonstrations written as a LeRobotDataset on local disk.

Episodes are run with the task's scripted expert from seeds ``seed_start, seed_start + 1, ...``; only
successful ones are kept, until ``episodes`` are kept (or ``max_attempts`` seeds were tried). Each
frame holds ``observation.state``, ``observation.environment_state``, the camera images asked for
(``observation.images.<camera>``, stored as PNG, no video), the ``action`` the expert took from that
observation, ``next.reward`` / ``next.done`` / ``next.success``, and the task string. Written with
lerobot's own ``LeRobotDataset.create`` / ``add_frame`` / ``save_episode`` / ``finalize``; nothing
touches the hub. ``meta/recording.json`` keeps what lerobot has no field for: the variant, the seeds
kept and failed, the state layout, the action mode.

An output folder that already holds anything is refused (never overwritten).
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from policy_steer.config import IntList, StrList
from policy_steer.errors import ConfigError, DatasetError

log = logging.getLogger(__name__)


@dataclass
class Config:
    task: str = "push"  # reach | push | pick-place | lift
    episodes: int = 50  # successful episodes to keep
    out: str = ""  # output folder (must not exist, or be empty)
    variant: str = "nominal"  # nominal | obstacle | shifted-surface | clutter | moving-goal
    seed_start: int = 0  # the first seed tried (failed episodes are skipped)
    cameras: StrList = field(default_factory=StrList)  # e.g. front or front,wrist
    image_size: IntList = field(default_factory=lambda: IntList([96, 96]))  # height,width
    action_mode: str = "delta"  # delta | absolute
    repo_id: str = ""  # dataset name in its metadata (default local/<out folder name>)
    max_attempts: int = 0  # seeds to try at most (0: 2 x episodes + 10)
    progress: bool = True  # show a progress bar


@dataclass
class RecordSummary:
    out: str
    repo_id: str
    task: str
    variant: str
    instruction: str
    episodes: int
    frames: int
    attempts: int
    seeds_kept: list[int]
    seeds_failed: list[int]
    seconds: float


def check_config(cfg: Config) -> None:
    from policy_steer.envs import TASKS, VARIANTS

    if cfg.task not in TASKS:
        raise ConfigError(f"unknown task {cfg.task!r}; use one of {list(TASKS)}")
    if cfg.variant not in VARIANTS:
        raise ConfigError(f"unknown variant {cfg.variant!r}; use one of {list(VARIANTS)}")
    if cfg.episodes < 1:
        raise ConfigError(f"--episodes must be >= 1, got {cfg.episodes}")
    if cfg.max_attempts < 0:
        raise ConfigError(f"--max_attempts must be >= 0, got {cfg.max_attempts}")
    if not cfg.out:
        raise ConfigError("--out is required: the folder to write the dataset to")
    if len(cfg.image_size) != 2 or min(cfg.image_size) < 8:
        raise ConfigError(f"--image_size must be height,width (each >= 8), got {list(cfg.image_size)}")
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise DatasetError(f"--out {out} is a file, not a folder")
    if out.is_dir() and any(out.iterdir()):
        if (out / "meta" / "info.json").is_file():
            raise DatasetError(f"{out} already holds a dataset; refusing to overwrite it (choose another --out)")
        raise DatasetError(f"{out} is not empty; refusing to write a dataset into it (choose another --out)")


def _names(layout: dict[str, slice]) -> list[str]:
    names = []
    for key, sl in layout.items():
        n = sl.stop - sl.start
        if n == 1:
            names.append(key)
        elif n == 3:
            names += [f"{key}.{c}" for c in "xyz"]
        elif n == 4 and "quat" in key:
            names += [f"{key}.{c}" for c in "wxyz"]
        else:
            names += [f"{key}.{i}" for i in range(n)]
    return names


def dataset_features(env: Any) -> dict[str, dict[str, Any]]:
    """The LeRobotDataset feature spec of ``env``'s observations and actions."""
    u = env.unwrapped
    state_names = _names(u.state_layout)
    s = u.observation_space["observation.state"].shape[0]
    e = u.observation_space["observation.environment_state"].shape[0]
    axes = ["dx", "dy", "dz"] if u.action_mode == "delta" else ["x", "y", "z"]
    features: dict[str, dict[str, Any]] = {
        "observation.state": {"dtype": "float32", "shape": (s,), "names": state_names},
        "observation.environment_state": {"dtype": "float32", "shape": (e,), "names": state_names[s - e:]},
        "action": {"dtype": "float32", "shape": (u.action_dim,), "names": axes + (["gripper"] if u.has_gripper else [])},
        "next.reward": {"dtype": "float32", "shape": (1,), "names": None},
        "next.done": {"dtype": "bool", "shape": (1,), "names": None},
        "next.success": {"dtype": "bool", "shape": (1,), "names": None},
    }
    for cam in u.cameras:
        h, w = u.image_size
        features[f"observation.images.{cam}"] = {"dtype": "image", "shape": (h, w, 3), "names": ["height", "width", "channels"]}
    return features


def run_expert_episode(env: Any, expert: Any, seed: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """One seeded expert episode: its frames (observation + action + next.*) and the final info."""
    obs, info = env.reset(seed=seed)
    expert.reset(env, seed)
    frames = []
    while True:
        action = np.asarray(expert.act(obs), dtype=np.float32)
        nxt, reward, terminated, truncated, info = env.step(action)
        frame = {k: v for k, v in obs.items() if k.startswith("observation.")}
        frame["action"] = action
        frame["next.reward"] = np.array([reward], dtype=np.float32)
        frame["next.done"] = np.array([terminated or truncated], dtype=bool)
        frame["next.success"] = np.array([bool(info.get("success", False))], dtype=bool)
        frames.append(frame)
        obs = nxt
        if terminated or truncated:
            return frames, info


def record(cfg: Config) -> RecordSummary:
    """Record ``cfg.episodes`` successful expert episodes into ``cfg.out``; see the module docstring."""
    check_config(cfg)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    # lerobot warns at import that torchcodec cannot load; datasets stored as PNG frames never decode video.
    logging.getLogger("lerobot.utils.import_utils").setLevel(logging.ERROR)
    import datasets
    from lerobot.datasets.lerobot_dataset import LeRobotDataset
    from tqdm import tqdm

    datasets.disable_progress_bars()  # one bar (ours) per recording, not one per saved episode

    from policy_steer.envs import make
    from policy_steer.envs.experts import make_expert

    out = Path(cfg.out)
    env = make(cfg.task, cfg.variant, cameras=tuple(cfg.cameras), image_size=tuple(cfg.image_size), action_mode=cfg.action_mode)
    u = env.unwrapped
    expert = make_expert(cfg.task)
    repo_id = cfg.repo_id or f"local/{out.resolve().name}"
    if out.is_dir():
        out.rmdir()  # empty (checked above); lerobot creates the folder itself
    dataset = LeRobotDataset.create(
        repo_id=repo_id, fps=int(round(u.control_hz)), root=out, features=dataset_features(env),
        robot_type=getattr(u, "robot_type", None), use_videos=False,
    )
    max_attempts = cfg.max_attempts or 2 * cfg.episodes + 10
    kept: list[int] = []
    failed: list[int] = []
    frames_total = 0
    t0 = time.perf_counter()
    bar = tqdm(total=cfg.episodes, desc=f"record {cfg.task}/{cfg.variant}", unit="ep", disable=not cfg.progress)
    try:
        seed = cfg.seed_start
        while len(kept) < cfg.episodes and len(kept) + len(failed) < max_attempts:
            frames, info = run_expert_episode(env, expert, seed)
            if info.get("success"):
                for f in frames:
                    dataset.add_frame({**f, "task": u.instruction})
                dataset.save_episode()
                kept.append(seed)
                frames_total += len(frames)
                bar.update(1)
            else:
                failed.append(seed)
                log.debug("seed %d failed (%s) after %d steps", seed, info.get("failure"), len(frames))
            bar.set_postfix(tried=len(kept) + len(failed), failed=len(failed))
            seed += 1
    finally:
        bar.close()
        dataset.finalize()
        env.close()
    summary = RecordSummary(
        out=str(out), repo_id=repo_id, task=cfg.task, variant=cfg.variant, instruction=u.instruction,
        episodes=len(kept), frames=frames_total, attempts=len(kept) + len(failed), seeds_kept=kept,
        seeds_failed=failed, seconds=time.perf_counter() - t0,
    )
    extra = {
        **asdict(summary), "action_mode": u.action_mode, "max_step": getattr(u, "max_step", None),
        "control_hz": u.control_hz, "cameras": list(u.cameras), "image_size": list(u.image_size) if u.cameras else None,
        "state_layout": {k: [sl.start, sl.stop] for k, sl in u.state_layout.items()}, "robot_state_dim": u.robot_state_dim,
    }
    (out / "meta" / "recording.json").write_text(json.dumps(extra, indent=2))
    if len(kept) < cfg.episodes:
        raise DatasetError(
            f"only {len(kept)} of {cfg.episodes} episodes succeeded in {max_attempts} attempts "
            f"(task {cfg.task}, variant {cfg.variant}); the {len(kept)} kept are in {out}"
        )
    return summary


def run(cfg: Config) -> int:
    s = record(cfg)
    print(
        f"recorded {s.episodes} episodes ({s.frames} frames) of {s.task}/{s.variant} into {s.out} in {s.seconds:.1f} s; "
        f"tried {s.attempts} seeds, kept {s.episodes}, {len(s.seeds_failed)} failed"
    )
    return 0
