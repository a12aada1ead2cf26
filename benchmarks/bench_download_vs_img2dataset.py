"""`deparrot download` side by side with the real img2dataset, same URLs, same local server.

    .venv/bin/python benchmarks/bench_download_vs_img2dataset.py --sizes 600 3000 --runs 3

One threaded HTTP server on 127.0.0.1 (its own process, HTTP/1.0 like `python -m
http.server`) serves generated `--width`x`--height` JPEGs. Both tools get the same URL
list and resize to 256 (`border`, JPEG quality 95), in turns:

- img2dataset (`--img2dataset-version`, default 1.47.0), installed by this script into its
  own virtual environment (`--img2dataset-venv`, default ~/.cache/deparrot/img2dataset-venv;
  never a dependency of the project): `--processes` processes x `--threads` threads,
  webdataset output, shards of `--shard-size` URLs (default: a quarter of the list, so
  every process has work), retries 0, its default opt-out headers, sha256 and EXIF.
- `deparrot download` through the CLI (`python -m jobs.cli`) with conf/local.yaml
  (`local[2]`), `download.concurrency` = `--threads`, loopback opted in with
  `download.fetch.allowed_networks`, into a fresh copy of a metadata table made
  beforehand (by `deparrot ingest`, not timed). `--baseline-checkout DIR` adds the same run
  from another checkout (e.g. `git worktree add /tmp/before HEAD`) to compare versions.

Every run is a whole process (JVM and Spark session start included for deparrot), timed
from start to exit. One untimed warm-up run of each tool, then `--runs` turns at each
size; medians are reported. Two sizes separate the fixed cost of a run from the marginal
images/s: marginal = (n_large - n_small) / (t_large - t_small), fixed = t_small -
n_small / marginal. After each run the outputs are checked: both tools must produce the
same number of images, all of the same size.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import multiprocessing
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image
from proc_cpu import live_processes  # benchmarks/, the script's folder

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from jobs.sample import photo_image  # noqa: E402

DEFAULT_VENV = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "deparrot" / \
    "img2dataset-venv"
TIMEOUT_S = 900  # one run of either tool; a stuck run fails the benchmark, it does not hang


# --- the images and the server ----------------------------------------------------------------

def make_images(folder: Path, count: int, distinct: int, width: int, height: int) -> None:
    """`count` files 0.jpg.. cycling over `distinct` generated photos (generating is slow)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    side = max(width, height)
    blobs = []
    for _ in range(min(distinct, count)):
        img = photo_image(rng, side)
        left, top = (side - width) // 2, (side - height) // 2
        buf = io.BytesIO()
        img.crop((left, top, left + width, top + height)).save(buf, "JPEG", quality=90)
        blobs.append(buf.getvalue())
    for i in range(count):
        (folder / f"{i}.jpg").write_bytes(blobs[i % len(blobs)])


def _serve(directory: str, port_out) -> None:
    import functools
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0),
                                 functools.partial(Quiet, directory=directory))
    server.daemon_threads = True
    port_out.send(server.server_address[1])
    server.serve_forever()


@contextlib.contextmanager
def server_process(directory: Path):
    """The image server in a process of its own: neither tool shares its GIL."""
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_serve, args=(str(directory), child), daemon=True)
    proc.start()
    try:
        if not parent.poll(60):
            raise RuntimeError("the image server did not start")
        yield f"http://127.0.0.1:{parent.recv()}"
    finally:
        proc.terminate()
        proc.join(10)


# --- running a tool ---------------------------------------------------------------------------

def _cpu_of_session(sid: int, seen: dict[int, float]) -> None:
    """Add the CPU seconds (user + system) of every live process of session `sid`."""
    for pid, info in live_processes().items():
        if info.session == sid:
            seen[pid] = max(seen.get(pid, 0.0), info.cpu_s)


def run_timed(cmd: list[str], **kwargs) -> tuple[float, float, subprocess.CompletedProcess]:
    """Run `cmd` in a session of its own: wall seconds, CPU seconds of all its processes
    (sampled every 0.2 s, so processes shorter than that are missed), and the result.
    The whole session is killed if the run times out or this script is interrupted."""
    seen: dict[int, float] = {}
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        t0 = time.perf_counter()  # output goes to files: no pipe to fill up and block on
        proc = subprocess.Popen(cmd, start_new_session=True, stdout=out, stderr=err,
                                text=True, **kwargs)
        try:
            while proc.poll() is None:
                _cpu_of_session(proc.pid, seen)
                if time.perf_counter() > t0 + TIMEOUT_S:
                    raise TimeoutError(f"{cmd[:3]} ran past {TIMEOUT_S} s")
                time.sleep(0.2)
            seconds = time.perf_counter() - t0
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # what the tool left behind, if any
            proc.wait()
        out.seek(0)
        err.seek(0)
        return seconds, sum(seen.values()), subprocess.CompletedProcess(
            cmd, proc.returncode, out.read(), err.read())


