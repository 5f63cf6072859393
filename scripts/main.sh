#!/usr/bin/env bash
# The main job: a short steering benchmark of the shipped reference policies on `nominal` and the shift
# variants, unsteered against VLS guidance and TACO selection, on the same seeds. Prints the table and
# writes results/main/{episodes.jsonl,results.json,results.md,*.png}, replacing an earlier run there
# (bench itself refuses a folder with results unless --overwrite or --resume is given).
#
#   EPISODES=100 ./scripts/main.sh          # more episodes per cell (default 10: a few minutes here)
#   ./scripts/main.sh --task pick-place     # extra arguments go to `policy-steer bench`
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
export HF_HUB_OFFLINE=1 MUJOCO_GL="${MUJOCO_GL:-egl}" PYOPENGL_PLATFORM="${PYOPENGL_PLATFORM:-egl}"
exec .venv/bin/policy-steer bench \
    --task push \
    --variant nominal,obstacle,shifted-surface,clutter \
    --steer none,vls,taco \
    --episodes "${EPISODES:-10}" \
    --workers "${WORKERS:-2}" \
    --out results/main --overwrite true \
    "$@"
