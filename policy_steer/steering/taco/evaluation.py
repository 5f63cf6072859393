"""How well a verifier's score separates in-support chunks from others, on held-out demonstrations.

For held-out frames (episodes the verifier never saw), with the frame's own observation:

- ``perturbed``: the recorded chunk against the same chunk perturbed (a constant offset in a random
  direction, smooth noise, or the chunk played backwards; ``scale`` in normalised action units);
- ``off_support``: the recorded chunk against the recorded chunk of another held-out frame;
- ``candidates``: among the policy's own K samples, the one closest to the recorded chunk against
  the farthest (what selection actually chooses between).

The first two read :func:`~policy_steer.steering.taco.features.chunk_features` for both sides (same
path for positives and negatives); the third the sampler's features. Each is an AUC: the probability
that a positive scores above a negative (ties count one half), 0.5 is chance.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from scipy.stats import rankdata
from torch import Tensor

from policy_steer.policies.base import Context, DenoisingPolicy
from policy_steer.schedules import Plan
from policy_steer.steering.taco.features import chunk_features, concat_contexts

PERTURBATIONS = ("offset", "noise", "reverse")


def auc(pos: Tensor | np.ndarray, neg: Tensor | np.ndarray) -> float:
    """Mann-Whitney AUC: P(score(pos) > score(neg)) + P(equal) / 2."""
    pos, neg = np.asarray(pos, dtype=np.float64).ravel(), np.asarray(neg, dtype=np.float64).ravel()
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    ranks = rankdata(np.concatenate([pos, neg]))
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def perturb(x0: Tensor, action_dim: int, scale: float, generator: torch.Generator) -> tuple[Tensor, list[str]]:
    """Perturbed copies of chunks x0 [N, H, A_model] (kinds in turn); padding dims stay as they are."""
    out = x0.clone()
    kinds = []
    n, h, _ = x0.shape
    for i in range(n):
        kind = PERTURBATIONS[i % len(PERTURBATIONS)]
        kinds.append(kind)
        a = out[i, :, :action_dim]
        if kind == "offset":  # the whole chunk moved by `scale` in a random direction
            u = torch.randn(action_dim, generator=generator)
            a += scale * u / u.norm().clamp_min(1e-8) * np.sqrt(action_dim)
        elif kind == "noise":  # smooth random deviation, RMS `scale`
            knots = torch.randn(4, action_dim, generator=generator)
            curve = torch.nn.functional.interpolate(knots.T[None], size=h, mode="linear", align_corners=True)[0].T
            a += scale * curve / curve.pow(2).mean().sqrt().clamp_min(1e-8)
        else:  # the same motion, backwards
            out[i, :, :action_dim] = a.flip(0)
    return out, kinds


def features_of(
    policy: DenoisingPolicy, plan: Plan, contexts: list[Context], chunks: Tensor,
    generator: torch.Generator | None = None, batch: int = 256,
) -> Tensor:
    """Features [N, F] of chunks [N, H, A] each under its own context (batch 1 each)."""
    out = []
    i = 0
    while i < len(contexts):
        merged = concat_contexts(contexts[i:i + batch])
        n = batch if merged is not None else 1
        ctx = merged if merged is not None else contexts[i]
        out.append(chunk_features(policy, plan, ctx, chunks[i:i + n], generator))
        i += n
    return torch.cat(out).float().cpu()


def held_out_report(
    score: Callable[[Tensor], Tensor],
    recorded: Tensor,
    perturbed: Tensor,
    kinds: list[str],
    off_support: Tensor | None,
    closest: Tensor,
    farthest: Tensor,
) -> dict:
    """AUCs of ``score`` (features [N, F] -> [N], higher = more in support) on the held-out features."""
    s_rec, s_per = score(recorded), score(perturbed)
    rep = {
        "perturbed": auc(s_rec, s_per),
        "perturbed_by_kind": {k: auc(s_rec, s_per[[i for i, kk in enumerate(kinds) if kk == k]]) for k in PERTURBATIONS
                              if k in kinds},
        "off_support": auc(s_rec, score(off_support)) if off_support is not None and len(off_support) else None,
        "candidates": auc(score(closest), score(farthest)),
        "median_score_recorded": float(s_rec.median()),
        "median_score_perturbed": float(s_per.median()),
    }
    return rep


def off_support_pairs(recorded: Tensor, action_dim: int, min_distance: float, rng: np.random.Generator) -> np.ndarray:
    """For each held-out frame i, another frame j whose recorded chunk differs by at least ``min_distance``
    (RMS, normalised units); -1 where none does."""
    flat = recorded[..., :action_dim].reshape(len(recorded), -1)
    d = torch.cdist(flat, flat) / np.sqrt(flat.shape[1])
    out = np.full(len(recorded), -1)
    for i in range(len(recorded)):
        ok = np.flatnonzero(d[i].numpy() >= min_distance)
        if len(ok):
            out[i] = int(rng.choice(ok))
    return out
