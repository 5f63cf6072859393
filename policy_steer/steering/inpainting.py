"""RTC-style prefix inpainting (Black et al. 2025, "Real-Time Execution of Action Chunking Flow Policies").

While a chunk is computed the robot keeps executing the previous one, so the new chunk's first rows
are already decided. RTC guides every denoising step toward that previous plan ``Y``:

    e     = W * (Y - x0_hat(x_t))                         W: soft mask over the chunk's rows
    corr  = e^T d x0_hat / d x_t                          the vector-Jacobian product through the denoiser
    score shift g = (a / s) * w * corr,  w = min(beta, (a^2 + s^2) / (a s))

with x_t = a x0 + s n (a, s: signal and noise level of the step). For the paper's flow path
(a = tau, s = 1 - tau) this is exactly its velocity correction ``v + w * corr``; written as a score
shift it applies to both families through :meth:`Plan.shift_score` (flow: velocity; diffusion: the
epsilon or sample prediction). Either way the clean-chunk estimate moves by ``s * w * corr``.

``jacobian="cheap"`` is lerobot's variant: the Jacobian is replaced by the identity (``corr = e``,
what lerobot's autograd computes once the velocity is detached from x_t), so no backward pass through
the model is needed. It is cheaper and cruder: the guidance ignores how the model's output reacts to
x_t, so it pushes the noisy sample itself rather than the model's prediction.

The mask (the paper's soft masking): the prefix's first ``committed`` rows (those that execute
whatever the new chunk says) get weight 1; the following rows of the previous plan (planned but not
committed, the overlap) get decaying weights; all later rows 0. Row positions come from the sampler
run: prefix row p runs at chunk row ``run.prefix_offset + p``, and only rows that exist in the model's
horizon are guided. With VLASH the committed actions run *before* the chunk starts (offset -d), so
only the overlap (or, for policies with past rows in their horizon, the last committed actions) is
guided: the chunk continues the previous plan softly instead of repeating it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from policy_steer.errors import ConfigError
from policy_steer.schedules import Plan
from policy_steer.steering.base import Strategy
from policy_steer.steering.registry import SteerMethod, SteerSetup, register

if TYPE_CHECKING:
    from policy_steer.sampler import SamplerRun, StepView

JACOBIANS = ("vjp", "cheap")
SOFT_MASKS = ("exp", "linear", "ones", "hard")
WEIGHT_SCHEDULES = ("rtc", "constant")


@dataclass
class InpaintingConfig:
    jacobian: str = "vjp"  # vjp: the paper's vector-Jacobian product; cheap: lerobot's (Jacobian dropped)
    max_weight: float = 5.0  # beta, the clip of the guidance weight (the paper uses 5)
    schedule: str = "rtc"  # rtc: w = min(beta, (a^2 + s^2) / (a s)); constant: w = beta at every step
    soft_mask: str = "exp"  # weights of the uncommitted overlap: exp (paper), linear, ones, hard (none)
    soft_rows: int | None = None  # how many uncommitted prefix rows get soft weights (None: all given)

    def __post_init__(self) -> None:
        if self.jacobian not in JACOBIANS:
            raise ConfigError(f"rtc jacobian must be one of {JACOBIANS}, got {self.jacobian!r}")
        if self.soft_mask not in SOFT_MASKS:
            raise ConfigError(f"rtc soft_mask must be one of {SOFT_MASKS}, got {self.soft_mask!r}")
        if self.schedule not in WEIGHT_SCHEDULES:
            raise ConfigError(f"rtc schedule must be one of {WEIGHT_SCHEDULES}, got {self.schedule!r}")
        if not self.max_weight > 0:
            raise ConfigError(f"rtc max_weight must be > 0, got {self.max_weight}")
        if self.soft_rows is not None and self.soft_rows < 0:
            raise ConfigError(f"rtc soft_rows must be >= 0, got {self.soft_rows}")


def prefix_weights(n_rows: int, committed: int, soft_mask: str = "exp", soft_rows: int | None = None) -> Tensor:
    """[n_rows] mask over prefix rows: 1 for the committed ones, then the soft ramp, then 0.

    The ramp over rows p in [committed, end) is c_p = (end - p) / (end - committed + 1) ("linear") or
    c_p * (e^c_p - 1) / (e - 1) ("exp"), as in the paper; ``end`` = committed + soft_rows (capped).
    """
    committed = max(0, min(committed, n_rows))
    end = n_rows if soft_rows is None else min(n_rows, committed + soft_rows)
    w = torch.zeros(n_rows)
    w[:committed] = 1.0
    if end > committed and soft_mask != "hard":
        p = torch.arange(committed, end, dtype=torch.float32)
        c = (end - p) / (end - committed + 1)
        if soft_mask == "exp":
            c = c * torch.expm1(c) / (math.e - 1)
        elif soft_mask == "ones":
            c = torch.ones_like(c)
        w[committed:end] = c
    return w


def signal_noise(plan: Plan, k: int) -> tuple[float, float]:
    """(a, s) of step k: x_t = a x0 + s n."""
    s = float(plan.noise_level(k))
    if plan.family == "diffusion":
        return math.sqrt(max(0.0, 1.0 - s * s)), s  # variance preserving
    return float(plan.path.a(plan.times[k])), s


def guidance_weight(a: float, s: float, max_weight: float, schedule: str = "rtc") -> float:
    """w = min(beta, (a^2 + s^2) / (a s)); infinite at both ends of the path, so clipped there."""
    if schedule == "constant":
        return max_weight
    if a <= 0.0 or s <= 0.0:
        return max_weight
    return min(max_weight, (a * a + s * s) / (a * s))


class PrefixInpainting(Strategy):
    """Guidance toward the previous plan (``run.prefix``); see the module docstring."""

    name = "rtc"
    wants_prefix = True  # the runtime passes the previous plan as ``prefix`` when a strategy says so

    def __init__(self, config: InpaintingConfig | None = None) -> None:
        self.config = config or InpaintingConfig()
        self.name = "rtc" if self.config.jacobian == "vjp" else "rtc-cheap"  # figures say which variant ran
        self._target: Tensor | None = None  # [1, H_model, A_model]
        self._mask: Tensor | None = None  # [1, H_model, A_model]
        self._committed_rows: Tensor | None = None  # [H_model] bool, model rows of committed prefix rows
        self._figures: dict[str, Any] = {}

    def settings(self) -> dict:
        return asdict(self.config)

    def needs_grad(self, k: int) -> bool:
        return self._mask is not None and self.config.jacobian == "vjp"

    def acted(self) -> bool:
        return self._mask is not None  # no previous plan (an episode's first chunk): nothing to inpaint

    def begin(self, run: "SamplerRun") -> None:
        self._target = self._mask = self._committed_rows = None
        self._figures = {"prefix_rows": 0, "guided_rows": 0}
        prefix = run.prefix
        if prefix is None or prefix.shape[0] == 0:
            return
        policy = run.policy
        n_rows, a_dim = int(prefix.shape[0]), int(prefix.shape[1])
        h_model, a_model = policy.model_horizon, policy.model_action_dim
        committed = n_rows if run.prefix_committed is None else int(run.prefix_committed)
        w_rows = prefix_weights(n_rows, committed, self.config.soft_mask, self.config.soft_rows)
        target = torch.zeros(1, h_model, a_model, device=prefix.device, dtype=prefix.dtype)
        mask = torch.zeros_like(target)
        is_committed = torch.zeros(h_model, dtype=torch.bool)
        first_model_row = policy.chunk_slice.start + run.prefix_offset
        for p in range(n_rows):
            j = first_model_row + p
            if 0 <= j < h_model and w_rows[p] > 0:
                target[0, j, :a_dim] = prefix[p]
                mask[0, j, :a_dim] = float(w_rows[p])  # padding columns of a VLA stay unguided
                is_committed[j] = p < committed
        self._figures = {
            "prefix_rows": n_rows,
            "committed_rows": min(committed, n_rows),
            "guided_rows": int((mask[0, :, 0] > 0).sum()),
        }
        if mask.any():
            self._target, self._mask, self._committed_rows = target, mask, is_committed

    def guide(self, view: "StepView") -> None:
        if self._mask is None:
            return
        plan, k = view.plan, view.k
        a, s = signal_noise(plan, k)
        if s <= 1e-6 or a <= 1e-6:
            return  # nothing left to steer (data end) or no signal yet to compare (pure noise)
        w = guidance_weight(a, s, self.config.max_weight, self.config.schedule)
        if self.config.jacobian == "vjp":
            with torch.enable_grad():  # predict_chunk runs under no_grad; x0_hat is built lazily here
                x0 = view.x0_hat  # depends on view.x_t through the denoiser (the sampler built it with autograd)
                err = (self._mask * (self._target - x0)).detach()
                # retain_graph: a later strategy in the same step (e.g. a reward gradient) may still need it
                (corr,) = torch.autograd.grad(x0, view.x_t, grad_outputs=err, retain_graph=True)
        else:
            corr = self._mask * (self._target - view.x0_hat.detach())  # Jacobian dropped: corr = e
        view.out = plan.shift_score(view.out, (a / s) * w * corr.detach(), k)

    def score(self, run: "SamplerRun", x0: Tensor) -> Tensor | None:
        # Figures only (no selection): how far the finished chunk is from the committed prefix rows.
        if self._mask is not None and bool(self._committed_rows.any()):
            rows = self._committed_rows.to(x0.device)
            a_dim = int(run.prefix.shape[1])
            gap = (x0[:, rows, :a_dim] - self._target[:, rows, :a_dim]).abs().mean()
            self._figures["committed_gap"] = float(gap)
        run.info[self.name] = dict(self._figures)
        return None


def _build(policy, settings: dict[str, Any]) -> SteerSetup:
    cfg = InpaintingConfig(
        jacobian=str(settings.get("rtc_jacobian", "vjp")),
        max_weight=float(settings.get("rtc_max_weight", 5.0)),
        schedule=str(settings.get("rtc_schedule", "rtc")),
        soft_mask=str(settings.get("rtc_soft_mask", "exp")),
        soft_rows=settings.get("rtc_soft_rows"),
    )
    return SteerSetup(strategies=[PrefixInpainting(cfg)])


_OPTIONS = ("rtc_jacobian", "rtc_max_weight", "rtc_schedule", "rtc_soft_mask", "rtc_soft_rows")
register(SteerMethod("rtc", (), _build, options=_OPTIONS))
# lerobot's variant (Jacobian dropped), under its own name so that results never confuse the two.
register(SteerMethod("rtc-cheap", (), lambda policy, settings: _build(policy, {**settings, "rtc_jacobian": "cheap"}),
                     options=_OPTIONS))
