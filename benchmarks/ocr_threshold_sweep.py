"""Sweep RapidOCR detector settings on synthetic photo-like images, with and without text.

Why: the text-area / box-count filters are only useful if the detector finds printed
text in photos and stays silent on busy but text-free photos (foliage, stripes, noise).
This generates both kinds offline, runs `udfs.ocr.RapidOcrSpotter` in detection-only mode
for every (limit_type, limit_side_len, box_thresh) and prints:

  img_recall   text images with >= 1 box
  line_recall  rendered text lines >= 50% covered by detected boxes
  fp_rate      plain images with >= 1 box (fp_area: their mean text_area_fraction)
  raw_*        the same without the spotter's big-box / edge-density guards
  ms/img       detection wall time per image

then det+rec time and word accuracy for the chosen defaults.

    .venv/bin/python benchmarks/ocr_threshold_sweep.py [--n-text 40 --n-plain 40]

Results (seed 0, 40 text + 40 plain images, 2 shared CPU cores; ms/img is wall time and
was inflated up to 3x by other jobs on the machine, compare the CPU figures below):

  limit  side box_th img_rec line_rec fp_rate fp_area raw_rec raw_fp  ms/img
    min   320   0.50   1.000    0.989   0.000  0.0000   1.000  0.425   350.9
    min   320   0.60   1.000    0.989   0.000  0.0000   1.000  0.275   350.9
    min   320   0.70   1.000    0.977   0.000  0.0000   1.000  0.150   350.9
    min   512   0.50   1.000    0.989   0.000  0.0000   1.000  0.400   412.9
    min   512   0.60   1.000    0.977   0.000  0.0000   1.000  0.250   412.9
    min   512   0.70   1.000    0.977   0.000  0.0000   1.000  0.175   412.9
    min   736   0.50   1.000    0.989   0.025  0.0062   1.000  0.200  1206.4
    min   736   0.60   0.975    0.977   0.000  0.0000   0.975  0.125  1206.4
    min   736   0.70   0.925    0.954   0.000  0.0000   0.925  0.100  1206.4
    max   320   0.50   0.975    0.977   0.025  0.0095   1.000  0.400   171.9
    max   320   0.60   0.950    0.966   0.000  0.0000   0.975  0.225   171.9
    max   320   0.70   0.950    0.931   0.000  0.0000   0.975  0.075   171.9
    max   512   0.50   1.000    0.989   0.000  0.0000   1.000  0.375   307.6
    max   512   0.60   1.000    0.989   0.000  0.0000   1.000  0.325   307.6
    max   512   0.70   0.975    0.977   0.000  0.0000   0.975  0.175   307.6
    max   736   0.50   1.000    0.989   0.000  0.0000   1.000  0.400   349.6
    max   736   0.60   1.000    0.989   0.000  0.0000   1.000  0.275   349.6
    max   736   0.70   1.000    0.989   0.000  0.0000   1.000  0.150   349.6

Without the guards 20-60% of plain images get a box (raw_fp): the bundled PP-OCRv6 det
model covers flat or smooth regions with one huge low-edge box. box_thresh does not fix
that; the guards do. Small text decides the limit: on 256x256 images (img2dataset's
usual output) with 9-15 px text, box_thresh 0.6, image recall is min/320 0.85, min/512
0.95, min/736 0.95, max/736 (= native size) 0.80, all with fp_rate 0. Single-thread
CPU time per image, det only: min/512 ~365 ms at 256x256 and ~490 ms at 256-640 px;
max/736 ~85 ms and ~250 ms. Recognition adds ~50-70 ms per text image. Defaults:
min/512, box_thresh 0.6 (at 0.5 a false positive got past the guards in 6 rows over
three runs, at 0.6 in none; 0.7 loses recall). Use max/736 to cut OCR cost ~4x on
256 px images at the price of small text.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from udfs import ocr  # noqa: E402

WORDS = [
    "PARROT",
    "SALE",
    "50%",
    "OFF",
    "Coffee",
    "Open",
    "daily",
    "FREE",
    "shipping",
    "Hotel",
    "Beach",
    "2024",
    "Summer",
    "NEW",
    "menu",
    "Pizza",
    "Best",
    "price",
    "Welcome",
    "Exit",
    "STOP",
    "garden",
    "Market",
    "organic",
    "Cafe",
    "Books",
    "Music",
    "night",
    "LIVE",
    "Tickets",
]


@dataclass
class Sample:
    image: np.ndarray
    lines: list[tuple[int, int, int, int]]  # rendered text bboxes (x0, y0, x1, y1)
    words: list[str]


def photo_background(rng: np.random.Generator, h: int, w: int) -> Image.Image:
    """Gradient sky/ground, blurred blobs, a random high-frequency texture, sensor noise.

    A quarter are "studio" shots: a near-flat light backdrop with a product-like blob,
    the most common kind of LAION photo that has no text.
    """
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    angle = rng.uniform(0, np.pi)
    t = (np.cos(angle) * xx / w + np.sin(angle) * yy / h + 1.0) / 2.0
    c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    studio = rng.random() < 0.25
    if studio:
        c0 = np.full(3, rng.uniform(215, 255))
        c1 = c0 - rng.uniform(0, 25)
    img = c0[None, None, :] * (1 - t[..., None]) + c1[None, None, :] * t[..., None]
    base = Image.fromarray(img.clip(0, 255).astype(np.uint8))

    blobs = Image.new("RGB", (w, h))
    mask = Image.new("L", (w, h), 0)
    draw_b, draw_m = ImageDraw.Draw(blobs), ImageDraw.Draw(mask)
    for _ in range(rng.integers(1, 3) if studio else rng.integers(3, 9)):
        x0, y0 = rng.uniform(-0.2, 1.0) * w, rng.uniform(-0.2, 1.0) * h
        x1, y1 = x0 + rng.uniform(0.1, 0.6) * w, y0 + rng.uniform(0.1, 0.6) * h
        colour = tuple(int(v) for v in rng.uniform(0, 255, 3))
        if rng.random() < 0.5:
            draw_b.ellipse((x0, y0, x1, y1), fill=colour)
            draw_m.ellipse((x0, y0, x1, y1), fill=int(rng.uniform(120, 255)))
        else:
            pts = [(rng.uniform(x0, x1), rng.uniform(y0, y1)) for _ in range(5)]
            draw_b.polygon(pts, fill=colour)
            draw_m.polygon(pts, fill=int(rng.uniform(120, 255)))
    radius = float(rng.uniform(3, 12))
    base = Image.composite(
        blobs.filter(ImageFilter.GaussianBlur(radius)),
        base,
        mask.filter(ImageFilter.GaussianBlur(radius)),
    )
    arr = np.asarray(base).astype(np.float32)
    if not studio:
        arr += texture(rng, h, w)[..., None]
    arr += rng.normal(0, rng.uniform(1, 3) if studio else rng.uniform(2, 10), arr.shape)
    return Image.fromarray(arr.clip(0, 255).astype(np.uint8))


def texture(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Signed luminance texture; the hard negatives for a text detector."""
    kind = rng.choice(["none", "stripes", "grass", "harsh_grass", "speckle", "bars"])
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    if kind == "stripes":
        angle = rng.uniform(0, np.pi)
        period = rng.uniform(4, 16)
        phase = (np.cos(angle) * xx + np.sin(angle) * yy) * 2 * np.pi / period
        return rng.uniform(15, 45) * np.sin(phase)
    if kind == "grass":
        blades = rng.normal(0, 1, (h, w)).astype(np.float32)
        img = Image.fromarray(((blades + 4) * 30).clip(0, 255).astype(np.uint8))
        img = img.filter(ImageFilter.BoxBlur(1)).resize((w, max(1, h // 6))).resize((w, h))
        streaks = np.asarray(img).astype(np.float32) - 120
        return streaks * rng.uniform(0.4, 1.0)
    if kind == "harsh_grass":  # unblurred high-contrast vertical streaks
        rows = rng.integers(0, 256, (max(1, h // 6), w), dtype=np.uint8)
        streaks = np.asarray(Image.fromarray(rows).resize((w, h))).astype(np.float32) - 128
        return streaks * rng.uniform(0.3, 0.5)
    if kind == "speckle":
        dots = (rng.random((h, w)) < 0.04).astype(np.float32)
        img = Image.fromarray((dots * 255).astype(np.uint8)).filter(ImageFilter.MaxFilter(3))
        return -np.asarray(img).astype(np.float32) * rng.uniform(0.2, 0.5)
    if kind == "bars":  # fence / railing: regular dark vertical bars
        period = int(rng.integers(10, 30))
        bars = ((xx.astype(int) % period) < max(2, period // 4)).astype(np.float32)
        return -bars * rng.uniform(40, 90)
    return np.zeros((h, w), np.float32)


def contrasting_colour(rng: np.random.Generator, bg_mean: np.ndarray) -> tuple[int, int, int]:
    lum = float(bg_mean @ np.array([0.299, 0.587, 0.114]))
    for _ in range(50):
        c = rng.uniform(0, 255, 3)
        if abs(float(c @ np.array([0.299, 0.587, 0.114])) - lum) > 90:
            return tuple(int(v) for v in c)
    return (0, 0, 0) if lum > 127 else (255, 255, 255)


def text_sample(
    rng: np.random.Generator, h: int, w: int, text_px: tuple[int, int] = (16, 48)
) -> Sample:
    img = photo_background(rng, h, w)
    draw = ImageDraw.Draw(img)
    lines, words, taken = [], [], []
    for _ in range(rng.integers(1, 4)):
        size = int(rng.integers(text_px[0], text_px[1] + 1))
        font = ImageFont.load_default(size=size)
        line_words = list(rng.choice(WORDS, size=int(rng.integers(1, 4)), replace=False))
        text = " ".join(line_words)
        x0, y0, x1, y1 = draw.textbbox((0, 0), text, font=font)
        tw, th = x1 - x0, y1 - y0
        if tw >= w - 8 or th >= h - 8:
            continue
        for _ in range(20):
            x = int(rng.integers(4, w - tw - 4))
            y = int(rng.integers(4, h - th - 4))
            box = (x, y, x + tw, y + th)
            if not any(_overlap(box, t) for t in taken):
                break
        else:
            continue
        region = np.asarray(img)[box[1] : box[3], box[0] : box[2]].reshape(-1, 3).mean(0)
        draw.text((x - x0, y - y0), text, font=font, fill=contrasting_colour(rng, region))
        taken.append(box)
        lines.append(box)
        words.extend(line_words)
    return Sample(np.asarray(img), lines, words)


def _overlap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    return not (a[2] + 6 < b[0] or b[2] + 6 < a[0] or a[3] + 6 < b[1] or b[3] + 6 < a[1])


def make_dataset(
    n_text: int,
    n_plain: int,
    seed: int,
    sides: tuple[int, int] = (256, 640),
    text_px: tuple[int, int] = (16, 48),
) -> tuple[list[Sample], list[Sample]]:
    rng = np.random.default_rng(seed)
    sizes = lambda: tuple(int(v) for v in rng.integers(sides[0], sides[1] + 1, 2))  # noqa: E731
    texts = []
    while len(texts) < n_text:
        s = text_sample(rng, *sizes(), text_px=text_px)
        if s.lines:
            texts.append(s)
    plains = [Sample(np.asarray(photo_background(rng, *sizes())), [], []) for _ in range(n_plain)]
    return texts, plains


def line_covered(result: ocr.OcrResult, line: tuple[int, int, int, int], h: int, w: int) -> bool:
    mask = Image.new("1", (w, h), 0)
    draw = ImageDraw.Draw(mask)
    for b in result.boxes:
        draw.polygon(b.polygon, fill=1, outline=1)
    x0, y0, x1, y1 = line
    covered = np.asarray(mask)[y0:y1, x0:x1]
    return covered.size > 0 and covered.mean() >= 0.5


def keep(result: ocr.OcrResult, image: np.ndarray, min_conf: float, guard: bool) -> ocr.OcrResult:
    """Re-apply box_thresh and the guards to a raw run: the network output does not
    depend on them, so one detector run serves every threshold."""
    h, w = result.image_height, result.image_width
    grey = ocr.grey_levels(image)
    boxes = [
        b
        for b in result.boxes
        if b.confidence >= min_conf
        and (
            not guard
            or (
                ocr.polygon_area(b.polygon) <= ocr.DEFAULT_MAX_BOX_FRACTION * h * w
                and ocr.edge_density(grey, b.polygon) >= ocr.DEFAULT_MIN_EDGE_DENSITY
            )
        )
    ]
    return ocr.OcrResult(boxes, h, w)


def metrics(text_res: list, plain_res: list, texts: list[Sample]) -> dict:
    n_lines = sum(len(s.lines) for s in texts)
    hit_lines = sum(
        line_covered(r, line, *s.image.shape[:2])
        for s, r in zip(texts, text_res, strict=True)
        for line in s.lines
    )
    return {
        "img_recall": float(np.mean([r.box_count > 0 for r in text_res])),
        "line_recall": hit_lines / max(1, n_lines),
        "fp_rate": float(np.mean([r.box_count > 0 for r in plain_res])),
        "fp_area": float(np.mean([r.text_area_fraction for r in plain_res])),
    }


def sweep_row(
    limit_type: str,
    side: int,
    threshes: list[float],
    texts: list[Sample],
    plains: list[Sample],
    threads: int | None,
) -> None:
    """One detector run per (limit_type, side); box_thresh only filters its boxes."""
    spotter = ocr.RapidOcrSpotter(
        side,
        min(threshes),
        det_limit_type=limit_type,
        max_box_fraction=1.0,
        min_edge_density=0.0,
        num_threads=threads,
    )
    spotter.spot([texts[0].image])  # warm-up: the first call builds the ONNX session
    t0 = time.perf_counter()
    raw_text = spotter.spot([s.image for s in texts])
    raw_plain = spotter.spot([s.image for s in plains])
    ms = 1000 * (time.perf_counter() - t0) / (len(texts) + len(plains))
    for t in threshes:
        runs = {}
        for guard in (True, False):
            runs[guard] = metrics(
                [keep(r, s.image, t, guard) for r, s in zip(raw_text, texts, strict=True)],
                [keep(r, s.image, t, guard) for r, s in zip(raw_plain, plains, strict=True)],
                texts,
            )
        m, raw = runs[True], runs[False]
        print(
            f"{limit_type:>5} {side:>5} {t:>6.2f} {m['img_recall']:>7.3f} "
            f"{m['line_recall']:>8.3f} {m['fp_rate']:>7.3f} {m['fp_area']:>7.4f} "
            f"{raw['img_recall']:>7.3f} {raw['fp_rate']:>6.3f} {ms:>7.1f}",
            flush=True,
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-text", type=int, default=40)
    ap.add_argument("--n-plain", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sides", type=int, nargs="+", default=[320, 512, 736])
    ap.add_argument("--threshes", type=float, nargs="+", default=[0.5, 0.6, 0.7])
    ap.add_argument("--limit-types", nargs="+", default=["min", "max"])
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--text-px", type=int, nargs=2, default=[16, 48], metavar=("MIN", "MAX"))
    ap.add_argument(
        "--image-sides",
        type=int,
        nargs=2,
        default=[256, 640],
        metavar=("MIN", "MAX"),
        help="image height/width range; 256 256 mimics img2dataset 256 output",
    )
    ap.add_argument("--save-dir", type=Path, default=None, help="write the images as PNG")
    args = ap.parse_args()

    texts, plains = make_dataset(
        args.n_text, args.n_plain, args.seed, tuple(args.image_sides), tuple(args.text_px)
    )
    if args.save_dir:
        args.save_dir.mkdir(parents=True, exist_ok=True)
        for i, s in enumerate(texts + plains):
            kind = "text" if s.lines else "plain"
            Image.fromarray(s.image).save(args.save_dir / f"{kind}_{i:03d}.png")
    print(
        f"{len(texts)} text images ({sum(len(s.lines) for s in texts)} lines), "
        f"{len(plains)} plain images, sides {args.image_sides[0]}-{args.image_sides[1]} px"
    )
    print(
        f"guarded: boxes over {ocr.DEFAULT_MAX_BOX_FRACTION:.0%} of the image or with edge "
        f"density < {ocr.DEFAULT_MIN_EDGE_DENSITY} dropped; raw_*: no guards"
    )
    print(
        f"{'limit':>5} {'side':>5} {'box_th':>6} {'img_rec':>7} {'line_rec':>8} "
        f"{'fp_rate':>7} {'fp_area':>7} {'raw_rec':>7} {'raw_fp':>6} {'ms/img':>7}"
    )
    for limit_type in args.limit_types:
        for side in args.sides:
            sweep_row(limit_type, side, args.threshes, texts, plains, args.threads)

    spotter = ocr.RapidOcrSpotter(num_threads=args.threads)
    spotter.spot([texts[0].image], recognize=True)
    t0 = time.perf_counter()
    res = spotter.spot([s.image for s in texts], recognize=True)
    ms_text = 1000 * (time.perf_counter() - t0) / len(texts)
    t0 = time.perf_counter()
    spotter.spot([s.image for s in plains], recognize=True)
    ms_plain = 1000 * (time.perf_counter() - t0) / len(plains)
    found = sum(
        w.lower() in r.text.lower() for s, r in zip(texts, res, strict=True) for w in s.words
    )
    total = sum(len(s.words) for s in texts)
    print(
        f"defaults side={ocr.DEFAULT_LIMIT_SIDE_LEN} type={ocr.DEFAULT_LIMIT_TYPE} "
        f"box_thresh={ocr.DEFAULT_BOX_THRESH}: det+rec {ms_text:.1f} ms/img on text images, "
        f"{ms_plain:.1f} ms/img on plain; words read {found}/{total} = {found / total:.3f}"
    )


if __name__ == "__main__":
    main()
