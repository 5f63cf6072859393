"""``policy-steer bench``: seeded episodes of every (task, variant, policy, steering, mode, latency) cell.

Records every episode as it finishes in ``--out``/episodes.jsonl (:mod:`policy_steer.bench.records`), then
writes results.json (a list ``runs``), results.md and PNG plots there, built from those records, and prints
the table. A folder that already holds results is refused unless ``--resume true`` (finish the run recorded
there: same configuration, finished episodes skipped) or ``--overwrite true`` (replace it).
"""

from __future__ import annotations

from policy_steer.bench.config import BenchConfig as Config
from policy_steer.bench.runner import print_table, run_bench


def run(cfg: Config) -> int:
    runs = run_bench(cfg)
    print_table(runs)
    return 0
