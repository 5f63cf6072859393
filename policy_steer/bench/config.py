"""The benchmark's configuration: every list field is an axis of the grid of cells."""

from __future__ import annotations

from dataclasses import dataclass, field

from policy_steer.config import IntList, StrList


@dataclass
class BenchConfig:
    task: StrList = field(default_factory=lambda: StrList(["push"]))  # tasks: reach, push, pick-place, lift
    variant: StrList = field(default_factory=lambda: StrList(["nominal"]))  # variants; "all": every variant
    policy: StrList = field(default_factory=StrList)  # checkpoint folders or hub ids (empty: checkpoints/<task>-diffusion)
    trust_checkpoint: bool = False  # load --policy even where it names code to run (see policies/checkpoint_safety.py)
    steer: StrList = field(default_factory=lambda: StrList(["none"]))  # steering: none, taco, vls, rtc, taco+vls, ...
    mode: StrList = field(default_factory=lambda: StrList(["sync"]))  # execution modes: sync, async, vlash
    latency: StrList = field(default_factory=lambda: StrList(["0"]))  # control steps: N, uniform:LO-HI, replay:FILE
    episodes: int = 100  # seeded episodes per cell
    seed_start: int = 0  # episode i of a cell uses seed seed_start + i
    workers: int = 2  # worker processes running cells
    out: str = "results"  # folder for episodes.jsonl (a record per episode), results.json, results.md and the plots
    resume: bool = False  # --out holds an interrupted run: finish it (same configuration; finished episodes are skipped)
    overwrite: bool = False  # --out holds results: replace them (without --resume or --overwrite such a folder is refused)
    # runtime
    trigger: int | None = None  # re-plan when at most this many actions remain (None: the delay estimate)
    n_execute: int | None = None  # actions executed per chunk (None: the policy's n_action_steps)
    estimator: str = "auto"  # vlash future-state estimator: auto, target, delta, model
    quantize: int = 1  # action quantization q (1: off)
    # sampler (None: the policy's own)
    sampler_method: str = "auto"  # sampler: auto (the policy's own), ddpm, ddim, euler, flow_sde
    num_steps: int | None = None  # denoising steps (None: the policy's own)
    # TACO axes and options
    candidates: IntList = field(default_factory=lambda: IntList([16]))  # TACO: candidate chunks M per request
    verifier: StrList = field(default_factory=lambda: StrList(["cfn"]))  # TACO verifiers: cfn, random, nearest
    verifier_path: str | None = None  # TACO: the fitted verifier (None: <policy>/verifier)
    fixed_noise: bool = False  # TACO: the same M initial noises start every chunk (the fixed-noise ablation)
    # VLS axes and options
    particles: IntList = field(default_factory=lambda: IntList([4]))  # VLS: particles B per request
    fk: StrList = field(default_factory=lambda: StrList(["on"]))  # VLS: Feynman-Kac resampling on/off
    gradient: StrList = field(default_factory=lambda: StrList(["on"]))  # VLS: reward-gradient guidance on/off
    reward_backend: str = "offline"  # VLS reward synthesis: offline, transformers, openai
    guidance_scale: float | None = None  # VLS: lambda_max of the guidance (None: the family's default)
    # RTC prefix inpainting options (steer rtc / rtc-cheap; see policy_steer/steering/inpainting.py)
    rtc_max_weight: float = 5.0  # RTC: beta, the clip of the guidance weight
    rtc_soft_mask: str = "exp"  # RTC: weights of the uncommitted overlap: exp, linear, ones, hard
    rtc_soft_rows: int | None = None  # RTC: how many uncommitted prefix rows get soft weights (None: all)
    # output
    plots: bool = True  # write PNG plots next to the results
    quiet: bool = False  # no progress bar


# BenchConfig fields every episode reads in the worker that runs it (not axes: the same in every cell).
# An executor passes exactly these to policy_steer.bench.worker.init_worker.
WORKER_OPTIONS = ("trigger", "n_execute", "estimator", "quantize", "sampler_method", "num_steps", "trust_checkpoint")


def worker_options(cfg: BenchConfig) -> dict:
    """The options a worker needs to run any episode of ``cfg`` (plain data: it crosses processes)."""
    return {k: getattr(cfg, k) for k in WORKER_OPTIONS}
