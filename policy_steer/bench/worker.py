"""Episode execution inside benchmark worker processes.

Each worker keeps what it loaded (environments per task/variant, steered policies per policy and
steering setting) between jobs, so a cell's policy is loaded once per worker, not once per episode.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

from policy_steer.bench.cells import Cell

log = logging.getLogger(__name__)

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
    params = cell.settings_dict.get("variant_params", "")  # the variant's whole parameter set (bench/cells.py)
    key = (cell.task, cell.variant, params, tuple(sorted(kwargs.items())))
    if key not in _ENVS:
        _ENVS[key] = make(cell.task, cell.variant, variant_params=cell.variant_params, **kwargs)
    return _ENVS[key]


def steered_policy(cell: Cell, sampler_method: str = "auto", num_steps: int | None = None):
    """The cell's SteeredPolicy (cached per worker)."""
    from policy_steer.policies.loading import load_policy
    from policy_steer.sampler import SamplerConfig
    from policy_steer.steered_policy import SteeredPolicy
    from policy_steer.steering.registry import build_steering

    if cell.policy_key not in _POLICIES:
        if cell.policy not in _BASE:
            _BASE[cell.policy] = load_policy(cell.policy, trust_checkpoint=bool(_CONFIG.get("trust_checkpoint", False)),
                                             dtype=_CONFIG.get("dtype", "float32"), compile=bool(_CONFIG.get("compile", False)),
                                             activations=_CONFIG.get("activations", "exact"))
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
        estimator=opts.get("estimator", "auto"), arm_mismatch=opts.get("arm_mismatch", "none"), quantize=opts.get("quantize", 1),
    )
    policy = steered_policy(cell, opts.get("sampler_method", "auto"), opts.get("num_steps"))
    recorder = _recorder(idx, cell, seed)
    policy.keep_candidates = recorder is not None  # every candidate in the info only while recording (same chunks)
    try:
        result = run_episode(_env(cell, policy.spec), policy, rt, seed, record_steps=True, observer=recorder)  # steps: the actions' hash
    finally:
        policy.keep_candidates = False
        if recorder is not None:
            recorder.close()
    return idx, episode_record(idx, cell, seed, result, _steer_figures(result), time.perf_counter() - t0)


def _recorder(idx: int, cell: Cell, seed: int):
    """The episode's bag recorder under ``--record_bag`` (None: not recorded): one rosbag2 folder per
    episode, ``<record_bag>/cell<idx>_<task>_<variant>_<steer>_seed<seed>``; an existing one is refused."""
    root = _CONFIG.get("record_bag")
    wanted = _CONFIG.get("record_episodes") or []
    if not root or (wanted and seed not in wanted):
        return None
    from policy_steer.recording import BagSink, Recorder

    name = f"cell{idx:03d}_{cell.task}_{cell.variant}_{cell.steer}_seed{seed}".replace("/", "-").replace(":", "-")
    folder = Path(root) / name
    if folder.is_dir() and not (folder / "metadata.yaml").is_file():
        # A bag that never closed: its episode was in flight when a worker died or the run was stopped,
        # so it has no record and runs again here. Keep what was written, beside the new bag.
        aside = folder.with_name(f"{name}.incomplete")
        n = 1
        while aside.exists():
            n += 1
            aside = folder.with_name(f"{name}.incomplete{n}")
        folder.rename(aside)
        log.warning("%s: an unfinished recording of an episode that runs again; kept as %s", folder, aside.name)
    return Recorder([BagSink(str(folder))])


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
