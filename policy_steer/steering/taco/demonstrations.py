"""The demonstrations a verifier is fitted to: a local LeRobotDataset, checked against the policy.

Everything is checked before anything is computed or written; each problem is one
:class:`~policy_steer.errors.DatasetError` that names the folder and what is wrong:

- the folder is missing, is not a LeRobotDataset (no ``meta/info.json``) or cannot be read;
- it is empty (no episode, no frame);
- its ``action`` width is not the policy's, or an observation key the policy reads is missing or has
  another shape;
- it holds another task: the checkpoint's ``policy_steer.json`` names the instruction the policy was
  trained on (``instruction`` in its policy_steer.json), and no episode carries it
  (episodes with other instructions are left out); or ``meta/recording.json`` (``policy-steer
  record``) names another task or action mode (delta vs absolute) than the checkpoint.

State-like columns are read at once; camera frames are decoded only for the frames used.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from policy_steer.errors import DatasetError
from policy_steer.policies.base import DenoisingPolicy
from policy_steer.types import ACTION, OBS_IMAGES, STEP, TASK, Observation

log = logging.getLogger(__name__)


@dataclass
class Episode:
    index: int
    rows: np.ndarray  # [T] dataset row of each frame, in time order
    actions: np.ndarray  # [T, A] in policy output units
    instruction: str
    arrays: dict[str, np.ndarray] = field(default_factory=dict)  # non-image observation key -> [T, ...]

    @property
    def length(self) -> int:
        return int(self.actions.shape[0])


@dataclass
class Demonstrations:
    folder: Path
    fps: float
    episodes: list[Episode]
    image_keys: tuple[str, ...]
    _dataset: Any = None  # the LeRobotDataset, kept for decoding camera frames

    @property
    def num_frames(self) -> int:
        return sum(e.length for e in self.episodes)

    def observation(self, ep: Episode, t: int) -> Observation:
        """Frame t of ``ep`` as a robot would send it (uint8 HWC images, ``task``, ``step``)."""
        obs: Observation = {k: v[t] for k, v in ep.arrays.items()}
        if self.image_keys:
            item = self._dataset[int(ep.rows[t])]
            for k in self.image_keys:
                img = np.asarray(item[k])  # float [3, H, W] in [0, 1]
                obs[k] = np.clip(np.round(np.moveaxis(img, 0, -1) * 255.0), 0, 255).astype(np.uint8)
        obs[TASK] = ep.instruction
        obs[STEP] = int(t)
        return obs

    def model_chunk(self, ep: Episode, t: int, rows: int, first: int) -> np.ndarray:
        """Recorded actions [rows, A] of model row 0..rows-1 for frame t; row ``first`` runs at t.

        Times outside the episode are clamped to its ends, as lerobot pads chunks in training.
        """
        idx = np.clip(np.arange(rows) - first + t, 0, ep.length - 1)
        return ep.actions[idx]


def expected_instructions(policy: DenoisingPolicy) -> set[str]:
    """The instruction(s) the checkpoint says it was trained on; empty when it does not say."""
    meta = policy.meta
    if meta is None:
        return set()
    found = meta.extra.get("instructions") or meta.extra.get("instruction")
    if isinstance(found, str):
        return {found}
    if isinstance(found, (list, tuple)):
        return {str(x) for x in found}
    if meta.task:
        # Not looked up in a simulator (the core does not know the tasks): a checkpoint that names its
        # task but not its instruction is not checked against the dataset's task strings.
        log.warning("checkpoint of task %r names no instruction; not checking the dataset's task", meta.task)
    return set()


def _read_info(folder: Path) -> dict:
    if not folder.exists():
        raise DatasetError(f"dataset folder not found: {folder}")
    if not folder.is_dir():
        raise DatasetError(f"{folder} is a file; a LeRobotDataset is a folder")
    info_path = folder / "meta" / "info.json"
    if not info_path.is_file():
        raise DatasetError(f"{folder} is not a LeRobotDataset (no meta/info.json)")
    try:
        info = json.loads(info_path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise DatasetError(f"{info_path} is not readable JSON: {e}") from e
    if int(info.get("total_episodes") or 0) < 1 or int(info.get("total_frames") or 0) < 1:
        raise DatasetError(f"{folder} is empty ({info.get('total_episodes', 0)} episodes, {info.get('total_frames', 0)} frames)")
    return info


def _check_features(folder: Path, features: dict, policy: DenoisingPolicy) -> None:
    spec = policy.spec
    if ACTION not in features:
        raise DatasetError(f"{folder} has no {ACTION!r} feature")
    shape = tuple(int(s) for s in features[ACTION]["shape"])
    if shape != (spec.action_dim,):
        raise DatasetError(
            f"{folder} has {shape[0] if len(shape) == 1 else shape}-D actions; the policy {spec.name!r} outputs {spec.action_dim}-D actions"
        )
    for key, feat in spec.observation.items():
        if key not in features:
            raise DatasetError(f"{folder} has no {key!r}; the policy reads {sorted(spec.observation)}")
        have = tuple(int(s) for s in features[key]["shape"])
        if key.startswith(OBS_IMAGES + "."):
            names = features[key].get("names") or []
            if list(names)[:1] == ["channels"]:  # stored CHW: compare as HWC
                have = have[1:] + have[:1]
        if have != tuple(feat.shape):
            raise DatasetError(f"{folder}: {key!r} has shape {have}; the policy expects {tuple(feat.shape)}")


def _check_recording(folder: Path, policy: DenoisingPolicy) -> None:
    """``meta/recording.json`` (written by ``policy-steer record``) against the checkpoint's task and action mode."""
    meta = policy.meta
    path = folder / "meta" / "recording.json"
    if meta is None or not path.is_file():
        return
    try:
        rec = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return
    if meta.task and rec.get("task") and rec["task"] != meta.task:
        raise DatasetError(f"{folder} holds demonstrations of task {rec['task']!r}, not of the policy's task {meta.task!r}")
    if meta.task and rec.get("action_mode") and rec["action_mode"] != meta.action_mode:
        raise DatasetError(
            f"{folder} holds {rec['action_mode']} actions; the policy outputs {meta.action_mode} actions"
        )


