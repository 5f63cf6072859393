#!/usr/bin/env bash
# Issue 19: the future-state estimators on fresh seeds 5000-5099, d = 4 first (the acceptance figure), then 2 and 8.
# Every folder is one `policy-steer bench` run over push and pick-place, nominal and moving-goal (100 episodes per cell).
# Usage: run.sh OUT_ROOT [latencies...]; BENCH (default: policy-steer) is the command.
set -u
OUT=${1:?out root}; shift
LAT=${*:-4 2 8}
BENCH=${BENCH:-policy-steer bench}
MM="link=0.01,gain=0.2,joint_offset=0.02"
COMMON="--task push,pick-place --variant nominal,moving-goal --episodes 100 --seed_start 5000 --workers 1 --quiet true --plots false"
for d in $LAT; do
  run() { name=$1; shift; [ -f "$OUT/d$d/$name/results.json" ] && return; $BENCH $COMMON --latency $d "$@" --out "$OUT/d$d/$name" --resume "$([ -d "$OUT/d$d/$name" ] && echo true || echo false)"; }
  run kinematic --mode vlash --estimator kinematic
  run sync --mode sync
  run kinematic_mm --mode vlash --estimator kinematic --arm_mismatch "$MM"
  run model --mode vlash --estimator model
  run model_robot --mode vlash --estimator model-robot
  run model_robot_mm --mode vlash --estimator model-robot --arm_mismatch "$MM"
  run delta --mode vlash --estimator delta
done
