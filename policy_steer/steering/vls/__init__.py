"""VLS (arXiv 2602.03973): reward-guided denoising with particles, the reward written per episode.

A reward program is synthesized for each episode from the scene and the instruction
(:mod:`policy_steer.vlm_rewards`, offline rules by default) and steers sampling:

- :mod:`.chunk_reward`: the sampler's normalised chunk -> end-effector trajectory -> stage reward;
- :mod:`.episode`: synthesis at reset (failures run unsteered, counted), stage updates per chunk;
- :mod:`.strength`: the guidance scale schedule in denoising progress (VLS's sigmoid, lambda_max);
- :mod:`.guidance`: the reward gradient (through the denoiser or through x0_hat; unit or raw) and how
  it enters the step (classifier-guidance form, or VLS's velocity correction for flow);
- :mod:`.repulsion`: RBF repulsion between particles early in denoising;
- :mod:`.resampling`: Feynman-Kac potentials (difference / max / sum), ESS trigger, resampling;
- :mod:`.strategy`: the sampler strategy that runs them, and the final selection by reward.

Importing this package registers the steering method ``vls`` with the benchmark axes ``particles``
(B), ``fk`` (on/off) and ``gradient`` (on/off), and the options ``reward_backend`` (offline,
transformers, openai) and ``guidance_scale`` (lambda_max; None: the family's default). More options,
read when present in the settings: ``vls_through`` (denoiser | x0_hat | x0_hat_scaled), ``vls_normalize``
(raw (default) | unit), ``vls_cap`` (max RMS of a step's shift; default 3 for raw, none for unit), ``vls_schedule`` (sigmoid | linear | constant), ``vls_potential`` (max | difference |
sum), ``vls_fk_lambda``, ``vls_fk_start`` (denoising progress from which FK potentials count; 0.5),
``vls_repulsion`` (scale, 0 = off), ``vls_guide_from`` / ``vls_guide_until`` (the window of denoising
progress [from, until) in which the reward gradient guides; default [0, 1]: every step; steps outside
it run without the gradient and without its backward pass).

Cost (``benchmarks/vls_cost.py``, ``docs/results/vls_cost/``): the particles already run as one batch
through the denoiser (one forward per step for all B, and one backward for all B when the gradient
goes through the denoiser); ``vls_through=x0_hat`` / ``x0_hat_scaled`` drop the backward pass, the guidance window and a
warm start (``warm+vls``, :mod:`policy_steer.steering.warm_start`) drop guided steps.

Sampler: with more than one particle a stochastic sampler (``ddpm`` for diffusion, ``flow_sde`` for
flow) so that resampled duplicates diverge again; with one particle the policy's own.

Combining with TACO (``taco+vls`` / ``vls+taco``): both strategies score every candidate and both
score lists are recorded (``chunk.info["steer"]["taco"]["scores"]`` and ``["vls"]["scores"]``); the
**first-named** selecting method decides, as for any composition. ``taco+vls``: VLS guides and
resamples the particles, the pseudo-count picks the most in-support one among them (the reward of
the executed chunk is recorded as ``vls.reward_executed``, ``vls.reward_selects = 0``);
``vls+taco``: the reward picks, the count is recorded (``vls.reward_selects = 1``).
"""

from __future__ import annotations

from typing import Any

from policy_steer.errors import STEER_UNSUPPORTED, ConfigError, SteeringRefused
from policy_steer.policies.base import DenoisingPolicy
from policy_steer.sampler import SamplerConfig
from policy_steer.steering.registry import SteerMethod, SteerSetup, register
from policy_steer.steering.vls.chunk_reward import ChunkReward, trajectory_map_for
from policy_steer.steering.vls.episode import EpisodeReward, EpisodeStats
from policy_steer.steering.vls.guidance import GradientConfig
from policy_steer.steering.vls.repulsion import RepulsionConfig
from policy_steer.steering.vls.resampling import FKConfig
from policy_steer.steering.vls.strategy import VLSConfig, VLSStrategy
from policy_steer.steering.vls.strength import StrengthConfig
from policy_steer.vlm_rewards import SynthesisConfig

# Defaults of the benchmark / CLI path (tuned on push, seeds 0..11; see docs/results/vls/):
# raw gradients (lambda is an inverse temperature on the reward: the guidance vanishes where the reward
# is flat, i.e. where the program's constraints hold), the shift capped at RMS 3 per entry in
# normalised action units, lambda_max per family when ``guidance_scale`` is None. With "unit" gradients
# (VLS's normalisation) every particle is pushed at full strength along whatever slope the goal terms
# leave, which bent the policy's detour round the block into a straight line and cost success on push.
DEFAULT_NORMALIZE = "raw"
DEFAULT_CAP = 3.0
DEFAULT_SCALE = {"diffusion": 20.0, "flow": 20.0}
UNIT_SCALE = {"diffusion": 1.0, "flow": 1.0}  # lambda_max for vls_normalize=unit
STOCHASTIC = {"diffusion": "ddpm", "flow": "flow_sde"}
# FK potentials count from half-way through denoising: earlier, x0_hat is still mostly noise, its reward
# says little, and resampling on it collapsed the particles to one or two ancestors (push obstacle,
# seeds 1000..1039: 36/40 from half-way against 32/40 from the first step; tuning seeds 0..19: 20/20
# against 18/20).
DEFAULT_FK_START = 0.5


