"""Issue 19's estimator table: runs placed by the estimator each results entry records."""

from __future__ import annotations

import json

from policy_steer.bench.estimator_table import main


def _run(mode, estimator=None, mismatch=None, success=0.9, err=0.001):
    return {"task": "push", "variant": "nominal", "latency": "4", "mode": mode, "estimator": estimator,
            "arm_mismatch": mismatch, "success_rate": success, "ci95": [success - 0.1, success + 0.05],
            "state_estimate_error": err}


def test_the_table_names_each_estimator_and_checks_the_default_against_sync(tmp_path, capsys):
    runs = [_run("sync", success=0.80), _run("vlash", "kinematic", success=0.78),
            _run("vlash", "kinematic", "link=0.01", success=0.70), _run("vlash", "model", success=0.85, err=0.0)]
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"meta": {}, "runs": runs}))
    assert main([str(path), "--out", str(tmp_path / "t.md")]) == 0
    text = (tmp_path / "t.md").read_text()
    assert "| sync | model | kinematic | kinematic + mismatch |" in text
    assert "| 4 | push | nominal | 0.80 | -2 (ok) | -10 (MISSED) |" in text
    assert "0.0000" in text and "0.0010" in text
