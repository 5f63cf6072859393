"""Chunk latency and peak memory of the steered policies at VLA size, on the device the policy runs on.

    .venv/bin/python benchmarks/gpu_latency.py [--device cuda] [--policies diffusion,pi0,pi05]
        [--rounds 20] [--out docs/results/gpu_latency]
    .venv/bin/python benchmarks/gpu_latency.py --small --device cpu      # the same code, minutes on a CPU
    .venv/bin/python benchmarks/gpu_latency.py --dtype float32,bfloat16 --compile false,true   # compute settings

Policies: the shipped push DiffusionPolicy (``checkpoints/push-diffusion``, with its fitted TACO
verifier), and pi0 / pi05 with random weights at their full default sizes (PaliGemma gemma_2b with a
SigLIP so400m vision tower, and the gemma_300m action expert; one 224x224 camera, chunk 50, 10 flow
steps), built offline the way the tests build their tiny ones
(:class:`policy_steer.policies.tiny_backbones.TinyPiBackbone` given the real sizes, a local stand-in
tokenizer) and loaded through :func:`policy_steer.policies.load_policy` like any checkpoint. The VLAs
read the push task's state and act in its 3-D end-effector action space, so VLS can steer them with
push obstacle's real scene. ``--small`` builds the VLAs at the tests' tiny sizes instead.

Configurations, interleaved round by round so machine noise hits all alike:

- ``m1``: unsteered, one chunk (M = 1);
- ``taco16_once``: TACO, M = 16 candidates from one prepared observation (``expand``);
- ``taco16_per_candidate``: the same plus M - 1 further ``prepare`` calls (the prefix computed per
  candidate, as TACO's released code does);
- ``vls4``: VLS, B = 4 particles, reward from the offline synthesizer on push obstacle's scene;
- ``rtc``: RTC prefix inpainting with the previous chunk's tail as the prefix.

For each: p50 / p95 chunk latency (ms; CUDA is synchronised before every clock read), the ratio of
p50 to ``m1`` in the same run, and the peak memory of that configuration (``torch.cuda``'s peak
allocated bytes on a GPU; on a CPU the process's peak RSS, which only grows). Written as JSON and a
Markdown table under ``--out``.

Compute settings (``--dtype`` and ``--compile``, comma lists; :mod:`policy_steer.policies.precision`):
every combination loads the policy again with ``load_policy(dtype=, compile=)`` and measures every
configuration; rows carry ``dtype`` and ``compiled``, ``ratio_to_m1`` is against the same setting's
``m1`` and ``ratio_to_fp32_m1`` against float32 eager ``m1`` (when measured). ``compile_s`` is the
time of the warm-up calls (the compile of every batch size). A combination the policy or the device
does not offer (a compiled VLA, bfloat16 without bfloat16 kernels) is printed and written as skipped
with the reason, never measured as something else.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MUJOCO_GL", "egl")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CAMERA = "observation.images.front"
TASK, VARIANT = "push", "obstacle"


@dataclass(frozen=True)
class VlaSize:
    """What differs between the full-size VLAs and ``--small``."""

    image: int
    chunk: int
    steps: int
    full: bool


FULL = VlaSize(image=224, chunk=50, steps=10, full=True)
SMALL = VlaSize(image=32, chunk=8, steps=3, full=False)


def pi_backbone(full: bool):
    """gemma_2b + SigLIP so400m + gemma_300m (openpi's variant table), or the tests' tiny sizes."""
    from policy_steer.policies.tiny_backbones import GemmaSize, TinyPiBackbone

    if not full:
        return TinyPiBackbone()
    return TinyPiBackbone(
        vlm=GemmaSize(width=2048, depth=18, mlp_dim=16384, num_heads=8, num_kv_heads=1, head_dim=256),
        expert=GemmaSize(width=1024, depth=18, mlp_dim=4096, num_heads=8, num_kv_heads=1, head_dim=256),
        vocab_size=257152, vision_width=1152, vision_depth=27, vision_heads=16, vision_mlp=4304, patch_size=14,
    )


def build_pi(folder: Path, kind: str, size: VlaSize, state_dim: int, action_dim: int) -> Path:
    """A random-weight pi0 / pi05 checkpoint reading the task's state and one camera."""
    from lerobot.configs.types import FeatureType, PolicyFeature
    from lerobot.policies.factory import get_policy_class, make_policy_config, make_pre_post_processors

    from policy_steer.policies.tiny_backbones import build_paligemma_tokenizer, save_self_contained, tiny_pi_backbone

    tok = folder.parent / f"{folder.name}-tokenizer"
    build_paligemma_tokenizer(tok)
    inputs = {"observation.state": PolicyFeature(FeatureType.STATE, (state_dim,)),
              CAMERA: PolicyFeature(FeatureType.VISUAL, (3, size.image, size.image))}
    outputs = {"action": PolicyFeature(FeatureType.ACTION, (action_dim,))}
    cfg = make_policy_config(
        kind, input_features=inputs, output_features=outputs, chunk_size=size.chunk, n_action_steps=size.chunk,
        image_resolution=(size.image, size.image), num_inference_steps=size.steps, device="cpu", push_to_hub=False,
    )
    spec = pi_backbone(size.full)
    spec.configure(cfg)
    stats = {k: {"mean": torch.zeros(d), "std": torch.ones(d), "min": -torch.ones(d), "max": torch.ones(d),
                 "q01": -torch.ones(d), "q99": torch.ones(d)}
             for k, d in (("observation.state", state_dim), ("action", action_dim))}
    stats[CAMERA] = {"mean": torch.full((3, 1, 1), 0.5), "std": torch.full((3, 1, 1), 0.25)}
    torch.manual_seed(0)
    with tiny_pi_backbone(spec, tokenizer_dir=tok):
        policy = get_policy_class(kind)(cfg)
        pre, post = make_pre_post_processors(cfg, dataset_stats=stats)
    save_self_contained(folder, policy, pre, post, tiny_pi=spec)
    shutil.rmtree(tok)
    del policy
    return folder


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # Linux reports KiB


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def configurations(adapter, env, seed: int = 0) -> dict[str, Callable[[], Any]]:
    """name -> a call that computes one chunk of that configuration."""
    from policy_steer.steered_policy import SteeredPolicy
    from policy_steer.steering.registry import build_steering

    obs, _ = env.reset(seed=seed)  # the env renders the camera the policy reads, at its size
    obs = dict(obs)
    obs.update({"task": "push the block into the target region", "step": 0})
    context = env.unwrapped.episode_context(seed)

    def steered(steer: str, settings: dict[str, Any]) -> SteeredPolicy:
        setup = build_steering(adapter, steer, settings)
        sp = SteeredPolicy(adapter, setup.strategies, sampler=setup.sampler, seed=0)
        sp.start_episode(context, seed)
        return sp

    verifier = "cfn" if adapter.path and (Path(adapter.path) / "verifier" / "cfn.safetensors").is_file() else "random"
    taco_settings = {"candidates": 16, "verifier": verifier, "verifier_path": None, "fixed_noise": False}
    plain, taco, vls = steered("none", {}), steered("taco", taco_settings), steered("vls", {"particles": 4, "fk": "on", "gradient": "on"})
    rtc = steered("rtc", {})
    previous = plain.predict_chunk(obs).actions
    n_prefix = max(1, len(previous) // 4)

    def per_candidate() -> Any:
        for _ in range(15):
            adapter.prepare(obs)
        return taco.predict_chunk(obs)

    return {
        "m1": lambda: plain.predict_chunk(obs),
        "taco16_once": lambda: taco.predict_chunk(obs),
        "taco16_per_candidate": per_candidate,
        "vls4": lambda: vls.predict_chunk(obs),
        "rtc": lambda: rtc.predict_chunk(obs, prefix=previous[-n_prefix:], start_step=0, prefix_start=0,
                                         prefix_committed=n_prefix // 2),
    }, verifier


def measure(name: str, folder: Path, device: str, rounds: int, warmup: int, dtype: str = "float32",
            compile_: bool = False) -> list[dict[str, Any]]:
    from policy_steer.envs import make
    from policy_steer.policies import load_policy
    from policy_steer.policies.observation import camera_env_kwargs

    dev = torch.device(device)
    t0 = time.perf_counter()
    adapter = load_policy(folder, device=device, dtype=dtype, compile=compile_)
    load_s = time.perf_counter() - t0
    params = sum(p.numel() for p in adapter.policy.parameters())
    env = make(TASK, VARIANT, **camera_env_kwargs(adapter.spec.observation))
    t0 = time.perf_counter()
    calls, verifier = configurations(adapter, env)
    for k, fn in calls.items():
        for _ in range(max(1, warmup)):
            chunk = fn()
        idle = [s for s, acted in chunk.info.get("strategies", {}).items() if not acted]
        if idle:  # a timing of a strategy that did nothing would look like a cheap one
            raise RuntimeError(f"{name} {k}: strategies {idle} did not act on the benchmark's chunk")
    warmup_s = time.perf_counter() - t0
    times: dict[str, list[float]] = {k: [] for k in calls}
    peaks: dict[str, int] = {}
    for _ in range(rounds):
        for k, fn in calls.items():
            reset_peak(dev)
            sync(dev)
            t = time.perf_counter()
            fn()
            sync(dev)
            times[k].append((time.perf_counter() - t) * 1e3)
            peaks[k] = max(peaks.get(k, 0), peak_bytes(dev))
    env.close()
    base = statistics.median(times["m1"])
    rows = []
    for k, ts in times.items():
        p50 = statistics.median(ts)
        rows.append({"policy": name, "config": k, "device": str(dev), "dtype": dtype, "compiled": compile_,
                     "compile_s": warmup_s if compile_ else 0.0, "params_m": params / 1e6, "verifier": verifier,
                     "p50_ms": p50, "p95_ms": float(np.percentile(ts, 95)), "ratio_to_m1": p50 / base,
                     "peak_mib": peaks[k] / 2**20, "load_s": load_s, "rounds": rounds})
        print(f"{name:<10} {dtype:<8} {'compiled' if compile_ else 'eager':<8} {k:<22} p50 {p50:9.1f} ms  p95 {rows[-1]['p95_ms']:9.1f} ms  x{p50 / base:5.2f}  "
              f"peak {rows[-1]['peak_mib']:9.0f} MiB", flush=True)
    del adapter
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    return rows


def markdown(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = [f"# Chunk latency on {meta['device']} ({'small' if meta['small'] else 'full size'})", "",
             f"`{meta['command']}`", "",
             "| policy | params (M) | dtype | compiled | configuration | p50 (ms) | p95 (ms) | p50 / M=1 | p50 / fp32 M=1 "
             "| peak (MiB) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        fp32 = "" if r.get("ratio_to_fp32_m1") is None else f"{r['ratio_to_fp32_m1']:.2f}"
        lines.append(f"| {r['policy']} | {r['params_m']:.1f} | {r['dtype']} | {'yes' if r['compiled'] else 'no'} | "
                     f"{r['config']} | {r['p50_ms']:.1f} | {r['p95_ms']:.1f} | {r['ratio_to_m1']:.2f} | {fp32} | "
                     f"{r['peak_mib']:.0f} |")
    for sk in meta.get("skipped", []):
        lines.append(f"\nSkipped: {sk['policy']} {sk['dtype']} compile={sk['compiled']}: {sk['reason']}")
    compiled = sorted({(r['policy'], r['dtype'], round(r['compile_s'])) for r in rows if r['compiled']})
    if compiled:
        lines.append("\nWarm-up with compile (every batch size): " + "; ".join(f"{p} {d} {s} s" for p, d, s in compiled))
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--small", action="store_true", help="the VLAs at the tests' tiny sizes (runs on a CPU in minutes)")
    ap.add_argument("--policies", default="diffusion,pi0,pi05")
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--dtype", default="float32", help="comma list of dtypes to measure: float32, bfloat16")
    ap.add_argument("--compile", default="false", help="comma list: false, true (torch.compile of the denoiser)")
    ap.add_argument("--out", default="docs/results/gpu_latency")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from policy_steer.envs import make
    from policy_steer.policies.loading import check_device

    device = check_device(args.device)
    from policy_steer.errors import ConfigError
    from policy_steer.policies.precision import parse_dtype

    dtypes = [parse_dtype(d) for d in args.dtype.split(",") if d.strip()]
    compiles = []
    for c in args.compile.split(","):
        if c.strip().lower() not in ("true", "false"):
            ap.error(f"--compile {c!r}: use true, false or both (false,true)")
        compiles.append(c.strip().lower() == "true")
    skipped: list[dict[str, Any]] = []
    size = SMALL if args.small else FULL
    env = make(TASK, VARIANT)
    state_dim = env.observation_space["observation.state"].shape[0]
    action_dim = env.unwrapped.action_dim
    env.close()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="gpu-latency-") as tmp:
        for name in [p.strip() for p in args.policies.split(",") if p.strip()]:
            if name == "diffusion":
                folder = REPO / "checkpoints" / f"{TASK}-diffusion"
            elif name in ("pi0", "pi05"):
                t0 = time.perf_counter()
                folder = build_pi(Path(tmp) / name, name, size, state_dim, action_dim)
                print(f"built {name} ({'full size' if size.full else 'small'}) in {time.perf_counter() - t0:.0f} s", flush=True)
            else:
                ap.error(f"unknown policy {name!r}: use diffusion, pi0, pi05")
            for dtype in dtypes:
                for compile_ in compiles:
                    try:
                        got = measure(name, folder, device, args.rounds, args.warmup, dtype, compile_)
                    except ConfigError as e:  # a combination this policy or device does not offer: said, not measured
                        skipped.append({"policy": name, "dtype": dtype, "compiled": compile_, "reason": str(e)})
                        print(f"{name:<10} {dtype:<8} compile={compile_}: skipped: {e}", flush=True)
                        continue
                    rows += got
            base = {r["config"]: r["p50_ms"] for r in rows
                    if r["policy"] == name and r["dtype"] == "float32" and not r["compiled"]}
            for r in rows:
                if r["policy"] == name:
                    r["ratio_to_fp32_m1"] = r["p50_ms"] / base["m1"] if "m1" in base else None
            if name != "diffusion":
                shutil.rmtree(folder)
    meta = {"command": "python benchmarks/gpu_latency.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "device": torch.cuda.get_device_name(0) if device.startswith("cuda") else "cpu", "small": args.small,
            "torch": torch.__version__, "threads": torch.get_num_threads(), "skipped": skipped}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_latency.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    md = markdown(rows, meta)
    (out / "gpu_latency.md").write_text(md)
    print(md, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