# --- img2dataset --------------------------------------------------------------------------------

def ensure_img2dataset(venv: Path, version: str) -> Path:
    """img2dataset in its own virtual environment (created once, then reused)."""
    exe = venv / "bin" / "img2dataset"
    python = venv / "bin" / "python"
    if exe.exists():
        out = subprocess.run([str(python), "-c", "import importlib.metadata as m; "
                              "print(m.version('img2dataset'))"],
                             capture_output=True, text=True, timeout=120)
        if out.stdout.strip() == version:
            return exe
    venv.parent.mkdir(parents=True, exist_ok=True)
    print(f"installing img2dataset=={version} into {venv}", flush=True)
    for host in dict.fromkeys([sys.executable, shutil.which("python3") or sys.executable]):
        try:  # uv where a Python has it (seconds)
            subprocess.run([host, "-m", "uv", "venv", "--allow-existing", "-p", sys.executable,
                            str(venv)], check=True, capture_output=True, timeout=300)
            subprocess.run([host, "-m", "uv", "pip", "install", "-p", str(python),
                            f"img2dataset=={version}"], check=True, timeout=1200)
            return exe
        except (subprocess.CalledProcessError, FileNotFoundError):
            continue
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True,
                   timeout=300)  # else the standard library's venv and pip
    subprocess.run([str(python), "-m", "pip", "install", "-q", f"img2dataset=={version}"],
                   check=True, timeout=1200)
    return exe


def run_img2dataset(exe: Path, urls_txt: Path, out: Path, args) -> tuple[float, float]:
    shard = args.shard_size or max(1, math.ceil(sum(1 for _ in urls_txt.open()) / 4))
    cmd = [str(exe), "--url_list", str(urls_txt), "--input_format", "txt",
           "--output_folder", str(out), "--output_format", "webdataset",
           "--processes_count", str(args.processes), "--thread_count", str(args.threads),
           "--image_size", "256", "--resize_mode", "border", "--encode_quality", "95",
           "--number_sample_per_shard", str(shard), "--timeout", "10", "--retries", "0",
           "--enable_wandb", "False", "--distributor", "multiprocessing"]
    env = dict(os.environ, NO_ALBUMENTATIONS_UPDATE="1", WANDB_MODE="disabled",
               no_proxy="127.0.0.1", NO_PROXY="127.0.0.1")
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY"):
        env.pop(name, None)
    seconds, cpu, proc = run_timed(cmd, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"img2dataset failed:\n{proc.stderr[-3000:]}")
    return seconds, cpu


def img2dataset_sizes(out: Path) -> dict[str, tuple[int, int]]:
    """url -> (width, height) of every image img2dataset wrote."""
    sizes: dict[str, tuple[int, int]] = {}
    for shard in sorted(out.glob("*.tar")):
        members: dict[str, dict] = {}
        with tarfile.open(shard) as tar:
            for member in tar:
                key, _, ext = member.name.rpartition(".")
                if ext in ("jpg", "json"):
                    members.setdefault(key, {})[ext] = tar.extractfile(member).read()
        for parts in members.values():
            if "jpg" in parts:
                url = json.loads(parts["json"])["url"]
                sizes[url] = Image.open(io.BytesIO(parts["jpg"])).size
    return sizes


# --- deparrot -----------------------------------------------------------------------------------

def deparrot_cmd(checkout: Path, stage: str, root: Path, extra: list[str]) -> tuple[list, dict]:
    sets = [f"storage.root={root / 'lake'}",
            f"spark.conf.spark.sql.warehouse.dir={root / 'warehouse'}", *extra]
    cmd = [sys.executable, "-m", "jobs.cli", stage, "--config",
           str(checkout / "conf" / "local.yaml")]
    for item in sets:
        cmd += ["--set", item]
    env = dict(os.environ, PYTHONPATH=str(checkout))  # that checkout's code, on the workers too
    return cmd, env


def ingest_metadata(checkout: Path, urls: list[str], root: Path) -> None:
    """A metadata table of `urls` (LAION-400M layout) under `root`: not timed."""
    table = pa.table({
        "SAMPLE_ID": pa.array(range(1, len(urls) + 1), pa.int64()), "URL": urls,
        "TEXT": [f"caption {i}" for i in range(len(urls))],
        "HEIGHT": [480.0] * len(urls), "WIDTH": [640.0] * len(urls),
        "LICENSE": ["?"] * len(urls), "NSFW": ["UNLIKELY"] * len(urls),
        "similarity": [0.3] * len(urls)})
    (root / "in").mkdir(parents=True)
    pq.write_table(table, root / "in" / "part-0.parquet")
    cmd, env = deparrot_cmd(checkout, "ingest", root, [f"ingest.input={root / 'in'}"])
    proc = subprocess.run(cmd, env=env, cwd=checkout, capture_output=True, text=True,
                          timeout=TIMEOUT_S)
    if proc.returncode != 0:
        raise RuntimeError(f"deparrot ingest failed:\n{proc.stderr[-3000:]}")


