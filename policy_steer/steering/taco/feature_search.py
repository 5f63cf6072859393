"""TACO's high-fidelity feature search: the policy's own feature for each recorded chunk.

A denoising policy never sees clean recorded actions at its last step, so the feature of a recorded
chunk fed in directly is out of the policy's distribution (TACO's ablation: the count then stops
separating good from bad chunks). Instead, for every training frame the policy is sampled K times and
the feature of the sample whose chunk is closest to the recorded chunk is kept.

Each frame's observation is prepared once (after the frames before it, for policies with an
observation history) and expanded to K candidates; frames are stacked into sampler calls of about
``batch_rows`` candidates when their contexts are plain tensors (otherwise one call per frame).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from policy_steer.policies.base import Context, DenoisingPolicy
from policy_steer.sampler import Sampler
from policy_steer.steering.taco.demonstrations import Demonstrations, Episode
from policy_steer.steering.taco.features import chunk_distance, concat_contexts, sample_with_features


@dataclass(frozen=True)
class Frame:
    episode: int  # position in Demonstrations.episodes
    t: int


@dataclass
class SearchResult:
    features: Tensor  # [N, F] feature of the candidate closest to the recorded chunk
    distance: Tensor  # [N] its RMS distance to the recorded chunk (normalised action units)
    far_features: Tensor  # [N, F] feature of the candidate farthest from it
    far_distance: Tensor  # [N]
    mean_distance: Tensor  # [N] mean distance of the K candidates


def prepare_frame(policy: DenoisingPolicy, demos: Demonstrations, ep: Episode, t: int) -> Context:
    """Context (batch 1) of frame t, with the policy's observation history filled from the episode."""
    policy.reset()
    ctx = None
    for j in range(max(0, t - policy.spec.n_obs_steps + 1), t + 1):
        ctx = policy.prepare(demos.observation(ep, j))
    return ctx


def recorded_chunk(policy: DenoisingPolicy, demos: Demonstrations, ep: Episode, t: int) -> Tensor:
    """The recorded chunk of frame t as a model tensor [H_model, A_model], normalised."""
    rows = demos.model_chunk(ep, t, policy.model_horizon, policy.chunk_slice.start)
    x = policy.normalize_actions(torch.from_numpy(rows).to(policy.device))
    if x.shape[-1] < policy.model_action_dim:
        x = torch.nn.functional.pad(x, (0, policy.model_action_dim - x.shape[-1]))
    return x


def high_fidelity_search(
    policy: DenoisingPolicy,
    sampler: Sampler,
    demos: Demonstrations,
    frames: list[Frame],
    samples: int,
    batch_rows: int = 512,
    generator: torch.Generator | None = None,
    progress: bool = True,
    desc: str = "feature search",
) -> SearchResult:
    """Sample ``samples`` (K) candidates per frame; keep the features of the closest and farthest."""
    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")
    a = policy.spec.action_dim
    per_call = max(1, batch_rows // samples)
    best_f, best_d, far_f, far_d, mean_d = [], [], [], [], []
    bar = tqdm(total=len(frames), desc=desc, unit="frame", disable=not progress)
    i = 0
    while i < len(frames):
        group = frames[i:i + per_call]
        ctxs, targets = [], []
        for fr in group:
            ep = demos.episodes[fr.episode]
            ctx = prepare_frame(policy, demos, ep, fr.t)
            ctxs.append(policy.expand(ctx, samples))
            targets.append(recorded_chunk(policy, demos, ep, fr.t))
            if ctx.shared:  # adapter-specific shared state (a KV cache): one sampler call per frame
                per_call = 1
                group = group[:1]
                break
        merged = concat_contexts(ctxs) if len(ctxs) > 1 else ctxs[0]
        x0, feats = sample_with_features(sampler, merged, generator)
        for j, target in enumerate(targets):
            rows = slice(j * samples, (j + 1) * samples)
            d = chunk_distance(x0[rows], target, a)
            lo, hi = int(torch.argmin(d)), int(torch.argmax(d))
            best_f.append(feats[rows][lo])
            best_d.append(d[lo])
            far_f.append(feats[rows][hi])
            far_d.append(d[hi])
            mean_d.append(d.mean())
        i += len(group)
        bar.update(len(group))
    bar.close()
    return SearchResult(
        features=torch.stack(best_f).float().cpu(), distance=torch.stack(best_d).cpu(),
        far_features=torch.stack(far_f).float().cpu(), far_distance=torch.stack(far_d).cpu(),
        mean_distance=torch.stack(mean_d).cpu(),
    )


def pick_frames(demos: Demonstrations, episodes: list[int], max_frames: int, rng: np.random.Generator) -> list[Frame]:
    """All frames of ``episodes`` (positions), or a random subset of ``max_frames`` (0: all), in time order."""
    frames = [Frame(e, t) for e in episodes for t in range(demos.episodes[e].length)]
    if 0 < max_frames < len(frames):
        keep = np.sort(rng.choice(len(frames), size=max_frames, replace=False))
        frames = [frames[k] for k in keep]
    return frames
