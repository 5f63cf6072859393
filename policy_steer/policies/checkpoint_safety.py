"""A checkpoint folder is data: what it may make this process load, and what is refused.

A lerobot checkpoint (a local folder or a hub download) is untrusted input, and three loaders would
run code or unpickle data because a file in it says so:

- lerobot's processor loader (``DataProcessorPipeline._resolve_step_class``) looks a step's
  ``"registry_name"`` up in ``ProcessorStepRegistry`` (a dict: safe), but a step with only a
  ``"class": "module.Name"`` is imported with ``importlib.import_module`` and instantiated with the
  step's ``config`` as keyword arguments: ``{"class": "subprocess.Popen", "config": {"args": [...]}}``
  runs a command before lerobot notices that it is not a ``ProcessorStep``;
- transformers runs a folder's own Python when a JSON file carries ``auto_map`` and
  ``trust_remote_code`` is on (lerobot's ``action_tokenizer_processor`` step turns it on by default,
  and it is a step config key a checkpoint may set);
- transformers falls back to ``torch.load`` (pickle) for ``pytorch_model.bin`` when a backbone folder
  or hub repository has no safetensors weights.

``config.json``'s ``type`` is looked up by draccus in lerobot's ``PreTrainedConfig`` choice registry,
a dict of registered names (``ChoiceRegistry.get_choice_class``, no import), and ``load_policy`` only
accepts the types policy-steer has adapters for (:data:`POLICY_TYPES`); the policy's own weights are
read from ``model.safetensors`` only (lerobot's ``_load_as_safetensor``).

So before lerobot sees a folder, :func:`inspect_checkpoint` reads its files as plain JSON and file
names, imports nothing that they name, and reports:

1. a pickle-format file anywhere in the folder (:data:`PICKLE_SUFFIXES`): weights are safetensors only;
2. a ``config.json`` that is not a JSON object with a ``type`` of :data:`POLICY_TYPES`, or that names a
   backbone folder (:data:`~policy_steer.policies.tiny_backbones.BACKBONE_NAME_FIELDS`) by a path that
   leaves the checkpoint;
3. in every processor file (``policy_preprocessor.json``, ``policy_postprocessor.json`` and any other
   top-level JSON with a ``steps`` list), a step that is not a registered processor step: its
   ``registry_name`` must be a name in lerobot's ``ProcessorStepRegistry`` (lerobot's steps and any step
   policy-steer registers), a ``class`` must be exactly ``module.QualName`` of one of those registered
   classes (a string comparison: nothing is imported); ``trust_remote_code`` may not be on (explicitly
   or by the step's default); ``state_file`` must be a file name in the folder; a ``*tokenizer_name``
   must not be a path that leaves the checkpoint;
4. ``auto_map`` in any JSON file of the folder (transformers' hook to import the folder's Python).

:func:`loading_guard` then holds while lerobot and transformers load: the step lerobot actually
resolves is checked again against the same rule (the file it re-reads, not the one inspected), any
transformers dynamic module (remote code) is refused, and so is transformers' ``torch.load`` of a
non-safetensors weight file (a backbone named by hub id is only downloaded during the load).

``trust_checkpoint=True`` is the opt-in for a folder the user trusts: nothing is refused, lerobot and
transformers behave as they would on their own, and a WARNING names the folder and everything that
would otherwise have been refused.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from policy_steer.errors import CheckpointError

log = logging.getLogger(__name__)

POLICY_TYPES = ("diffusion", "pi0", "pi05", "smolvla", "multi_task_dit")
"""config.json ``type`` values policy-steer has an adapter for (:func:`policy_steer.policies.loading._adapter_for`)."""

PROCESSOR_FILES = ("policy_preprocessor.json", "policy_postprocessor.json")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib", ".dill")
"""File types that are read with pickle (torch.load, joblib): refused anywhere in a checkpoint."""

TRUST_HINT = "pass --trust_checkpoint true (load_policy(..., trust_checkpoint=True)) only if you trust this folder"


@dataclass(frozen=True)
class Finding:
    """One thing in a checkpoint that would be refused: the file (relative to the folder) and what."""

    file: str
    what: str

    def line(self) -> str:
        return f"{self.file}: {self.what}"


# --- what lerobot knows ----------------------------------------------------------------------------

def known_steps() -> dict[str, type]:
    """Registered processor steps, name -> class: lerobot's (its processor package and every policy's
    processor module, which ``lerobot.policies.factory`` imports) and any policy-steer registers."""
    import lerobot.policies.factory  # noqa: F401  (registers the policies' processor steps)
    from lerobot.processor.pipeline import ProcessorStepRegistry

    return dict(ProcessorStepRegistry._registry)


def _qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


class StepRule:
    """The allow-list, taken once: registered names and the ``module.QualName`` of their classes."""

    def __init__(self, registry: dict[str, type] | None = None) -> None:
        self.by_name = dict(known_steps() if registry is None else registry)
        self.by_class = {_qualified(c): c for c in self.by_name.values()}

    def problem(self, entry: Any, index: int | None = None) -> str | None:
        """Why step ``index`` (a step entry of a processor file) is refused, or None."""
        step = "step" if index is None else f"step {index}"
        if not isinstance(entry, dict):
            return f"{step} is not a JSON object"
        if "registry_name" not in entry and "class" not in entry:
            return f"{step} names no registry_name or class"
        cls = None
        if "registry_name" in entry:
            name = entry["registry_name"]
            if not isinstance(name, str) or name not in self.by_name:
                return (f"{step} names registry_name {name!r}, which is not a registered processor step "
                        "(lerobot's or policy-steer's)")
            cls = self.by_name[name]
        if "class" in entry:
            path = entry["class"]
            if not isinstance(path, str) or path not in self.by_class:
                return (f"{step} names class {path!r}, which is not a registered processor step class "
                        "(lerobot would import and instantiate it)")
            cls = cls or self.by_class[path]
        config = entry.get("config", {})
        if not isinstance(config, dict):
            return f"{step} has a config that is not a JSON object"
        if config.get("trust_remote_code", getattr(cls, "trust_remote_code", False)):
            return (f"{step} ({entry.get('registry_name') or entry.get('class')}) would load its tokenizer "
                    "with trust_remote_code on (code from a model repository); set it to false")
        state = entry.get("state_file")
        if state is not None and (not isinstance(state, str) or not _plain_name(state)):
            return f"{step} names state_file {state!r}, which is not a file name in the checkpoint"
        return None


def _plain_name(name: str) -> bool:
    return bool(name) and "/" not in name and "\\" not in name and name not in (".", "..") and not name.startswith("~")


# --- names of folders ------------------------------------------------------------------------------

def local_folder(folder: Path, name: object) -> Path | None:
    """The folder inside the checkpoint that ``name`` stands for, if any.

    A relative path is taken relative to the checkpoint (never above it: ``..`` is not followed); an
    absolute path (a training machine's folder) stands for the checkpoint's folder of the same name
    when the checkpoint carries one. Hub ids that happen not to be folders inside the checkpoint are
    left alone.
    """
    if not isinstance(name, str) or not name:
        return None
    p = Path(name)
    if ".." in p.parts:
        return None
    candidate = (folder / p.name) if p.is_absolute() else (folder / p)
    return candidate.resolve() if candidate.is_dir() else None


def _leaves_checkpoint(folder: Path, name: object) -> bool:
    """A backbone / tokenizer name that is a filesystem path but not a folder inside the checkpoint.

    Hub ids (``owner/name``) and names of folders inside the checkpoint are fine; a path (absolute,
    ``~``, ``.``-prefixed, with ``..`` or with more than one separator) must be one of those folders.
    """
    if not isinstance(name, str) or not name:
        return False
    p = Path(name)
    path_like = p.is_absolute() or name.startswith(("~", ".")) or ".." in p.parts or name.count("/") > 1 or "\\" in name
    return path_like and local_folder(folder, name) is None


# --- the inspection ----------------------------------------------------------------------------------

def _files(folder: Path) -> Iterator[Path]:
    """Every file below ``folder`` (symbolic links followed once: a hub snapshot is made of them)."""
    seen: set[str] = set()
    for root, dirs, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(root)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        dirs.sort()
        for name in sorted(files):
            yield Path(root) / name


def _read_json(path: Path, rel: str, findings: list[Finding]) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        findings.append(Finding(rel, f"is not readable JSON ({type(e).__name__}: {e})"))
        return None


def _has_key(data: Any, key: str) -> bool:
    if isinstance(data, dict):
        return key in data or any(_has_key(v, key) for v in data.values())
    if isinstance(data, list):
        return any(_has_key(v, key) for v in data)
    return False


def inspect_checkpoint(folder: str | Path, rule: StepRule | None = None) -> list[Finding]:
    """Everything in ``folder`` that :func:`check_checkpoint` refuses (empty: nothing). Imports nothing
    the folder names; reads JSON as JSON and looks at file names."""
    folder = Path(folder)
    findings: list[Finding] = []
    processor_files: list[tuple[str, Any]] = []
    for path in _files(folder):
        rel = path.relative_to(folder).as_posix()
        lower = path.name.lower()
        if lower.endswith(PICKLE_SUFFIXES):
            findings.append(Finding(rel, "is a pickle-format file (torch.load / pickle can run code); "
                                         "policy-steer loads safetensors weights only"))
            continue
        if not lower.endswith(".json"):
            continue
        try:
            raw = path.read_bytes()
        except OSError as e:
            findings.append(Finding(rel, f"cannot be read ({e})"))
            continue
        if b'"auto_map"' in raw and _has_key(_read_json(path, rel, findings), "auto_map"):
            findings.append(Finding(rel, "has auto_map: transformers would import Python code from the model "
                                         "repository"))
        if path.parent == folder and (path.name in PROCESSOR_FILES or b'"steps"' in raw):
            data = _read_json(path, rel, findings)
            if isinstance(data, dict) and (path.name in PROCESSOR_FILES or isinstance(data.get("steps"), list)):
                processor_files.append((rel, data))
    findings += _inspect_config(folder)
    if processor_files:
        rule = rule or StepRule()
        for rel, data in processor_files:
            findings += _inspect_processor(folder, rel, data, rule)
    return findings


def _inspect_config(folder: Path) -> list[Finding]:
    from policy_steer.policies.tiny_backbones import BACKBONE_NAME_FIELDS

    path = folder / "config.json"
    if not path.is_file():
        return [Finding("config.json", "is missing")]
    findings: list[Finding] = []
    cfg = _read_json(path, "config.json", findings)
    if findings:
        return findings
    if not isinstance(cfg, dict):
        return [Finding("config.json", "is not a JSON object")]
    kind = cfg.get("type")
    if kind not in POLICY_TYPES:
        findings.append(Finding("config.json", f"has policy type {kind!r}, which is not one policy-steer loads "
                                               f"({', '.join(POLICY_TYPES)})"))
    for key in BACKBONE_NAME_FIELDS:
        if _leaves_checkpoint(folder, cfg.get(key)):
            findings.append(Finding("config.json", f"{key} {cfg[key]!r} is a path outside the checkpoint "
                                                   "(a checkpoint carries its backbone folders)"))
    return findings


def _inspect_processor(folder: Path, rel: str, data: Any, rule: StepRule) -> list[Finding]:
    steps = data.get("steps") if isinstance(data, dict) else None
    if not isinstance(steps, list):
        return [Finding(rel, "has no list of steps")]
    findings = []
    for i, entry in enumerate(steps):
        problem = rule.problem(entry, i)
        if problem is None:
            for key, value in entry.get("config", {}).items():
                if key.endswith("tokenizer_name") and _leaves_checkpoint(folder, value):
                    problem = f"step {i} names {key} {value!r}, a path outside the checkpoint"
                    break
        if problem is not None:
            findings.append(Finding(rel, problem))
    return findings


def check_checkpoint(folder: str | Path, trust_checkpoint: bool = False, rule: StepRule | None = None) -> list[Finding]:
    """Refuse ``folder`` (CheckpointError, one line naming the file and what it names) if
    :func:`inspect_checkpoint` finds anything; with ``trust_checkpoint`` log a WARNING instead.
    Returns the findings."""
    folder = Path(folder)
    findings = inspect_checkpoint(folder, rule)
    if trust_checkpoint:
        listed = "; ".join(f.line() for f in findings) or "nothing in it would have been refused"
        log.warning("TRUSTING CHECKPOINT %s (trust_checkpoint is on): its files are loaded as lerobot and "
                    "transformers would load them, code included. Would otherwise be refused: %s", folder, listed)
        return findings
    if findings:
        more = f" (and {len(findings) - 1} more)" if len(findings) > 1 else ""
        raise CheckpointError(f"checkpoint {folder} refused: {findings[0].line()}{more}; {TRUST_HINT}")
    return findings


# --- while lerobot and transformers load -------------------------------------------------------------

_GUARD = threading.RLock()


@contextlib.contextmanager
def loading_guard(folder: str | Path, trust_checkpoint: bool = False, rule: StepRule | None = None) -> Iterator[None]:
    """While it holds, lerobot's processor loader resolves only registered steps, transformers imports
    no dynamic module (remote code) and unpickles no weight file. A refusal raises CheckpointError,
    also when the loader that hit it swallowed the exception. ``trust_checkpoint``: no guard at all.

    The guard patches three loader functions for its duration; guarded loads are serialised.
    """
    if trust_checkpoint:
        yield
        return
    import transformers.dynamic_module_utils as dynamic
    import transformers.modeling_utils as modeling
    from lerobot.processor.pipeline import DataProcessorPipeline

    rule = rule or StepRule()
    refused: list[str] = []

    def refuse(message: str) -> CheckpointError:
        refused.append(message)
        return CheckpointError(f"checkpoint {folder} refused: {message}; {TRUST_HINT}")

    original_resolve = DataProcessorPipeline.__dict__["_resolve_step_class"]

    def resolve_step_class(cls, step_entry):
        problem = rule.problem(step_entry)
        if problem is not None:
            raise refuse(f"a processor {problem}")
        return original_resolve.__func__(cls, step_entry)

    def no_remote_code(pretrained_model_name_or_path, module_file, *args, **kwargs):
        raise refuse(f"{pretrained_model_name_or_path} asks transformers to import its own Python ({module_file})")

    original_load_state_dict = modeling.load_state_dict

    def safetensors_only(checkpoint_file, *args, **kwargs):
        if not str(checkpoint_file).endswith(".safetensors"):
            raise refuse(f"{checkpoint_file} is not a safetensors file (transformers would torch.load it)")
        return original_load_state_dict(checkpoint_file, *args, **kwargs)

    with _GUARD:
        saved = (dynamic.get_cached_module_file, modeling.load_state_dict)
        DataProcessorPipeline._resolve_step_class = classmethod(resolve_step_class)
        dynamic.get_cached_module_file = no_remote_code
        modeling.load_state_dict = safetensors_only
        try:
            yield
        finally:
            DataProcessorPipeline._resolve_step_class = original_resolve
            dynamic.get_cached_module_file, modeling.load_state_dict = saved
        if refused:  # raised inside a loader that may have caught it
            raise CheckpointError(f"checkpoint {folder} refused: {refused[0]}; {TRUST_HINT}")
