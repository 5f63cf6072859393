"""Offset fine-tuning data for VLASH: demonstrations whose robot state runs ahead of the scene.

VLASH conditions a chunk on the state the robot *will* be in when the chunk starts, while the rest
of the observation (its images; here the object poses and goal) is from the time the chunk was asked
for. Its paper finds that a frozen policy ignores such a future state unless it is fine-tuned on
random offsets: the state replaced by the state at t + delta, the targets shifted by delta (delta in
0..8), the images kept at t.

:func:`make_offset_dataset` writes that data as a derived LeRobotDataset (lerobot's own ``create`` /
``add_frame`` / ``save_episode``), so lerobot's unchanged training code trains on it. Frame t of a
derived episode with offset delta holds:

- ``observation.state``: the robot part (the first ``robot_state_dim`` entries: ee_pos, gripper,
  joint_pos) from frame t + delta, the task part (objects, goal) from frame t;
- ``observation.environment_state`` and any images: from frame t (the scene when the chunk was asked);
- ``action`` and the ``next.*`` features (reward, done, success of that action): from frame t + delta;
- anything else: from frame t.

lerobot builds an action chunk from *consecutive* frames of an episode, so the offset is constant
within a derived episode (a chunk at frame t is then exactly the actions t + delta, t + delta + 1, ...);
each source episode is written ``copies`` times with distinct offsets drawn uniformly from
0..max_offset (clamped to the episode's length), which gives every frame several offsets across the
dataset, as VLASH's per-sample draw does. A derived episode has T - delta frames: the last delta frames
would have no state and targets from t + delta, and repeating the last frame would teach targets that
were never demonstrated. The derived dataset is written beside the source (``<name>-offsets<max>``),
with ``policy_steer_offsets.json`` saying how it was made; an existing one made the same way is reused.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from policy_steer.errors import ConfigError, DatasetError
from policy_steer.types import ACTION, OBS_ENV_STATE, OBS_STATE

log = logging.getLogger(__name__)

PROVENANCE = "policy_steer_offsets.json"
_DEFAULT_KEYS = ("timestamp", "frame_index", "episode_index", "index", "task_index")


def offset_plan(lengths: list[int], max_offset: int, copies: int, seed: int) -> list[list[int]]:
    """For each source episode of length T, ``copies`` distinct offsets in 0..min(max_offset, T - 1)."""
    rng = np.random.default_rng(seed)
    plan = []
    for t in lengths:
        hi = max(0, min(max_offset, t - 1))
        k = min(copies, hi + 1)
        plan.append(sorted(int(v) for v in rng.choice(hi + 1, size=k, replace=False)))
    return plan


def offset_episode(
    state: np.ndarray, action: np.ndarray, delta: int, robot_state_dim: int, env_state: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """One derived episode: state [T, S], action [T, A] (and env_state [T, E]) -> T - delta frames.

    The robot part of the state and the action come from t + delta; the task part and env_state stay at t.
    """
    n = len(state) - delta
    if n < 1:
        raise DatasetError(f"offset {delta} leaves no frame of an episode of {len(state)} frames")
    out_state = state[:n].copy()
    out_state[:, :robot_state_dim] = state[delta : delta + n, :robot_state_dim]
    out = {OBS_STATE: out_state, ACTION: action[delta : delta + n].copy()}
    if env_state is not None:
        out[OBS_ENV_STATE] = env_state[:n].copy()
    return out


def _robot_state_dim(features: dict[str, Any], given: int | None) -> int:
    if given is not None:
        return int(given)
    s = int(features[OBS_STATE]["shape"][0])
    if OBS_ENV_STATE in features:
        return s - int(features[OBS_ENV_STATE]["shape"][0])  # the env contract: env state = the state's tail
    raise DatasetError(
        f"cannot tell the robot part of {OBS_STATE} without {OBS_ENV_STATE}; pass robot_state_dim"
    )


def make_offset_dataset(
    dataset_folder: str | Path,
    max_offset: int,
    seed: int = 0,
    copies: int = 4,
    out: str | Path | None = None,
    robot_state_dim: int | None = None,
    overwrite: bool = False,
) -> Path:
    """Write (or reuse) the offset dataset of ``dataset_folder``; returns its folder. See the module docstring."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    src_folder = Path(dataset_folder)
    if max_offset < 0:
        raise ConfigError(f"max_offset must be >= 0, got {max_offset}")
    if copies < 1:
        raise ConfigError(f"copies must be >= 1, got {copies}")
    if not (src_folder / "meta" / "info.json").is_file():
        raise DatasetError(f"{src_folder} is not a LeRobotDataset (no meta/info.json)")
    out = Path(out) if out is not None else src_folder.parent / f"{src_folder.name}-offsets{max_offset}"

    src = LeRobotDataset(repo_id=f"local/{src_folder.name}", root=src_folder)
    features = src.meta.features
    for key in (OBS_STATE, ACTION):
        if key not in features:
            raise DatasetError(f"{src_folder} has no {key!r} feature")
    rsd = _robot_state_dim(features, robot_state_dim)
    provenance = {
        "source": str(src_folder.resolve()), "source_frames": int(src.meta.total_frames),
        "source_episodes": int(src.meta.total_episodes), "max_offset": int(max_offset), "seed": int(seed),
        "copies": int(copies), "robot_state_dim": rsd,
    }
    if (out / "meta" / "info.json").is_file() and (out / PROVENANCE).is_file() and not overwrite:
        if json.loads((out / PROVENANCE).read_text()).get("params") == provenance:
            log.info("reusing the offset dataset %s", out)
            return out
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise DatasetError(f"{out} exists and was not made from {src_folder} this way; pass overwrite=True")
        shutil.rmtree(out)

    hf = src.hf_dataset.with_format("numpy")
    episodes = np.asarray(hf["episode_index"])
    tasks = _task_names(src.meta)
    visual = [k for k, f in features.items() if f["dtype"] in ("image", "video")]
    extra = [k for k, f in features.items()
             if k not in (OBS_STATE, OBS_ENV_STATE, ACTION, *_DEFAULT_KEYS) and k not in visual]
    new_features = {k: {kk: vv for kk, vv in f.items() if kk != "info"} for k, f in features.items() if k not in _DEFAULT_KEYS}
    dst = LeRobotDataset.create(
        repo_id=f"local/{out.name}", fps=int(src.meta.fps), features=new_features, root=out,
        robot_type=src.meta.robot_type, use_videos=any(features[k]["dtype"] == "video" for k in visual),
    )
    ep_ids = sorted(set(int(e) for e in episodes))
    rows_of = {e: np.flatnonzero(episodes == e) for e in ep_ids}
    plan = offset_plan([len(rows_of[e]) for e in ep_ids], max_offset, copies, seed)
    counts: dict[int, int] = {}
    state_all = np.asarray(hf[OBS_STATE], dtype=np.float32)
    action_all = np.asarray(hf[ACTION], dtype=np.float32)
    env_all = np.asarray(hf[OBS_ENV_STATE], dtype=np.float32) if OBS_ENV_STATE in features else None
    task_idx = np.asarray(hf["task_index"])
    frame_idx = np.asarray(hf["frame_index"])
    extra_all = {k: np.asarray(hf[k]) for k in extra}
    for e, deltas in zip(ep_ids, plan):
        rows = rows_of[e]
        rows = rows[np.argsort(frame_idx[rows], kind="stable")]
        for delta in deltas:
            ep = offset_episode(state_all[rows], action_all[rows], delta, rsd, None if env_all is None else env_all[rows])
            for t in range(len(ep[ACTION])):
                frame: dict[str, Any] = {k: v[t] for k, v in ep.items()}
                frame["task"] = tasks[int(task_idx[rows[t]])]
                for k in extra:
                    # next.* (reward, done, success) describe the outcome of the action: they move with it
                    v = extra_all[k][rows[t + delta] if k.startswith("next.") else rows[t]]
                    frame[k] = np.asarray(v, dtype=features[k]["dtype"]).reshape(features[k]["shape"])
                if visual:
                    item = src[int(rows[t])]  # decoded frame t: images stay at t
                    for k in visual:
                        frame[k] = _hwc_uint8(item[k])
                dst.add_frame(frame)
            dst.save_episode()
            counts[delta] = counts.get(delta, 0) + 1
    dst.finalize()
    (out / PROVENANCE).write_text(json.dumps({
        "params": provenance,
        "what": "VLASH offset data: robot part of observation.state and action from t+delta, task part, "
                "environment_state and images from t; one delta per derived episode",
        "derived_episodes": int(sum(counts.values())),
        "episodes_per_offset": {str(k): v for k, v in sorted(counts.items())},
    }, indent=2) + "\n")
    log.info("wrote %s: %d episodes from %d (offsets 0..%d)", out, sum(counts.values()), len(ep_ids), max_offset)
    return out


def _task_names(meta) -> dict[int, str]:
    tasks = meta.tasks
    if tasks is None:
        raise DatasetError(f"{meta.root} has no tasks")
    return {int(row["task_index"]): str(name) for name, row in tasks.iterrows()}


def _hwc_uint8(img) -> np.ndarray:
    a = np.asarray(img)
    if a.ndim == 3 and a.shape[0] in (1, 3) and a.shape[-1] not in (1, 3):
        a = np.transpose(a, (1, 2, 0))
    if a.dtype != np.uint8:
        a = np.clip(np.rint(a * 255.0), 0, 255).astype(np.uint8)
    return a
