"""``policy-steer train-reference``: train a reference policy with lerobot's own training code.

    policy-steer train-reference --task push --family diffusion

(the command, :mod:`policy_steer.cli.train_reference`) records the demonstrations if the dataset
folder does not exist yet (``data/<task>``); this module trains with
``lerobot.scripts.lerobot_train.train`` (the same code as ``lerobot-train``) on that local
LeRobotDataset, and copies the final ``pretrained_model`` (policy + pre/post-processors) to
``checkpoints/<task>-<family>`` together with ``policy_steer.json`` (task, control rate, action mode,
how it was trained). Nothing touches the hub.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from policy_steer.config import IntList
from policy_steer.errors import ConfigError, DatasetError
from policy_steer.policies.loading import CheckpointMeta
from policy_steer.training.column_cache import cached_columns

log = logging.getLogger(__name__)


@dataclass
class Config:
    task: str = "push"  # reach | push | pick-place | lift
    family: str = "diffusion"  # diffusion | flow | image-diffusion | image-diffusion-resnet (architectures.py)
    dataset: str | None = None  # LeRobotDataset folder; default data/<task> (data/<task>-<camera> for images)
    episodes: int = 200  # demonstrations recorded when the dataset folder does not exist
    steps: int = 20000  # training steps
    batch_size: int = 64  # training batch size
    lr: float | None = None  # None: the policy's training preset
    seed: int = 0  # training seed
    out: str | None = None  # default checkpoints/<task>-<family>
    future_state_offsets: int = 0  # VLASH offset fine-tuning: max offset in control steps (0: off)
    # Fine-tune instead of training from scratch: start from this lerobot checkpoint's weights, config and
    # normalisation (lerobot's pretrained_path); the family, lr and architecture come from it.
    init_from: str | None = None
    trust_checkpoint: bool = False  # load --init_from even where it names code to run (see policies/checkpoint_safety.py)
    overwrite: bool = False  # replace an existing checkpoint folder
    work_dir: str = "outputs/train"  # lerobot's run folders (logs, intermediate checkpoints)
    num_workers: int = 0  # dataloader workers (0: in the training process)
    camera: str = "front"  # image families: the camera recorded and read
    image_size: IntList = field(default_factory=lambda: IntList([64, 64]))  # image families: height,width when recording
    # Weights are stored in this dtype (lerobot loads them back into float32 parameters); float16
    # halves the checkpoint, which ships in the repository.
    weights_dtype: str = "float16"


def _is_image_family(family: str) -> bool:
    from policy_steer.training.architectures import IMAGE_FAMILIES

    return family in IMAGE_FAMILIES


def dataset_folder(cfg: Config) -> Path:
    """``--dataset``, or ``data/<task>`` (``data/<task>-<camera>`` for the image families)."""
    if cfg.dataset:
        return Path(cfg.dataset)
    suffix = f"-{cfg.camera}" if _is_image_family(cfg.family) else ""
    return Path("data") / f"{cfg.task}{suffix}"


def recorded_task(dataset: Path) -> dict:
    """What ``policy-steer record`` wrote about the task beside its LeRobotDataset (meta/recording.json):
    task, instruction, control rate, action mode. Training reads the task from its data, not from a
    simulator."""
    path = dataset / "meta" / "recording.json"
    if not path.is_file():
        raise DatasetError(f"{dataset} has no meta/recording.json (task, instruction, rate, action mode); "
                           "record it with policy-steer record, or let train-reference record it")
    import json

    return json.loads(path.read_text())


def train_reference(cfg: Config, dataset: Path | None = None) -> Path:
    """Train on ``dataset`` (default :func:`dataset_folder`; it must exist: ``policy-steer
    train-reference`` records it first when missing)."""
    from lerobot.configs.default import DatasetConfig, WandBConfig
    from lerobot.configs.train import TrainPipelineConfig
    from lerobot.datasets.lerobot_dataset import LeRobotDatasetMetadata
    from lerobot.scripts.lerobot_train import train

    from policy_steer.training.architectures import FAMILIES, policy_config

    if cfg.family not in FAMILIES:
        raise ConfigError(f"unknown family {cfg.family!r}; use one of {FAMILIES}")
    if cfg.steps < 1 or cfg.batch_size < 1:
        raise ConfigError("--steps and --batch_size must be >= 1")
    name = f"{cfg.task}-{cfg.family}" + (f"-offsets{cfg.future_state_offsets}" if cfg.future_state_offsets else "")
    out = Path(cfg.out or Path("checkpoints") / name)
    if out.exists() and any(out.iterdir()) and not cfg.overwrite:
        raise ConfigError(f"{out} already holds a checkpoint; pass --overwrite true to replace it")

    dataset = Path(dataset) if dataset is not None else dataset_folder(cfg)
    if not (dataset / "meta" / "info.json").is_file():
        raise DatasetError(f"{dataset} is not a LeRobotDataset (no meta/info.json)")
    task = recorded_task(dataset)
    meta = LeRobotDatasetMetadata(repo_id=f"local/{dataset.name}", root=dataset)
    recorded_episodes = meta.total_episodes  # the demonstrations (before any offset copies): what --episodes reproduces
    if cfg.future_state_offsets:
        from policy_steer.training.offsets import make_offset_dataset

        dataset = make_offset_dataset(dataset, cfg.future_state_offsets, seed=cfg.seed)
        meta = LeRobotDatasetMetadata(repo_id=f"local/{dataset.name}", root=dataset)
    if task.get("task") != cfg.task:
        raise DatasetError(f"{dataset} holds demonstrations of task {task.get('task')!r}, not of {cfg.task!r}")
    instructions = set(meta.tasks.index) if meta.tasks is not None else set()
    if task.get("instruction") not in instructions:
        raise DatasetError(f"{dataset} holds demonstrations of {sorted(instructions)}, not of {cfg.task!r} ({task.get('instruction')!r})")

    if cfg.init_from:
        policy_cfg = fine_tune_config(Path(cfg.init_from), meta.features, lr=cfg.lr, trust_checkpoint=cfg.trust_checkpoint)
    else:
        policy_cfg = policy_config(cfg.family, meta.features, lr=cfg.lr, camera=cfg.camera)
    run_dir = Path(cfg.work_dir) / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    train_cfg = TrainPipelineConfig(
        dataset=DatasetConfig(repo_id=f"local/{dataset.name}", root=str(dataset)),
        policy=policy_cfg,
        output_dir=run_dir,
        job_name=name,
        seed=cfg.seed,
        steps=cfg.steps,
        batch_size=cfg.batch_size,
        num_workers=cfg.num_workers,
        save_freq=cfg.steps,
        log_freq=max(1, min(500, cfg.steps // 10)),
        env_eval_freq=0,
        wandb=WandBConfig(enable=False),
    )
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    t0 = time.perf_counter()
    from policy_steer.policies.checkpoint_safety import loading_guard

    guard = loading_guard(cfg.init_from, cfg.trust_checkpoint) if cfg.init_from else contextlib.nullcontext()
    with guard, cached_columns():  # same samples, without lerobot's per-sample schema copies (see column_cache.py)
        train(train_cfg)
    train_s = time.perf_counter() - t0
    final = run_dir / "checkpoints" / "last" / "pretrained_model"
    if not final.is_dir():
        raise DatasetError(f"lerobot training finished without a checkpoint at {final}")
    if out.exists():
        shutil.rmtree(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(final, out, ignore=shutil.ignore_patterns("train_config.json"))
    # Backbone/tokenizer folders the config names (the flow policy's tiny CLIP) move into the
    # checkpoint and are renamed relative to it, so the folder works from any directory.
    from policy_steer.policies.tiny_backbones import make_self_contained

    make_self_contained(out)
    if cfg.weights_dtype != "float32":
        store_weights_as(out / "model.safetensors", cfg.weights_dtype)
    image: dict = {}
    if _is_image_family(cfg.family):
        image = {"camera": cfg.camera, "image_size": list(meta.features[f"observation.images.{cfg.camera}"]["shape"][:2])}
    CheckpointMeta(
        task=cfg.task,
        control_hz=float(task["control_hz"]),
        action_mode=str(task["action_mode"]),
        extra={
            "name": name,
            "family": cfg.family,
            "trained_with": "lerobot.scripts.lerobot_train.train",
            "dataset": str(dataset),
            "dataset_episodes": meta.total_episodes,
            "dataset_frames": meta.total_frames,
            "instruction": task["instruction"],
            "steps": cfg.steps,
            "batch_size": cfg.batch_size,
            "seed": cfg.seed,
            "future_state_offsets": cfg.future_state_offsets,
            "init_from": cfg.init_from,
            "train_seconds": round(train_s, 1),
            **image,
            "command": f"policy-steer train-reference --task {cfg.task} --family {cfg.family}"
            + (f" --future-state-offsets {cfg.future_state_offsets}" if cfg.future_state_offsets else "")
            + (f" --init_from {cfg.init_from}" if cfg.init_from else "")
            + (f" --lr {cfg.lr}" if cfg.lr is not None else "")
            + (f" --camera {cfg.camera} --image_size {','.join(str(d) for d in cfg.image_size)}" if image else "")
            + (f" --episodes {recorded_episodes}" if recorded_episodes != Config.episodes else "")
            + f" --steps {cfg.steps} --batch_size {cfg.batch_size} --seed {cfg.seed}",
        },
    ).write(out)
    log.info("trained %s in %.0f s -> %s", name, train_s, out)
    return out


def fine_tune_config(folder: Path, dataset_features: dict, lr: float | None = None, trust_checkpoint: bool = False):
    """The lerobot config of the checkpoint in ``folder``, set to start training from its weights.

    lerobot's training then loads the weights (``pretrained_path``) and the checkpoint's processors,
    with the normaliser's statistics taken from the new dataset. The dataset must have the shapes the
    checkpoint was trained on.
    """
    from lerobot.configs.policies import PreTrainedConfig

    from policy_steer.policies.checkpoint_safety import check_checkpoint

    if not (folder / "config.json").is_file():
        raise ConfigError(f"--init_from {folder}: no lerobot checkpoint there (config.json missing)")
    check_checkpoint(folder, trust_checkpoint)  # lerobot's training loads its weights and processors
    policy_cfg = PreTrainedConfig.from_pretrained(folder)
    for key, feature in {**policy_cfg.input_features, **policy_cfg.output_features}.items():
        if key not in dataset_features:
            raise DatasetError(f"--init_from {folder} reads {key!r}, which the dataset does not have")
        shape = tuple(dataset_features[key]["shape"])
        want = tuple(feature.shape)
        if shape != want and (len(want) != 3 or shape != (want[1], want[2], want[0])):  # images are CHW in the policy
            raise DatasetError(f"--init_from {folder} has {key} of shape {want}; the dataset's is {shape}")
    policy_cfg.pretrained_path = folder
    policy_cfg.device = "cpu"
    policy_cfg.push_to_hub = False
    if lr is not None:
        policy_cfg.optimizer_lr = lr
    return policy_cfg


def store_weights_as(model_file: Path, dtype: str) -> None:
    """Rewrite the floating-point tensors of a safetensors file in ``dtype`` (float16 or bfloat16)."""
    import torch
    from safetensors.torch import load_file, save_file

    target = {"float16": torch.float16, "bfloat16": torch.bfloat16}.get(dtype)
    if target is None:
        raise ConfigError(f"--weights_dtype must be float32, float16 or bfloat16, got {dtype!r}")
    tensors = load_file(model_file)
    tensors = {k: v.to(target) if v.is_floating_point() else v for k, v in tensors.items()}
    save_file(tensors, model_file, metadata={"format": "pt"})