def run_deparrot(checkout: Path, template: Path, root: Path, args,
                 extra: list[str]) -> tuple[float, float, dict]:
    shutil.copytree(template / "lake", root / "lake")
    cmd, env = deparrot_cmd(checkout, "download", root, [
        "download.fetch.allowed_networks=[127.0.0.1/32]",
        f"download.concurrency={args.threads}", *extra])
    seconds, cpu, proc = run_timed(cmd, env=env, cwd=checkout)
    if proc.returncode != 0:
        raise RuntimeError(f"deparrot download failed:\n{proc.stderr[-3000:]}")
    return seconds, cpu, json.loads(proc.stdout[proc.stdout.index("{"):])


def delta_files(table: Path) -> list[Path]:
    """The table's live parquet files, from its JSON log (fresh tables: no checkpoint)."""
    live: dict[str, bool] = {}
    for commit in sorted((table / "_delta_log").glob("*.json")):
        for line in commit.read_text().splitlines():
            action = json.loads(line)
            if "add" in action:
                live[action["add"]["path"]] = True
            elif "remove" in action:
                live.pop(action["remove"]["path"], None)
    return [table / path for path in live]


def deparrot_sizes(root: Path) -> tuple[dict[str, tuple[int, int]], dict[str, int]]:
    """url -> (width, height) of every `ok` image, and the error counts."""
    sizes: dict[str, tuple[int, int]] = {}
    errors: dict[str, int] = {}
    for path in delta_files(root / "lake" / "images"):
        table = pq.read_table(path, columns=["url", "image", "status", "error", "width",
                                             "height"])
        for row in table.to_pylist():
            if row["status"] != "ok":
                errors[row["error"]] = errors.get(row["error"], 0) + 1
                continue
            size = Image.open(io.BytesIO(row["image"])).size
            assert size == (row["width"], row["height"]), row["url"]
            sizes[row["url"]] = size
    return sizes, errors


# --- the runs ---------------------------------------------------------------------------------

