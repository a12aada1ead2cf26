"""The script spark-submit runs for any stage: `spark-submit jobs/submit.py STAGE [options]`.

The stages come from the registry (jobs/stages.py), so there is no script per stage to
keep in step; the console script `deparrot STAGE ...` is the same entry point.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file from a checkout: make `jobs` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jobs.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
