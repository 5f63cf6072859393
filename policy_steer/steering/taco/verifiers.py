"""Verifiers behind one interface, so they can be compared on the same candidates.

``Verifier.score(features [B, F] | None, chunks [B, H, A]) -> [B]``: higher is more trustworthy; the
selection executes the argmax (ties to the lowest index).

- ``cfn``: the Coin Flipping Network pseudo-count of the policy's feature (TACO);
- ``nearest``: minus the distance to the nearest training feature (the same search features,
  standardised and projected on their leading principal components): a cheap non-parametric baseline;
- ``random``: uniform random scores from the verifier's own generator (reseeded every episode, so a
  benchmark cell is reproducible and the policy's noise stream is the same as for the other verifiers).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from policy_steer.errors import STEER_UNAVAILABLE, ConfigError, SteeringRefused, ValidationError
from policy_steer.steering.taco.cfn import WEIGHTS_FILE, CoinFlipNetwork
from policy_steer.steering.taco.storage import check_policy, default_folder, read_info

NEAREST_FILE = "nearest.safetensors"
VERIFIERS = ("cfn", "nearest", "random")


class Verifier(ABC):
    name: str = "verifier"
    needs_features: bool = True

    @abstractmethod
    def score(self, features: Tensor | None, chunks: Tensor) -> Tensor:
        """[B] scores of B candidates; features [B, F] (None if not needs_features), chunks [B, H, A] normalised."""

    def reset_episode(self) -> None:
        pass

    def settings(self) -> dict[str, Any]:
        return {"verifier": self.name}


class CFNVerifier(Verifier):
    name = "cfn"

    def __init__(self, cfn: CoinFlipNetwork, folder: Path | None = None) -> None:
        self.cfn = cfn.eval()
        self.folder = folder

    def score(self, features: Tensor | None, chunks: Tensor) -> Tensor:
        if features is None:
            raise ValidationError("the CFN verifier needs the policy's features")
        try:
            return self.cfn.count(features)
        except ValueError as e:
            raise ValidationError(f"TACO verifier {self.folder}: {e}") from e

    def settings(self) -> dict[str, Any]:
        return {"verifier": self.name, "verifier_path": None if self.folder is None else str(self.folder)}


class NearestBank:
    """Training features, standardised and projected to their top principal components: [N, k]."""

    def __init__(self, mean: Tensor, std: Tensor, projection: Tensor, bank: Tensor) -> None:
        self.mean, self.std, self.projection, self.bank = mean, std, projection, bank.float()

    @classmethod
    def fit(cls, features: Tensor, dims: int = 32, max_rows: int = 4096, seed: int = 0) -> "NearestBank":
        x = features.float()
        mean = x.mean(0)
        std = x.std(0, unbiased=False)
        std = torch.where(std > 1e-6, std, torch.ones_like(std))
        z = (x - mean) / std
        k = max(1, min(dims, z.shape[1], z.shape[0]))
        _, _, v = torch.linalg.svd(z - z.mean(0), full_matrices=False)
        projection = v[:k].T.contiguous()  # [F, k]
        if z.shape[0] > max_rows:
            keep = torch.randperm(z.shape[0], generator=torch.Generator().manual_seed(seed))[:max_rows]
            z = z[keep]
        return cls(mean, std, projection, z @ projection)

    def project(self, features: Tensor) -> Tensor:
        if features.shape[-1] != self.mean.shape[0]:
            raise ValidationError(f"the nearest verifier reads {self.mean.shape[0]}-d features, got {tuple(features.shape)}")
        return ((features.float().cpu() - self.mean) / self.std) @ self.projection

    def distance(self, features: Tensor) -> Tensor:
        """[B] Euclidean distance to the nearest bank row."""
        return torch.cdist(self.project(features), self.bank).min(dim=1).values

    def save(self, folder: Path) -> Path:
        from safetensors.torch import save_file

        path = Path(folder) / NEAREST_FILE
        # float16 bank: a few hundred KB for thousands of rows; distances need no more precision
        save_file({"mean": self.mean, "std": self.std, "projection": self.projection,
                   "bank": self.bank.half().contiguous()}, str(path))
        return path

    @classmethod
    def load(cls, folder: Path) -> "NearestBank":
        from safetensors.torch import load_file

        t = load_file(str(Path(folder) / NEAREST_FILE))
        return cls(t["mean"], t["std"], t["projection"], t["bank"])


class NearestVerifier(Verifier):
    name = "nearest"

    def __init__(self, bank: NearestBank, folder: Path | None = None) -> None:
        self.bank = bank
        self.folder = folder

    def score(self, features: Tensor | None, chunks: Tensor) -> Tensor:
        if features is None:
            raise ValidationError("the nearest verifier needs the policy's features")
        return -self.bank.distance(features)

    def settings(self) -> dict[str, Any]:
        return {"verifier": self.name, "verifier_path": None if self.folder is None else str(self.folder)}


class RandomVerifier(Verifier):
    name = "random"
    needs_features = False

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self.generator = torch.Generator().manual_seed(seed)

    def reset_episode(self) -> None:
        self.generator.manual_seed(self.seed)

    def score(self, features: Tensor | None, chunks: Tensor) -> Tensor:
        return torch.rand(chunks.shape[0], generator=self.generator)


def resolve_folder(policy: Any, path: str | Path | None) -> Path:
    folder = Path(path) if path else default_folder(policy)
    if folder is None:
        raise SteeringRefused(STEER_UNAVAILABLE, "the policy has no folder; pass verifier_path")
    if not folder.is_dir():
        hint = getattr(policy, "path", "<policy>")
        raise SteeringRefused(
            STEER_UNAVAILABLE, f"no TACO verifier at {folder}; fit one with: policy-steer fit-verifier --policy {hint} --dataset <LeRobotDataset folder>"
        )
    return folder


def load_verifier(kind: str, policy: Any = None, path: str | Path | None = None, seed: int = 0) -> Verifier:
    """``cfn`` / ``nearest`` from the verifier folder (default ``<policy.path>/verifier``), or ``random``."""
    if kind == "random":
        return RandomVerifier(seed)
    if kind not in VERIFIERS:
        raise ConfigError(f"unknown TACO verifier {kind!r}; use one of {VERIFIERS}")
    folder = resolve_folder(policy, path)
    info = read_info(folder)
    weights = folder / (WEIGHTS_FILE if kind == "cfn" else NEAREST_FILE)
    if not weights.is_file():
        raise ConfigError(f"{folder} has no {weights.name}; fit the verifier again")
    width = weights_feature_width(weights)
    if policy is not None:
        check_policy(info, policy, folder, verifier_width=width)
    device = getattr(policy, "device", "cpu")
    try:
        if kind == "cfn":
            return CFNVerifier(CoinFlipNetwork.load(folder, device=device), folder)
        return NearestVerifier(NearestBank.load(folder), folder)
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise ConfigError(f"{weights} cannot be loaded: {type(e).__name__}: {e}") from e


def weights_feature_width(path: Path) -> int:
    """F, the feature width a verifier's weights read, from the safetensors header alone (no tensor is
    built): ``feature_mean`` of cfn.safetensors, ``mean`` of nearest.safetensors."""
    from safetensors import safe_open

    key = "feature_mean" if path.name == WEIGHTS_FILE else "mean"
    try:
        with safe_open(str(path), framework="pt") as f:
            shape = f.get_slice(key).get_shape()
    except Exception as e:  # not safetensors, truncated, no such tensor: one line
        raise ConfigError(f"{path} is not a verifier weights file ({type(e).__name__}: {e})") from e
    if len(shape) != 1 or shape[0] < 1:
        raise ConfigError(f"{path}: {key} has shape {list(shape)}, expected [F]")
    return int(shape[0])
