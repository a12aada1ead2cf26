"""The score stage's bare loop on one device, phase by phase: what a GPU buys.

    bash benchmarks/gpu_check.sh                    # CUDA when present
    bash benchmarks/gpu_check.sh --device cpu --images 16 --batch-sizes 8

No Spark, no Java, no network: deparrot's executor code (udfs/) on generated JPEGs
(posters with words, text-free "photos", photos with a small sign), with the real
architectures and random weights (the same compute as the real ones). One line per phase
and batch size:

    ocr_det runtime=torch device=cuda bs=64 img/s=812.3 ms/img=1.23 gpu_mem=2.1GiB

- decode: JPEG -> RGB array with Pillow (udfs.decode, one thread; runtime=pil);
- decode_gpu: the same JPEGs with nvjpeg on the device (udfs.gpu_decode, what
  `score.decode_device: gpu` runs; runtime=nvjpeg); on CPU a line says it is skipped;
- ocr_det, ocr_rec: the stage's batched PP-OCR spotter, once per `--runtimes` entry
  (onnxruntime: the ONNX files; torch: udfs/ppocr_torch.py); `device=` is where it ran
  (onnxruntime runs on the CPU unless onnxruntime-gpu is installed);
- b32: CLIP ViT-B/32 image + caption towers (fp16 on CUDA);
- l14_mlp: CLIP ViT-L/14 image tower + LAION's aesthetic MLP;
- loop: decode + OCR + b32 + l14_mlp in sequence on each batch, as one Python worker
  does it without decode threads, per OCR runtime;
- loop_overlap: the same, with the next batch decoded on CPU threads while the device
  works on this one (as udfs/score.py's score_batches does).

gpu_mem is torch.cuda.max_memory_allocated during the phase (peak reset before it; `-`
on CPU; onnxruntime's own GPU arena is not in it). The run ends with the best loop's
images/s (overlapped, faster OCR runtime) and the hours it implies for LAION-2B
(2.32e9 images) on 64 GPUs. The budget (`--budget-s`, 420 s by default, model loading
included) skips a batch size the remaining time cannot fit, so the check ends within
its 8 minutes.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from udfs import aesthetic, clip_models, gpu_decode  # noqa: E402
from udfs.batched_ocr import batched_spotter  # noqa: E402
from udfs.decode import DEFAULT_MAX_PIXELS, decode_image  # noqa: E402

WORDS = ("OPEN", "GRAND SALE", "FREE WIFI", "EXIT", "COFFEE", "HOTEL", "SUMMER 2024",
         "NO PARKING", "PIZZA", "BOOKS")
LAION_2B = 2.32e9
GPUS = 64
RUNTIMES = ("onnxruntime", "torch")
# Decode threads of loop_overlap on CUDA (udfs.score.GPU_DECODE_THREADS); 1 on CPU.
OVERLAP_THREADS = 4


def sample_jpegs(n: int, size: int, seed: int = 0) -> list[bytes]:
    """A third posters, a third photos, a third photos with a small sign."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        base = rng.integers(0, 256, (size // 8, size // 8, 3), dtype=np.uint8)
        img = Image.fromarray(base).resize((size, size), Image.BICUBIC)
        img = img.filter(ImageFilter.GaussianBlur(1))
        draw = ImageDraw.Draw(img)
        if i % 3 == 0:
            img = Image.new("RGB", (size, size), tuple(int(v) for v in rng.integers(0, 80, 3)))
            draw = ImageDraw.Draw(img)
            draw.text((size // 8, size // 3), WORDS[i % len(WORDS)], fill=(250, 250, 250),
                      font_size=size // 8)
        elif i % 3 == 2:
            draw.rectangle([size // 10, size // 10, size // 2, size // 5], fill=(240, 240, 240))
            draw.text((size // 9, size // 9), WORDS[i % len(WORDS)], fill=(10, 10, 10),
                      font_size=size // 16)
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def is_cuda(device: str) -> bool:
    return device.startswith("cuda")


def sync(device: str) -> None:
    if is_cuda(device):
        import torch

        torch.cuda.synchronize()


def fmt_rate(rate: float) -> str:
    """img/s with one decimal, or three significant digits below 10 (CPU runs)."""
    return f"{rate:.1f}" if rate >= 10 else f"{rate:.3g}"


def phase_line(phase: str, runtime: str, device: str, batch: int, images: int,
               seconds: float, peak_bytes: int | None) -> str:
    """The one line a phase prints (parsed by tests/benchmarks/test_gpu_check.py)."""
    rate = images / seconds if seconds > 0 else float("inf")
    mem = "-" if peak_bytes is None else f"{peak_bytes / 2**30:.1f}GiB"
    return (f"{phase} runtime={runtime} device={device.split(':')[0]} bs={batch} "
            f"img/s={fmt_rate(rate)} ms/img={1000.0 / rate:.2f} gpu_mem={mem}")


def laion_hours(images_per_s: float, gpus: int = GPUS, images: float = LAION_2B) -> float:
    """Wall hours for `images` at `images_per_s` per GPU on `gpus` GPUs."""
    return images / (images_per_s * gpus) / 3600.0


class Meter:
    """Wall seconds and peak GPU memory of one phase over its calls."""

    def __init__(self, device: str):
        self.device, self.seconds, self.peak = device, 0.0, None

    def __enter__(self) -> Meter:
        sync(self.device)
        if is_cuda(self.device):
            import torch

            torch.cuda.reset_peak_memory_stats()
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        sync(self.device)
        self.seconds += time.perf_counter() - self._t0
        if is_cuda(self.device):
            import torch

            self.peak = max(self.peak or 0, torch.cuda.max_memory_allocated())


def decode_cpu(chunk: list[bytes], pool: ThreadPoolExecutor | None = None) -> list[np.ndarray]:
    def one(data: bytes) -> np.ndarray:
        return np.asarray(decode_image(data).image)

    return list(pool.map(one, chunk)) if pool is not None else [one(d) for d in chunk]


def ocr(spotter: Any, arrays: list[np.ndarray], device: str) -> list:
    """The stage's call: recognise what is detected, from the uploaded copy on CUDA."""
    dev = clip_models.upload_images(arrays, device) if is_cuda(device) else None
    kw = {"device_images": dev} if dev is not None and getattr(
        spotter, "accepts_device_images", False) else {}
    return spotter.spot(arrays, recognize=True, **kw)


def b32_scores(models: dict, arrays: list[np.ndarray], texts: list[str]) -> np.ndarray:
    b32 = models["b32"]
    return clip_models.clip_scores(clip_models.encode_images(b32, arrays),
                                   clip_models.encode_texts(b32, texts))


def l14_scores(models: dict, arrays: list[np.ndarray]) -> np.ndarray:
    return aesthetic.score(models["mlp"], clip_models.encode_images(models["l14"], arrays))


def models_step(models: dict, spotter: Any, arrays: list[np.ndarray], texts: list[str],
                device: str) -> None:
    """What the device does for one decoded batch: OCR, B/32, L/14 + MLP."""
    ocr(spotter, arrays, device)
    b32_scores(models, arrays, texts)
    l14_scores(models, arrays)


def batches(items: list, batch: int) -> list[list]:
    return [items[i:i + batch] for i in range(0, len(items), batch)]


def run_phases(jpegs: list[bytes], captions: list[str], models: dict, batch: int,
               device: str, rounds: int, pool: ThreadPoolExecutor | None) -> list[tuple]:
    """Every phase over `jpegs` in batches of `batch`, `rounds` times: (phase, runtime,
    device, seconds, peak bytes) rows, or (phase, runtime, device, None, why) skips."""
    chunks = batches(jpegs, batch)
    texts = batches(captions, batch)
    arrays = [decode_cpu(c) for c in chunks]
    out: list[tuple] = []

    def measure(phase: str, runtime: str, where: str, fn: Callable[[int], Any]) -> None:
        m = Meter(device)
        for _ in range(rounds):
            for k in range(len(chunks)):
                with m:
                    fn(k)
        out.append((phase, runtime, where, m.seconds, m.peak))

    measure("decode", "pil", "cpu", lambda k: decode_cpu(chunks[k]))
    if is_cuda(device):
        measure("decode_gpu", "nvjpeg", device,
                lambda k: gpu_decode.decode_jpegs(chunks[k], device, DEFAULT_MAX_PIXELS))
    else:
        out.append(("decode_gpu", "nvjpeg", device, None, "no CUDA device"))
    for runtime, spotter in models["ocr"].items():
        where = device if getattr(spotter, "on_gpu", False) else "cpu"
        if isinstance(spotter, str):
            out.append(("ocr_det", runtime, device, None, spotter))
            out.append(("ocr_rec", runtime, device, None, spotter))
            continue
        before = dict(spotter.seconds)
        m = Meter(device)
        for _ in range(rounds):
            for k in range(len(chunks)):
                with m:
                    ocr(spotter, arrays[k], device)
        det = sum(spotter.seconds.get(key, 0.0) - before.get(key, 0.0)
                  for key in ("det", "det_post"))
        rec = spotter.seconds.get("rec", 0.0) - before.get("rec", 0.0)
        # The spotter's own laps split the wall time; the rest (upload, grouping) is
        # shared out in proportion so that det + rec is the OCR wall time.
        scale = m.seconds / (det + rec) if det + rec > 0 else 1.0
        out.append(("ocr_det", runtime, where, det * scale, m.peak))
        out.append(("ocr_rec", runtime, where, rec * scale, m.peak))
    measure("b32", "torch", device, lambda k: b32_scores(models, arrays[k], texts[k]))
    measure("l14_mlp", "torch", device, lambda k: l14_scores(models, arrays[k]))
    for runtime, spotter in models["ocr"].items():
        if isinstance(spotter, str):
            continue
        measure("loop", runtime, device, lambda k, s=spotter: models_step(
            models, s, decode_cpu(chunks[k]), texts[k], device))
        m = Meter(device)
        for _ in range(rounds):
            with m, ThreadPoolExecutor(1) as ahead:
                pending = ahead.submit(decode_cpu, chunks[0], pool)
                for k in range(len(chunks)):
                    decoded = pending.result()
                    if k + 1 < len(chunks):
                        pending = ahead.submit(decode_cpu, chunks[k + 1], pool)
                    models_step(models, spotter, decoded, texts[k], device)
        out.append(("loop_overlap", runtime, device, m.seconds, m.peak))
    return out


def load_models(device: str, precision: str, cpu_threads: int,
                runtimes: tuple[str, ...]) -> dict:
    import torch

    if device == "cpu" and cpu_threads:
        torch.set_num_threads(cpu_threads)
    b32 = clip_models.load_clip("ViT-B-32", "random", device, precision, random_init_ok=True)
    l14 = clip_models.load_clip("ViT-L-14", "random", device, precision, random_init_ok=True)
    mlp = aesthetic.load_aesthetic("random", device, input_dim=l14.embed_dim,
                                   random_init_ok=True)
    ocr_models: dict[str, Any] = {}
    for runtime in runtimes:
        try:
            ocr_models[runtime] = batched_spotter(device=device, cpu_threads=cpu_threads,
                                                  runtime=runtime)
        except Exception as exc:  # e.g. onnx missing for the torch port: say, go on
            ocr_models[runtime] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
    return {"b32": b32, "l14": l14, "mlp": mlp, "ocr": ocr_models}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto | cuda | cuda:N | cpu")
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--size", type=int, default=256, help="side of the stored images")
    parser.add_argument("--batch-sizes", default="64,128,256")
    parser.add_argument("--rounds", type=int, default=2, help="measured passes per size")
    parser.add_argument("--precision", default="fp16", help="fp16 | bf16 | fp32 (CUDA)")
    parser.add_argument("--runtimes", default=",".join(RUNTIMES),
                        help="OCR runtimes to measure, comma-separated")
    parser.add_argument("--budget-s", type=float, default=420.0)
    parser.add_argument("--cpu-threads", type=int, default=0)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    runtimes = tuple(r.strip() for r in args.runtimes.split(",") if r.strip())
    if not runtimes or any(r not in RUNTIMES for r in runtimes):
        print(f"gpu_check: --runtimes takes {', '.join(RUNTIMES)}", file=sys.stderr)
        return 2

    import torch

    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if is_cuda(device) and not torch.cuda.is_available():
        print("gpu_check: --device cuda but torch sees no CUDA device", file=sys.stderr)
        return 2
    name = torch.cuda.get_device_name(device) if is_cuda(device) else \
        f"CPU ({os.cpu_count()} cores)"
    print(f"device: {name}; torch {torch.__version__}; OCR runtimes: {', '.join(runtimes)}")
    jpegs = sample_jpegs(args.images, args.size)
    captions = [f"a photo number {i}" for i in range(len(jpegs))]
    t0 = time.perf_counter()
    models = load_models(device, args.precision, args.cpu_threads, runtimes)
    print(f"models loaded in {time.perf_counter() - t0:.1f} s (ViT-B-32, ViT-L-14, MLP, "
          f"PP-OCR det+rec x {len(runtimes)}); {len(jpegs)} JPEGs of {args.size} px")
    for runtime, spotter in models["ocr"].items():
        if isinstance(spotter, str):
            print(f"ocr runtime={runtime} unavailable: {spotter}")

    threads = OVERLAP_THREADS if is_cuda(device) else 1
    best: tuple[float, str] | None = None
    with ThreadPoolExecutor(threads) as pool:
        for batch in (int(b) for b in args.batch_sizes.split(",") if b.strip()):
            t_warm = time.perf_counter()
            run_phases(jpegs[:batch], captions[:batch], models, batch, device, 1, pool)
            warm = time.perf_counter() - t_warm  # shapes, kernels; ~ one batch of all
            left = args.budget_s - (time.perf_counter() - started)
            estimate = warm * max(1, len(jpegs) // batch) * args.rounds
            if estimate > left:
                print(f"bs={batch} skipped: ~{estimate:.0f} s needed, {left:.0f} s left")
                continue
            n = len(jpegs) * args.rounds
            for phase, runtime, where, seconds, extra in run_phases(
                    jpegs, captions, models, batch, device, args.rounds, pool):
                if seconds is None:
                    print(f"{phase} runtime={runtime} device={where.split(':')[0]} "
                          f"bs={batch} skipped: {extra}")
                    continue
                print(phase_line(phase, runtime, where, batch, n, seconds, extra), flush=True)
                rate = n / seconds if seconds > 0 else float("inf")
                if phase == "loop_overlap" and (best is None or rate > best[0]):
                    best = (rate, f"loop_overlap runtime={runtime} bs={batch}")
    print(f"total {time.perf_counter() - started:.0f} s")
    if best is None:
        print("best loop: none measured (every batch size skipped)")
        return 0
    print(f"best loop: {best[1]} device={device.split(':')[0]} img/s={fmt_rate(best[0])}")
    print(f"LAION-2B on {GPUS} GPUs: ~{laion_hours(best[0]):.1f} h "
          f"({LAION_2B:.3g} images / ({fmt_rate(best[0])} img/s x {GPUS}) / 3600)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
