"""The score stage's bare loop on one device, phase by phase: what a GPU buys.

    bash benchmarks/gpu_check.sh                    # CUDA when present
    bash benchmarks/gpu_check.sh --device cpu --images 16 --batch-sizes 8

No Spark, no Java, no network: deparrot's executor code (udfs/) on generated JPEGs
(posters with words, text-free "photos", photos with a small sign), with the real
architectures and random weights (the same compute as the real ones):

- decode: JPEG -> RGB array (udfs.decode, one thread);
- ocr_det, ocr_rec: the stage's default spotter (batched PP-OCR through onnxruntime;
  on the GPU only with onnxruntime-gpu, else said and run on the CPU);
- b32: CLIP ViT-B/32 image + caption towers (fp16 on CUDA);
- l14_mlp: CLIP ViT-L/14 image tower + LAION's aesthetic MLP;
- loop: all of the above in sequence on the same batch, as one Python worker does it.

Printed: images/s per phase and for the loop at each batch size, the device, and which
engine ran OCR. The budget (`--budget-s`, 420 s by default) stops before starting a batch
size the remaining time cannot fit, so the check ends within its 8 minutes.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from udfs import aesthetic, clip_models  # noqa: E402
from udfs.batched_ocr import batched_spotter  # noqa: E402
from udfs.decode import decode_image  # noqa: E402
from udfs.device import ort_cuda_available  # noqa: E402

WORDS = ("OPEN", "GRAND SALE", "FREE WIFI", "EXIT", "COFFEE", "HOTEL", "SUMMER 2024",
         "NO PARKING", "PIZZA", "BOOKS")


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


def sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


class Phases:
    """Wall seconds per phase over the measured rounds."""

    def __init__(self, device: str):
        self.device, self.seconds = device, {}

    def run(self, name: str, fn):
        sync(self.device)
        t0 = time.perf_counter()
        out = fn()
        sync(self.device)
        self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t0
        return out


def one_pass(jpegs: list[bytes], captions: list[str], models: dict, batch: int,
             phases: Phases) -> None:
    b32, l14, mlp, spotter = models["b32"], models["l14"], models["mlp"], models["ocr"]
    for start in range(0, len(jpegs), batch):
        chunk = jpegs[start:start + batch]
        arrays = phases.run("decode", lambda c=chunk: [np.asarray(decode_image(d).image)
                                                       for d in c])
        before = dict(spotter.seconds)
        phases.run("ocr", lambda a=arrays: spotter.spot(a, recognize=True))
        for key in ("det", "det_post", "rec"):
            name = "ocr_rec" if key == "rec" else "ocr_det"
            phases.seconds[name] = phases.seconds.get(name, 0.0) + \
                spotter.seconds.get(key, 0.0) - before.get(key, 0.0)
        texts = captions[start:start + batch]
        phases.run("b32", lambda a=arrays, t=texts: clip_models.clip_scores(
            clip_models.encode_images(b32, a, batch_size=batch),
            clip_models.encode_texts(b32, t, batch_size=batch)))
        phases.run("l14_mlp", lambda a=arrays: aesthetic.score(
            mlp, clip_models.encode_images(l14, a, batch_size=batch)))


def load_models(device: str, precision: str, cpu_threads: int) -> dict:
    import torch

    if device == "cpu" and cpu_threads:
        torch.set_num_threads(cpu_threads)
    b32 = clip_models.load_clip("ViT-B-32", "random", device, precision, random_init_ok=True)
    l14 = clip_models.load_clip("ViT-L-14", "random", device, precision, random_init_ok=True)
    mlp = aesthetic.load_aesthetic("random", device, input_dim=l14.embed_dim,
                                   random_init_ok=True)
    ocr = batched_spotter(device=device, cpu_threads=cpu_threads)
    return {"b32": b32, "l14": l14, "mlp": mlp, "ocr": ocr}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto | cuda | cuda:N | cpu")
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--size", type=int, default=256, help="side of the stored images")
    parser.add_argument("--batch-sizes", default="64,128,256")
    parser.add_argument("--rounds", type=int, default=2, help="measured passes per size")
    parser.add_argument("--precision", default="fp16", help="fp16 | bf16 | fp32 (CUDA)")
    parser.add_argument("--budget-s", type=float, default=420.0)
    parser.add_argument("--cpu-threads", type=int, default=0)
    args = parser.parse_args(argv)
    started = time.perf_counter()

    import torch

    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        print("gpu_check: --device cuda but torch sees no CUDA device", file=sys.stderr)
        return 2
    name = torch.cuda.get_device_name(device) if device.startswith("cuda") else \
        f"CPU ({os.cpu_count()} cores)"
    ocr_engine = "onnxruntime CUDA" if device.startswith("cuda") and ort_cuda_available() \
        else "onnxruntime CPU"
    print(f"device: {name}; torch {torch.__version__}; OCR: {ocr_engine}"
          + ("" if ocr_engine.endswith("CUDA") or device == "cpu" else
             " (onnxruntime-gpu not installed: OCR figures are CPU figures)"))
    jpegs = sample_jpegs(args.images, args.size)
    captions = [f"a photo number {i}" for i in range(len(jpegs))]
    t0 = time.perf_counter()
    models = load_models(device, args.precision, args.cpu_threads)
    print(f"models loaded in {time.perf_counter() - t0:.1f} s (ViT-B-32, ViT-L-14, MLP, "
          f"PP-OCR det+rec); {len(jpegs)} JPEGs of {args.size} px")

    header = f"{'batch':>6} {'decode':>9} {'ocr_det':>9} {'ocr_rec':>9} {'b32':>9} " \
             f"{'l14_mlp':>9} {'loop':>9}   images/s"
    print(header)
    for batch in (int(b) for b in args.batch_sizes.split(",") if b.strip()):
        warm = Phases(device)
        one_pass(jpegs[:batch], captions[:batch], models, batch, warm)  # shapes, kernels
        left = args.budget_s - (time.perf_counter() - started)
        estimate = sum(warm.seconds.get(k, 0.0) for k in ("decode", "ocr", "b32", "l14_mlp")
                       ) * max(1, len(jpegs) // batch) * args.rounds
        if estimate > left:
            print(f"{batch:>6}   skipped: ~{estimate:.0f} s needed, {left:.0f} s left")
            continue
        phases = Phases(device)
        for _ in range(args.rounds):
            one_pass(jpegs, captions, models, batch, phases)
        n = len(jpegs) * args.rounds
        rate = {k: n / v if v > 0 else float("inf") for k, v in phases.seconds.items()}
        loop = n / sum(phases.seconds[k] for k in ("decode", "ocr", "b32", "l14_mlp"))
        print(f"{batch:>6} {rate['decode']:>9.1f} {rate.get('ocr_det', 0):>9.1f} "
              f"{rate.get('ocr_rec', 0):>9.1f} {rate['b32']:>9.1f} {rate['l14_mlp']:>9.1f} "
              f"{loop:>9.1f}")
    print(f"total {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
