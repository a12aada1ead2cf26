"""A miniature world where reading is both learnable and a tempting shortcut.

The paper's claim is about what CLIP learns from parrot captions. To show it on a
laptop, the data must let a tiny model learn to read in minutes, and give it a reason
to: so the words are few (VOCABULARY), printed large, and are the whole caption of the
"parrot" pairs. Three kinds of pairs, mixed as LAION mixes them:

- visual: the caption describes what is seen: a coloured shape on a textured or
  photographic background ("a red circle"), or a crop of one of scikit-image's real
  photographs ("a photo of a cat");
- parrot: the caption is the word printed in the image, on a plain or photographic
  background (the "poster" case the paper removes);
- mixed: a visual image with a small sign in a corner; the caption describes the
  visual content and ignores the sign (what T-MARS wants to keep).

`generate_world` writes the same layout as `jobs.sample.generate` (LAION metadata
parquet, images, truth.parquet), so `deparrot run` curates it as usual. The held-out
evaluation sets come from `visual_eval_set` (new draws of every visual class) and the
words rendered by udfs/render.py at the model's input size (Sync. Score).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageDraw, ImageFilter

from jobs.config import MiniatureConfig, SampleConfig
from jobs.sample_files import LAION400M_SCHEMA, SampleSummary, jpeg_bytes

# Four-letter, visually distinct words: at 64 px model input each letter is ~12 px wide.
VOCABULARY = (
    "SALE", "OPEN", "CAFE", "TAXI", "BOOK", "BANK", "PARK", "STOP",
    "SHOP", "JAZZ", "FARM", "CLUB", "MILK", "GOLD", "WINE", "KING",
)
COLOURS = {
    "red": (220, 30, 30), "green": (30, 170, 50), "blue": (30, 60, 220),
    "yellow": (240, 220, 20), "purple": (140, 40, 180), "orange": (250, 140, 10),
}
SHAPES = ("circle", "square", "triangle", "cross")
# scikit-image's bundled photographs (no download): file -> what a caption calls it.
PHOTOS = {
    "astronaut.png": "astronaut", "chelsea.png": "cat", "coffee.png": "coffee cup",
    "rocket.jpg": "rocket", "hubble_deep_field.jpg": "galaxy",
    "motorcycle_left.png": "motorcycle", "camera.png": "cameraman", "moon.png": "moon",
    "coins.png": "pile of coins",
}
TEXTURES = ("brick.png", "grass.png", "gravel.png")
KINDS = ("visual", "parrot", "mixed")
# Poster text height as a share of the image side (font pixels); the metrics render the
# vocabulary at the middle of this range, the world's own print size.
POSTER_FONT_SHARE = (0.23, 0.3)


@dataclass(frozen=True)
class WorldMix:
    """Shares of each kind of pair (the rest are visual); defaults: miniature's settings."""

    parrot: float = MiniatureConfig.parrot_share
    mixed: float = MiniatureConfig.mixed_share


def visual_classes() -> list[str]:
    """Every visual caption: colour x shape, then the photographs."""
    shapes = [f"a {c} {s}" for c in COLOURS for s in SHAPES]
    return shapes + [f"a photo of a {name}" for name in PHOTOS.values()]


@cache
def _skimage_photo(name: str) -> Image.Image:
    try:
        from skimage import io as skio
        from skimage.data import data_dir
    except ImportError as exc:  # pragma: no cover - scikit-image is in the ml extra
        raise RuntimeError("the miniature world's photographs ship with scikit-image: "
                           "pip install 'deparrot[ml]'") from exc
    arr = skio.imread(str(Path(data_dir) / name))
    if arr.ndim == 2:
        arr = np.stack([arr] * 3, axis=-1)
    return Image.fromarray(np.asarray(arr[..., :3], dtype=np.uint8), "RGB")


def _crop(rng: np.random.Generator, photo: Image.Image, size: int, min_share: float) -> Image.Image:
    """A random square crop covering at least `min_share` of the short side, resized."""
    short = min(photo.size)
    side = int(short * rng.uniform(min_share, 1.0))
    x = int(rng.integers(0, photo.width - side + 1))
    y = int(rng.integers(0, photo.height - side + 1))
    img = photo.crop((x, y, x + side, y + side)).resize((size, size), Image.BILINEAR)
    return img.transpose(Image.FLIP_LEFT_RIGHT) if rng.random() < 0.5 else img


