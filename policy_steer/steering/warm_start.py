"""Warm start from the previous plan (RTI-DP's idea: real-time iterative diffusion policy).

Consecutive chunks overlap: the rows of the previous chunk that were planned but not executed are a
good guess of the new chunk's head. Instead of denoising from pure noise, the warm start builds a
clean-chunk guess from that plan, noises it to the noise level of an intermediate step ``k0`` and lets
the sampler run only steps ``k0 .. K-1``:

    x0_warm[row]  = prefix row that runs at that chunk row (the shifted tail of the previous plan);
                    rows after the prefix repeat its last row, rows before it its first row
    x_{k0}        = a_{k0} * x0_warm + s_{k0} * noise          (x_t = a x0 + s n of the policy's plan)
    run.start_step = k0 = round(warm_from * K)

``noise`` is the sampler's own initial noise (the same draws from the generator), so the noise stream
of an episode does not change with the warm start. The prefix is what the runtime sends to a strategy
that ``wants_prefix`` (:mod:`policy_steer.runtime.planner`): prefix row p runs at chunk row
``run.prefix_offset + p``, exactly as RTC inpainting places it (:mod:`.inpainting`); only rows inside
the model's horizon are used, and a VLA's padding action columns stay 0.

With no prefix (an episode's first chunk), an empty one, or ``warm_from = 0`` the run is the plain
sampler's, bit for bit: ``begin`` changes nothing.

It composes with guidance and selection (``warm+vls``, ``warm+taco``, ``warm+taco+vls``): they act
on the steps that run, every particle or candidate starts from the same guess with its own noise.
Steps before ``k0`` never run, so a VLS schedule's early steps (and their backward passes) are saved
too. Figures: ``chunk.info["steer"]["warm"]`` = ``{"warm": 0/1, "start_step", "steps_run",
"prefix_rows_used"}``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from policy_steer.errors import ConfigError
from policy_steer.steering.base import Strategy
from policy_steer.steering.inpainting import signal_noise
from policy_steer.steering.registry import SteerMethod, SteerSetup, register

if TYPE_CHECKING:
    from policy_steer.sampler import SamplerRun

DEFAULT_FROM = 0.5


@dataclass
class WarmStartConfig:
    warm_from: float = DEFAULT_FROM  # denoising progress the warm sample starts at: 0 = pure noise (plain), < 1

    def __post_init__(self) -> None:
        try:
            self.warm_from = float(self.warm_from)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"warm start warm_from must be a number in [0, 1), got {self.warm_from!r}") from e
        if not (math.isfinite(self.warm_from) and 0.0 <= self.warm_from < 1.0):
            raise ConfigError(f"warm start warm_from must be in [0, 1) (denoising progress; 0: pure noise), "
                              f"got {self.warm_from}")

    def start_step(self, num_steps: int) -> int:
        """k0 for a plan of ``num_steps`` steps: round(warm_from * K), at most K - 1 (one step always runs)."""
        return min(int(round(self.warm_from * num_steps)), num_steps - 1)


class WarmStart(Strategy):
    """Sets the initial sample from the previous plan; see the module docstring."""

    name = "warm"
    wants_prefix = True  # the runtime sends the previous plan

    def __init__(self, config: WarmStartConfig | None = None) -> None:
        self.config = config or WarmStartConfig()
        self._warm = False
        self._figures: dict[str, Any] = {}

    def settings(self) -> dict:
        return asdict(self.config)

    def acted(self) -> bool:
        return self._warm

    def begin(self, run: "SamplerRun") -> None:
        plan = run.plan
        self._warm = False
        self._figures = {"warm": 0, "start_step": 0, "steps_run": plan.num_steps, "prefix_rows_used": 0}
        k0 = self.config.start_step(plan.num_steps)
        guess = self._guess(run) if k0 > 0 else None
        if guess is None:
            return  # the plain sampler: pure noise, every step
        x0, used = guess
        a, s = signal_noise(plan, k0)
        # run.x is the sampler's initial noise [B, H, A]: every particle/candidate gets its own.
        run.x = a * x0.to(run.x.dtype) + s * run.x
        run.start_step = k0
        self._warm = True
        self._figures = {"warm": 1, "start_step": k0, "steps_run": plan.num_steps - k0, "prefix_rows_used": used}

    @staticmethod
    def _guess(run: "SamplerRun") -> tuple[Tensor, int] | None:
        """([1, H_model, A_model] clean-chunk guess, prefix rows used), or None without a usable prefix."""
        prefix = run.prefix
        if prefix is None or prefix.shape[0] == 0:
            return None
        policy = run.policy
        h_model, a_model = policy.model_horizon, policy.model_action_dim
        a_dim = int(prefix.shape[1])
        first = policy.chunk_slice.start + run.prefix_offset  # model row of prefix row 0
        rows = [p for p in range(int(prefix.shape[0])) if 0 <= first + p < h_model]
        if not rows:
            return None  # the previous plan lies wholly outside this chunk (e.g. all of it committed before it)
        x0 = torch.zeros(1, h_model, a_model, device=prefix.device, dtype=prefix.dtype)
        lo, hi = first + rows[0], first + rows[-1]
        x0[0, lo:hi + 1, :a_dim] = prefix[rows[0]:rows[-1] + 1]
        x0[0, :lo, :a_dim] = prefix[rows[0]]  # before the plan: its first row
        x0[0, hi + 1:, :a_dim] = prefix[rows[-1]]  # after it: hold its last row (RTI-DP pads the shifted chunk so)
        return x0, len(rows)

    def score(self, run: "SamplerRun", x0: Tensor) -> Tensor | None:
        run.info[self.name] = dict(self._figures)  # figures only; never selects
        return None


def _build(policy, settings: dict[str, Any]) -> SteerSetup:
    return SteerSetup(strategies=[WarmStart(WarmStartConfig(warm_from=settings.get("warm_from") if settings.get("warm_from") is not None else DEFAULT_FROM))])


METHOD = register(SteerMethod("warm", (), _build, options=("warm_from",)))
