#!/usr/bin/env bash
# Start the Dagster UI: webserver and daemon (schedules, sensors, run queue), on 127.0.0.1 only.
set -euo pipefail
cd "$(dirname "$0")"
source scripts/setup-venv.sh
export DAGSTER_HOME="${DAGSTER_HOME:-$PWD/.dagster_home}"
export DISTILL_ROOT="${DISTILL_ROOT:-$PWD}"
mkdir -p "$DAGSTER_HOME"
[ -f "$DAGSTER_HOME/dagster.yaml" ] || cp scripts/dagster.local.yaml "$DAGSTER_HOME/dagster.yaml"
exec .venv/bin/dagster dev --host 127.0.0.1 --port "${DISTILL_UI_PORT:-3000}" --workspace workspace.yaml
