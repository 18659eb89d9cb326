#!/usr/bin/env bash
# Create .venv and install the project. Idempotent: a second run with an unchanged pyproject.toml
# is a no-op. torch==2.13.0 (CPU wheel) goes in first so nothing pulls a CUDA build.
# Usage: scripts/setup.sh [EXTRAS]   e.g. scripts/setup.sh train,serve,dev
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-train,serve}"
py="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$py" -m venv .venv
stamp=".venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)-${extras//,/_}"
if [ ! -f "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  if [[ ",$extras," == *",train,"* || ",$extras," == *",dev,"* ]]; then
    .venv/bin/python -m pip install -q "torch==2.13.0"
  fi
  .venv/bin/python -m pip install -q -e ".[${extras}]"
  touch "$stamp"
fi
