#!/usr/bin/env bash
# Issue 20, Lift half: the steering figures of checkpoints/lift-diffusion on robosuite's Lift (Panda, OSC_POSE, 20 Hz).
# Seeds 0-99 (the reference-policy table's convention), 100 episodes per cell, one run at a time, one worker.
# Usage (from the repository root): nice -n 10 docs/results/robosuite/lift/run.sh [OUT_ROOT] [parts...]
#   parts: baseline taco vls vlash (default: all, in this order); BENCH (default: policy-steer bench) is the command.
# TACO at M = 1 is run once (cfn): with one candidate there is nothing to choose, whatever the verifier.
# VLS's unsteered cells are the baseline's (the same policy, seeds and runtime: the same episodes).
# A part whose results.json exists is skipped; an interrupted part resumes (--resume true).
set -u
OUT=${1:-docs/results/robosuite/lift}; shift || true
PARTS=${*:-baseline taco vls vlash}
BENCH=${BENCH:-.venv/bin/policy-steer bench}
export OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 MUJOCO_GL=${MUJOCO_GL:-egl}
COMMON="--task lift --policy checkpoints/lift-diffusion --episodes 100 --seed_start 0 --workers 1 --quiet true"
run() { name=$1; shift; [ -f "$OUT/$name/results.json" ] && return 0
        $BENCH $COMMON "$@" --out "$OUT/$name" --resume "$([ -d "$OUT/$name" ] && echo true || echo false)"; }
for part in $PARTS; do
  case $part in
    baseline) run baseline --variant all --steer none ;;
    taco)     run taco_m16 --variant nominal,clutter --steer taco --candidates 16 --verifier cfn,random
              run taco_m1 --variant nominal,clutter --steer taco --candidates 1 --verifier cfn ;;
    vls)      run vls --variant obstacle,clutter,nominal --steer vls --particles 4 ;;
    vlash)    run vlash --variant nominal,moving-goal --mode sync,async,vlash --latency 4 --estimator kinematic ;;
    *) echo "unknown part $part (baseline taco vls vlash)" >&2; exit 2 ;;
  esac
done
