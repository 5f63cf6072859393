#!/usr/bin/env bash
# Sets up policy-steer on a fresh machine: system GL libraries for offscreen rendering, a Python 3.12
# virtual environment at .venv, and the package with its test dependencies. Safe to run again: it
# only does what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '[setup] %s\n' "$*" >&2; }

# 1. Offscreen rendering (MuJoCo/robosuite on a CPU-only machine) needs Mesa's EGL/OSMesa libraries.
missing=()
for pkg in libosmesa6 libegl-mesa0 libgl1-mesa-dri; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        say "installing ${missing[*]} (offscreen rendering) with apt-get"
        (apt-get install -y -qq "${missing[@]}" >/dev/null 2>&1) || \
            (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq "${missing[@]}" >/dev/null)
    else
        say "WARNING: ${missing[*]} missing and not root: offscreen rendering will not work"
    fi
fi

# 2. Python 3.12 (lerobot 0.6 needs >= 3.12); .python-version selects it under pyenv.
PY=""
for cand in "python" "python3.12" "$HOME/.pyenv/versions/3.12.1/bin/python"; do
    if command -v "$cand" >/dev/null 2>&1 && "$cand" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))' 2>/dev/null; then
        PY="$cand"; break
    fi
done
[ -n "$PY" ] || { say "ERROR: Python 3.12 not found (pyenv install 3.12.1, or put python3.12 on PATH)"; exit 1; }

if [ ! -x .venv/bin/python ]; then
    say "creating .venv with $($PY --version)"
    "$PY" -m venv .venv
fi

# 3. The package. Re-installed only when pyproject.toml or setup.py changed.
stamp=.venv/.policy-steer-installed
want=$(cat pyproject.toml setup.py | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    say "installing policy-steer and dependencies into .venv (torch, lerobot, mujoco, robosuite; a few minutes the first time)"
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q -e ".[test,ray,ros]"
    # lerobot needs opencv-python-headless, robosuite pulls opencv-python; both write cv2/. Keep only
    # the headless build, installed last, so the result never depends on install order.
    if .venv/bin/python -m pip show -q opencv-python >/dev/null 2>&1; then
        .venv/bin/python -m pip uninstall -q -y opencv-python opencv-python-headless
        .venv/bin/python -m pip install -q "opencv-python-headless>=4.9,<4.14"
    fi
    echo "$want" > "$stamp"
fi
say "ready: .venv ($(.venv/bin/python --version))"
