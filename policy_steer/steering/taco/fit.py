"""``policy-steer fit-verifier``: fit TACO's verifiers to a policy and the demonstrations it learned from.

    policy-steer fit-verifier --policy checkpoints/push-diffusion --dataset data/push [--out DIR]

1. open the policy and the LeRobotDataset and check that they fit each other (a mismatch is a
   DatasetError, and nothing is written);
2. split the episodes: a held-out share (``--held_out``) is never trained on;
3. high-fidelity feature search on the training frames (``--samples`` K per frame, batched);
4. fit the CFN (``--out_dim``, ``--width``, ``--depth``, ...) and the nearest-feature bank;
5. on the held-out frames, report AUCs (see :mod:`.evaluation`) for both verifiers;
6. write ``verifier.json``, ``cfn.safetensors`` and ``nearest.safetensors`` to ``--out`` (default
   ``<policy>/verifier``) in one step, and print the report.
"""

from __future__ import annotations

import json
import logging
import shlex
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from policy_steer.errors import ConfigError, DatasetError
from policy_steer.policies.base import DenoisingPolicy
from policy_steer.sampler import Sampler, SamplerConfig
from policy_steer.steering.taco.cfn import CFNConfig, CoinFlipNetwork, TrainConfig, count_parameters, train_cfn
from policy_steer.steering.taco.demonstrations import Demonstrations, load_demonstrations
from policy_steer.steering.taco.evaluation import features_of, held_out_report, off_support_pairs, perturb
from policy_steer.steering.taco.feature_search import Frame, high_fidelity_search, pick_frames, prepare_frame, recorded_chunk
from policy_steer.steering.taco.storage import DEFAULT_SUBDIR, policy_record, staged_folder, write_info
from policy_steer.steering.taco.verifiers import NEAREST_FILE, NearestBank

log = logging.getLogger(__name__)


@dataclass
class Config:
    policy: str = ""  # checkpoint folder (or hub id)
    trust_checkpoint: bool = False  # load --policy even where it names code to run (see policies/checkpoint_safety.py)
    dataset: str = ""  # LeRobotDataset folder the policy was trained on
    out: str | None = None  # default <policy>/verifier
    overwrite: bool = False  # replace an existing verifier folder
    # feature search
    samples: int = 16  # K candidates per frame (the paper: 50)
    max_frames: int = 2000  # training frames, a random subset (0: all)
    batch_rows: int = 512  # candidates per sampler call
    sampler_method: str = "auto"  # the loop the policy runs with at deployment
    num_steps: int | None = None  # denoising steps of that loop (None: the policy's own)
    # held-out evaluation
    held_out: float = 0.1  # share of episodes never trained on (0: no evaluation)
    eval_frames: int = 300  # held-out frames the verifier is evaluated on
    perturb_scale: float = 0.5  # normalised action units (RMS)
    # CFN
    out_dim: int = 128  # d (the paper: 20; see policy_steer/steering/taco/cfn.py)
    width: int = 64  # CFN hidden width w
    depth: int = 1  # CFN residual blocks
    dropout: float = 0.1  # CFN dropout
    feature_scale: float = 1.0  # CFN: features are multiplied by this after standardisation
    steps: int = 1500  # CFN training steps
    batch_size: int = 256  # CFN training batch size
    lr: float = 1e-3  # CFN learning rate
    # nearest-feature verifier
    nearest_dims: int = 32  # nearest-feature verifier: PCA dimensions kept
    nearest_rows: int = 4096  # nearest-feature verifier: stored training features (a random subset)
    seed: int = 0  # seed of the frame subsets, the CFN's prior and its training
    device: str = "cpu"  # torch device
    progress: bool = True  # show progress bars


def _split(demos: Demonstrations, share: float, rng: np.random.Generator) -> tuple[list[int], list[int]]:
    n = len(demos.episodes)
    if share <= 0:
        return list(range(n)), []
    if n < 2:
        raise DatasetError(f"{demos.folder} has one episode; a held-out split needs two (or pass --held_out 0)")
    k = min(n - 1, max(1, int(round(share * n))))
    held = sorted(rng.choice(n, size=k, replace=False).tolist())
    return [e for e in range(n) if e not in held], held


