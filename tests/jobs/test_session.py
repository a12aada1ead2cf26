import subprocess
import sys
import time
from pathlib import Path

import pytest

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


@pytest.mark.slow  # a second JVM start; default: other set-up errors are one line
def test_unresolvable_jars_fail_fast_with_a_clear_message():
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True,
                         text=True, timeout=180)
    elapsed = time.perf_counter() - t0
    assert out.returncode == 3, out.stderr[-2000:]
    assert "Could not start a local Spark session with Delta Lake" in out.stdout
    assert "Maven Central" in out.stdout
    assert elapsed < 90


def test_scoped_conf_restores_or_unsets_each_setting(spark):
    from jobs.session import scoped_conf

    spark.conf.set("spark.deparrot.test.kept", "a")
    spark.conf.unset("spark.deparrot.test.new")
    try:
        with scoped_conf(spark, {"spark.deparrot.test.kept": "b",
                                 "spark.deparrot.test.new": "c"}):
            assert spark.conf.get("spark.deparrot.test.kept") == "b"
            assert spark.conf.get("spark.deparrot.test.new") == "c"
            raise RuntimeError("a failing stage restores them too")
    except RuntimeError:
        pass
    assert spark.conf.get("spark.deparrot.test.kept") == "a"
    assert spark.conf.get("spark.deparrot.test.new", None) is None
