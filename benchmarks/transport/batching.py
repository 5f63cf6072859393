"""Does batching observes of several sessions into one forward pass pay on this machine?

Times the denoising loop of a lerobot DiffusionPolicy (through policy-steer's adapter and sampler) for
B observations of B different sessions: B separate batch-1 samplings (what the server does) vs one
batch-B sampling over the concatenated contexts (what a batching server would do). Prints the
speed-up; writes ``batching.json`` / ``batching.md`` under ``--out``.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/transport/batching.py --out benchmarks/transport/results
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))


def build(down_dims: tuple[int, ...], steps: int):
    from lerobot.configs.types import FeatureType, PolicyFeature
    from lerobot.policies.diffusion.configuration_diffusion import DiffusionConfig
    from lerobot.policies.diffusion.modeling_diffusion import DiffusionPolicy
    from lerobot.policies.factory import make_pre_post_processors

    from policy_steer.policies.diffusion import DiffusionAdapter

    S, E, A = 10, 6, 7
    cfg = DiffusionConfig(
        input_features={
            "observation.state": PolicyFeature(FeatureType.STATE, (S,)),
            "observation.environment_state": PolicyFeature(FeatureType.ENV, (E,)),
        },
        output_features={"action": PolicyFeature(FeatureType.ACTION, (A,))},
        n_obs_steps=2,
        horizon=16,
        n_action_steps=8,
        down_dims=down_dims,
        num_inference_steps=steps,
        noise_scheduler_type="DDIM",
        device="cpu",
    )
    stats = {
        k: {"mean": torch.zeros(d), "std": torch.ones(d), "min": -torch.ones(d), "max": torch.ones(d)}
        for k, d in (("observation.state", S), ("observation.environment_state", E), ("action", A))
    }
    policy = DiffusionPolicy(cfg)
    pre, post = make_pre_post_processors(cfg, dataset_stats=stats)
    return DiffusionAdapter(policy, pre, post), S, E


def measure(down_dims: tuple[int, ...], steps: int, batch: int, repeats: int) -> dict:
    from policy_steer.policies.base import Context
    from policy_steer.sampler import Sampler

    adapter, S, E = build(down_dims, steps)
    sampler = Sampler(adapter)
    rng = np.random.default_rng(0)
    ctxs = []
    for _ in range(batch):  # one context per "session"
        adapter.reset()
        ctxs.append(
            adapter.prepare(
                {
                    "observation.state": rng.standard_normal(S).astype(np.float32),
                    "observation.environment_state": rng.standard_normal(E).astype(np.float32),
                    "step": 0,
                }
            )
        )
    stacked = Context(batch_size=batch, tensors={k: torch.cat([c.tensors[k] for c in ctxs]) for k in ctxs[0].tensors})
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        sampler.sample(stacked, adapter.make_noise(batch, g))  # warm-up
        sep, bat = [], []
        for _ in range(repeats):
            t0 = time.perf_counter()
            for c in ctxs:
                sampler.sample(c, adapter.make_noise(1, g))
            sep.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            sampler.sample(stacked, adapter.make_noise(batch, g))
            bat.append(time.perf_counter() - t0)
    params = sum(p.numel() for p in adapter.policy.parameters())
    return {
        "down_dims": list(down_dims),
        "params_m": params / 1e6,
        "steps": steps,
        "batch": batch,
        "separate_ms": float(np.median(sep) * 1e3),
        "batched_ms": float(np.median(bat) * 1e3),
        "speedup": float(np.median(sep) / np.median(bat)),
    }


def markdown(data: dict) -> str:
    md = [
        f"# Cross-session batching: B batch-1 samplings vs one batch-B sampling (CPU, {data['threads']} torch thread(s))",
        "",
        f"`{data['command']}` (median of {data['repeats']} repeats; the machine was shared, so absolute times vary,",
        "the two columns of a row were measured alternately)",
        "",
        "| UNet down_dims | params (M) | DDIM steps | sessions B | B x batch 1 (ms) | batch B (ms) | speed-up |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    md += [
        f"| {r['down_dims']} | {r['params_m']:.1f} | {r['steps']} | {r['batch']} | {r['separate_ms']:.0f} | "
        f"{r['batched_ms']:.0f} | {r['speedup']:.2f}x |"
        for r in data["rows"]
    ]
    return "\n".join(md) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=str(HERE / "results"))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is steadier on a shared machine)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for dims, steps in (((32, 64), 10), ((128, 256, 512), 10)):
        for batch in (2, 4):
            r = measure(dims, steps, batch, args.repeats)
            rows.append(r)
            print(
                f"down_dims {dims} ({r['params_m']:.1f} M), {steps} DDIM steps, {batch} sessions: "
                f"separate {r['separate_ms']:.0f} ms, batched {r['batched_ms']:.0f} ms, speed-up {r['speedup']:.2f}x",
                flush=True,
            )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = {
        "command": "HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/transport/batching.py " + " ".join(sys.argv[1:]),
        "threads": torch.get_num_threads(),
        "repeats": args.repeats,
        "rows": rows,
    }
    (out / "batching.json").write_text(json.dumps(data, indent=2) + "\n")
    (out / "batching.md").write_text(markdown(data))
    print(markdown(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
