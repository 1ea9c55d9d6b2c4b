#!/usr/bin/env bash
# Creates (or updates) the project's virtual environment.
#   bash scripts/setup.sh            .venv/ with exactly the committed lock (requirements.lock, hashes
#                                    checked) plus torch, pinned: what CI tests and results record
#   bash scripts/setup.sh --latest   .venv-latest/ with the newest releases pyproject.toml's ranges
#                                    allow: tomorrow's break, seen today (VENV=... chooses the folder)
# torch is installed apart, pinned (scripts/lockcheck.py TORCH): an unpinned torch would pull a
# multi-GB CUDA build where the CPU one is wanted, and its build differs by machine, so no one hash fits.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
MODE=locked
for arg in "$@"; do
  case "$arg" in
    --latest) MODE=latest ;;
    *) echo "setup: unknown option '$arg'; use no option (the locked environment) or --latest." >&2; exit 2 ;;
  esac
done
if [ "$MODE" = locked ]; then
  VENV=${VENV:-.venv}
  # Before anything is installed: a lock made from other dependencies than pyproject.toml's is stale.
  "$PY" scripts/lockcheck.py
else
  VENV=${VENV:-.venv-latest}
fi
TORCH_VERSION=${TORCH_VERSION:-$("$PY" scripts/lockcheck.py --torch)}
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
pip=("$VENV/bin/python" -m pip install --quiet)
"${pip[@]}" --upgrade pip
if [ "$MODE" = locked ]; then
  # Exactly the lock's versions (a reused venv is moved to them), each wheel checked against its hash;
  # then torch, whose own dependencies the lock already holds, and the project itself.
  "${pip[@]}" --require-hashes --no-deps -r requirements.lock
  "${pip[@]}" "torch==${TORCH_VERSION}"
  "${pip[@]}" --no-deps -e .
  "$VENV/bin/python" -m pip check >/dev/null || { "$VENV/bin/python" -m pip check >&2; exit 1; }
  "$VENV/bin/python" scripts/lockcheck.py --installed
else
  # torch stays pinned (named with the project, so an eager upgrade cannot move it to another build)
  "${pip[@]}" --upgrade --upgrade-strategy eager "torch==${TORCH_VERSION}" -e ".[dev,paper]"
fi
echo "setup: $VENV ready ($MODE; $("$VENV/bin/python" -c 'import torch, transformers, peft; print("torch", torch.__version__, "transformers", transformers.__version__, "peft", peft.__version__)'))"