def load_demonstrations(folder: str | Path, policy: DenoisingPolicy) -> Demonstrations:
    """Open and check ``folder`` against ``policy``; raises DatasetError (see the module docstring)."""
    folder = Path(folder)
    info = _read_info(folder)
    _check_features(folder, info.get("features", {}), policy)
    _check_recording(folder, policy)
    # lerobot warns at import that torchcodec cannot load; these datasets are read without decoding video
    logging.getLogger("lerobot.utils.import_utils").setLevel(logging.ERROR)
    try:
        from lerobot.datasets.lerobot_dataset import LeRobotDataset

        ds = LeRobotDataset(repo_id=f"local/{folder.name}", root=folder)
        tasks = ds.meta.tasks
        cols = [k for k in policy.spec.observation if not k.startswith(OBS_IMAGES + ".")]
        table = ds.hf_dataset.with_format("numpy").select_columns(cols + [ACTION, "episode_index", "frame_index", "task_index"])[:]
    except DatasetError:
        raise
    except Exception as e:
        raise DatasetError(f"cannot read the LeRobotDataset in {folder}: {type(e).__name__}: {e}") from e
    if len(table[ACTION]) == 0:
        raise DatasetError(f"{folder} is empty (no frames)")
    index_to_task = {int(i): str(name) for name, i in zip(tasks.index, tasks["task_index"])}

    wanted = expected_instructions(policy)
    episodes: list[Episode] = []
    other: set[str] = set()
    ep_ids = np.asarray(table["episode_index"]).reshape(-1)
    frame_ids = np.asarray(table["frame_index"]).reshape(-1)
    task_ids = np.asarray(table["task_index"]).reshape(-1)
    for e in np.unique(ep_ids):
        rows = np.flatnonzero(ep_ids == e)
        rows = rows[np.argsort(frame_ids[rows], kind="stable")]
        instruction = index_to_task.get(int(task_ids[rows[0]]), "")
        if wanted and instruction not in wanted:
            other.add(instruction)
            continue
        episodes.append(Episode(
            index=int(e), rows=rows, actions=np.asarray(table[ACTION][rows], dtype=np.float32), instruction=instruction,
            arrays={k: np.asarray(table[k][rows], dtype=np.float32) for k in cols},
        ))
    if not episodes:
        raise DatasetError(
            f"{folder} holds demonstrations of {sorted(other)}, not of the policy's task ({sorted(wanted)})"
        )
    if other:
        log.warning("%s: leaving out the episodes of other instructions %s", folder, sorted(other))
    for ep in episodes:
        if not np.all(np.isfinite(ep.actions)) or not all(np.all(np.isfinite(v)) for v in ep.arrays.values()):
            raise DatasetError(f"{folder}: episode {ep.index} holds non-finite values")
    image_keys = tuple(k for k in policy.spec.observation if k.startswith(OBS_IMAGES + "."))
    return Demonstrations(folder=folder, fps=float(info.get("fps") or 0.0), episodes=episodes, image_keys=image_keys, _dataset=ds)
