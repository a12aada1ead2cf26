#!/usr/bin/env bash
# The test suite (fast by default; `-m slow` or `-m gpu` for the others): sets up, then pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check .
exec .venv/bin/pytest "$@"
