"""`deparrot sample`: a small LAION-400M-style sample with the cases the recipe must handle.

It writes `metadata/part-*.<format>` (the LAION-400M columns, or with `shape:
url_caption` only URL and TEXT plus a pandas index column, the shape of img2dataset's
test files; as parquet, csv or tsv), `images/` (the files the URLs point at, served by a
local HTTP server in the demo and tests) and `truth.parquet` (the kind of each row, which
only tests and the demo read). Kinds: photo (no text), text (rendered words, caption
parrots them), exact_dup / near_dup (of a photo), broken (truncated, empty, HTML, random
bytes), and invalid metadata rows.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from jobs.config import Config, SampleConfig
from jobs.miniature_world import generate_world
from jobs.sample_files import LAION400M_SCHEMA, SampleSummary, jpeg_bytes
from jobs.stages import Stage

WORDS = [
    "SUMMER SALE", "OPEN 24 HOURS", "BEST COFFEE", "GRAND OPENING", "FREE WIFI",
    "HAPPY BIRTHDAY", "NO PARKING", "FRESH BREAD", "LIVE MUSIC", "BIG DEAL",
    "WELCOME HOME", "HOTEL PARIS", "GAME OVER", "STAY CALM", "ROAD CLOSED",
]
THINGS = ["mountain lake", "red flower", "forest path", "sandy beach", "city skyline",
          "old barn", "green field", "snowy peak", "blue bicycle", "wooden table"]
STYLES = ["a photo of a", "a watercolor of a", "close-up of a", "a picture of a"]
INVALID_KINDS = ["missing_url", "bad_url", "missing_text", "non_finite", "negative_size",
                 "duplicate_id"]
# A URL + caption file has no sizes or scores to break; its duplicate repeats URL and TEXT.
URL_CAPTION_INVALID_KINDS = ["missing_url", "bad_url", "missing_text", "duplicate_id"]
BROKEN_KINDS = ["truncated", "empty", "html", "random"]
def photo_image(rng: np.random.Generator, size: int) -> Image.Image:
    """A text-free, photo-like image: gradient sky/ground, soft shapes, sensor noise."""
    top, bottom = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    t = np.linspace(0.0, 1.0, size)[:, None, None]
    arr = (top * (1 - t) + bottom * t) * np.ones((1, size, 1))
    img = Image.fromarray(arr.astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(3, 7))):
        x0, y0 = rng.integers(-size // 4, size, 2)
        w, h = rng.integers(size // 6, size // 2, 2)
        fill = tuple(int(v) for v in rng.integers(0, 256, 3))
        if rng.random() < 0.5:
            draw.ellipse([x0, y0, x0 + w, y0 + h], fill=fill)
        else:
            pts = [tuple(int(v) for v in rng.integers(0, size, 2)) for _ in range(3)]
            draw.polygon(pts, fill=fill)
    img = img.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(2, 6))))
    noisy = np.asarray(img, dtype=np.int16) + rng.normal(0, 6, (size, size, 3)).astype(np.int16)
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8), "RGB")


def text_image(rng: np.random.Generator, size: int, words: str) -> Image.Image:
    """Words printed large and centred over a photo-like background (a poster/sign)."""
    img = photo_image(rng, size)
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default(size=max(12, size // 9))
    box = draw.textbbox((0, 0), words, font=font)
    w, h = box[2] - box[0], box[3] - box[1]
    x, y = (size - w) // 2, (size - h) // 2
    dark = rng.random() < 0.5
    pad = size // 24
    draw.rectangle([x - pad, y - pad, x + w + pad, y + h + pad],
                   fill=(245, 245, 240) if dark else (20, 20, 25))
    draw.text((x - box[0], y - box[1]), words, font=font,
              fill=(10, 10, 10) if dark else (250, 250, 250))
    return img


def broken_bytes(kind: str, rng: np.random.Generator, size: int) -> bytes:
    if kind == "truncated":
        data = jpeg_bytes(photo_image(rng, size))
        return data[: len(data) // 3]
    if kind == "empty":
        return b""
    if kind == "html":
        return b"<!DOCTYPE html><html><body>404 image not found</body></html>"
    return rng.integers(0, 256, 2048, dtype=np.uint8).tobytes()


def _plan(rows: int, rng: np.random.Generator, invalid: list[str] = INVALID_KINDS
          ) -> list[str]:
    """Kinds per row: fixed shares, at least one of every case once rows >= 40."""
    n_invalid = max(len(invalid), rows // 20)
    n_broken = max(len(BROKEN_KINDS), rows // 20)
    n_exact = max(2, rows // 16)
    n_near = max(2, rows // 16)
    n_text = max(4, rows // 4)
    n_photo = rows - n_invalid - n_broken - n_exact - n_near - n_text
    if n_photo < n_exact + n_near:
        raise ValueError(f"sample.rows={rows} is too small; use at least 40")
    kinds = (["photo"] * n_photo + ["text"] * n_text + ["exact_dup"] * n_exact
             + ["near_dup"] * n_near + [f"broken:{BROKEN_KINDS[i % 4]}" for i in range(n_broken)]
             + [f"invalid:{invalid[i % len(invalid)]}" for i in range(n_invalid)])
    # Photos first so duplicates can refer back to an earlier photo; shuffle the rest.
    head, tail = kinds[:n_photo], kinds[n_photo:]
    rng.shuffle(tail)
    return head + tail


def generate(cfg: SampleConfig) -> SampleSummary:
    """Write the sample under cfg.out; deterministic for a given cfg.seed."""
    if cfg.kind == "miniature":
        return generate_world(cfg)
    rng = np.random.default_rng(cfg.seed)
    out = Path(cfg.out)
    (out / "metadata").mkdir(parents=True, exist_ok=True)
    images_dir = out / "images"
    if cfg.images:
        images_dir.mkdir(parents=True, exist_ok=True)
    url_caption = cfg.shape == "url_caption"
    kinds = _plan(cfg.rows, rng, URL_CAPTION_INVALID_KINDS if url_caption else INVALID_KINDS)
    base = cfg.base_url.rstrip("/") + "/images/"
    size = cfg.image_size
    records: list[dict] = []
    truth: list[dict] = []
    photos: list[tuple[int, Image.Image, str]] = []
    for i, kind in enumerate(kinds):
        sample_id = 1_000_000 + i
        name = f"{sample_id}.jpg"
        url = base + name
        text = f"{rng.choice(STYLES)} {rng.choice(THINGS)}"
        data: bytes | None = None
        group = sample_id
        if kind == "photo":
            img = photo_image(rng, size)
            data = jpeg_bytes(img)
            photos.append((sample_id, img, text))
        elif kind == "text":
            words = str(rng.choice(WORDS))
            text = f"{words} {rng.choice(['poster', 'sign', 'banner'])}"
            data = jpeg_bytes(text_image(rng, size, words))
        elif kind in ("exact_dup", "near_dup"):
            group, img, text = photos[int(rng.integers(0, len(photos)))]
            if kind == "exact_dup":
                data = jpeg_bytes(img)
            else:
                shifted = np.clip(np.asarray(img, dtype=np.int16) + 4, 0, 255)
                data = jpeg_bytes(Image.fromarray(shifted.astype(np.uint8)), quality=80)
        elif kind.startswith("broken:"):
            data = broken_bytes(kind.split(":", 1)[1], rng, size)
        record = {
            "SAMPLE_ID": sample_id, "URL": url, "TEXT": text, "HEIGHT": float(size),
            "WIDTH": float(size), "LICENSE": "?", "NSFW": "UNLIKELY",
            "similarity": float(np.round(rng.uniform(0.28, 0.42), 6)),
            "aesthetic": float(np.round(rng.uniform(4.2, 6.5), 4)),
        }
        if kind.startswith("invalid:"):
            _break_record(record, kind.split(":", 1)[1], records, url_caption)
        if data is not None and cfg.images:
            (images_dir / name).write_bytes(data)
        records.append(record)
        truth.append({"SAMPLE_ID": sample_id, "kind": kind, "group": group})
    per_file = -(-len(records) // max(1, cfg.files))
    for f in range(max(1, cfg.files)):
        chunk = records[f * per_file:(f + 1) * per_file]
        if chunk:
            table = pa.Table.from_pylist(chunk, schema=LAION400M_SCHEMA)
            if url_caption:
                index = pa.array(range(f * per_file, f * per_file + len(chunk)), pa.int64())
                table = table.select(["URL", "TEXT"]).append_column(PANDAS_INDEX, index)
            write_metadata(table, out / "metadata" / f"part-{f:05d}.{cfg.format}", cfg.format)
    pq.write_table(pa.Table.from_pylist(truth), out / "truth.parquet")
    counts: dict[str, int] = {}
    for t in truth:
        counts[t["kind"]] = counts.get(t["kind"], 0) + 1
    return SampleSummary(out=out, rows=len(records), kinds=counts)


def generate_from_config(cfg: Config) -> SampleSummary:
    return generate(cfg.sample)


PANDAS_INDEX = "__index_level_0__"  # where pandas keeps a DataFrame's index in parquet


def write_metadata(table: pa.Table, path: Path, fmt: str) -> None:
    """`table` as parquet, or as csv/tsv with a header row (pandas' `to_csv` layout: its
    index column under an empty name, empty fields for nulls, QUOTE_MINIMAL)."""
    if fmt == "parquet":
        pq.write_table(table, path)
        return
    columns = table.column_names
    if PANDAS_INDEX in columns:  # pandas writes the index first
        columns = [PANDAS_INDEX] + [c for c in columns if c != PANDAS_INDEX]
        table = table.select(columns)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, delimiter="\t" if fmt == "tsv" else ",", lineterminator="\n")
        writer.writerow(["" if c == PANDAS_INDEX else c for c in columns])
        for row in table.to_pylist():
            writer.writerow(["" if v is None else v for v in row.values()])


def _break_record(record: dict, how: str, earlier: list[dict], url_caption: bool = False
                  ) -> None:
    if how == "missing_url":
        record["URL"] = None
    elif how == "bad_url":
        record["URL"] = "ftp://example.invalid/" + str(record["SAMPLE_ID"])
    elif how == "missing_text":
        record["TEXT"] = None
    elif how == "non_finite":
        record["similarity"] = float("nan")
    elif how == "negative_size":
        record["WIDTH"] = -1.0
    elif how == "duplicate_id" and url_caption:  # the id is xxhash64(URL, TEXT)
        record["URL"], record["TEXT"] = earlier[0]["URL"], earlier[0]["TEXT"]
    elif how == "duplicate_id":
        record["SAMPLE_ID"] = earlier[0]["SAMPLE_ID"]


def metadata_table(rows: int, seed: int = 0, start_id: int = 0) -> pa.Table:
    """Metadata only, vectorised: for benchmarks over millions of rows (no images)."""
    rng = np.random.default_rng(seed)
    ids = np.arange(start_id, start_id + rows, dtype=np.int64)
    things = np.array(THINGS)[rng.integers(0, len(THINGS), rows)]
    text = np.char.add(np.char.add("a photo of a ", things), np.char.mod(" %d", ids))
    url = np.char.add(np.char.add("https://img.example.org/", np.char.mod("%d", ids)), ".jpg")
    side = rng.integers(64, 2048, (2, rows)).astype(np.float64)
    sim = rng.uniform(0.2, 0.45, rows)
    # A small share of invalid rows keeps the reject path in the measurement.
    bad = rng.random(rows) < 0.01
    sim[bad] = np.nan
    return pa.table(
        {
            "SAMPLE_ID": ids, "URL": url.astype(object), "TEXT": text.astype(object),
            "HEIGHT": side[0], "WIDTH": side[1], "LICENSE": pa.array(["?"] * rows),
            "NSFW": pa.array(["UNLIKELY"] * rows), "similarity": sim,
            "aesthetic": rng.uniform(4.0, 7.0, rows),
        },
        schema=LAION400M_SCHEMA,
    )


STAGES = (Stage("sample", "write a generated LAION-style sample (metadata + images)",
                generate_from_config, flags={"--out": "sample.out", "--rows": "sample.rows",
                                             "--shape": "sample.shape",
                                             "--format": "sample.format"},
                spark=False),)
