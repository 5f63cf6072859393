"""The verifier folder that sits next to a policy: ``<checkpoint>/verifier/``.

    verifier.json        what was fitted, to which policy (fingerprint), how, and the held-out AUCs
    cfn.safetensors      the Coin Flipping Network (weights, frozen prior, statistics)
    nearest.safetensors  the nearest-feature verifier's bank (projected training features)

A folder is written to a temporary sibling and renamed into place at the end, so a failed fit leaves
nothing behind and an existing verifier is replaced whole or not at all.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from policy_steer.errors import STEER_UNAVAILABLE, ConfigError, SteeringRefused

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
    path = getattr(policy, "path", None)
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
    if info.get("format") != FORMAT or int(info.get("version", -1)) > VERSION:
        raise ConfigError(f"{path} is not a {FORMAT} v{VERSION} file")
    return info


def check_policy(info: dict, policy: Any, folder: Path) -> None:
    """Refuse a verifier fitted to another policy (its features mean nothing for this one)."""
    want = info.get("policy", {}).get("fingerprint")
    have = policy_fingerprint(getattr(policy, "path", None))
    if want and have and want != have:
        raise ConfigError(
            f"the verifier in {folder} was fitted to another policy ({info['policy'].get('name')!r}, weights differ); "
            f"fit it again with policy-steer fit-verifier --policy {getattr(policy, 'path', '<policy>')}"
        )


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
