"""``policy-steer bench``: seeded episodes of every (task, variant, policy, steering, mode, latency) cell.

Writes results.json (a list ``runs``), results.md and PNG plots under ``--out`` and prints the table.
"""

from __future__ import annotations

from policy_steer.bench.config import BenchConfig as Config
from policy_steer.bench.runner import print_table, run_bench


def run(cfg: Config) -> int:
    runs = run_bench(cfg)
    print_table(runs)
    return 0
