"""The benchmark's configuration: every list field is an axis of the grid of cells."""

from __future__ import annotations

from dataclasses import dataclass, field

from policy_steer.config import IntList, StrList


@dataclass
class BenchConfig:
    task: StrList = field(default_factory=lambda: StrList(["push"]))  # tasks: reach, push, pick-place, lift
    variant: StrList = field(default_factory=lambda: StrList(["nominal"]))  # variants; "all": every variant
    # variant parameters as an axis (issue 18): "obstacle.height=0.04,0.08,0.12" (one cell per value), a range
    # "surface.scale=0..2/5" (5 values, ends included), several joined by ";" (their product); see bench/cells.py
    variant_params: str = ""
    policy: StrList = field(default_factory=StrList)  # checkpoint folders or hub ids (empty: checkpoints/<task>-diffusion)
    trust_checkpoint: bool = False  # load --policy even where it names code to run (see policies/checkpoint_safety.py)
    dtype: str = "float32"  # the policy network's weights and compute: float32 or bfloat16 (policies/precision.py)
    compile: bool = False  # torch.compile the denoiser (the first chunk of each batch size compiles)
    activations: str = "exact"  # exact, or sigmoid: Mish / tanh-GELU rewritten through the sigmoid (same chunks to float rounding)
    steer: StrList = field(default_factory=lambda: StrList(["none"]))  # steering: none, taco, vls, rtc, taco+vls, ...
    mode: StrList = field(default_factory=lambda: StrList(["sync"]))  # execution modes: sync, async, vlash
    latency: StrList = field(default_factory=lambda: StrList(["0"]))  # control steps: N, uniform:LO-HI, replay:FILE
    episodes: int = 100  # seeded episodes per cell
    seed_start: int = 0  # episode i of a cell uses seed seed_start + i
    workers: int = 2  # worker processes running cells (with --executor ray: Ray actors, one CPU each)
    executor: str = "local"  # where episodes run: local (worker processes here) or ray (actors on a Ray cluster)
    ray_address: str | None = None  # --executor ray: the cluster to join (e.g. 10.0.0.1:6379); None: start Ray here
    episode_retries: int = 2  # times an episode whose worker process or node died is run again on another worker
    out: str = "results"  # folder for episodes.jsonl (a record per episode), results.json, results.md and the plots
    resume: bool = False  # --out holds an interrupted run: finish it (same configuration; finished episodes are skipped)
    overwrite: bool = False  # --out holds results: replace them (without --resume or --overwrite such a folder is refused)
    # runtime
    trigger: int | None = None  # re-plan when at most this many actions remain (None: the delay estimate)
    n_execute: int | None = None  # actions executed per chunk (None: the policy's n_action_steps)
    # vlash future-state estimator: auto (what the robot's description allows: kinematic on the tasks' arm),
    # kinematic, model-robot, model (the whole-scene simulator oracle), delta, target
    estimator: str = "auto"
    # vlash: the estimator's arm model made wrong, per episode: none | link=M,gain=F,joint_offset=RAD
    arm_mismatch: str = "none"
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
    # any other steering setting, "name=value;name=value" (e.g. "vls_through=x0_hat;warm_from=0.5"): each must be
    # read by a method of --steer, and goes only to the cells whose method reads it (see bench/cells.py)
    steer_options: str = ""
    # output
    plots: bool = True  # write PNG plots next to the results
    record_bag: str | None = None  # write one ROS 2 bag (rosbag2 folder, MCAP) per episode under this folder (policy-steer bag summary reads them)
    record_episodes: IntList = field(default_factory=IntList)  # with --record_bag: only the episodes of these seeds (empty: every episode)
    quiet: bool = False  # no progress bar

    def __post_init__(self) -> None:
        # a bad --dtype / --activations, or bfloat16 / compile this machine cannot run: one line before any worker starts
        from policy_steer.policies.precision import Compute, check_compute

        compute = check_compute(Compute(dtype=self.dtype, compile=self.compile, activations=self.activations), "cpu")
        self.dtype = compute.dtype


# BenchConfig fields every episode reads in the worker that runs it (not axes: the same in every cell).
# An executor passes exactly these to policy_steer.bench.worker.init_worker.
WORKER_OPTIONS = ("trigger", "n_execute", "estimator", "arm_mismatch", "quantize", "sampler_method", "num_steps", "trust_checkpoint",
                  "record_bag", "record_episodes", "dtype", "compile", "activations")


def worker_options(cfg: BenchConfig) -> dict:
    """The options a worker needs to run any episode of ``cfg`` (plain data: it crosses processes)."""
    return {k: getattr(cfg, k) for k in WORKER_OPTIONS}