def _check(cfg: Config) -> None:
    if not cfg.policy or not cfg.dataset:
        raise ConfigError("fit-verifier needs --policy <checkpoint> and --dataset <LeRobotDataset folder>")
    for name in ("samples", "batch_rows", "steps", "batch_size", "out_dim", "width"):
        if getattr(cfg, name) < 1:
            raise ConfigError(f"--{name} must be >= 1, got {getattr(cfg, name)}")
    if not 0 <= cfg.held_out < 1:
        raise ConfigError(f"--held_out must be in [0, 1), got {cfg.held_out}")


def evaluate_held_out(policy, sampler, demos, frames: list[Frame], cfn: CoinFlipNetwork, bank: NearestBank,
                      cfg: Config, generator: torch.Generator) -> dict[str, Any]:
    """AUCs of the CFN count and of the nearest-feature score on held-out frames."""
    rng = np.random.default_rng(cfg.seed + 1)
    ctxs = [prepare_frame(policy, demos, demos.episodes[f.episode], f.t) for f in frames]
    rec = torch.stack([recorded_chunk(policy, demos, demos.episodes[f.episode], f.t) for f in frames])
    a = policy.spec.action_dim
    plan = sampler.plan
    per, kinds = perturb(rec, a, cfg.perturb_scale, generator)
    pairs = off_support_pairs(rec, a, cfg.perturb_scale, rng)
    ok = np.flatnonzero(pairs >= 0)
    f_rec = features_of(policy, plan, ctxs, rec, generator)
    f_per = features_of(policy, plan, ctxs, per, generator)
    f_off = features_of(policy, plan, [ctxs[i] for i in ok], rec[pairs[ok]], generator) if len(ok) else None
    search = high_fidelity_search(policy, sampler, demos, frames, cfg.samples, cfg.batch_rows, generator,
                                  cfg.progress, desc="held-out search")
    report = {
        "frames": len(frames),
        "episodes": len({f.episode for f in frames}),
        "perturb_scale": cfg.perturb_scale,
        "search_distance_median": float(search.distance.median()),
        "cfn": held_out_report(cfn.count, f_rec, f_per, kinds, f_off, search.features, search.far_features),
        "nearest": held_out_report(lambda f: -bank.distance(f), f_rec, f_per, kinds, f_off, search.features,
                                   search.far_features),
    }
    return report