def _background(rng: np.random.Generator, size: int) -> Image.Image:
    """Plain, gradient, texture or photo background for shapes and posters."""
    pick = rng.random()
    if pick < 0.25:
        return Image.new("RGB", (size, size), tuple(int(v) for v in rng.integers(0, 256, 3)))
    if pick < 0.5:
        top, bottom = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
        t = np.linspace(0.0, 1.0, size)[:, None, None]
        arr = (top * (1 - t) + bottom * t) * np.ones((1, size, 1))
        return Image.fromarray(arr.astype(np.uint8), "RGB")
    if pick < 0.75:
        return _crop(rng, _skimage_photo(str(rng.choice(TEXTURES))), size, 0.3)
    photo = _skimage_photo(str(rng.choice(list(PHOTOS))))
    return _crop(rng, photo, size, 0.3).filter(ImageFilter.GaussianBlur(size / 40))


def _shape(draw: ImageDraw.ImageDraw, rng: np.random.Generator, shape: str, colour: tuple,
           size: int) -> None:
    r = size * rng.uniform(0.22, 0.34)
    cx, cy = size * rng.uniform(0.38, 0.62, 2)
    outline = (0, 0, 0) if sum(colour) > 380 else (255, 255, 255)
    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour, outline=outline, width=2)
    elif shape == "square":
        draw.rectangle([cx - r, cy - r, cx + r, cy + r], fill=colour, outline=outline, width=2)
    elif shape == "triangle":
        pts = [(cx, cy - r), (cx - r, cy + r * 0.8), (cx + r, cy + r * 0.8)]
        draw.polygon(pts, fill=colour, outline=outline, width=2)
    else:
        w = r / 2.6
        draw.rectangle([cx - r, cy - w, cx + r, cy + w], fill=colour)
        draw.rectangle([cx - w, cy - r, cx + w, cy + r], fill=colour)


def visual_image(rng: np.random.Generator, size: int, caption: str) -> Image.Image:
    """An image of what `caption` (one of visual_classes()) describes."""
    for file, name in PHOTOS.items():
        if caption == f"a photo of a {name}":
            return _crop(rng, _skimage_photo(file), size, 0.6)
    _, colour, shape = caption.split(" ", 2)
    img = _background(rng, size)
    _shape(ImageDraw.Draw(img), rng, shape, COLOURS[colour], size)
    return img


def _font(size: int):
    from udfs.render import default_bold_font_path, load_font

    return load_font(default_bold_font_path(), size)


