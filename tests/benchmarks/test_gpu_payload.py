"""benchmarks/gpu_payload.py: what travels to a lent GPU fits one call's 64 MiB (no network)."""

import io
import sys
import zipfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import gpu_payload  # noqa: E402

MIB = gpu_payload.MIB


def _wheel(folder: Path, name: str, requires: list[str] = (), pad: int = 0) -> Path:
    """A fake wheel with a METADATA listing `requires`, padded to about `pad` bytes."""
    path = folder / name
    dist = "-".join(name.split("-")[:2])
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        meta = "Metadata-Version: 2.1\n" + "".join(f"Requires-Dist: {r}\n" for r in requires)
        z.writestr(f"{dist}.dist-info/METADATA", meta)
        z.writestr("pad.bin", b"\0" * pad)
    path.write_bytes(buf.getvalue())
    return path


def test_selection_never_carries_what_the_device_has():
    chosen = [gpu_payload.requirement_name(r) for r in gpu_payload.selection()]
    needed = {"open-clip-torch", "rapidocr", "ftfy", "pyclipper", "shapely", "omegaconf"}
    assert needed <= set(chosen)
    assert not set(chosen) & gpu_payload.FORBIDDEN
    assert not set(chosen) & gpu_payload.DEVICE_HAS
    assert "onnx" in [gpu_payload.requirement_name(r) for r in gpu_payload.selection(True)]


def test_forbidden_requirement_is_refused(monkeypatch):
    monkeypatch.setattr(gpu_payload, "PAYLOAD", ("torch==2.11.0", "ftfy"))
    with pytest.raises(ValueError, match="torch"):
        gpu_payload.selection()


def test_budget_check_on_a_folder(tmp_path):
    _wheel(tmp_path, "rapidocr-3.10.0-py3-none-any.whl", pad=3 * MIB)
    _wheel(tmp_path, "ftfy-6.3.1-py3-none-any.whl", pad=MIB)
    sizes = gpu_payload.folder_sizes(tmp_path)
    assert [n for n, _ in sizes][0].startswith("rapidocr")  # largest first
    total = sum(s for _, s in sizes)
    assert gpu_payload.over_budget(tmp_path, total) is None
    line = gpu_payload.over_budget(tmp_path, total - 1)
    assert line is not None and "over the" in line and "\n" not in line
    assert gpu_payload.budget(10 * MIB) == 64 * MIB - 10 * MIB - gpu_payload.HEADROOM


def test_main_check_exits_nonzero_over_budget(tmp_path, monkeypatch, capsys):
    _wheel(tmp_path, "ftfy-6.3.1-py3-none-any.whl", pad=2 * MIB)
    monkeypatch.setattr(gpu_payload, "repo_bytes", lambda root=None: 62 * MIB)
    assert gpu_payload.main(["--check", "--dest", str(tmp_path)]) == 1
    assert "over the" in capsys.readouterr().err
    monkeypatch.setattr(gpu_payload, "repo_bytes", lambda root=None: 10 * MIB)
    assert gpu_payload.main(["--check", "--dest", str(tmp_path)]) == 0


def test_forbidden_wheel_in_the_folder_fails(tmp_path, monkeypatch):
    _wheel(tmp_path, "numpy-2.4.6-cp312-cp312-manylinux_2_28_x86_64.whl")
    monkeypatch.setattr(gpu_payload, "repo_bytes", lambda root=None: 0)
    assert gpu_payload.forbidden_files(tmp_path) == [
        "numpy-2.4.6-cp312-cp312-manylinux_2_28_x86_64.whl"]
    assert gpu_payload.main(["--check", "--dest", str(tmp_path)]) == 1


def test_unmet_requirements_finds_a_missing_dependency(tmp_path):
    _wheel(tmp_path, "ftfy-6.3.1-py3-none-any.whl", ["wcwidth"])
    _wheel(tmp_path, "open_clip_torch-3.3.0-py3-none-any.whl",
           ["torch>=2.0", "ftfy", "regex", 'pandas; extra == "training"'])
    assert gpu_payload.unmet_requirements(tmp_path) == ["ftfy-6.3.1-py3-none-any.whl: wcwidth"]
    _wheel(tmp_path, "wcwidth-0.9.5-py3-none-any.whl")
    assert gpu_payload.unmet_requirements(tmp_path) == []


def test_repository_leaves_room_for_the_payload():
    repo = gpu_payload.repo_bytes()
    assert repo > 0 and gpu_payload.budget(repo) > 32 * MIB  # rapidocr's wheel alone is 26 MiB


@pytest.mark.skipif(not gpu_payload.WHEELS.is_dir(), reason="benchmarks/wheels/ not built")
def test_built_folder_fits_and_is_closed():
    folder = gpu_payload.WHEELS
    assert gpu_payload.over_budget(folder, gpu_payload.budget(gpu_payload.repo_bytes())) is None
    assert gpu_payload.forbidden_files(folder) == []
    assert gpu_payload.unmet_requirements(folder) == []
