#!/usr/bin/env bash
# The score stage's bare loop on a GPU (or --device cpu), phase by phase, in <= 8 minutes.
#
#   bash benchmarks/gpu_check.sh [--device cuda|cpu] [--images N] [--batch-sizes 64,128,256]
#
# Needs only Python with torch (CUDA build on a GPU machine): no Java, no Spark, no
# network. Packages the machine lacks (open_clip_torch, rapidocr and their small deps)
# are installed from wheels in $WHEELS (default benchmarks/wheels/, gitignored) into a
# temporary folder, never into the system Python. Build that folder here, where pip can
# download, with
#   python3 benchmarks/gpu_payload.py      # cp312 manylinux wheels; fails if over budget
# and carry it with the call: run(command="bash benchmarks/gpu_check.sh",
# carry=["benchmarks/wheels"]); repository + wheels must stay under 64 MiB.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
python="${PYTHON:-}"
if [[ -z "$python" ]]; then
  if [[ -x "$here/../.venv/bin/python" ]]; then python="$here/../.venv/bin/python"; else python=python3; fi
fi
wheels="${WHEELS:-$here/wheels}"
if ! "$python" -c "import open_clip, rapidocr" >/dev/null 2>&1; then
  if [[ ! -d "$wheels" ]]; then
    echo "gpu_check: open_clip/rapidocr are not installed and there is no wheel folder $wheels" >&2
    exit 2
  fi
  target="$(mktemp -d)"
  trap 'rm -rf "$target"' EXIT
  "$python" -m pip install --quiet --no-index --no-deps --find-links "$wheels" \
    --target "$target" "$wheels"/*.whl
  export PYTHONPATH="$target${PYTHONPATH:+:$PYTHONPATH}"
fi
exec "$python" "$here/gpu_check.py" "$@"
