"""Load a lerobot checkpoint (local folder or hub id) with its processors, as a DenoisingPolicy.

A checkpoint is what lerobot's ``save_pretrained`` writes: ``config.json`` (with the policy ``type``),
``model.safetensors``, and the pre/post-processor pipelines (``policy_preprocessor.json``,
``policy_postprocessor.json`` and their state files). policy-steer's reference checkpoints add
``policy_steer.json`` (task, control rate, action mode); other checkpoints work without it.

Backbones inside the checkpoint: a backbone / tokenizer name in ``config.json`` (``vlm_model_name``,
``text_encoder_name``, ``vision_encoder_name``) or a pre-processor step's ``tokenizer_name`` that is a
relative path to a folder inside the checkpoint is resolved against the checkpoint folder (an
absolute path whose last component is a folder inside the checkpoint is taken to mean that folder),
so a self-contained checkpoint (:func:`policy_steer.policies.tiny_backbones.make_self_contained`) loads
from any working directory. A ``tiny_pi_backbone.json`` beside a pi0 / pi05 checkpoint builds the
model with those sizes (:func:`policy_steer.policies.tiny_backbones.tiny_pi_backbone`).

A checkpoint is untrusted input (a hub id is downloaded first and checked the same way): before
lerobot reads it, :func:`policy_steer.policies.checkpoint_safety.check_checkpoint` refuses processor
steps that are not registered step names or classes (lerobot would import and instantiate them),
policy types without an adapter, pickle-format files, ``auto_map`` and paths that leave the folder; while
lerobot and transformers load, :func:`~policy_steer.policies.checkpoint_safety.loading_guard` refuses
unregistered steps, remote code and non-safetensors weights. ``trust_checkpoint=True`` (the CLI's
``--trust_checkpoint true``) lifts both, with a WARNING that names the folder and what was let through.

Devices: a checkpoint's processors remember the device they were saved on (lerobot's training writes
``device_processor: cuda``). The model goes to ``device``, and so does the pre-processor's device step
(the inputs must meet the model there); the post-processor's device step is set to ``cpu``, because
the adapters hand actions to the robot as numpy arrays. A checkpoint trained on a GPU therefore loads
on a CPU machine, and a CPU checkpoint runs on a GPU with its inputs on the GPU. A device this machine
does not have is refused before anything is read.

Compute (``dtype``, ``compile``, ``activations``; the CLIs' ``--dtype``, ``--compile``, ``--activations``):
see :mod:`policy_steer.policies.precision`. A combination this machine or this policy type cannot run
(bfloat16 without bfloat16 kernels, compile without a compiler, SmolVLA in bfloat16, a compiled VLA)
is refused before anything is read.
"""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from policy_steer.errors import CheckpointError, ConfigError
from policy_steer.policies.base import DenoisingPolicy
from policy_steer.policies.checkpoint_safety import POLICY_TYPES, StepRule, check_checkpoint, local_folder, loading_guard
from policy_steer.policies.precision import Compute, check_compute

log = logging.getLogger(__name__)

META_FILE = "policy_steer.json"
REQUIRED_FILES = ("config.json", "model.safetensors", "policy_preprocessor.json", "policy_postprocessor.json")


@dataclass
class CheckpointMeta:
    """What policy-steer records beside a lerobot checkpoint (all optional for foreign checkpoints)."""

    task: str | None = None
    control_hz: float = 10.0
    action_mode: str = "delta"
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def read(cls, folder: Path) -> "CheckpointMeta":
        path = folder / META_FILE
        if not path.is_file():
            return cls()
        data = json.loads(path.read_text())
        known = {k: data.pop(k) for k in ("task", "control_hz", "action_mode") if k in data}
        return cls(**known, extra=data)

    def write(self, folder: Path) -> None:
        data = {"task": self.task, "control_hz": self.control_hz, "action_mode": self.action_mode, **self.extra}
        (Path(folder) / META_FILE).write_text(json.dumps(data, indent=2) + "\n")


def _adapter_for(policy_type: str) -> Callable[..., DenoisingPolicy]:
    """policy type (config.json ``type``) -> adapter class, imported lazily."""
    if policy_type == "diffusion":
        from policy_steer.policies.diffusion import DiffusionAdapter

        return DiffusionAdapter
    if policy_type in ("pi0", "pi05", "smolvla"):
        if policy_type in ("pi0", "pi05"):
            check_transformers(policy_type)
        from policy_steer.policies.flow_vla import make_vla_adapter

        return make_vla_adapter
    if policy_type == "multi_task_dit":
        from policy_steer.policies.multi_task_dit import MultiTaskDiTAdapter

        return MultiTaskDiTAdapter
    raise CheckpointError(f"policy type {policy_type!r} is not supported ({', '.join(POLICY_TYPES)})")


# transformers releases lerobot 0.6.1's pi0 / pi05 run with (PaliGemma's attention masks changed after
# them: 5.17 fails in the forward pass with "create_causal_mask() got an unexpected keyword argument
# 'cache_position'"). pyproject.toml pins this range; this check speaks to a user who upgraded anyway.
PI_TRANSFORMERS = ">=5.4,<5.6"


