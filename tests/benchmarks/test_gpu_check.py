"""benchmarks/gpu_check.sh, the one-command GPU check, runs on CPU too (slow: ~3 min)."""

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_gpu_check_runs_on_cpu_and_prints_every_phase():
    done = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--device", "cpu", "--images", "4",
         "--batch-sizes", "4", "--rounds", "1", "--budget-s", "400"],
        capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert lines[0].startswith("device: CPU") and "OCR: onnxruntime CPU" in lines[0]
    header = next(line for line in lines if line.strip().startswith("batch"))
    for phase in ("decode", "ocr_det", "ocr_rec", "b32", "l14_mlp", "loop"):
        assert phase in header
    row = lines[lines.index(header) + 1].split()
    assert row[0] == "4" and all(float(v) > 0 for v in row[1:])
