#!/usr/bin/env bash
# Create .venv and install deparrot with everything a laptop run and the tests need
# (Spark + Delta, the ML stack, test tools). Safe to re-run: it skips work already done.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
stamp=".venv/.setup-stamp"
want="$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  exit 0
fi

if ! command -v java >/dev/null 2>&1; then
  echo "setup: Java 17 is required by Spark (e.g. apt-get install openjdk-17-jre-headless)" >&2
  exit 1
fi

# uv makes the multi-GB torch install take seconds instead of minutes; fall back to pip.
if ! "$PYTHON" -m uv --version >/dev/null 2>&1; then
  "$PYTHON" -m pip install --quiet --disable-pip-version-check uv || true
fi
if "$PYTHON" -m uv --version >/dev/null 2>&1; then
  [[ -x .venv/bin/python ]] || "$PYTHON" -m uv venv --quiet .venv
  "$PYTHON" -m uv pip install --quiet -p .venv -c constraints.txt -e ".[local,ml,dev]"
else
  [[ -x .venv/bin/python ]] || "$PYTHON" -m venv .venv
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -c constraints.txt -e ".[local,ml,dev]"
fi
echo "$want" > "$stamp"
echo "setup: .venv ready"
