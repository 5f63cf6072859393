"""Issue 18 diagnosis (the measurement behind docs/results/robustness/README.md, not a tool): on pick-place
obstacle, how high each setting carries: the highest end-effector z (table top at 0) while the gripper is
commanded closed, per episode, and the successes.

    .venv/bin/python docs/results/robustness/carry_height.py 1000 8 --steer none,vls --gradient on,off
    .venv/bin/python docs/results/robustness/carry_height.py 1000 8 --steer vls --guidance_scale 60
"""
import sys, json
import numpy as np
from policy_steer.bench.config import BenchConfig, worker_options
from policy_steer.bench.cells import expand_cells
from policy_steer.bench import worker
from policy_steer.config import parse_config
from policy_steer.runtime.sim_loop import RuntimeConfig, run_episode
s0, n = int(sys.argv[1]), int(sys.argv[2])
cfg = parse_config(BenchConfig, ["--task", "pick-place", "--variant", "obstacle", *sys.argv[3:]])
worker.init_worker(worker_options(cfg))
for cell in expand_cells(cfg):
    pol = worker.steered_policy(cell)
    env = worker._env(cell, pol.spec)
    u = env.unwrapped
    tops, ok = [], 0
    for seed in range(s0, s0 + n):
        obs, _ = env.reset(seed=seed)
        res = run_episode(env, pol, RuntimeConfig(mode="sync"), seed, record_steps=True)
        ok += bool(res.summary()["success"])
        # the ee z while the gripper was commanded closed (carrying), relative to the table
        zs = [r.ee[2] for r in res.records if len(r.action) > 3 and r.action[3] > 0]
        tops.append(max(zs) if zs else float("nan"))
    print(json.dumps({"steer": cell.steer, "settings": {k: v for k, v in cell.settings if k in ("particles", "fk", "gradient", "guidance_scale")},
                      "success": ok, "n": n, "max_ee_z_while_closed": [round(t, 3) for t in tops],
                      "mean": round(float(np.nanmean(tops)), 3)}), flush=True)
