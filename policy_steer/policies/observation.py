"""From a robot's raw observation to the tensors a lerobot preprocessor expects.

Robots send numpy arrays: float32 state vectors and uint8 [H, W, 3] images. lerobot's pipelines
expect torch tensors, images as float [3, H, W] in [0, 1], and the instruction under ``task``.
Everything is checked against the policy's spec first, and a mismatch names the key.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from policy_steer.errors import ConfigError, ValidationError
from policy_steer.types import OBS_IMAGES, TASK, FeatureSpec, Observation


def check_observation(obs: Observation, features: dict[str, FeatureSpec]) -> None:
    """Raise ValidationError unless every feature is present with its shape and finite values."""
    for key, feat in features.items():
        if key not in obs:
            raise ValidationError(f"observation is missing {key!r} (the policy needs {sorted(features)})")
        arr = np.asarray(obs[key])
        is_image = key.startswith(OBS_IMAGES + ".")
        if is_image:
            if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[-1] != 3:
                raise ValidationError(f"{key!r} must be uint8 [H, W, 3], got {arr.dtype} {arr.shape}")
            if tuple(arr.shape) != tuple(feat.shape):
                raise ValidationError(f"{key!r} has shape {arr.shape}, the policy expects {tuple(feat.shape)}")
            continue
        if tuple(arr.shape) != tuple(feat.shape):
            raise ValidationError(f"{key!r} has shape {arr.shape}, the policy expects {tuple(feat.shape)}")
        if not np.issubdtype(arr.dtype, np.floating):
            raise ValidationError(f"{key!r} must be a float array, got {arr.dtype}")
        if not np.all(np.isfinite(arr)):
            raise ValidationError(f"{key!r} contains non-finite values")


def to_policy_inputs(obs: Observation, features: dict[str, FeatureSpec], device: torch.device) -> dict[str, Any]:
    """Checked, unbatched tensors for a lerobot preprocessor (which adds the batch dimension)."""
    check_observation(obs, features)
    out: dict[str, Any] = {}
    for key in features:
        arr = np.asarray(obs[key])
        if key.startswith(OBS_IMAGES + "."):
            t = torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1).float() / 255.0
        else:
            t = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
        out[key] = t.to(device)
    out[TASK] = str(obs.get(TASK, "") or "")
    return out


def spec_features_from_lerobot(input_features: dict) -> dict[str, FeatureSpec]:
    """lerobot ``PolicyFeature``s -> what a robot must send (images as uint8 [H, W, 3])."""
    feats: dict[str, FeatureSpec] = {}
    for key, ft in input_features.items():
        shape = tuple(int(s) for s in ft.shape)
        if key.startswith(OBS_IMAGES + "."):
            c, h, w = shape
            feats[key] = FeatureSpec("|u1", (h, w, c))
        else:
            feats[key] = FeatureSpec("<f4", shape)
    return feats


def camera_env_kwargs(features: dict[str, FeatureSpec]) -> dict[str, Any]:
    """The ``cameras`` and ``image_size`` a task env must render for a policy with ``features``.

    ``{}`` for a policy without ``observation.images.<camera>`` inputs. The task envs render every
    camera at one size, so a policy asking for cameras of different sizes is refused (ConfigError).
    """
    cams, sizes = [], set()
    for key, feat in features.items():
        if key.startswith(OBS_IMAGES + "."):
            cams.append(key[len(OBS_IMAGES) + 1:])
            sizes.add(tuple(int(d) for d in feat.shape[:2]))
    if not cams:
        return {}
    if len(sizes) > 1:
        raise ConfigError(f"the policy wants cameras of different sizes {sorted(sizes)}; the sim renders one size")
    return {"cameras": tuple(cams), "image_size": sizes.pop()}
