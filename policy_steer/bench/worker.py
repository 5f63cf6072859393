"""Episode execution inside benchmark worker processes.

Each worker keeps what it loaded (environments per task/variant, steered policies per policy and
steering setting) between jobs, so a cell's policy is loaded once per worker, not once per episode.
"""

from __future__ import annotations

import os
import time
from typing import Any

from policy_steer.bench.cells import Cell

_ENVS: dict[tuple, Any] = {}
_POLICIES: dict[tuple, Any] = {}
_BASE: dict[str, Any] = {}
_CONFIG: dict[str, Any] = {}


def init_worker(runtime_options: dict[str, Any], threads: int = 1) -> None:
    """Pool initializer: one torch thread per worker (workers already use the cores)."""
    os.environ.setdefault("MUJOCO_GL", "egl")
    import torch

    torch.set_num_threads(threads)
    _CONFIG.update(runtime_options)


def _env(cell: Cell, spec=None):
    """The cell's task env (cached per worker), rendering the cameras ``spec``'s policy reads."""
    from policy_steer.envs import make
    from policy_steer.policies.observation import camera_env_kwargs

    kwargs = camera_env_kwargs(spec.observation) if spec is not None else {}
    key = (cell.task, cell.variant, tuple(sorted(kwargs.items())))
    if key not in _ENVS:
        _ENVS[key] = make(cell.task, cell.variant, **kwargs)
    return _ENVS[key]


def steered_policy(cell: Cell, sampler_method: str = "auto", num_steps: int | None = None):
    """The cell's SteeredPolicy (cached per worker)."""
    from policy_steer.policies.loading import load_policy
    from policy_steer.sampler import SamplerConfig
    from policy_steer.steered_policy import SteeredPolicy
    from policy_steer.steering.registry import build_steering

    if cell.policy_key not in _POLICIES:
        if cell.policy not in _BASE:
            _BASE[cell.policy] = load_policy(cell.policy, trust_checkpoint=bool(_CONFIG.get("trust_checkpoint", False)))
        base = _BASE[cell.policy]
        setup = build_steering(base, cell.steer, cell.settings_dict)
        sampler = setup.sampler or SamplerConfig(method=sampler_method, num_steps=num_steps)
        _POLICIES[cell.policy_key] = SteeredPolicy(base, setup.strategies, sampler=sampler)
    return _POLICIES[cell.policy_key]


def run_job(job: tuple[int, Cell, int]) -> tuple[int, dict[str, Any]]:
    """(cell index, cell, seed) -> (cell index, the episode's record: :mod:`policy_steer.bench.records`)."""
    from policy_steer.bench.records import episode_record
    from policy_steer.runtime.sim_loop import RuntimeConfig, run_episode

    idx, cell, seed = job
    t0 = time.perf_counter()
    opts = _CONFIG
    rt = RuntimeConfig(
        mode=cell.mode, latency=cell.latency, trigger=opts.get("trigger"), n_execute=opts.get("n_execute"),
        estimator=opts.get("estimator", "auto"), quantize=opts.get("quantize", 1),
    )
    policy = steered_policy(cell, opts.get("sampler_method", "auto"), opts.get("num_steps"))
    result = run_episode(_env(cell, policy.spec), policy, rt, seed, record_steps=True)  # steps: the actions' hash
    return idx, episode_record(idx, cell, seed, result, _steer_figures(result), time.perf_counter() - t0)


def _steer_figures(result) -> dict[str, Any]:
    """Per-episode means of numeric steering figures that strategies report (e.g. resampling counts)."""
    sums: dict[str, list[float]] = {}
    for c in result.chunks:
        if c.delivered_step is None:
            continue  # still in flight when the episode ended: it never arrived
        for method, figures in (c.info.get("steer") or {}).items():
            for k, v in (figures or {}).items():
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    sums.setdefault(f"{method}.{k}", []).append(float(v))
    return {k: sum(v) / len(v) for k, v in sums.items()}
