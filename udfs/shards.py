"""Executor side of `deparrot export`: training shards in img2dataset's layout.

A writer task gets rows already assigned to shards and sorted by key (jobs/export.py),
so it streams them: one shard file open at a time, finished and published before the
next one starts. The layout is what img2dataset writes and open_clip's trainer reads
with `--dataset-type webdataset`:

    {shard:05d}.tar         {key}.jpg, {key}.txt (caption), {key}.json (metadata)
    {shard:05d}_stats.json  count, bytes, sha256, first/last key, the export signature

or, with format parquet, `{shard:05d}.parquet` with columns key, jpg, txt, json.

Why the care about bytes: a shard is a pure function of its rows and the settings, so a
re-run after a crash can skip finished shards and rewrite the others to the same bytes.
Tar members get a fixed mtime, owner and mode; parquet row groups are cut at fixed row
counts from the start of the shard (never at Arrow batch boundaries, which depend on
how Spark partitioned the rows). A shard is written to a hidden temporary name and
renamed (local/mounted paths) or uploaded in one piece (fsspec URLs), so a final name
never holds half a file; its stats file is published after it.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pandas as pd

from udfs import storage
from udfs.decode import DEFAULT_MAX_PIXELS, decode_image
from udfs.storage import is_remote, join, publish_file, temp_path  # noqa: F401 (re-exported)

FORMATS = ("webdataset", "parquet")
IMAGE_MODES = ("passthrough", "reencode")
SUFFIX = {"webdataset": ".tar", "parquet": ".parquet"}
# Fixed tar member metadata: the same rows give the same bytes on every run and node.
TAR_MTIME = 0
TAR_MODE = 0o644
PARQUET_ROW_GROUP = 1000  # rows per row group, counted from the shard's first row
STATS_SCHEMA_DDL = ("split string, shard int, file string, count long, bytes long, "
                    "image_bytes long, sha256 string, first_key string, last_key string")
# Columns the writer reads (jobs/export.py builds them).
INPUT_COLUMNS = ("split", "shard", "rank", "SAMPLE_ID", "url", "caption", "image", "format",
                 "width", "height", "original_width", "original_height", "similarity",
                 "ase_scores", "kmeans")
_EXTENSIONS = {"jpg": "jpg", "jpeg": "jpg", "png": "png", "webp": "webp"}


@dataclass(frozen=True)
class ShardSettings:
    """What a writer task needs; pickled into the UDF (small, no model)."""

    root: str  # the export folder: a local/mounted path or an fsspec URL
    format: str = "webdataset"
    image: str = "passthrough"
    jpeg_quality: int = 95
    key_digits: int = 9
    shard_digits: int = 5
    shard_size: int = 10_000
    signature: str = ""  # of the inputs and settings; stored in every stats file
    max_pixels: int = DEFAULT_MAX_PIXELS

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ValueError(f"format must be one of {FORMATS}, got {self.format!r}")
        if self.image not in IMAGE_MODES:
            raise ValueError(f"image must be one of {IMAGE_MODES}, got {self.image!r}")

    def key(self, rank: int) -> str:
        return f"{int(rank):0{self.key_digits}d}"

    def shard_file(self, shard: int) -> str:
        return f"{int(shard):0{self.shard_digits}d}{SUFFIX[self.format]}"

    def stats_file(self, shard: int) -> str:
        return f"{int(shard):0{self.shard_digits}d}_stats.json"


def write_text_atomic(final: str, text: str) -> None:
    storage.write_text(final, text)


def _missing(value: Any) -> bool:
    """None, NaN or pd.NA (Spark hands nullable columns over either way)."""
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def _int(value: Any) -> int | None:
    """Integers stay integers even when a null turned the pandas column into floats."""
    return None if _missing(value) else int(value)


def _float(value: Any) -> float | None:
    return None if _missing(value) else float(value)


def sample_json(row: Any, key: str) -> bytes:
    """The {key}.json member: img2dataset's fields plus the subset's scores."""
    meta = {
        "key": key, "SAMPLE_ID": int(row.SAMPLE_ID), "url": row.url, "caption": row.caption,
        "width": _int(row.width), "height": _int(row.height),
        "original_width": _int(row.original_width),
        "original_height": _int(row.original_height),
        "similarity": _float(row.similarity), "ase_scores": _float(row.ase_scores),
        "kmeans": _int(row.kmeans), "status": "success",
    }
    return json.dumps(meta, sort_keys=True, ensure_ascii=False).encode("utf-8")


def image_member(data: bytes, fmt: str | None, settings: ShardSettings) -> tuple[str, bytes]:
    """(extension, bytes): the stored bytes as they are, or re-encoded as JPEG."""
    if settings.image == "passthrough":
        ext = _EXTENSIONS.get((fmt or "jpg").lower())
        if ext is None:
            raise ValueError(f"stored image format {fmt!r} has no webdataset extension")
        return ext, bytes(data)
    decoded = decode_image(data, max_pixels=settings.max_pixels)
    if not decoded.ok:
        raise ValueError(f"cannot re-encode a stored image: {decoded.error}")
    out = io.BytesIO()
    decoded.image.save(out, format="JPEG", quality=settings.jpeg_quality)
    return "jpg", out.getvalue()


class _ShardWriter:
    """One shard being written to a local temp file; `finish` publishes it."""

    def __init__(self, split: str, shard: int, settings: ShardSettings):
        self.split, self.shard, self.settings = split, int(shard), settings
        self.final = join(settings.root, split, settings.shard_file(shard))
        self.tmp = temp_path(self.final)
        self.count = self.image_bytes = 0
        self.first_key = self.last_key = ""
        # Closed by finish() or abort(): a shard outlives one call.
        self._tar = (tarfile.open(self.tmp, "w", format=tarfile.PAX_FORMAT)  # noqa: SIM115
                     if settings.format == "webdataset" else None)
        self._rows: list[dict[str, Any]] = []
        self._parquet = None

    def add(self, row: Any) -> None:
        key = self.settings.key(row.rank)
        ext, data = image_member(row.image, row.format, self.settings)
        caption = "" if row.caption is None else str(row.caption)
        meta = sample_json(row, key)
        if self._tar is not None:
            for name, payload in ((f"{key}.{ext}", data), (f"{key}.txt", caption.encode()),
                                  (f"{key}.json", meta)):
                self._add_member(name, payload)
        else:
            self._rows.append({"key": key, "jpg": data, "txt": caption,
                               "json": meta.decode("utf-8")})
            if len(self._rows) >= PARQUET_ROW_GROUP:
                self._flush_parquet()
        self.count += 1
        self.image_bytes += len(data)
        self.first_key = self.first_key or key
        self.last_key = key

    def _add_member(self, name: str, payload: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = len(payload), TAR_MTIME, TAR_MODE
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        self._tar.addfile(info, io.BytesIO(payload))

    def _flush_parquet(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        schema = pa.schema([("key", pa.string()), ("jpg", pa.binary()), ("txt", pa.string()),
                            ("json", pa.string())])
        if self._parquet is None:
            self._parquet = pq.ParquetWriter(self.tmp, schema, compression="zstd")
        if self._rows:
            self._parquet.write_table(pa.Table.from_pylist(self._rows, schema=schema))
        self._rows = []

    def finish(self) -> dict[str, Any]:
        if self._tar is not None:
            self._tar.close()
        else:
            self._flush_parquet()
            self._parquet.close()
        digest = hashlib.sha256()
        with open(self.tmp, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        stats = {"split": self.split, "shard": self.shard,
                 "file": self.settings.shard_file(self.shard), "count": self.count,
                 "bytes": os.path.getsize(self.tmp), "image_bytes": self.image_bytes,
                 "sha256": digest.hexdigest(), "first_key": self.first_key,
                 "last_key": self.last_key}
        publish_file(self.tmp, self.final)
        record = {**stats, "format": self.settings.format, "signature": self.settings.signature}
        write_text_atomic(join(self.settings.root, self.split,
                               self.settings.stats_file(self.shard)),
                          json.dumps(record, indent=2, sort_keys=True))
        return stats

    def abort(self) -> None:
        try:
            if self._tar is not None:
                self._tar.close()
            elif self._parquet is not None:
                self._parquet.close()
        finally:
            if os.path.exists(self.tmp):
                os.remove(self.tmp)


def write_shards(batches: Iterator[pd.DataFrame], settings: ShardSettings
                 ) -> Iterator[pd.DataFrame]:
    """mapInPandas body: rows sorted by (split, shard, rank) -> one stats row per shard."""
    writer: _ShardWriter | None = None
    try:
        for pdf in batches:
            done = []
            for row in pdf.itertuples(index=False):
                if writer is None or (row.split, int(row.shard)) != (writer.split,
                                                                      writer.shard):
                    if writer is not None:
                        done.append(writer.finish())
                    writer = _ShardWriter(row.split, row.shard, settings)
                writer.add(row)
            if done:
                yield pd.DataFrame(done)
        if writer is not None:
            last, writer = writer.finish(), None
            yield pd.DataFrame([last])
    except BaseException:
        if writer is not None:
            writer.abort()
        raise


def shard_count(samples: int, shard_size: int) -> int:
    return math.ceil(samples / shard_size) if samples else 0


def brace_pattern(root: str, split: str, shards: int, settings: ShardSettings) -> str:
    """The shard URLs of a split as open_clip's --train-data wants them."""
    if shards == 0:
        return ""
    suffix = SUFFIX[settings.format]
    first, last = f"{0:0{settings.shard_digits}d}", f"{shards - 1:0{settings.shard_digits}d}"
    name = f"{first}{suffix}" if shards == 1 else f"{{{first}..{last}}}{suffix}"
    return join(root, split, name)
