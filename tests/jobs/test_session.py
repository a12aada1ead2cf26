import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
import sys
from jobs.config import load_config
from jobs.session import SparkStartError, get_spark
cfg = load_config(None, ["spark.extra_packages=[io.delta:deparrot-no-such-artifact_2.13:0.0.0]",
                         "spark.conf.spark.ui.enabled=false"])
try:
    get_spark(cfg.spark)
except SparkStartError as exc:
    print("CLEAR:", exc)
    sys.exit(3)
"""


def test_unresolvable_jars_fail_fast_with_a_clear_message():
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True,
                         text=True, timeout=180)
    elapsed = time.perf_counter() - t0
    assert out.returncode == 3, out.stderr[-2000:]
    assert "Could not start a local Spark session with Delta Lake" in out.stdout
    assert "Maven Central" in out.stdout
    assert elapsed < 90
