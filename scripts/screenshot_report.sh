#!/usr/bin/env bash
# Look at the HTML report as a person would: a headless Chromium screenshot of the page.
#   bash scripts/screenshot_report.sh [REPORT_DIR (default data/demo/lake/_files/report)] [OUT.png]
# Needs Chromium (Debian: apt-get install chromium).
set -euo pipefail
cd "$(dirname "$0")/.."
report="${1:-data/demo/lake/_files/report}"
out="${2:-$report/screenshot.png}"
browser="$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)"
if [[ -z "$browser" ]]; then
  echo "screenshot_report: no Chromium found (apt-get install chromium)" >&2
  exit 2
fi
page="$(cd "$report" && pwd)/index.html"
[[ -f "$page" ]] || { echo "screenshot_report: no report at $page (run deparrot report)" >&2; exit 2; }
"$browser" --headless --no-sandbox --disable-gpu --hide-scrollbars \
  --window-size=1280,5200 --screenshot="$out" "file://$page" >/dev/null 2>&1
echo "screenshot: $out"
