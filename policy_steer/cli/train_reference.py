"""``policy-steer train-reference``: record the demonstrations when missing, then train.

    policy-steer train-reference --task push --family diffusion

Joins the two halves that must not know each other: the scripted demonstrations come from the
simulator (:mod:`policy_steer.envs.recording`), the training (:mod:`policy_steer.training.reference`)
reads only the recorded LeRobotDataset and its ``meta/recording.json``.
"""

from __future__ import annotations

import logging
from pathlib import Path

from policy_steer.config import IntList, StrList
from policy_steer.errors import DatasetError
from policy_steer.training.reference import Config, _is_image_family, dataset_folder, train_reference

log = logging.getLogger(__name__)


def ensure_dataset(cfg: Config) -> Path:
    """The dataset folder, recorded with the scripted expert if it does not exist yet."""
    folder = dataset_folder(cfg)
    if (folder / "meta" / "info.json").is_file():
        return folder
    if folder.exists() and any(folder.iterdir()):
        raise DatasetError(f"{folder} exists but is not a LeRobotDataset (no meta/info.json)")
    from policy_steer.envs.recording import Config as RecordConfig
    from policy_steer.envs.recording import run as record

    log.info("recording %d demonstrations of %s into %s", cfg.episodes, cfg.task, folder)
    rec = RecordConfig(task=cfg.task, episodes=cfg.episodes, out=str(folder), seed_start=100_000)
    if _is_image_family(cfg.family):
        rec.cameras = StrList([cfg.camera])
        rec.image_size = IntList(cfg.image_size)
    record(rec)
    return folder




def run(cfg: Config) -> int:
    out = train_reference(cfg, ensure_dataset(cfg))
    print(f"trained {out}")
    return 0


__all__ = ["Config", "ensure_dataset", "run"]
