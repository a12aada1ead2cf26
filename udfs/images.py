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
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pyarrow as pa

from udfs.decode import DEFAULT_MAX_PIXELS, decode_image
from udfs.failures import guard_batch
from udfs.fetch import Fetcher, FetchResult, FetchSettings
from udfs.ocr_view import OcrViewSettings, decode_need, make_view
from udfs.resize import ResizeSettings, resize_and_encode
from udfs.worker_cache import worker_cached

IMAGE_FIELDS = (
    "sample_id", "url", "image", "format", "width", "height", "original_width",
    "original_height", "sha256", "status", "error", "retryable", "attempts", "source",
    "ocr_image", "error_detail",
)
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")

if TYPE_CHECKING:  # pandas is imported where it is used: the http path runs without it
    import pandas as pd


def arrow_schema(large_types: bool = False) -> pa.Schema:
    """IMAGE_FIELDS as Spark expects them back from mapInArrow (jobs.download.IMAGES_SCHEMA).

    ``large_types``: Spark sends and expects large strings/binaries when
    ``spark.sql.execution.arrow.useLargeVarTypes`` is on.
    """
    text, blob = (pa.large_string(), pa.large_binary()) if large_types else (pa.string(),
                                                                            pa.binary())
    types = {"sample_id": pa.int64(), "image": blob, "ocr_image": blob, "width": pa.int32(),
             "height": pa.int32(), "original_width": pa.int32(),
             "original_height": pa.int32(), "retryable": pa.bool_(), "attempts": pa.int32()}
    return pa.schema([(name, types.get(name, text)) for name in IMAGE_FIELDS])


@dataclass(frozen=True)
class ImageSettings:
    resize: ResizeSettings
    max_pixels: int = DEFAULT_MAX_PIXELS
    # The OCR view stored beside the CLIP-sized image (udfs/ocr_view.py); side 0 = none.
    ocr_view: OcrViewSettings = OcrViewSettings()


def image_row(sample_id: int, url: str, data: bytes | None, settings: ImageSettings,
              source: str) -> dict:
    """Decode, check, resize and encode one image; never raises for bad bytes."""
    row = dict.fromkeys(IMAGE_FIELDS)
    row.update(sample_id=sample_id, url=url, source=source, attempts=0, retryable=False)
    decoded = decode_image(data, max_pixels=settings.max_pixels,
                           reduce_to=decode_need(settings.resize, settings.ocr_view))
    if not decoded.ok:
        row.update(status="error", error=decoded.error, original_width=decoded.width,
                   original_height=decoded.height)
        return row
    resized = resize_and_encode(decoded.image, settings.resize,
                                (decoded.width, decoded.height))
    row.update(original_width=resized.original_width, original_height=resized.original_height)
    if not resized.ok:
        row.update(status="error", error=resized.error)
        return row
    try:
        view = make_view(decoded.image, (decoded.width, decoded.height),
                         (resized.width, resized.height), settings.resize, settings.ocr_view)
    except Exception:  # Pillow raises assorted types on broken images
        row.update(status="error", error="encode_error")
        return row
    row.update(
        status="ok", image=resized.data, format=resized.format, width=resized.width,
        height=resized.height, sha256=hashlib.sha256(data).hexdigest(), ocr_image=view,
    )
    return row


def _fetched_row(sample_id: int, url: str, res: FetchResult, settings: ImageSettings) -> dict:
    if not res.ok:
        row = dict.fromkeys(IMAGE_FIELDS)
        row.update(sample_id=sample_id, url=url, status="error", error=res.error,
                   retryable=res.retryable, attempts=res.attempts, source="http",
                   error_detail=res.detail)
        return row
    row = image_row(sample_id, url, res.data, settings, "http")
    row["attempts"] = res.attempts
    return row


def fetcher_for(settings: FetchSettings) -> Fetcher:
    """One Fetcher (and its connection pools) per Python worker, reused across tasks."""
    return worker_cached("fetcher", settings, lambda: Fetcher(settings))


