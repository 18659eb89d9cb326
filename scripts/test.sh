#!/usr/bin/env bash
# Install everything (venv, torch CPU, the package with all extras incl. Ray and dlib, Debian chromium for the browser
# tests when we can) and run the whole test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh "train,serve,dev,distributed,teacher,docs"
if [ ! -x /usr/bin/chromium ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
    || echo "chromium could not be installed: browser tests will be skipped" >&2
fi
exec .venv/bin/python -m pytest -q "$@"
