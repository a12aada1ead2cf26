"""Build benchmarks/wheels/: exactly what a lent GPU machine lacks to run gpu_check.sh.

    python3 benchmarks/gpu_payload.py            # download, list sizes, check the budget
    python3 benchmarks/gpu_payload.py --check    # only list and check an existing folder

A device call carries at most 64 MiB: the repository's working tree plus the carried
folders. The machine's image already holds torch, torchvision, numpy, pillow, opencv,
onnxruntime (CPU), onnx, timm, safetensors, huggingface_hub, regex, tqdm, pyyaml, six and
requests (/work/.library/device/KINDS.md), so the payload is only open_clip and rapidocr
(whose wheel bundles the PP-OCR ONNX files) and their small pure dependencies, as cp312
manylinux x86_64 wheels. It never holds torch, numpy, pillow or opencv: a second copy
would shadow the machine's CUDA build or blow the budget.

Exits non-zero with one line when the folder's total exceeds the budget
(64 MiB minus the repository's own bytes minus HEADROOM).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WHEELS = ROOT / "benchmarks" / "wheels"
MIB = 1024 * 1024
CALL_LIMIT = 64 * MIB  # working tree + carried paths per device call
HEADROOM = 4 * MIB  # the repository grows between building the folder and using it

# What the gpu_check path imports that the device image lacks (pins: constraints.txt, else
# the versions the project's venv runs the tests with). Each is fetched with --no-deps, so this
# list is the whole payload; `unmet_requirements` checks it is closed over Requires-Dist.
PAYLOAD = (
    "open-clip-torch==3.3.0",
    "ftfy==6.3.1",  # open_clip's tokenizer
    "wcwidth==0.9.5",  # ftfy
    "rapidocr==3.10.0",
    "pyclipper==1.4.0",  # rapidocr's box unclipping
    "shapely==2.2.0",  # rapidocr's box geometry
    "omegaconf==2.4.0",  # rapidocr's config (2.4 no longer needs antlr4, a source-only pin)
    "colorlog==6.12.0",  # rapidocr's logger
)
# onnx reads the ONNX weights for udfs/ppocr_torch.py; the image has it (onnx 1.23.1), so
# its wheel (8.5 MiB for 1.23.2) travels only on request (--with-onnx).
OPTIONAL = ("onnx==1.23.2",)
# In the device image (KINDS.md, 2026-11-17), as normalised names: never downloaded.
DEVICE_HAS = frozenset({
    "torch", "torchvision", "numpy", "pillow", "opencv-python-headless", "opencv-python",
    "onnxruntime", "onnx", "timm", "safetensors", "huggingface-hub", "regex", "tqdm",
    "pyyaml", "six", "requests", "packaging", "filelock", "fsspec", "typing-extensions",
    "protobuf", "ml-dtypes", "pandas", "pyarrow", "scikit-image", "scipy", "jinja2",
    "sympy", "networkx", "triton", "urllib3", "idna", "certifi", "charset-normalizer",
    "hf-xet", "httpx", "pyparsing", "python-dateutil",
})
# Never in the payload, whatever the list says: present there, and huge or CUDA-specific.
FORBIDDEN = frozenset({"torch", "torchvision", "numpy", "pillow", "opencv-python",
                       "opencv-python-headless", "opencv-contrib-python"})
PIP_PLATFORM = ("--only-binary=:all:", "--python-version", "3.12", "--implementation", "cp",
                "--platform", "manylinux_2_28_x86_64", "--platform", "manylinux_2_27_x86_64",
                "--platform", "manylinux_2_17_x86_64", "--platform", "manylinux2014_x86_64",
                "--platform", "manylinux1_x86_64")


def normalise(name: str) -> str:
    """PEP 503 name: what pip and wheel file names agree on."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement: str) -> str:
    return normalise(re.split(r"[<>=!~;\[ ]", requirement.strip(), maxsplit=1)[0])


def selection(with_onnx: bool = False) -> list[str]:
    """The requirements to download: PAYLOAD (+ onnx), minus what the device has, and
    never a FORBIDDEN one (raises: a list that names one is a bug)."""
    wanted = list(PAYLOAD) + (list(OPTIONAL) if with_onnx else [])
    bad = [r for r in wanted if requirement_name(r) in FORBIDDEN]
    if bad:
        raise ValueError(f"the payload must not carry {', '.join(bad)}")
    return [r for r in wanted
            if requirement_name(r) not in DEVICE_HAS or (with_onnx and r in OPTIONAL)]