def download_rows(pairs: Iterable[tuple[int, str]], fetch: FetchSettings,
                  settings: ImageSettings, concurrency: int) -> Iterator[dict]:
    """(sample_id, url) pairs -> image rows, in the order they finish.

    Each of `concurrency` threads fetches a URL and decodes, resizes and encodes it
    (Pillow and the socket reads release the GIL). A thread takes the next URL as soon
    as it is done, so one slow server holds one thread, never the others; memory holds
    at most about `2 * concurrency` images. Stopping the iteration cancels the rest.
    """
    fetcher = fetcher_for(fetch)
    threads = max(1, concurrency)

    def work(sample_id: int, url: str) -> dict:
        return _fetched_row(sample_id, url, fetcher.fetch(url), settings)

    pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="download")
    running: set[Future] = set()
    try:
        for sample_id, url in pairs:
            if len(running) >= 2 * threads:  # a queued URL per thread: no thread waits
                done, running = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    yield future.result()
            running.add(pool.submit(work, sample_id, url))
        while running:
            done, running = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                yield future.result()
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def download_arrow(batches: Iterator[pa.RecordBatch], fetch: FetchSettings,
                   settings: ImageSettings, concurrency: int,
                   rows_per_batch: int = 256) -> Iterator[pa.RecordBatch]:
    """mapInArrow body: (sample_id, url) rows -> image rows, `concurrency` requests in flight.

    URLs stream through :func:`download_rows` across input batches, and finished rows go
    out in record batches of `rows_per_batch` (their order is not the input order).
    Arrow in and out: no pandas in the Python worker, and the image bytes are copied once,
    from the row into the batch.
    """
    schema: list[pa.Schema] = []

    def pairs() -> Iterator[tuple[int, str]]:
        for batch in batches:
            if not schema:
                url_type = batch.schema.field("url").type
                schema.append(arrow_schema(pa.types.is_large_string(url_type)))
            yield from zip(batch.column("sample_id").to_pylist(),
                           batch.column("url").to_pylist(), strict=True)

    rows: list[dict] = []
    for row in download_rows(pairs(), fetch, settings, concurrency):
        rows.append(row)
        if len(rows) >= rows_per_batch:
            yield pa.RecordBatch.from_pylist(checked(rows), schema=schema[0])
            rows = []
    if rows:
        yield pa.RecordBatch.from_pylist(checked(rows), schema=schema[0])


def checked(rows: list[dict]) -> list[dict]:
    """The rows of a batch, unless most failed with an error of ours (a bug: the task
    fails instead, udfs.failures)."""
    guard_batch("download", (r["error"] if r["error"] == "internal_error" else None
                             for r in rows), (r["error_detail"] for r in rows))
    return rows


def download_batches(batches: Iterator[pd.DataFrame], fetch: FetchSettings,
                     settings: ImageSettings, concurrency: int,
                     rows_per_batch: int = 256) -> Iterator[pd.DataFrame]:
    """:func:`download_arrow` for pandas frames (a mapInPandas body, or a loop without Spark)."""
    import pandas as pd

    pairs = ((int(i), u) for batch in batches
             for i, u in zip(batch["sample_id"].tolist(), batch["url"].tolist(), strict=True))
    rows: list[dict] = []
    for row in download_rows(pairs, fetch, settings, concurrency):
        rows.append(row)
        if len(rows) >= rows_per_batch:
            yield pd.DataFrame(checked(rows), columns=list(IMAGE_FIELDS))
            rows = []
    if rows:
        yield pd.DataFrame(checked(rows), columns=list(IMAGE_FIELDS))


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
    import pandas as pd

    cols = ["key", "shard", "url", "sample_id", "image", "shard_error"]
    for batch in batches:
        for path, content in zip(batch["path"], batch["content"], strict=True):
            rows = list(shard_records(path, content))
            yield pd.DataFrame(rows, columns=cols).astype({"sample_id": "Int64"})


def encode_batches(batches: Iterator[pd.DataFrame], settings: ImageSettings,
                   source: str) -> Iterator[pd.DataFrame]:
    """mapInPandas body: (sample_id, url, data) rows with bytes at hand -> image rows."""
    import pandas as pd

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
