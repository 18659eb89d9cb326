#!/usr/bin/env bash
# The main job on the bundled defaults: age and gender for every face in a real photo
# (scikit-image's astronaut unless a photo is given), with an annotated copy in out/.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh "serve,dev" >&2
exec .venv/bin/facial-demographics demo "$@"