def check_transformers(policy_type: str, installed: str | None = None) -> None:
    """Refuse to build pi0 / pi05 with a transformers outside :data:`PI_TRANSFORMERS` (one line naming
    both versions and the fix), before a model of several GB is built only to fail at its first chunk."""
    from importlib.metadata import PackageNotFoundError, version

    from packaging.specifiers import SpecifierSet

    if installed is None:
        try:
            installed = version("transformers")
        except PackageNotFoundError as e:
            raise CheckpointError(f"{policy_type} needs transformers {PI_TRANSFORMERS}, which is not installed") from e
    if installed not in SpecifierSet(PI_TRANSFORMERS, prereleases=True):
        raise CheckpointError(
            f"{policy_type} with lerobot 0.6.1 needs transformers {PI_TRANSFORMERS}, but {installed} is installed "
            f"(newer releases fail in PaliGemma's attention mask); pip install 'transformers{PI_TRANSFORMERS}'"
        )


def resolve_checkpoint(path_or_repo_id: str | Path) -> Path:
    """A local folder as is; otherwise a hub id downloaded with huggingface_hub (honours HF_HUB_OFFLINE).

    Either way the folder must hold the files of a lerobot checkpoint. What is in them is checked by
    :func:`load_policy` (:func:`policy_steer.policies.checkpoint_safety.check_checkpoint`).
    """
    p = Path(path_or_repo_id)
    if p.exists():
        if not p.is_dir():
            raise CheckpointError(f"{p} is a file; a lerobot checkpoint is a folder")
        return _require_files(p)
    if str(path_or_repo_id).startswith((".", "/")) or str(path_or_repo_id).count("/") != 1:
        raise CheckpointError(f"checkpoint folder not found: {path_or_repo_id}")
    try:
        from huggingface_hub import snapshot_download

        folder = Path(snapshot_download(repo_id=str(path_or_repo_id)))
    except Exception as e:  # offline, unknown repo, no network: one clear line
        raise CheckpointError(f"cannot fetch {path_or_repo_id!r} from the hub: {type(e).__name__}: {e}") from e
    return _require_files(folder, str(path_or_repo_id))


def _require_files(folder: Path, name: str | None = None) -> Path:
    missing = [f for f in REQUIRED_FILES if not (folder / f).is_file()]
    if missing:
        raise CheckpointError(f"{name or folder} is not a lerobot checkpoint: missing {', '.join(missing)}")
    return folder


def load_policy(path_or_repo_id: str | Path, device: str = "cpu", control_hz: float | None = None,
                trust_checkpoint: bool = False, dtype: str = "float32", compile: bool = False,
                activations: str = "exact") -> DenoisingPolicy:
    """lerobot checkpoint -> DenoisingPolicy adapter, with its processors loaded from the same place.

    ``trust_checkpoint``: load what the folder names even where it would run code (see the module
    docstring); off by default, and a WARNING names the folder when it is on. ``dtype`` / ``compile`` /
    ``activations``: how the network computes (:mod:`policy_steer.policies.precision`).
    """
    device = check_device(device)
    compute = check_compute(Compute(dtype=dtype, compile=bool(compile), activations=activations), device)
    folder = resolve_checkpoint(path_or_repo_id)
    rule = StepRule()
    check_checkpoint(folder, trust_checkpoint, rule)  # before lerobot reads anything in it
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{folder}/config.json is not readable JSON: {e}") from e
    policy_type = config.get("type") if isinstance(config, dict) else None
    if not policy_type:
        raise CheckpointError(f"{folder}/config.json has no policy 'type'")
    make_adapter = _adapter_for(policy_type)
    _check_compute_for(policy_type, compute)
    meta = CheckpointMeta.read(folder)
    pre_overrides = {**_tokenizer_overrides(folder), **_device_overrides(folder, "policy_preprocessor.json", device)}
    post_overrides = _device_overrides(folder, "policy_postprocessor.json", "cpu")

    from lerobot.configs.policies import PreTrainedConfig
    from lerobot.policies.factory import get_policy_class, make_pre_post_processors

    try:
        with loading_guard(folder, trust_checkpoint, rule):
            cfg = PreTrainedConfig.from_pretrained(folder)
            cfg.device = device
            if policy_type in VLA_DTYPE_TYPES:
                cfg.dtype = compute.dtype  # lerobot converts the VLA itself (some parameters stay float32)
            _resolve_local_backbones(cfg, folder)
            if not trust_checkpoint and getattr(cfg, "pretrained_backbone_weights", None):
                # DiffusionPolicy's ResNet would download torchvision's ImageNet weights and torch.load them
                # (full pickle), only for model.safetensors to replace them: build it without them.
                cfg.pretrained_backbone_weights = None
            with _backbone_context(policy_type, folder):
                policy = get_policy_class(policy_type).from_pretrained(folder, config=cfg)
                policy.to(device)
                pre, post = make_pre_post_processors(
                    cfg, pretrained_path=str(folder), preprocessor_overrides=pre_overrides,
                    postprocessor_overrides=post_overrides,
                )
    except CheckpointError:
        raise
    except Exception as e:
        raise CheckpointError(f"cannot load {policy_type} checkpoint {folder}: {type(e).__name__}: {e}") from e
    name = meta.extra.get("name") or folder.name
    adapter = make_adapter(policy, pre, post, control_hz=control_hz or meta.control_hz, name=name, compute=compute)
    adapter.meta = meta
    adapter.trained_task = meta.task
    adapter.path = folder
    return adapter