def on_off(value: Any, what: str) -> bool:
    """"on"/"off" (or a bool) -> bool."""
    if isinstance(value, bool):
        return value
    v = str(value).strip().lower()
    if v in ("on", "true", "1", "yes"):
        return True
    if v in ("off", "false", "0", "no"):
        return False
    raise ConfigError(f"VLS {what} must be on or off, got {value!r}")


def _progress(value: Any, what: str, upper_included: bool = False) -> float:
    """A denoising progress in [0, 1) (or [0, 1]) from a setting (ConfigError naming ``what`` otherwise)."""
    span = "[0, 1]" if upper_included else "[0, 1)"
    try:
        p = float(value)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"VLS {what} must be a number in {span}, got {value!r}") from e
    if not (0.0 <= p <= 1.0 if upper_included else 0.0 <= p < 1.0):
        raise ConfigError(f"VLS {what} must be in {span} (denoising progress), got {p}")
    return p


def config_from_settings(policy: DenoisingPolicy, settings: dict[str, Any]) -> VLSConfig:
    """The strategy's configuration from benchmark / CLI settings (see the module docstring)."""
    family = policy.schedule.family
    try:
        particles = int(settings.get("particles", 4))
    except (TypeError, ValueError) as e:
        raise ConfigError(f"VLS particles must be an integer, got {settings.get('particles')!r}") from e
    scale = settings.get("guidance_scale")
    normalize = str(settings.get("vls_normalize") or DEFAULT_NORMALIZE)
    cap = settings.get("vls_cap", DEFAULT_CAP if normalize == "raw" else None)
    form = str(settings.get("vls_form", "auto"))
    if form == "velocity" and family != "flow":
        raise SteeringRefused(STEER_UNSUPPORTED, f"VLS guidance form 'velocity' applies to flow policies only; "
                              f"this policy is {family} (use 'score' or 'auto')")
    through = str(settings.get("vls_through", "denoiser"))
    if through == "x0_hat_scaled" and policy.schedule.prediction == "sample":
        raise SteeringRefused(STEER_UNSUPPORTED, "VLS vls_through 'x0_hat_scaled' needs an epsilon or velocity "
                              "predicting policy (this one predicts the clean sample; use 'x0_hat')")
    grad = GradientConfig(
        form=form,
        through=through,
        normalize=normalize,
        cap=None if cap is None or str(cap).lower() in ("none", "off") else float(cap),
    )
    defaults = DEFAULT_SCALE if normalize == "raw" else UNIT_SCALE
    guide_from = _progress(settings.get("vls_guide_from", 0.0), "vls_guide_from")
    guide_until = _progress(settings.get("vls_guide_until", 1.0), "vls_guide_until", upper_included=True)
    if guide_from >= guide_until:
        raise ConfigError(f"VLS vls_guide_from ({guide_from}) must be below vls_guide_until ({guide_until})")
    strength = StrengthConfig(
        scale=float(defaults.get(family, 1.0) if scale is None else scale),
        schedule=str(settings.get("vls_schedule", "sigmoid")),
        start=guide_from, end=guide_until,
    )
    fk = FKConfig(
        enabled=on_off(settings.get("fk", "on"), "fk"),
        potential=str(settings.get("vls_potential", "max")),
        lam=float(settings.get("vls_fk_lambda", 1.0)),
        start=float(settings.get("vls_fk_start", DEFAULT_FK_START)),
    )
    repulsion = RepulsionConfig(scale=float(settings.get("vls_repulsion", RepulsionConfig.scale)))
    return VLSConfig(
        particles=particles,
        gradient=on_off(settings.get("gradient", "on"), "gradient"),
        grad=grad, strength=strength, repulsion=repulsion, fk=fk,
        synthesis=SynthesisConfig(backend=str(settings.get("reward_backend") or "offline")),
    )


def sampler_for(policy: DenoisingPolicy, particles: int) -> SamplerConfig | None:
    """A stochastic sampler of the policy's family for particles > 1 (None: the policy's own)."""
    if particles <= 1:
        return None
    family = policy.schedule.family
    if family not in STOCHASTIC:
        raise SteeringRefused(STEER_UNSUPPORTED, f"VLS has no stochastic sampler for policy family {family!r}")
    return SamplerConfig(method=STOCHASTIC[family])


def build(policy: DenoisingPolicy, settings: dict[str, Any]) -> SteerSetup:
    config = config_from_settings(policy, settings)
    return SteerSetup([VLSStrategy(policy, config)], sampler=sampler_for(policy, config.particles))


METHOD = register(SteerMethod("vls", axes=("particles", "fk", "gradient"), build=build, options=(
    "guidance_scale", "vls_normalize", "vls_cap", "vls_through", "vls_form", "vls_schedule", "vls_potential",
    "vls_fk_lambda", "vls_fk_start", "vls_repulsion", "vls_guide_from", "vls_guide_until", "reward_backend",
)))

__all__ = [
    "ChunkReward", "DEFAULT_CAP", "DEFAULT_FK_START", "DEFAULT_NORMALIZE", "DEFAULT_SCALE", "UNIT_SCALE", "EpisodeReward", "EpisodeStats", "FKConfig", "GradientConfig", "METHOD",
    "RepulsionConfig", "StrengthConfig", "VLSConfig", "VLSStrategy", "build", "config_from_settings", "on_off",
    "sampler_for", "trajectory_map_for",
]
