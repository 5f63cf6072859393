#!/usr/bin/env bash
# The default test run (excludes -m slow). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
# One BLAS/OpenMP thread per process: the tests start servers and workers in parallel processes,
# and oversubscribed OpenMP threads spin against each other on a 2-core machine.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
export HF_HUB_OFFLINE=1 MUJOCO_GL="${MUJOCO_GL:-egl}" PYOPENGL_PLATFORM="${PYOPENGL_PLATFORM:-egl}"
exec .venv/bin/python -m pytest "$@"