VLA_DTYPE_TYPES = ("pi0", "pi05")  # the VLAs whose lerobot config has a dtype option


def _check_compute_for(policy_type: str, compute: Compute) -> None:
    """The compute settings a policy type's adapter does not offer, refused by name."""
    if policy_type in ("pi0", "pi05", "smolvla") and compute.compile:
        raise ConfigError(f"--compile true is not offered for {policy_type} (its denoising step takes a KV cache "
                          "object torch.compile would re-trace every chunk); use --compile false")
    if policy_type in ("pi0", "pi05", "smolvla") and compute.activations != "exact":
        raise ConfigError(f"--activations {compute.activations} is not offered for {policy_type} (its activations are "
                          "transformers' own functions, not the Mish / GELU modules the rewrite replaces)")
    if policy_type == "smolvla" and compute.reduced:
        raise ConfigError(f"--dtype {compute.dtype} is not offered for smolvla (lerobot's smolvla has no dtype "
                          "option); use --dtype float32")


def check_device(device: str) -> str:
    """``device`` as torch names it (``cuda`` -> ``cuda``, ``cuda:1`` stays), or a ConfigError naming what is
    missing: an unknown device string, CUDA / MPS / XPU that this torch build or machine lacks."""
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ConfigError(f"--device {device!r} is not a torch device (cpu, cuda, cuda:N, mps, xpu): {e}") from e
    available = {
        "cpu": lambda: True,
        "cuda": torch.cuda.is_available,
        "mps": torch.backends.mps.is_available,
        "xpu": lambda: hasattr(torch, "xpu") and torch.xpu.is_available(),
    }
    if dev.type not in available:
        raise ConfigError(f"--device {device!r}: policy-steer runs policies on cpu, cuda, mps or xpu, not {dev.type}")
    if not available[dev.type]():
        raise ConfigError(f"--device {device!r}: this machine has no {dev.type} device torch can use "
                          f"(torch {torch.__version__}); use --device cpu or run where {dev.type} is available")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ConfigError(f"--device {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return str(dev)


def _device_overrides(folder: Path, pipeline_file: str, device: str) -> dict[str, dict[str, str]]:
    """Override the pipeline's saved ``device_processor`` step to ``device`` (only when it has one:
    lerobot refuses an override that names no step)."""
    try:
        steps = json.loads((folder / pipeline_file).read_text()).get("steps", [])
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{folder}/{pipeline_file} is not readable JSON: {e}") from e
    for step in steps:
        if step.get("registry_name") == "device_processor":
            return {"device_processor": {"device": device}}
    return {}


_local_folder = local_folder  # the folder inside the checkpoint a backbone / tokenizer name stands for


def _resolve_local_backbones(cfg, folder: Path) -> None:
    """Point the config's backbone names that live inside the checkpoint at absolute paths."""
    from policy_steer.policies.tiny_backbones import BACKBONE_NAME_FIELDS

    for key in BACKBONE_NAME_FIELDS:
        local = _local_folder(folder, getattr(cfg, key, None))
        if local is not None:
            setattr(cfg, key, str(local))


def _tokenizer_overrides(folder: Path) -> dict[str, dict[str, str]]:
    """Pre-processor overrides that point tokenizer steps naming a folder inside the checkpoint at it."""
    try:
        steps = json.loads((folder / "policy_preprocessor.json").read_text()).get("steps", [])
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{folder}/policy_preprocessor.json is not readable JSON: {e}") from e
    overrides: dict[str, dict[str, str]] = {}
    for step in steps:
        local = _local_folder(folder, step.get("config", {}).get("tokenizer_name"))
        if local is None:
            continue
        key = step.get("registry_name") or str(step.get("class", "")).rsplit(".", 1)[-1]
        overrides[key] = {"tokenizer_name": str(local)}
    return overrides


def _backbone_context(policy_type: str, folder: Path) -> contextlib.AbstractContextManager:
    """The tiny PaliGemma sizes a pi0 / pi05 checkpoint was built with, when it says so."""
    if policy_type not in ("pi0", "pi05"):
        return contextlib.nullcontext()
    from policy_steer.policies.tiny_backbones import TinyPiBackbone, tiny_pi_backbone

    spec = TinyPiBackbone.read(folder)
    return contextlib.nullcontext() if spec is None else tiny_pi_backbone(spec)
