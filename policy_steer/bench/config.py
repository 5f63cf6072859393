"""The benchmark's configuration: every list field is an axis of the grid of cells."""

from __future__ import annotations

from dataclasses import dataclass, field

from policy_steer.config import IntList, StrList


@dataclass
class BenchConfig:
    task: StrList = field(default_factory=lambda: StrList(["push"]))
    variant: StrList = field(default_factory=lambda: StrList(["nominal"]))  # "all": every variant
    # Checkpoint folders or hub ids; empty: the shipped checkpoints/<task>-diffusion of each task.
    policy: StrList = field(default_factory=StrList)
    steer: StrList = field(default_factory=lambda: StrList(["none"]))  # none, taco, vls, taco+vls
    mode: StrList = field(default_factory=lambda: StrList(["sync"]))  # sync, async, vlash
    latency: StrList = field(default_factory=lambda: StrList(["0"]))  # control steps: N, uniform:LO-HI, replay:FILE
    episodes: int = 100
    seed_start: int = 0
    workers: int = 2
    out: str = "results"
    # runtime
    trigger: int | None = None
    n_execute: int | None = None
    estimator: str = "auto"
    quantize: int = 1
    # sampler (None: the policy's own)
    sampler_method: str = "auto"
    num_steps: int | None = None
    # TACO axes and options
    candidates: IntList = field(default_factory=lambda: IntList([16]))
    verifier: StrList = field(default_factory=lambda: StrList(["cfn"]))  # cfn, random, nearest
    verifier_path: str | None = None  # default: <policy>/verifier
    fixed_noise: bool = False
    # VLS axes and options
    particles: IntList = field(default_factory=lambda: IntList([4]))
    fk: StrList = field(default_factory=lambda: StrList(["on"]))  # Feynman-Kac resampling on/off
    gradient: StrList = field(default_factory=lambda: StrList(["on"]))  # reward-gradient guidance on/off
    reward_backend: str = "offline"
    guidance_scale: float | None = None
    # RTC prefix inpainting options (steer rtc / rtc-cheap; see policy_steer/steering/inpainting.py)
    rtc_max_weight: float = 5.0  # beta, the clip of the guidance weight
    rtc_soft_mask: str = "exp"  # weights of the uncommitted overlap: exp, linear, ones, hard
    rtc_soft_rows: int | None = None  # how many uncommitted prefix rows get soft weights (None: all)
    # output
    plots: bool = True
    quiet: bool = False
