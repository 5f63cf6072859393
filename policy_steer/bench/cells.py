"""The grid of benchmark cells from a BenchConfig."""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

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


def expand_cells(cfg: BenchConfig) -> list[Cell]:
    from policy_steer.envs import TASKS, VARIANTS

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
        for steer in cfg.steer:
            axes = sorted({a for m in methods_of(steer) for a in m.axes})
            axis_values = [list(getattr(cfg, a)) for a in axes]
            options = tuple((o, getattr(cfg, o)) for o in _OPTIONS)
            for combo in itertools.product(*axis_values):
                settings = tuple(sorted(zip(axes, combo))) + options
                for policy, variant, mode, latency in itertools.product(policies, variants, cfg.mode, cfg.latency):
                    cells.append(Cell(task, variant, policy, steer, mode, str(latency), settings))
    return cells
