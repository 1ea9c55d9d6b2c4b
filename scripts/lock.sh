#!/usr/bin/env bash
# Refreshes requirements.lock (every package at an exact version, with hashes) from pyproject.toml's
# ranges and the extras scripts/lockcheck.py names, resolving against today's releases; then rewrites
# environment.yml's pip list from it. Commit both, after `bash scripts/setup.sh && .venv/bin/python -m pytest`.
#
# torch is not in the lock: scripts/setup.sh installs it, pinned (scripts/lockcheck.py TORCH), and its build
# differs by machine (the CPU wheel here, a CUDA wheel on a GPU node), so no one hash fits. The lock
# is resolved against the CPU build's metadata (TORCH_FIND_LINKS: a folder or index page that holds
# torch-$TORCH_VERSION+cpu), so it carries torch's own pure-Python dependencies and no CUDA packages.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
TORCH_VERSION=$("$PY" scripts/lockcheck.py --torch)
TORCH_FIND_LINKS=${TORCH_FIND_LINKS:-/opt/wheels}
UV=${UV:-uv}
if ! command -v "$UV" >/dev/null; then
  "$PY" -m pip install --quiet "uv>=0.9" && UV="$PY -m uv"
fi
constraints=$(mktemp)
trap 'rm -f "$constraints"' EXIT
echo "torch==${TORCH_VERSION}+cpu" >"$constraints"
extras=$("$PY" -c 'import sys; sys.path.insert(0, "scripts"); import lockcheck; print(" ".join(f"--extra {e}" for e in lockcheck.EXTRAS))')
# shellcheck disable=SC2086
$UV pip compile pyproject.toml $extras --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
  --generate-hashes --find-links "$TORCH_FIND_LINKS" --constraint "$constraints" --no-emit-package torch \
  --custom-compile-command "bash scripts/lock.sh" --quiet -o requirements.lock
# The requirements it was made from, atop it: setup stops when pyproject.toml changes without a refresh.
{ "$PY" scripts/lockcheck.py --header; cat requirements.lock; } >requirements.lock.new
mv requirements.lock.new requirements.lock
"$PY" scripts/lockcheck.py --environment-yml >environment.yml
echo "lock: requirements.lock ($(grep -c '^[A-Za-z0-9].*==' requirements.lock) packages) and environment.yml refreshed"
