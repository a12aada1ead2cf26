"""benchmarks/gpu_check.sh, the one-command GPU check: its line format, and (slow: ~6 min
on 2 shared cores) a whole run on CPU."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import gpu_check  # noqa: E402

LINE = re.compile(r"^(?P<phase>\w+) runtime=(?P<runtime>[\w-]+) device=(?P<device>cpu|cuda) "
                  r"bs=(?P<bs>\d+) img/s=(?P<rate>[\d.]+) ms/img=(?P<ms>[\d.]+) "
                  r"gpu_mem=(?P<mem>-|[\d.]+GiB)$")
LAION = re.compile(r"^LAION-2B on 64 GPUs: ~(?P<hours>[\d.]+) h ")


def test_phase_line_and_laion_hours():
    line = gpu_check.phase_line("ocr_det", "torch", "cuda:0", 64, 1000, 1.25, int(2.1 * 2**30))
    assert line == "ocr_det runtime=torch device=cuda bs=64 img/s=800.0 ms/img=1.25 " \
                   "gpu_mem=2.1GiB"
    assert LINE.match(line)
    assert LINE.match(gpu_check.phase_line("decode", "pil", "cpu", 8, 16, 2.0, None))
    # 3,000 img/s per GPU on 64 GPUs: 2.32e9 / 192,000 / 3600 = 3.36 h
    assert gpu_check.laion_hours(3000.0) == pytest.approx(3.356, abs=1e-3)


@pytest.mark.slow
def test_gpu_check_runs_on_cpu_and_prints_every_phase():
    done = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--device", "cpu", "--images", "4",
         "--batch-sizes", "4", "--rounds", "1", "--budget-s", "600"],
        capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert lines[0].startswith("device: CPU") and "OCR runtimes: onnxruntime, torch" in lines[0]
    rows = {(m["phase"], m["runtime"]): m for m in map(LINE.match, lines) if m}
    want = [("decode", "pil"), ("b32", "torch"), ("l14_mlp", "torch")] + [
        (phase, rt) for rt in ("onnxruntime", "torch")
        for phase in ("ocr_det", "ocr_rec", "loop", "loop_overlap")]
    for key in want:
        m = rows[key]
        assert m["device"] == "cpu" and m["bs"] == "4" and m["mem"] == "-", key
        assert float(m["rate"]) > 0 and float(m["ms"]) > 0, key
    assert any(line.startswith("decode_gpu runtime=nvjpeg device=cpu bs=4 skipped: no CUDA")
               for line in lines)
    assert lines[-2].startswith("best loop: loop_overlap runtime=")
    hours = LAION.match(lines[-1])
    best = max(float(rows[("loop_overlap", rt)]["rate"]) for rt in ("onnxruntime", "torch"))
    assert hours and float(hours["hours"]) == pytest.approx(gpu_check.laion_hours(best),
                                                            rel=0.01)
