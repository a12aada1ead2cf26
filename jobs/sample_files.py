"""What a generated sample is written as, shared by the LAION-style sample
(jobs/sample.py) and the miniature world (jobs/miniature_world.py): its own module so
neither of the two generators imports the other's internals (no import circle)."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
from PIL import Image

LAION400M_SCHEMA = pa.schema(
    [
        ("SAMPLE_ID", pa.int64()), ("URL", pa.string()), ("TEXT", pa.string()),
        ("HEIGHT", pa.float64()), ("WIDTH", pa.float64()), ("LICENSE", pa.string()),
        ("NSFW", pa.string()), ("similarity", pa.float64()),
        # As in LAION's aesthetic releases; lets an offline demo reuse it (score.reuse_aesthetic).
        ("aesthetic", pa.float64()),
    ]
)


@dataclass
class SampleSummary:
    out: Path
    rows: int
    kinds: dict[str, int]


def jpeg_bytes(img: Image.Image, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()
