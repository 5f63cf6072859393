"""The grid of benchmark cells from a BenchConfig.

Variant parameters (``--variant_params``, issue 18) are an axis like the list options: ``name=v1,v2,...``
makes one cell per value, ``name=lo..hi/n`` ``n`` evenly spaced values from ``lo`` to ``hi`` (both
included), and several parameters separated by ``;`` make their product. A parameter applies to the
cells of the variant it belongs to (``obstacle.*``: obstacle, ``surface.*``: shifted-surface,
``clutter.*``, ``goal.*``: moving-goal); the other variants of the run get one cell as usual. Every
cell carries the *whole* parameter set of its variant, defaults included, in its settings
(``variant_params``: ``"obstacle.height=0.08;obstacle.radius=0.025;..."``, empty for nominal), so every
record and results entry says exactly which world ran; all cells run the same seeds, so the curves
along a parameter are paired.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from policy_steer.bench.config import BenchConfig
from policy_steer.errors import ConfigError
from policy_steer.steering.registry import methods_of

REPO_ROOT = Path(__file__).resolve().parents[2]

# Options every steering builder may read (not axes: the same in every cell).
_OPTIONS = (
    "verifier_path", "fixed_noise", "reward_backend", "guidance_scale", "rtc_max_weight", "rtc_soft_mask", "rtc_soft_rows",
)


@dataclass(frozen=True)
class Cell:
    task: str
    variant: str
    policy: str
    steer: str
    mode: str
    latency: str
    settings: tuple[tuple[str, Any], ...] = field(default=())  # axis values and options, sorted

    @property
    def settings_dict(self) -> dict[str, Any]:
        return dict(self.settings)

    @property
    def policy_key(self) -> tuple:
        """Cells with the same key share one loaded, steered policy in a worker."""
        return (self.policy, self.steer, self.settings)

    @property
    def variant_params(self) -> dict[str, float | int]:
        """The variant's whole parameter set ``{"<group>.<field>": value}`` ({} for nominal)."""
        return decode_params(self.settings_dict.get("variant_params", ""))

    def describe(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("settings")
        d.update({k: v for k, v in self.settings if k not in _OPTIONS})
        return d


def default_policy(task: str) -> str:
    """The shipped reference policy of a task: checkpoints/<task>-diffusion (cwd first, then the repo)."""
    for base in (Path.cwd(), REPO_ROOT):
        p = base / "checkpoints" / f"{task}-diffusion"
        if p.is_dir():
            return str(p)
    raise ConfigError(f"no shipped policy for task {task!r} (checkpoints/{task}-diffusion); pass --policy")


def parse_variant_params(text: str) -> list[tuple[str, list[str]]]:
    """``--variant_params`` -> [(name, [value text, ...]), ...] in the order given (see the module docstring)."""
    out: list[tuple[str, list[str]]] = []
    for part in (p.strip() for p in (text or "").split(";")):
        if not part:
            continue
        name, eq, values = part.partition("=")
        name = name.strip()
        if not eq or not name or not values.strip():
            raise ConfigError(f"--variant_params: {part!r} is not name=v1,v2,... or name=lo..hi/n")
        m = re.fullmatch(r"\s*([-+0-9.eE]+)\.\.([-+0-9.eE]+)/(\d+)\s*", values)
        if m:
            lo, hi, n = float(m.group(1)), float(m.group(2)), int(m.group(3))
            if n < 2:
                raise ConfigError(f"--variant_params {name}: a range needs n >= 2 values, got {n}")
            vals = [repr(round(float(v), 10)) for v in np.linspace(lo, hi, n)]
        else:
            vals = [v.strip() for v in values.split(",") if v.strip()]
        if any(n == name for n, _ in out):
            raise ConfigError(f"--variant_params names {name} twice")
        out.append((name, vals))
    return out


def encode_params(params: dict[str, float | int]) -> str:
    """The canonical text of a parameter set (exact: floats by repr)."""
    return ";".join(f"{k}={v!r}" for k, v in params.items())


def decode_params(text: str) -> dict[str, float | int]:
    """The inverse of :func:`encode_params`."""
    out: dict[str, float | int] = {}
    for part in filter(None, (text or "").split(";")):
        k, _, v = part.partition("=")
        out[k] = int(v) if re.fullmatch(r"-?\d+", v) else float(v)
    return out


def variant_param_sets(task: str, variant: str, swept: list[tuple[str, list[str]]]) -> list[str]:
    """The canonical parameter sets of ``task``'s ``variant`` for the swept parameters that belong to it
    (one set, the defaults, when none does); each is validated by the env's own rules."""
    from policy_steer.envs import ENTRY_POINTS
    from policy_steer.envs.variants import GROUPS, resolve_params
    from gymnasium.envs.registration import load_env_creator

    defaults = load_env_creator(ENTRY_POINTS[task]).default_variant_params
    mine = [(n, vs) for n, vs in swept if n.partition(".")[0] == GROUPS.get(variant)]
    sets = []
    for combo in itertools.product(*[vs for _, vs in mine]):
        p = resolve_params(task, variant, defaults, dict(zip([n for n, _ in mine], combo)))
        sets.append(encode_params(p.as_dict()) if p is not None else "")
    return sets


def parse_steer_options(text: str, steers: list[str]) -> dict[str, str]:
    """``--steer_options "name=value;..."`` -> {name: value text}; a name no method of ``steers`` reads is refused."""
    out: dict[str, str] = {}
    for part in (p.strip() for p in (text or "").split(";")):
        if not part:
            continue
        name, eq, value = part.partition("=")
        name, value = name.strip(), value.strip()
        if not eq or not name or not value:
            raise ConfigError(f"--steer_options: {part!r} is not name=value")
        if name in out:
            raise ConfigError(f"--steer_options names {name} twice")
        out[name] = value
    own = sorted(n for n in out if n in _OPTIONS or any(n in m.axes for steer in steers for m in methods_of(steer)))
    if own:
        raise ConfigError(f"--steer_options {', '.join(own)}: the bench has its own option for it (--{own[0]} ...)")
    known = {k for steer in steers for m in methods_of(steer) for k in m.settings}
    unknown = sorted(set(out) - known)
    if unknown:
        raise ConfigError(f"--steer_options {', '.join(unknown)}: no method of --steer {','.join(steers)} reads it; "
                          f"their settings are {sorted(known)}")
    return out


def expand_cells(cfg: BenchConfig) -> list[Cell]:
    from policy_steer.envs import TASKS, VARIANTS
    from policy_steer.envs.variants import GROUPS

    if cfg.episodes < 1:
        raise ConfigError(f"--episodes must be >= 1, got {cfg.episodes}")
    cells: list[Cell] = []
    for task in cfg.task:
        if task not in TASKS:
            raise ConfigError(f"unknown task {task!r}; use one of {sorted(TASKS)}")
        variants = list(VARIANTS) if list(cfg.variant) == ["all"] else list(cfg.variant)
        for v in variants:
            if v not in VARIANTS:
                raise ConfigError(f"unknown variant {v!r}; use one of {list(VARIANTS)} or all")
        policies = list(cfg.policy) or [default_policy(task)]
        swept = parse_variant_params(cfg.variant_params)
        for name, _ in swept:
            group = name.partition(".")[0]
            if group not in {GROUPS.get(v) for v in variants}:
                owner = [v for v, g in GROUPS.items() if g == group]
                where = f"belongs to variant {owner[0]!r}, which" if owner else "belongs to no variant; this run's"
                raise ConfigError(f"--variant_params {name} {where} is not in --variant {','.join(variants)}")
        param_sets = {v: variant_param_sets(task, v, swept) for v in variants}
        steer_options = parse_steer_options(cfg.steer_options, list(cfg.steer))
        for steer in cfg.steer:
            axes = sorted({a for m in methods_of(steer) for a in m.axes})
            axis_values = [list(getattr(cfg, a)) for a in axes]
            reads = {k for m in methods_of(steer) for k in m.settings}
            # --steer_options only where this cell's method reads them (so "none" cells stay the plain policy)
            options = tuple((o, getattr(cfg, o)) for o in _OPTIONS) + tuple(
                sorted((k, v) for k, v in steer_options.items() if k in reads))
            for combo in itertools.product(*axis_values):
                settings = tuple(sorted(zip(axes, combo))) + options
                for policy, variant, mode, latency in itertools.product(policies, variants, cfg.mode, cfg.latency):
                    for params in param_sets[variant]:
                        cells.append(Cell(task, variant, policy, steer, mode, str(latency),
                                          settings + (("variant_params", params),)))
    return cells