def _label(img: Image.Image, rng: np.random.Generator, word: str, font_px: int,
           centre: tuple[float, float]) -> None:
    """`word` on a contrasting plate around `centre` (clipped to the image)."""
    draw = ImageDraw.Draw(img)
    font = _font(font_px)
    left, top, right, bottom = draw.textbbox((0, 0), word, font=font)
    w, h = right - left, bottom - top
    pad = max(2, font_px // 6)
    x = int(np.clip(centre[0] - w / 2, pad, img.width - w - pad))
    y = int(np.clip(centre[1] - h / 2, pad, img.height - h - pad))
    light = rng.random() < 0.5
    plate = tuple(int(v) for v in (rng.integers(215, 256, 3) if light else rng.integers(0, 40, 3)))
    ink = (0, 0, 0) if light else (255, 255, 255)
    draw.rectangle([x - pad, y - pad, x + w + pad, y + h + pad], fill=plate)
    draw.text((x - left, y - top), word, font=font, fill=ink)


def parrot_image(rng: np.random.Generator, size: int, word: str) -> Image.Image:
    """`word` printed large (a poster or sign) on a plain or photographic background."""
    font_px = int(size * rng.uniform(*POSTER_FONT_SHARE))
    if rng.random() < 0.3:
        # The Sync. Score benchmark's look: one of the paper's four plain styles, centred.
        from udfs.render import STYLES

        background, ink = STYLES[str(rng.choice(list(STYLES)))]
        img = Image.new("RGB", (size, size), background)
        draw = ImageDraw.Draw(img)
        font = _font(font_px)
        left, top, right, bottom = draw.textbbox((0, 0), word, font=font)
        draw.text(((size - right - left) / 2, (size - bottom - top) / 2), word, font=font,
                  fill=ink)
        return img
    img = _background(rng, size)
    _label(img, rng, word, font_px, (size * rng.uniform(0.45, 0.55), size * rng.uniform(0.3, 0.7)))
    return img


def mixed_image(rng: np.random.Generator, size: int, caption: str, word: str) -> Image.Image:
    """A visual image with a small sign in a corner that its caption does not mention."""
    img = visual_image(rng, size, caption)
    corner = (size * float(rng.choice([0.2, 0.8])), size * float(rng.choice([0.12, 0.88])))
    _label(img, rng, word, max(10, int(size * 0.1)), corner)
    return img


def plan(rows: int, mix: WorldMix, rng: np.random.Generator) -> list[str]:
    """Kinds per row in a shuffled order, with the mix's shares."""
    n_parrot, n_mixed = round(rows * mix.parrot), round(rows * mix.mixed)
    kinds = ["parrot"] * n_parrot + ["mixed"] * n_mixed + ["visual"] * (rows - n_parrot - n_mixed)
    rng.shuffle(kinds)
    return kinds


def generate_world(cfg: SampleConfig, mix: WorldMix | None = None):
    """Write the world under cfg.out (LAION layout, like jobs.sample); deterministic per seed."""
    mix = mix or WorldMix()
    rng = np.random.default_rng(cfg.seed)
    out = Path(cfg.out)
    (out / "metadata").mkdir(parents=True, exist_ok=True)
    (out / "images").mkdir(parents=True, exist_ok=True)
    base = cfg.base_url.rstrip("/") + "/images/"
    classes = visual_classes()
    records, truth = [], []
    for i, kind in enumerate(plan(cfg.rows, mix, rng)):
        sample_id = 2_000_000 + i
        word = str(rng.choice(VOCABULARY))
        caption = str(rng.choice(classes))
        if kind == "parrot":
            img, text = parrot_image(rng, cfg.image_size, word), word
        elif kind == "mixed":
            img, text = mixed_image(rng, cfg.image_size, caption, word), caption
        else:
            img, text, word = visual_image(rng, cfg.image_size, caption), caption, ""
        name = f"{sample_id}.jpg"
        (out / "images" / name).write_bytes(jpeg_bytes(img, quality=92))
        records.append({
            "SAMPLE_ID": sample_id, "URL": base + name, "TEXT": text,
            "HEIGHT": float(cfg.image_size), "WIDTH": float(cfg.image_size), "LICENSE": "?",
            "NSFW": "UNLIKELY", "similarity": float(np.round(rng.uniform(0.28, 0.42), 6)),
            "aesthetic": float(np.round(rng.uniform(4.2, 6.5), 4)),
        })
        truth.append({"SAMPLE_ID": sample_id, "kind": kind, "group": sample_id, "word": word,
                      "caption": text})
    per_file = -(-len(records) // max(1, cfg.files))
    for f in range(max(1, cfg.files)):
        chunk = records[f * per_file:(f + 1) * per_file]
        if chunk:
            pq.write_table(pa.Table.from_pylist(chunk, schema=LAION400M_SCHEMA),
                           out / "metadata" / f"part-{f:05d}.parquet")
    pq.write_table(pa.Table.from_pylist(truth), out / "truth.parquet")
    counts = {k: sum(t["kind"] == k for t in truth) for k in KINDS}
    return SampleSummary(out=out, rows=len(records), kinds=counts)


def visual_eval_set(size: int, per_class: int, seed: int) -> tuple[list[Image.Image], list[int]]:
    """Held-out draws of every visual class (a seed the training world never uses)."""
    rng = np.random.default_rng(10_000 + seed)
    images, labels = [], []
    for label, caption in enumerate(visual_classes()):
        for _ in range(per_class):
            images.append(visual_image(rng, size, caption))
            labels.append(label)
    return images, labels