def repo_bytes(root: Path = ROOT) -> int:
    """Bytes of what a device call sends besides the carried paths: tracked files and
    untracked files git does not ignore."""
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                         cwd=root, capture_output=True, check=True).stdout
    total = 0
    for rel in out.decode().split("\0"):
        p = root / rel
        if rel and p.is_file():
            total += p.stat().st_size
    return total


def budget(repo: int, limit: int = CALL_LIMIT, headroom: int = HEADROOM) -> int:
    """Bytes the wheel folder may hold."""
    return limit - repo - headroom


def folder_sizes(folder: Path) -> list[tuple[str, int]]:
    """(file name, bytes) of every file in `folder`, largest first."""
    files = [(p.name, p.stat().st_size) for p in Path(folder).iterdir() if p.is_file()]
    return sorted(files, key=lambda f: (-f[1], f[0]))


def over_budget(folder: Path, allowed: int) -> str | None:
    """One line saying why the folder does not fit, or None when it does."""
    total = sum(size for _, size in folder_sizes(folder))
    if total > allowed:
        return (f"gpu_payload: {folder} holds {total / MIB:.1f} MiB, over the "
                f"{allowed / MIB:.1f} MiB budget")
    return None


def forbidden_files(folder: Path) -> list[str]:
    """Wheels in the folder that must never travel (FORBIDDEN)."""
    return [name for name, _ in folder_sizes(folder)
            if name.endswith(".whl") and normalise(name.split("-")[0]) in FORBIDDEN]


def unmet_requirements(folder: Path) -> list[str]:
    """Requires-Dist lines (no extras, Linux) of the folder's wheels that neither the
    folder nor the device image satisfies: the payload must be closed."""
    wheels = [p for p in Path(folder).glob("*.whl")]
    have = {normalise(p.name.split("-")[0]) for p in wheels} | DEVICE_HAS
    unmet = []
    for p in wheels:
        with zipfile.ZipFile(p) as z:
            meta = next((n for n in z.namelist() if n.endswith(".dist-info/METADATA")), None)
            text = z.read(meta).decode("utf-8", "replace") if meta else ""
        for line in text.splitlines():
            if not line.startswith("Requires-Dist:"):
                continue
            req = line.split(":", 1)[1].strip()
            marker = req.split(";", 1)[1] if ";" in req else ""
            if "extra" in marker or "sys_platform == \"win32\"" in marker:
                continue
            if requirement_name(req) not in have:
                unmet.append(f"{p.name}: {req}")
    return unmet


def pip_command() -> list[str]:
    """A pip that can download (the project's venv has none; any Python's will do)."""
    try:
        import pip  # noqa: F401

        return [sys.executable, "-m", "pip"]
    except ImportError:
        for exe in ("python3", "pip3", "pip"):
            found = shutil.which(exe)
            if found:
                return [found, "-m", "pip"] if exe == "python3" else [found]
    raise SystemExit("gpu_payload: no pip found to download wheels")


def download(requirements: list[str], folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run([*pip_command(), "download", "--quiet", "--no-deps", *PIP_PLATFORM,
                    "-d", str(folder), *requirements], check=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dest", type=Path, default=WHEELS)
    parser.add_argument("--check", action="store_true", help="no download: list and check")
    parser.add_argument("--with-onnx", action="store_true",
                        help="also carry onnx (the device image has it)")
    args = parser.parse_args(argv)
    if not args.check:
        download(selection(args.with_onnx), args.dest)
    if not args.dest.is_dir():
        print(f"gpu_payload: no folder {args.dest}", file=sys.stderr)
        return 2
    sizes = folder_sizes(args.dest)
    for name, size in sizes:
        print(f"{size / MIB:8.2f} MiB  {name}")
    total, repo = sum(s for _, s in sizes), repo_bytes()
    allowed = budget(repo)
    print(f"{total / MIB:8.2f} MiB  total ({len(sizes)} files); repository {repo / MIB:.2f} "
          f"MiB, headroom {HEADROOM / MIB:.0f} MiB, budget {allowed / MIB:.2f} MiB")
    for line in unmet_requirements(args.dest):
        print(f"gpu_payload: not in the folder nor on the device: {line}", file=sys.stderr)
    bad = forbidden_files(args.dest)
    if bad:
        print(f"gpu_payload: must not carry {', '.join(bad)}", file=sys.stderr)
        return 1
    error = over_budget(args.dest, allowed)
    if error:
        print(error, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
