"""A synthetic finished lake for the workbench's tests and benchmark, written without Spark.

Why synthetic here: the workbench's speed and its views depend on the tables' shapes and
sizes, not on what the images show (its OCR quality claims come from real photographs,
benchmarks/ocr_real.py). A real pipeline run makes 10^2 rows in minutes; this writes
10^5 in seconds, with the pipeline's own table schemas (jobs/*.py, through Arrow), so
Spark's publish stage reads it like any lake (tests/jobs/test_explore.py publishes the
what-if's `--set` line on it).

Every table is consistent with the default recipe the way the pipeline leaves it: the
dedup table holds exactly the rows that pass the filters, `rejects` holds every other
row with the reason publish gives, the subset holds the rest. `hostile=True` puts
script tags, event-handler attributes and `javascript:` URLs into captions, OCR text
and URLs.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
from PIL import Image, ImageDraw

WORDS = (
    "red", "bicycle", "street", "coffee", "shop", "sign", "mountain", "lake", "sunset", "dog",
    "cat", "portrait", "city", "night", "market", "bread", "garden", "flower", "beach",
    "boat", "train", "station", "book", "cover", "poster", "sale", "open", "birthday",
    "happy", "best", "fresh", "menu", "wedding", "card", "vintage", "car",
)
HOSTILE = ('<script>window.__pwned=1</script>', '<img src=x onerror="window.__pwned=1">',
           'javascript:window.__pwned=1', '"><svg onload=window.__pwned=1>')
FIRST_ID = 1_000_000


@dataclass(frozen=True)
class LakeShape:
    rows: int = 200
    embed_dim: int = 32  # deparrot-tiny-vit's; 512 for ViT-B-32
    clusters: int = 8
    clip_model: str = "deparrot-tiny-vit:random"
    seed: int = 0
    hostile: bool = False
    distinct_images: int = 24
    # False: the images table's `image` column is null (every other value, and so every
    # decision, is as with images): a what-if never reads image bytes, and a 10^6-row
    # lake then neither holds nor writes them.
    images: bool = True


def _arrow(schema) -> pa.Schema:
    from pyspark.sql.pandas.types import to_arrow_schema

    return to_arrow_schema(schema, timezone="UTC")


def _jpeg(rng: np.random.Generator, text: str | None, size=(160, 120)) -> bytes:
    colour = tuple(int(c) for c in rng.integers(40, 220, 3))
    img = Image.new("RGB", size, colour)
    draw = ImageDraw.Draw(img)
    if text:
        draw.rectangle((10, 40, 150, 80), fill=(255, 255, 255))
        draw.text((16, 52), text, fill=(0, 0, 0))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=80)
    return buf.getvalue()


def _embeddings(rng: np.random.Generator, n: int, dim: int, scored: np.ndarray,
                image_ok: np.ndarray) -> pa.Array:
    """The scores table's `image_embedding` (rows `image_ok`; null where not `scored`):
    unit rows of rng.normal(size=(n, dim)), the same numbers as one float64 draw cast to
    float32, drawn a block at a time (a Generator fills in order) and kept only where
    scored, so 10^6 x 512 holds one float32 copy and no 10^6 Python objects."""
    values = np.empty((int(scored.sum()), dim), dtype=np.float32)
    block, at = max(1, 2**22 // max(1, dim)), 0
    for start in range(0, n, block):
        chunk = rng.normal(size=(min(block, n - start), dim)).astype(np.float32)
        chunk /= np.linalg.norm(chunk, axis=1, keepdims=True)
        chunk = chunk[scored[start:start + block]]
        values[at:at + len(chunk)] = chunk
        at += len(chunk)
    valid = scored[image_ok]
    offsets = pa.array(np.concatenate([[0], np.cumsum(np.where(valid, dim, 0))]),
                       pa.int32())  # checked: past 2^31 values this raises
    return pa.ListArray.from_arrays(offsets, pa.array(values.reshape(-1)), mask=pa.array(~valid))


def write_lake(root: str, shape: LakeShape = LakeShape()) -> dict[str, int]:
    """Write metadata, images, scores, clusters, dedup, rejects and the subset under
    `root`; returns the counts the funnel must show."""
    from deltalake import DeltaTable, write_deltalake

    from jobs.cluster import CLUSTERS_SCHEMA
    from jobs.dedup import DEDUP_SCHEMA
    from jobs.download import TABLE_SCHEMA as IMAGES_SCHEMA
    from jobs.ingest import METADATA_SCHEMA
    from jobs.lake import REJECTS_SCHEMA
    from jobs.publish import SUBSET_SCHEMA
    from jobs.score import TABLE_SCHEMA as SCORES_SCHEMA

    rng = np.random.default_rng(shape.seed)
    n = shape.rows
    ids = np.arange(FIRST_ID, FIRST_ID + n, dtype=np.int64)
    now = dt.datetime(2026, 12, 1, tzinfo=dt.timezone.utc)

    def words(k: int) -> str:
        return " ".join(rng.choice(WORDS, k))

    captions = [words(int(rng.integers(3, 9))) for _ in range(n)]
    urls = [f"http://images.example/{i}.jpg" for i in ids]
    has_text = rng.random(n) < 0.4
    ocr = [words(int(rng.integers(1, 3))) if t else None for t in has_text]
    parrot = has_text & (rng.random(n) < 0.6)  # the caption repeats the OCR words
    for i in np.flatnonzero(parrot):
        captions[i] = f"{captions[i]} {ocr[i]}"
    if shape.hostile:
        for j, i in enumerate(range(0, n, max(1, n // 8))):
            bad = HOSTILE[j % len(HOSTILE)]
            captions[i] = f"{captions[i]} {bad}"
            urls[i] = bad if j % 2 else f"http://images.example/{bad}"
            if has_text[i]:
                ocr[i] = f"{ocr[i]} {bad}"
    write = {}
    write["metadata"] = pa.table({
        "sample_id": ids, "source_uid": [None] * n, "url": urls, "text": captions,
        "width": np.full(n, 640.0), "height": np.full(n, 480.0),
        "license": ["?"] * n, "nsfw": ["UNLIKELY"] * n,
        "similarity": [None] * n, "aesthetic": [None] * n, "clip_l14_similarity": [None] * n,
        "punsafe": [None] * n, "pwatermark": [None] * n, "language": ["en"] * n,
        "sha256": [None] * n, "family": ["laion400m"] * n,
        "source_file": ["part-00000.parquet"] * n, "source_row": np.arange(n),
        "ingested_at": [now] * n,
    }, schema=_arrow(METADATA_SCHEMA))

    # Images: a pool of distinct JPEGs (with or without a text patch), reused.
    pool_plain = [_jpeg(rng, None) for _ in range(shape.distinct_images)]
    pool_text = [_jpeg(rng, words(1)) for _ in range(shape.distinct_images)]
    image_ok = rng.random(n) >= 0.03
    errors = rng.choice(["truncated", "http_404", "empty"], n)
    images = [(pool_text if has_text[i] else pool_plain)[i % shape.distinct_images]
              if image_ok[i] and shape.images else None for i in range(n)]
    sha = [hashlib.sha256(f"{i}".encode()).hexdigest() for i in ids]
    write["images"] = pa.table({
        "sample_id": ids, "url": urls, "image": images,
        "format": ["jpg" if ok else None for ok in image_ok],
        "width": np.where(image_ok, 160, None), "height": np.where(image_ok, 120, None),
        "original_width": np.where(image_ok, 640, None),
        "original_height": np.where(image_ok, 480, None),
        "sha256": [s if ok else None for s, ok in zip(sha, image_ok, strict=True)],
        "status": np.where(image_ok, "ok", "error"),
        "error": [None if ok else e for ok, e in zip(image_ok, errors, strict=True)],
        "retryable": [None if ok else False for ok in image_ok],
        "attempts": np.ones(n, dtype=np.int32), "source": ["http"] * n,
        "ocr_image": [None] * n, "error_detail": [None] * n, "fetched_at": [now] * n,
    }, schema=_arrow(IMAGES_SCHEMA))

    scored = image_ok & (rng.random(n) >= 0.01)
    score_error = image_ok & ~scored
    clip = np.round(rng.normal(0.31, 0.025, n), 5)
    masked = np.where(has_text, np.round(clip - rng.uniform(0.0, 0.08, n), 5), clip)
    aes = np.round(rng.normal(5.0, 0.5, n), 4)
    emb = _embeddings(rng, n, shape.embed_dim, scored, image_ok)
    boxes = []
    for i in range(n):
        if not (scored[i] and has_text[i]):
            boxes.append([] if scored[i] else None)
            continue
        boxes.append([{"polygon": [[10.0, 40.0], [150.0, 40.0], [150.0, 80.0], [10.0, 80.0]],
                       "text": ocr[i], "confidence": 0.93}])
    s = scored
    write["scores"] = pa.table({
        "sample_id": ids[image_ok],
        "status": np.where(s, "ok", "error")[image_ok],
        "error": np.where(score_error, "decode:truncated", None)[image_ok],
        "ocr_box_count": np.where(s, has_text.astype(np.int32), None)[image_ok],
        "ocr_text_area": np.where(s & has_text, 0.29, np.where(s, 0.0, None))[image_ok],
        "ocr_text": [ocr[i] if s[i] else None for i in np.flatnonzero(image_ok)],
        "ocr_boxes": [boxes[i] for i in np.flatnonzero(image_ok)],
        "has_text": np.where(s, has_text, None)[image_ok],
        "clip_score": np.where(s, clip, None)[image_ok],
        "clip_score_source": np.where(s, "computed", None)[image_ok],
        "masked_clip_score": np.where(s, masked, None)[image_ok],
        "aesthetic_score": np.where(s, aes, None)[image_ok],
        "aesthetic_source": np.where(s, "computed", None)[image_ok],
        "image_embedding": emb,
        "retryable": np.where(s, None, False)[image_ok],
        "error_detail": [None] * int(image_ok.sum()),
        "scored_at": [now] * int(image_ok.sum()),
    }, schema=_arrow(SCORES_SCHEMA))

    kmeans = rng.integers(0, shape.clusters, n)
    write["clusters"] = pa.table({
        "sample_id": ids[scored], "kmeans": kmeans[scored],
        "kmeans_distance": rng.random(int(scored.sum())).astype(np.float32),
        "centroids_sha1": ["0" * 40] * int(scored.sum()),
    }, schema=_arrow(CLUSTERS_SCHEMA))

    # The default recipe (any_text, clip > 0.3, aesthetic > 4.5), as publish applies it.
    reason = np.full(n, None, dtype=object)
    reason[scored & has_text] = "text_found"
    low_clip = scored & (reason == None) & (clip <= 0.3)  # noqa: E711
    reason[low_clip] = "low_clip_score"
    reason[scored & (reason == None) & (aes <= 4.5)] = "low_aesthetic"  # noqa: E711
    candidates = np.flatnonzero(scored & (reason == None))  # noqa: E711
    dup = np.zeros(n, dtype=bool)
    keeper = np.full(n, -1, dtype=np.int64)
    # Every 10th candidate duplicates the candidate before it in its cluster.
    last_in_cluster: dict[int, int] = {}
    for j, i in enumerate(candidates):
        c = int(kmeans[i])
        if j % 10 == 9 and c in last_in_cluster:
            dup[i], keeper[i] = True, ids[last_in_cluster[c]]
        else:
            last_in_cluster[c] = i
    dup_reason = np.where(rng.random(n) < 0.5, "near_duplicate", "duplicate_image")
    write["dedup"] = pa.table({
        "sample_id": ids[candidates], "kept": ~dup[candidates],
        "reason": [dup_reason[i] if dup[i] else None for i in candidates],
        "duplicate_of": [int(keeper[i]) if dup[i] else None for i in candidates],
        "group_size": [2 if dup[i] else None for i in candidates],
        "max_sim": [0.97 if dup[i] else None for i in candidates],
    }, schema=_arrow(DEDUP_SCHEMA))
    for i in candidates:
        if dup[i]:
            reason[i] = dup_reason[i]

    rejects = []
    for k in range(max(2, n // 50)):  # rows that never reached metadata
        rejects.append({"stage": "ingest", "reason": ["bad_url", "missing_text"][k % 2],
                        "reject_key": f"part-00000.parquet:{n + k}", "sample_id": None,
                        "source_file": "part-00000.parquet", "source_row": n + k,
                        "detail": None, "record": json.dumps(
                            {"URL": HOSTILE[2] if shape.hostile else "ftp://x/1",
                             "TEXT": HOSTILE[0] if shape.hostile else "a caption"})})
    for i in range(n):
        stage, why = None, None
        if not image_ok[i]:
            stage, why = "download", str(errors[i])
        elif score_error[i]:
            stage, why = "score", "decode:truncated"
        elif reason[i] is not None:
            stage, why = "publish", str(reason[i])
        if stage:
            rejects.append({"stage": stage, "reason": why, "reject_key": str(ids[i]),
                            "sample_id": int(ids[i]), "source_file": None,
                            "source_row": None, "detail": None, "record": None})
    for r in rejects:
        r["rejected_at"] = now
    write["rejects"] = pa.Table.from_pylist(rejects, schema=_arrow(REJECTS_SCHEMA))

    kept = np.flatnonzero(scored & (reason == None))  # noqa: E711
    write["laion_debiased"] = pa.table({
        "SAMPLE_ID": ids[kept], "URL": [urls[i] for i in kept],
        "TEXT": [captions[i] for i in kept], "HEIGHT": np.full(len(kept), 480.0),
        "WIDTH": np.full(len(kept), 640.0), "LICENSE": ["?"] * len(kept),
        "NSFW": ["UNLIKELY"] * len(kept), "similarity": clip[kept],
        "ase_scores": aes[kept], "kmeans": kmeans[kept],
        "part": (kmeans[kept] // 100).astype(np.int32),
    }, schema=_arrow(SUBSET_SCHEMA))

    for name, table in write.items():
        write_deltalake(f"{root.rstrip('/')}/{name}", table, mode="overwrite",
                        partition_by=["part"] if name == "laion_debiased" else None)
    # What the score stage records (jobs/score.py): which CLIP scored the rows.
    DeltaTable(f"{root.rstrip('/')}/scores").alter.set_table_properties(
        {"deparrot.clip_model": shape.clip_model, "deparrot.random_init": "true"},
        raise_if_not_exists=False)
    counts = {"metadata": n, "ingest_rejects": max(2, n // 50), "kept": len(kept),
              "download_rejects": int((~image_ok).sum()),
              "score_rejects": int(score_error.sum()),
              "publish_rejects": int(sum(1 for i in range(n) if scored[i]
                                         and reason[i] is not None))}
    counts["input"] = n + counts["ingest_rejects"]
    return counts
