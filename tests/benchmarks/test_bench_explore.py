"""benchmarks/bench_explore.py at a tiny size: every measurement line, each with its
verdict, from a real server on a real (generated) lake; the lakes are reused on a re-run."""

import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import bench_explore  # noqa: E402

ARGS = ["--rows", "300", "--whatif-rows", "2000", "--embed-dim", "32",
        "--clip-model", "deparrot-tiny-vit:random", "--requests", "4", "--no-spark-baseline"]
TIMED = ("gallery page", "thumbnail /image/<id>", "row detail /row/<id>", "search caption",
         "search meaning", "search more-like", "what-if /whatif/result",
         "what-if in process, 2,000 rows")
ONCE = ("start-up (open + first page)", "search more-like first (embeddings)",
        "search meaning first (text tower)", "what-if lake load, 2,000 rows")


@pytest.mark.slow  # a benchmark run; default: tests/jobs/test_explore.py
def test_every_measurement_is_printed_with_its_verdict(tmp_path, capsys):
    lakes = tmp_path / "lakes"
    assert bench_explore.main([*ARGS, "--lake-dir", str(lakes)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert sum("generated in" in line and "cached" not in line for line in lines) == 2
    for name in TIMED:
        line = next((x for x in lines if re.match(re.escape(name) + " +n=", x)), None)
        assert line is not None, f"no line for {name}:\n{out}"
        assert re.search(r"n=4 +p50 +[\d.]+ ms +p95 +[\d.]+ ms +goal p95 <= \d+ ms +(PASS|FAIL)$",
                         line), line
    for name in ONCE:
        line = next((x for x in lines if re.match(re.escape(name) + r" +[\d.]+ s", x)), None)
        assert line is not None and re.search(r" [\d.]+ s .*info$", line), f"{name}:\n{out}"
    assert lines[-1].startswith("goals: ")

    # A second run finds both lakes where the first left them.
    assert bench_explore.main([*ARGS, "--lake-dir", str(lakes), "--requests", "1"]) == 0
    again = capsys.readouterr().out
    assert again.count(": cached, generated in") == 2
