"""Per-chunk overhead of policy-steer's sampler against lerobot's own sampling loop, same policy.

    .venv/bin/python benchmarks/sampler_overhead.py [--policy checkpoints/push-diffusion] [--chunks 200]

Both paths start from the same observation; lerobot's path is preprocessor -> the policy's own loop
(``predict_action_chunk`` / ``generate_actions``) -> postprocessor; ours is
``SteeredPolicy.predict_chunk`` with no strategy. The runs are interleaved in rounds and medians are
compared, so machine noise hits both alike. Prints the ratio ours / lerobot (target <= 1.05).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def _lerobot_chunk_fn(adapter, obs):
    policy = adapter.policy
    kind = adapter.spec.family
    raw = {k: torch.from_numpy(np.asarray(v)) for k, v in obs.items() if k.startswith("observation.")}
    raw["task"] = obs.get("task", "")

    def run():
        policy.reset()
        batch = adapter.preprocessor(dict(raw))
        with torch.no_grad():
            if kind == "diffusion" and hasattr(policy, "diffusion"):
                n = adapter.config.n_obs_steps
                b = {k: torch.stack([batch[k]] * n, dim=1) for k in adapter.config.input_features}
                actions = policy.predict_action_chunk(b)
            else:
                actions = policy.predict_action_chunk(batch)
        return adapter.postprocessor(actions)

    return run


def measure(policy_path: str, chunks: int, rounds: int = 10) -> dict:
    from policy_steer.policies import load_policy
    from policy_steer.steered_policy import SteeredPolicy

    adapter = load_policy(policy_path)
    rng = np.random.default_rng(0)
    obs = {}
    for k, f in adapter.spec.observation.items():
        obs[k] = rng.integers(0, 255, f.shape).astype(np.uint8) if f.dtype == "|u1" else rng.standard_normal(f.shape).astype(np.float32)
    obs["task"] = "push the block into the target"
    ours = SteeredPolicy(adapter, seed=0)
    lerobot = _lerobot_chunk_fn(adapter, obs)
    for _ in range(5):  # warm up both
        ours.predict_chunk(obs)
        lerobot()
    t_ours, t_lr = [], []
    per_round = max(1, chunks // rounds)
    for _ in range(rounds):
        for fn, acc in ((lerobot, t_lr), (lambda: ours.predict_chunk(obs), t_ours)):
            for _ in range(per_round):
                t0 = time.perf_counter()
                fn()
                acc.append(time.perf_counter() - t0)
    med_ours, med_lr = statistics.median(t_ours), statistics.median(t_lr)
    return {
        "policy": str(policy_path), "family": adapter.spec.family, "num_steps": adapter.spec.num_steps,
        "chunks_each": len(t_ours), "lerobot_ms_p50": med_lr * 1e3, "ours_ms_p50": med_ours * 1e3,
        "ratio": med_ours / med_lr,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--policy", action="append", help="checkpoint folder(s); default: the shipped ones")
    ap.add_argument("--chunks", type=int, default=200)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="results/sampler_overhead.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    policies = args.policy or [str(p) for p in sorted(Path("checkpoints").glob("*-*")) if (p / "config.json").is_file()]
    if not policies:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository's tests/fixtures
        from tests.fixtures.tiny_policies import build_tiny_diffusion

        policies = [str(build_tiny_diffusion(Path(tempfile.mkdtemp()) / "tiny"))]
    rows = [measure(p, args.chunks) for p in policies]
    print(f"{'policy':40s} {'family':9s} {'steps':>5s} {'lerobot ms':>10s} {'ours ms':>8s} {'ratio':>6s}")
    for r in rows:
        print(f"{Path(r['policy']).name:40s} {r['family']:9s} {r['num_steps']:5d} {r['lerobot_ms_p50']:10.2f} "
              f"{r['ours_ms_p50']:8.2f} {r['ratio']:6.3f}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
