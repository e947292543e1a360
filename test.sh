#!/usr/bin/env bash
# Command two: set everything up, then run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")"
source scripts/setup-venv.sh
bash scripts/install-browser.sh || echo "test: chromium could not be installed; the browser UI test will skip"
exec .venv/bin/python -m pytest "$@"