def check_same(n: int, reference: dict, got: dict, tool: str, errors: dict | None = None):
    if len(got) != n or set(got) != set(reference) or sorted(got.values()) != sorted(
            reference.values()):
        raise AssertionError(f"{tool}: {len(got)} images, img2dataset {len(reference)} of "
                             f"{n}; sizes {sorted(set(got.values()))} vs "
                             f"{sorted(set(reference.values()))}; errors {errors}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs=2, default=[600, 3000])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--distinct", type=int, default=200, help="distinct generated photos")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--shard-size", type=int, default=0,
                        help="img2dataset URLs per shard; 0 = a quarter of the list")
    parser.add_argument("--img2dataset-version", default="1.47.0")
    parser.add_argument("--img2dataset-venv", type=Path, default=DEFAULT_VENV)
    parser.add_argument("--baseline-checkout", type=Path, default=None,
                        help="another deparrot checkout to time the same way")
    parser.add_argument("--variant-set", action="append", default=[], metavar="KEY=VALUE",
                        help="also time this checkout with these --set overrides")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args()
    small, large = sorted(args.sizes)

    exe = ensure_img2dataset(args.img2dataset_venv, args.img2dataset_version)
    work = Path(tempfile.mkdtemp(prefix="deparrot-vs-img2dataset-"))
    # name -> (checkout, --set overrides); None is img2dataset
    tools: dict[str, tuple[Path, list[str]] | None] = {"img2dataset": None,
                                                       "deparrot": (REPO, [])}
    if args.variant_set:
        tools["deparrot +sets"] = (REPO, list(args.variant_set))
    if args.baseline_checkout:
        tools["deparrot (baseline)"] = (args.baseline_checkout.resolve(), [])
    keys = [(t, n) for t in tools for n in (small, large)]
    times: dict[tuple[str, int], list[float]] = {k: [] for k in keys}
    cpus: dict[tuple[str, int], list[float]] = {k: [] for k in keys}
    phases: dict[tuple[str, int], list[dict]] = {k: [] for k in keys}
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # clean up on kill too
    try:
        make_images(work / "files", large, args.distinct, args.width, args.height)
        with server_process(work / "files") as base:
            warm = 100
            urls = {n: [f"{base}/{i}.jpg" for i in range(n)] for n in (warm, small, large)}
            for n, batch in urls.items():
                (work / f"urls-{n}.txt").write_text("\n".join(batch) + "\n")
            checkouts = {tool[0] for tool in tools.values() if tool is not None}
            for checkout in checkouts:
                for n in urls:
                    ingest_metadata(checkout, urls[n], work / f"meta-{checkout.name}-{n}")
            print(f"{large} images of {args.width}x{args.height} "
                  f"({(work / 'files' / '0.jpg').stat().st_size // 1024} KiB) -> 256 border, "
                  f"{args.processes} processes x {args.threads} threads vs local[2] x "
                  f"concurrency {args.threads}; {os.cpu_count()} cores shared with the "
                  f"server", flush=True)

            def once(name: str, n: int, run: str) -> tuple[float, float, dict]:
                out = work / "runs" / run
                if tools[name] is None:
                    seconds, cpu = run_img2dataset(exe, work / f"urls-{n}.txt", out, args)
                    return seconds, cpu, {"sizes": img2dataset_sizes(out)}
                checkout, extra = tools[name]
                seconds, cpu, report = run_deparrot(
                    checkout, work / f"meta-{checkout.name}-{n}", out, args, extra)
                sizes, errors = deparrot_sizes(out)
                return seconds, cpu, {"sizes": sizes, "errors": errors, "report": report}

            for name in tools:  # warm-up: page cache, bytecode, the JVM's files
                once(name, warm, f"warm-{name}")
            for turn in range(args.runs):
                for n in (small, large):
                    reference = None
                    for name in tools:
                        seconds, cpu, out = once(name, n, f"{turn}-{n}-{name}")
                        if reference is None:
                            reference = out["sizes"]
                            check_same(n, reference, reference, name)
                        else:
                            check_same(n, reference, out["sizes"], name, out.get("errors"))
                        times[name, n].append(seconds)
                        cpus[name, n].append(cpu)
                        if "report" in out:
                            phases[name, n].append(out["report"]["seconds"])
                        print(f"turn {turn + 1}/{args.runs} {name:<20}{n:>6} images "
                              f"{seconds:>7.1f} s {n / seconds:>7.1f} images/s "
                              f"{cpu:>7.1f} CPU s", flush=True)
                        shutil.rmtree(work / "runs" / f"{turn}-{n}-{name}")
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    for name, tool in tools.items():
        if tool is not None and tool[1]:
            print(f"{name}: --set {' --set '.join(tool[1])}")
    report(times, cpus, phases, tools, small, large, args.runs)


def report(times, cpus, phases, tools, small, large, runs) -> None:
    med = {k: statistics.median(v) for k, v in times.items()}
    cpu = {k: statistics.median(v) for k, v in cpus.items()}
    print(f"\nmedians of {runs} runs (wall time of the whole process, start to exit; CPU "
          f"time of all its processes)")
    print(f"{'tool':<22}{'images':>7}{'seconds':>9}{'images/s':>10}{'vs img2dataset':>16}"
          f"{'CPU s':>8}")
    for n in (small, large):
        for name in tools:
            t = med[name, n]
            print(f"{name:<22}{n:>7}{t:>9.1f}{n / t:>10.1f}"
                  f"{med['img2dataset', n] / t:>15.2f}x{cpu[name, n]:>8.1f}")
    print(f"\n{'tool':<22}{'marginal images/s':>18}{'vs img2dataset':>16}{'fixed s':>9}"
          f"{'marginal CPU ms/image':>23}{'fixed CPU s':>13}")
    ref = None
    for name in tools:
        dt = med[name, large] - med[name, small]
        marginal = (large - small) / dt if dt > 0 else math.inf
        fixed = med[name, small] - small / marginal
        per_image = (cpu[name, large] - cpu[name, small]) / (large - small)
        ref = ref or marginal
        print(f"{name:<22}{marginal:>18.1f}{marginal / ref:>15.2f}x{fixed:>9.1f}"
              f"{per_image * 1000:>23.2f}{cpu[name, small] - small * per_image:>13.1f}")
    for name in tools:
        for n in (small, large):
            if phases[name, n]:
                keys = phases[name, n][0].keys()
                parts = {k: statistics.median(p.get(k, 0.0) for p in phases[name, n])
                         for k in keys}
                inside = sum(parts.values())
                shown = ", ".join(f"{k} {v:.1f}" for k, v in parts.items())
                print(f"{name} {n}: stage phases (s, medians): {shown}; outside the stage "
                      f"(process, JVM, session, tables) {med[name, n] - inside:.1f}")


if __name__ == "__main__":
    main()
