"""Executor side of the images stage: bytes (fetched or from shards) -> image rows.

Each image is decoded once (udfs.decode), checked, resized and re-encoded as
img2dataset would (udfs.resize). Every input row yields exactly one output row: an
`ok` image or an `error` with a reason code and whether a re-run should retry it.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass

import pandas as pd

from udfs.decode import DEFAULT_MAX_PIXELS, decode_image
from udfs.fetch import Fetcher, FetchResult, FetchSettings
from udfs.resize import ResizeSettings, resize_and_encode
from udfs.worker_cache import worker_cached

IMAGE_FIELDS = (
    "sample_id", "url", "image", "format", "width", "height", "original_width",
    "original_height", "sha256", "status", "error", "retryable", "attempts", "source",
)
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")


@dataclass(frozen=True)
class ImageSettings:
    resize: ResizeSettings
    max_pixels: int = DEFAULT_MAX_PIXELS


def image_row(sample_id: int, url: str, data: bytes | None, settings: ImageSettings,
              source: str) -> dict:
    """Decode, check, resize and encode one image; never raises for bad bytes."""
    row = dict.fromkeys(IMAGE_FIELDS)
    row.update(sample_id=sample_id, url=url, source=source, attempts=0, retryable=False)
    decoded = decode_image(data, max_pixels=settings.max_pixels)
    if not decoded.ok:
        row.update(status="error", error=decoded.error, original_width=decoded.width,
                   original_height=decoded.height)
        return row
    resized = resize_and_encode(decoded.image, settings.resize)
    row.update(original_width=resized.original_width, original_height=resized.original_height)
    if not resized.ok:
        row.update(status="error", error=resized.error)
        return row
    row.update(
        status="ok", image=resized.data, format=resized.format, width=resized.width,
        height=resized.height, sha256=hashlib.sha256(data).hexdigest(),
    )
    return row


def _fetched_row(sample_id: int, url: str, res: FetchResult, settings: ImageSettings) -> dict:
    if not res.ok:
        row = dict.fromkeys(IMAGE_FIELDS)
        row.update(sample_id=sample_id, url=url, status="error", error=res.error,
                   retryable=res.retryable, attempts=res.attempts, source="http")
        return row
    row = image_row(sample_id, url, res.data, settings, "http")
    row["attempts"] = res.attempts
    return row


def fetcher_for(settings: FetchSettings) -> Fetcher:
    """One Fetcher (and its connection pools) per Python worker, reused across tasks."""
    return worker_cached("fetcher", settings, lambda: Fetcher(settings))


def download_batches(batches: Iterator[pd.DataFrame], fetch: FetchSettings,
                     settings: ImageSettings, concurrency: int) -> Iterator[pd.DataFrame]:
    """mapInPandas body: (sample_id, url) rows -> image rows, `concurrency` requests in flight.

    Work is cut into slices of a few times the concurrency so memory holds only a
    slice of images, not a whole Arrow batch.
    """
    fetcher = fetcher_for(fetch)
    step = max(1, concurrency * 4)
    for batch in batches:
        for start in range(0, len(batch), step):
            part = batch.iloc[start:start + step]
            ids = part["sample_id"].tolist()
            urls = part["url"].tolist()
            results = fetcher.fetch_many(urls, concurrency=concurrency)
            rows = [_fetched_row(i, u, r, settings) for i, u, r in zip(ids, urls, results,
                                                                       strict=True)]
            yield pd.DataFrame(rows, columns=list(IMAGE_FIELDS))


def shard_records(path: str, content: bytes) -> Iterator[dict]:
    """Members of one img2dataset webdataset tar: key, url, SAMPLE_ID (if saved), bytes."""
    by_key: dict[str, dict] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(content), mode="r:*") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                name = member.name.rsplit("/", 1)[-1]
                key, _, ext = name.rpartition(".")
                ext = ext.lower()
                if not key or (ext not in IMAGE_EXTENSIONS and ext != "json"):
                    continue
                handle = tar.extractfile(member)
                data = handle.read() if handle is not None else b""
                entry = by_key.setdefault(key, {"key": key, "shard": path})
                if ext == "json":
                    try:
                        meta = json.loads(data.decode("utf-8"))
                    except (UnicodeDecodeError, json.JSONDecodeError):
                        meta = {}
                    entry["url"] = meta.get("url")
                    entry["sample_id"] = meta.get("SAMPLE_ID", meta.get("sample_id"))
                else:
                    entry["image"] = data
    except (tarfile.TarError, EOFError, OSError) as exc:
        yield {"key": None, "shard": path, "url": None, "sample_id": None, "image": None,
               "shard_error": f"bad_shard:{type(exc).__name__}"}
        return
    for entry in by_key.values():
        entry.setdefault("url", None)
        entry.setdefault("sample_id", None)
        entry.setdefault("image", None)
        entry["shard_error"] = None
        yield entry


def tar_batches(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    """mapInPandas body over binaryFile rows (path, content) -> one row per tar member."""
    cols = ["key", "shard", "url", "sample_id", "image", "shard_error"]
    for batch in batches:
        for path, content in zip(batch["path"], batch["content"], strict=True):
            rows = list(shard_records(path, content))
            yield pd.DataFrame(rows, columns=cols).astype({"sample_id": "Int64"})


def encode_batches(batches: Iterator[pd.DataFrame], settings: ImageSettings,
                   source: str) -> Iterator[pd.DataFrame]:
    """mapInPandas body: (sample_id, url, data) rows with bytes at hand -> image rows."""
    for batch in batches:
        rows = []
        for sid, url, data, missing in zip(batch["sample_id"], batch["url"], batch["data"],
                                           batch["missing_reason"], strict=True):
            if isinstance(missing, str):
                row = dict.fromkeys(IMAGE_FIELDS)
                row.update(sample_id=sid, url=url, status="error", error=missing,
                           retryable=True, attempts=0, source=source)
            else:
                row = image_row(sid, url, data, settings, source)
            rows.append(row)
        yield pd.DataFrame(rows, columns=list(IMAGE_FIELDS))
