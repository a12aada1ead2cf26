#!/usr/bin/env bash
# Create .venv and install deparrot with everything a laptop run and the tests need
# (Spark + Delta, the ML stack, test tools), and Chromium for the workbench's browser tests
# (tests/jobs/test_explore_browser.py). Safe to re-run: it skips work already done.
set -euo pipefail
cd "$(dirname "$0")/.."

# The OS's Chromium, driven by Playwright: installed with apt-get when run as root,
# otherwise one line says how (setup does not fail for it; the browser tests skip).
ensure_chromium() {
  if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 \
      || command -v google-chrome >/dev/null 2>&1; then
    return 0
  fi
  if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
    local install=(apt-get install -y -qq --no-install-recommends chromium)
    if DEBIAN_FRONTEND=noninteractive "${install[@]}" >/dev/null 2>&1 \
        || { apt-get update -qq >/dev/null 2>&1 \
             && DEBIAN_FRONTEND=noninteractive "${install[@]}" >/dev/null 2>&1; }; then
      echo "setup: Chromium installed (for the workbench's browser tests)"
      return 0
    fi
    echo "setup: apt-get could not install chromium; the browser tests will skip" >&2
    return 0
  fi
  echo "setup: no Chromium (the workbench's browser tests skip): sudo apt-get install chromium" >&2
}

PYTHON="${PYTHON:-python3}"
stamp=".venv/.setup-stamp"
want="$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  ensure_chromium
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
ensure_chromium
