#!/usr/bin/env bash
# The main job on the bundled defaults: age and gender for every face in a real photo
# (the bundled public-domain astronaut unless a photo is given), with an annotated copy in out/.
set -euo pipefail
cd "$(dirname "$0")/.."
# Inference only (no torch, pandas, scipy or matplotlib), plus the serve extra for `facial-demographics serve`.
scripts/setup.sh serve >&2
exec .venv/bin/facial-demographics demo "$@"
