#!/usr/bin/env bash
# Command two: set everything up, then run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")"
source scripts/setup-venv.sh
exec .venv/bin/python -m pytest "$@"
