"""The verifier folder that sits next to a policy: ``<checkpoint>/verifier/``.

    verifier.json        what was fitted, to which policy (fingerprint, feature width, action shape),
                         how, and the held-out AUCs
    cfn.safetensors      the Coin Flipping Network (weights, frozen prior, statistics)
    nearest.safetensors  the nearest-feature verifier's bank (projected training features)

A folder is written to a temporary sibling and renamed into place at the end, so a failed fit leaves
nothing behind and an existing verifier is replaced whole or not at all.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from policy_steer.errors import STEER_UNAVAILABLE, ConfigError, SteeringRefused

log = logging.getLogger(__name__)

FORMAT = "policy-steer/taco-verifier"
VERSION = 1
INFO_FILE = "verifier.json"
DEFAULT_SUBDIR = "verifier"

_WHOLE_FILE_LIMIT = 256 << 20  # hash larger weight files by size, head and tail only


def policy_fingerprint(checkpoint: str | Path | None) -> str | None:
    """sha256 of the checkpoint's ``model.safetensors`` (size + first and last 16 MB for large files)."""
    if checkpoint is None:
        return None
    path = Path(checkpoint) / "model.safetensors"
    if not path.is_file():
        return None
    h = hashlib.sha256()
    size = path.stat().st_size
    with path.open("rb") as f:
        if size <= _WHOLE_FILE_LIMIT:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        else:
            h.update(str(size).encode())
            h.update(f.read(16 << 20))
            f.seek(size - (16 << 20))
            h.update(f.read())
    return h.hexdigest()


def default_folder(policy: Any) -> Path | None:
    path = policy.path
    return None if path is None else Path(path) / DEFAULT_SUBDIR


def read_info(folder: str | Path) -> dict:
    folder = Path(folder)
    path = folder / INFO_FILE
    if not path.is_file():
        raise SteeringRefused(STEER_UNAVAILABLE, f"no TACO verifier in {folder} (missing {INFO_FILE})")
    try:
        info = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f"{path} is not readable JSON: {e}") from e
    version = _int(info.get("version", -1)) if isinstance(info, dict) else None
    if not isinstance(info, dict) or info.get("format") != FORMAT or version is None or version > VERSION:
        raise ConfigError(f"{path} is not a {FORMAT} v{VERSION} file")
    return info


def action_shape(policy: Any) -> list[int]:
    """[H, A]: the chunks the policy returns (what a verifier fitted to it has seen)."""
    return [int(policy.spec.horizon), int(policy.spec.action_dim)]


def policy_feature_width(policy: Any) -> int | None:
    """F of the policy's TACO feature (``denoise_with_features``); None if the adapter does not say (the
    width is then checked when the verifier first scores).

    Every adapter declares it (``DenoisingPolicy.feature_dim``): DiffusionAdapter, the UNet bottleneck's
    channels + the last hidden layer's; MultiTaskDiTAdapter, the transformer's hidden_dim; the flow VLAs,
    the input width of the action expert's output projection. None when an adapter does not say.
    """
    declared = policy.feature_dim
    return int(declared) if isinstance(declared, int) else None


def policy_record(policy: Any, feature_dim: int) -> dict[str, Any]:
    """What verifier.json says about the policy it was fitted to (``check_policy`` compares it)."""
    path = policy.path
    return {
        "name": policy.spec.name, "family": policy.spec.family, "path": None if path is None else str(path),
        "fingerprint": policy_fingerprint(path), "feature_dim": int(feature_dim),
        "action_shape": action_shape(policy), "adapter": type(policy).__name__,
    }


def check_policy(info: dict, policy: Any, folder: Path, verifier_width: int | None = None) -> None:
    """Refuse a verifier fitted to another policy (its features mean nothing for this one).

    Compared: the weights' fingerprint (when both sides have one), the chunk shape [H, A] and the
    feature width (``verifier_width``: read from the verifier's own weights by the caller, else the
    recorded ``feature_dim``), each whenever it is known, so a missing fingerprint field does not let a
    verifier of another policy through. A verifier.json that records neither a fingerprint nor an action
    shape cannot be matched to a policy at all and is refused.
    """
    recorded = info.get("policy")
    recorded = recorded if isinstance(recorded, dict) else {}
    hint = f"fit it again with policy-steer fit-verifier --policy {policy.path or '<policy>'}"
    reasons = []
    want_fp = recorded.get("fingerprint")
    have_fp = policy_fingerprint(policy.path)
    if want_fp and have_fp and want_fp != have_fp:
        reasons.append("the weights differ (fingerprint)")
    want_shape = recorded.get("action_shape")
    have_shape = action_shape(policy)
    if want_shape is not None and _ints(want_shape) != have_shape:
        reasons.append(f"it scored chunks of {_shape(want_shape)} actions, this policy's are {_shape(have_shape)}")
    want_dim = recorded.get("feature_dim")
    if verifier_width is not None and want_dim is not None and _int(want_dim) != verifier_width:
        raise ConfigError(f"the verifier in {folder} is inconsistent: verifier.json says {want_dim}-d features, "
                          f"its weights read {verifier_width}-d; {hint}")
    width = verifier_width if verifier_width is not None else _int(want_dim)
    have_dim = policy_feature_width(policy)
    if width is not None and have_dim is not None and width != have_dim:
        reasons.append(f"it reads {width}-d features, this policy's are {have_dim}-d")
    if reasons:
        raise ConfigError(f"the verifier in {folder} was fitted to another policy ({recorded.get('name')!r}): "
                          f"{'; '.join(reasons)}; {hint}")
    if not want_fp and want_shape is None:
        raise ConfigError(f"the verifier in {folder} does not say which policy it was fitted to (verifier.json "
                          f"has no policy fingerprint and no action_shape); {hint}")
    if not want_fp:
        log.warning("the verifier in %s records no policy fingerprint: only its feature width and action shape "
                    "were checked against %s", folder, policy.path or policy.spec.name)


def _int(value: Any) -> int | None:
    try:
        return None if value is None else int(value)
    except (TypeError, ValueError):
        return None


def _ints(values: Any) -> list[int] | None:
    try:
        return [int(v) for v in values]
    except (TypeError, ValueError):
        return None


def _shape(values: Any) -> str:
    return "x".join(str(v) for v in values) if isinstance(values, (list, tuple)) else repr(values)


@contextmanager
def staged_folder(out: Path, overwrite: bool) -> Iterator[Path]:
    """Yields a temporary folder; on success it replaces ``out``, on error it is removed."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise ConfigError(f"{out} already exists; pass --overwrite true to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        yield tmp
        _default_permissions(tmp)  # mkdtemp makes a private folder; a verifier is shared like its checkpoint
        if out.exists():
            shutil.rmtree(out) if out.is_dir() else out.unlink()
        tmp.rename(out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _default_permissions(folder: Path) -> None:
    mask = os.umask(0)
    os.umask(mask)
    folder.chmod(0o777 & ~mask)
    for p in folder.iterdir():
        p.chmod(0o666 & ~mask)


def write_info(folder: Path, info: dict) -> Path:
    path = folder / INFO_FILE
    path.write_text(json.dumps({"format": FORMAT, "version": VERSION, **info}, indent=2) + "\n")
    return path
