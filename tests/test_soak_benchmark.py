"""benchmarks/soak.py: sim-robots on one policy server (real processes, loopback ZeroMQ, wall clock), the
server SIGKILLed and restarted on the same endpoint, a robot SIGKILLed, the rest stopped with SIGTERM.

Short version in the default run: 2 robots on the fixed-chunk server for 30 s, one server restart, one
robot killed; every episode accounted for (the surviving robot's report, the killed robot's telemetry) and
no step executed anything but a row of a validated chunk. The full run (8 robots, 10 minutes, 5 restarts,
the push-diffusion checkpoint) is ``-m slow``. No timing assertions: the figures are printed, not judged.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "soak.py"


def load_soak():
    spec = importlib.util.spec_from_file_location("soak_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, module)  # its dataclasses look their module up
    spec.loader.exec_module(sys.modules[spec.name])
    module = sys.modules[spec.name]
    return module


def run_soak(out: Path, *args: str, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), "--out", str(out), *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


def test_short_soak_accounts_for_every_episode_and_executes_only_validated_rows(tmp_path):
    out = tmp_path / "soak"
    proc = run_soak(out, "--robots", "2", "--minutes", "0.5", "--server_restarts", "1", "--kill_robots", "1",
                    "--policy", "fixed", "--down_s", "2", timeout=400)
    print(proc.stdout[-4000:])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.loads((out / "soak.json").read_text())
    assert res["ok"] and all(c["ok"] for c in res["checks"].values()), res["checks"]
    assert len(res["server"]["outages"]) == 1 and res["server"]["final_exit"] == 0

    alive, killed = res["robots"]
    # the surviving robot: its report, every episode in it, the last one ended by SIGTERM
    assert not alive["killed"] and alive["exit_code"] == 0 and alive["source"] == "report"
    outcomes = list(alive["outcomes"].values())
    assert outcomes[-1] == "interrupted" and set(outcomes[:-1]) <= {"finished"}
    assert alive["episodes_started"] == alive["finished"] + alive["interrupted"] >= 2
    report = json.loads((out / "robots" / "robot-0.json").read_text())
    assert [e["episode"] for e in report["episodes"]] == list(range(alive["episodes_started"]))
    # the killed robot: no report; its episodes from its telemetry, the one it was running counted as killed
    assert killed["killed"] and killed["source"] == "telemetry" and killed["exit_code"] == -9
    assert not (out / "robots" / "robot-1.json").exists()
    outcomes = list(killed["outcomes"].values())
    assert outcomes[-1] == "killed" and set(outcomes[:-1]) <= {"finished"}
    t = res["totals"]
    assert t["episodes_started"] == t["finished"] + t["interrupted"] + t["killed"] + t["safe_stopped"]
    assert t["killed"] == 1 and t["safe_stopped"] == 0

    # no unvalidated action: every step checked (records, and the killed robot's telemetry), none failed
    assert t["violations"] == 0 and t["steps_checked"] >= t["steps_executed"] > 0
    assert alive["validity"]["from"] == "records" and alive["validity"]["exec"] > 0
    # both robots were alive during the outage: they held through it and got chunks from the new server
    for r in (alive, killed):
        assert r["holds_during_outages"] >= 1, r["hold_list"]
        (rc,) = r["reconnects"]
        assert rc["chunk_after_kill_s"] is not None and rc["chunk_after_kill_s"] >= rc["chunk_after_ready_s"]
    assert "PASS: no unvalidated action" in proc.stdout and "reconnect" in proc.stdout
    assert (out / "soak_timeline.png").stat().st_size > 0 and "| robot |" in (out / "soak.md").read_text()

    # a folder with results is not overwritten
    again = run_soak(out, "--robots", "2", "--minutes", "0.1", "--policy", "fixed", timeout=60)
    assert again.returncode == 2 and "--overwrite" in again.stderr
    assert json.loads((out / "soak.json").read_text()) == res


def _steps(decisions):
    """Records of one episode where steps 1.. execute rows 0.. of chunk 7 (queued at step 1)."""
    steps, chunks = [], [{"chunk_id": 7, "first_step": 1, "first_index": 0, "completed": 0.5, "dropped": None,
                          "error": None}]
    for k, d in enumerate(decisions):
        execd = d == "exec"
        steps.append({"step": k, "decision": d, "chunk_id": 7 if execd else None, "index": k - 1 if execd else None,
                      "validated_chunk": 3 if execd else None, "started": 1.0 + k, "action": [0.0, 0.0, 0.0],
                      "command": [0.0, 0.0, 0.0] if d != "stopped" else None})
    return steps, chunks


def test_the_step_check_finds_each_kind_of_unvalidated_action():
    soak = load_soak()
    steps, chunks = _steps(["hold", "exec", "exec", "stopped"])
    ok = soak.check_steps(steps, chunks, None, delta=True)
    assert ok["violations"] == 0 and (ok["exec"], ok["hold"], ok["stopped"]) == (2, 1, 1)

    def bad(edit) -> int:
        s, c = _steps(["hold", "exec", "exec"])
        edit(s, c)
        return soak.check_steps(s, c, None, delta=True)["violations"]

    assert bad(lambda s, c: s[1].update(validated_chunk=None)) == 1  # not among the validated rows
    assert bad(lambda s, c: c[0].update(dropped="stale:age")) == 2  # rows of a chunk that was dropped
    assert bad(lambda s, c: c[0].update(error="timeout")) == 2
    assert bad(lambda s, c: s[2].update(chunk_id=8)) == 1  # a chunk no request produced
    assert bad(lambda s, c: c[0].update(completed=2.5)) == 1  # executed before the chunk arrived
    assert bad(lambda s, c: s[2].update(index=5)) == 1  # a row at another step than planned
    assert bad(lambda s, c: s[0].update(command=[0.01, 0.0, 0.0])) == 1  # a hold that moved
    assert bad(lambda s, c: s[1].update(decision="sent")) == 1
    rows = np.zeros((16, 3), np.float32)
    s, c = _steps(["hold", "exec", "exec"])
    s[2]["action"] = [0.0, 0.0, 0.001]  # not the fixed chunk's row
    assert soak.check_steps(s, c, rows, delta=True)["violations"] == 1


def test_the_schedule_spreads_outages_and_kills_robots_between_them():
    soak = load_soak()
    outages, kills = soak.schedule(10.0, 5, 1)
    assert outages == [100.0, 200.0, 300.0, 400.0, 500.0] and kills == [350.0]
    outages, kills = soak.schedule(0.5, 1, 1)
    assert outages == [15.0] and kills == [22.5]


@pytest.mark.slow
def test_full_soak_8_robots_10_minutes_5_restarts(tmp_path):
    out = tmp_path / "soak"
    proc = run_soak(out, timeout=3600)  # the defaults: 8 robots, 10 min, 5 restarts, 1 killed, push-diffusion
    print(proc.stdout[-6000:])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.loads((out / "soak.json").read_text())
    assert res["ok"], res["checks"]
    t = res["totals"]
    assert len(res["robots"]) == 8 and len(res["server"]["outages"]) == 5 and t["killed"] <= 1
    assert t["episodes_started"] == t["finished"] + t["interrupted"] + t["killed"] + t["safe_stopped"]
    assert t["violations"] == 0 and t["steps_executed"] > 0