def fit_verifier(cfg: Config, policy: DenoisingPolicy | None = None) -> dict[str, Any]:
    """Fit, evaluate and write the verifier folder; returns what verifier.json holds.

    ``policy``: the adapter of ``cfg.policy`` when the caller has it loaded already.
    """
    from policy_steer.policies.loading import load_policy

    _check(cfg)
    t0 = time.perf_counter()
    policy = policy or load_policy(cfg.policy, device=cfg.device, trust_checkpoint=cfg.trust_checkpoint)
    demos = load_demonstrations(cfg.dataset, policy)  # DatasetError before anything is written
    out = Path(cfg.out) if cfg.out else Path(policy.path) / DEFAULT_SUBDIR
    rng = np.random.default_rng(cfg.seed)
    train_eps, held_eps = _split(demos, cfg.held_out, rng)
    train_frames = pick_frames(demos, train_eps, cfg.max_frames, rng)
    held_frames = pick_frames(demos, held_eps, cfg.eval_frames, rng) if held_eps else []
    if len(train_frames) < 2:
        raise DatasetError(f"{demos.folder} has {len(train_frames)} training frame(s); a verifier needs more")
    if out.exists() and any(out.iterdir()) and not cfg.overwrite:
        raise ConfigError(f"{out} already exists; pass --overwrite true to replace it")

    torch.manual_seed(cfg.seed)
    generator = torch.Generator(device=policy.device).manual_seed(cfg.seed)
    sampler = Sampler(policy, SamplerConfig(method=cfg.sampler_method, num_steps=cfg.num_steps))
    t_search = time.perf_counter()
    search = high_fidelity_search(policy, sampler, demos, train_frames, cfg.samples, cfg.batch_rows, generator,
                                  cfg.progress)
    t_search = time.perf_counter() - t_search
    feats = search.features

    cfn_cfg = CFNConfig(in_dim=int(feats.shape[1]), out_dim=cfg.out_dim, width=cfg.width, depth=cfg.depth,
                        dropout=cfg.dropout, feature_scale=cfg.feature_scale, prior_seed=cfg.seed)
    cfn = CoinFlipNetwork(cfn_cfg)
    t_fit = time.perf_counter()
    fit_figures = train_cfn(cfn, feats, TrainConfig(steps=cfg.steps, batch_size=cfg.batch_size, lr=cfg.lr, seed=cfg.seed),
                            progress=cfg.progress)
    t_fit = time.perf_counter() - t_fit
    bank = NearestBank.fit(feats, dims=cfg.nearest_dims, max_rows=cfg.nearest_rows, seed=cfg.seed)
    held = evaluate_held_out(policy, sampler, demos, held_frames, cfn, bank, cfg, generator) if held_frames else None

    info: dict[str, Any] = {
        "policy": policy_record(policy, int(feats.shape[1])),
        "dataset": {"folder": str(demos.folder), "episodes": len(demos.episodes), "frames": demos.num_frames,
                    "instructions": sorted({e.instruction for e in demos.episodes}),
                    "train_episodes": len(train_eps), "held_out_episodes": len(held_eps)},
        "search": {"samples": cfg.samples, "frames": len(train_frames), "sampler": sampler.plan.method,
                   "num_steps": sampler.plan.num_steps, "distance_median": float(search.distance.median()),
                   "distance_mean_of_k_median": float(search.mean_distance.median()), "seconds": round(t_search, 1)},
        "cfn": {**asdict(cfn_cfg), "parameters": count_parameters(cfn), **fit_figures, "seconds": round(t_fit, 1),
                "train": asdict(TrainConfig(steps=cfg.steps, batch_size=cfg.batch_size, lr=cfg.lr, seed=cfg.seed))},
        "nearest": {"dims": int(bank.projection.shape[1]), "rows": int(bank.bank.shape[0]), "file": NEAREST_FILE},
        "held_out": held,
        "command": "policy-steer fit-verifier " + " ".join(shlex.quote(a) for a in sys.argv[2:])
        if len(sys.argv) > 2 and "fit-verifier" in sys.argv[1:2] else None,
        "config": asdict(cfg),
        "seconds": None,
    }
    with staged_folder(out, cfg.overwrite) as tmp:
        cfn.save(tmp)
        bank.save(tmp)
        info["seconds"] = round(time.perf_counter() - t0, 1)
        write_info(tmp, info)
    info["out"] = str(out)
    return info


def summary(info: dict[str, Any]) -> str:
    """A few lines a person reads."""
    s = info["search"]
    lines = [
        f"TACO verifier for {info['policy']['name']} -> {info.get('out')}",
        f"  features: {info['policy']['feature_dim']}-d, {s['frames']} training frames x {s['samples']} samples "
        f"(closest sample: median RMS {s['distance_median']:.3f} from the recorded chunk)",
        f"  CFN: d={info['cfn']['out_dim']} width={info['cfn']['width']} depth={info['cfn']['depth']}, "
        f"{info['cfn']['parameters']} parameters, final loss {info['cfn']['final_loss']:.3f}",
    ]
    held = info.get("held_out")
    if held:
        lines.append(f"  held-out AUC ({held['frames']} frames of {held['episodes']} episodes; 0.5 = chance):")
        lines.append(f"    {'verifier':<9} {'perturbed':>9} {'off-support':>11} {'candidates':>10}")
        for name in ("cfn", "nearest"):
            r = held[name]
            off = "-" if r["off_support"] is None else f"{r['off_support']:.3f}"
            lines.append(f"    {name:<9} {r['perturbed']:>9.3f} {off:>11} {r['candidates']:>10.3f}")
    else:
        lines.append("  no held-out split (--held_out 0): no AUC")
    lines.append(f"  {info['seconds']} s")
    return "\n".join(lines)


def run(cfg: Config) -> int:
    info = fit_verifier(cfg)
    print(summary(info))
    return 0


if __name__ == "__main__":  # python -m policy_steer.steering.taco.fit --policy ... --dataset ...
    from policy_steer.config import parse_config

    print(json.dumps(fit_verifier(parse_config(Config, sys.argv[1:])).get("held_out"), indent=2))
