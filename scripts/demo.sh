#!/usr/bin/env bash
# The main job end to end on the local default: sets up, then runs `deparrot demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/deparrot demo --config conf/demo.yaml "$@"
