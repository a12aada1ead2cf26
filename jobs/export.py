"""`deparrot export`: the subset (or every downloaded pair) as training shards.

Petastorm cannot share an environment with Spark 4 (it imports pyarrow.filesystem,
removed in pyarrow 15), so training reads what open_clip's own trainer reads:
img2dataset's webdataset layout (or the same columns as parquet), written by Spark
tasks straight from the Delta tables:

    <out>/train/{00000..N}.tar (+ _stats.json)   <out>/val/...   <out>/manifest.json

Rows are the subset joined with the `images` table's stored bytes (status ok). Each row
goes to a split by a hash of SAMPLE_ID (`val_fraction`), gets a rank in the order of a
second hash (ties broken by SAMPLE_ID), and its key is that rank zero-padded: shard =
rank // shard_size. So a given subset version and settings always give the same shards,
byte for byte. Ranks come from per-bucket row numbers plus bucket offsets, never from
one global window, so no single task sorts the whole subset.

Executors write the files (udfs/shards.py), so `export.out` must be one folder every
node sees: /dbfs/..., a shared filesystem, or an fsspec URL. A re-run skips shards whose
file and stats agree with the current signature (inputs + settings) and writes only the
missing ones; manifest.json is deleted before any shard is written and written last, so
its presence means the export is complete.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from typing import Any

from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from jobs.config import Config, ExportConfig
from jobs.errors import UserError
from jobs.lake import Lake
from jobs.session import ARROW_BATCH, scoped_conf
from jobs.stages import Stage
from udfs.shards import (
    INPUT_COLUMNS,
    STATS_SCHEMA_DDL,
    ShardSettings,
    brace_pattern,
    is_remote,
    join,
    shard_count,
    write_shards,
    write_text_atomic,
)

SPLITS = ("train", "val")
MANIFEST = "manifest.json"
RANK_BUCKET_ROWS = 1_000_000  # rows per ranking bucket (one window partition each)
_HASH_SPACE = 1_000_000


@dataclass
class ExportReport:
    rows: int = 0  # rows exported
    missing_images: int = 0  # source rows without an ok image (not exported)
    samples: dict[str, int] = field(default_factory=dict)  # per split
    shards: int = 0
    shards_written: int = 0
    shards_skipped: int = 0
    patterns: dict[str, str] = field(default_factory=dict)  # split -> brace pattern
    manifest: str = ""
    skipped: bool = False  # everything was already exported with this signature


def root_of(cfg: ExportConfig) -> str:
    """The export folder as executors and open_clip see it (absolute for local paths)."""
    if not cfg.out:
        raise UserError("export.out is empty: set the folder to write shards to")
    return cfg.out.rstrip("/") if is_remote(cfg.out) else os.path.abspath(cfg.out)


def source_rows(lake: Lake, cfg: ExportConfig) -> tuple[DataFrame, dict[str, Any]]:
    """(rows with the writer's columns minus split/shard/rank, version info)."""
    for key in ("images",) + (("subset",) if cfg.source == "subset" else ("metadata",)):
        lake.require(key)
    # Every read is pinned to one table version: the export runs several Spark jobs
    # (counts, ranks, writes) that must all see the same rows.
    versions: dict[str, Any] = {"images_version": lake.version("images")}
    if cfg.source == "subset":
        version = lake.version("subset") if cfg.subset_version < 0 else cfg.subset_version
        rows = lake.read("subset", version).select(
            "SAMPLE_ID", F.col("URL").alias("url"), F.col("TEXT").alias("caption"),
            "similarity", "ase_scores", "kmeans")
        versions.update(subset_table=lake.ref("subset").name, subset_version=version)
    else:
        version = lake.version("metadata")
        rows = lake.read("metadata", version).select(
            F.col("sample_id").alias("SAMPLE_ID"), "url", F.col("text").alias("caption"),
            "similarity", F.col("aesthetic").alias("ase_scores"),
            F.lit(None).cast("long").alias("kmeans"))
        versions.update(metadata_version=version)
    # An ok images row always has bytes; `_has_image` lets the planning queries find the
    # rows without reading the image column.
    images = lake.read("images", versions["images_version"]).where(F.col("status") == "ok")
    images = images.select(
        F.col("sample_id").alias("SAMPLE_ID"), "image", "format", "width", "height",
        "original_width", "original_height", F.lit(True).alias("_has_image"))
    return rows.join(images, "SAMPLE_ID", "left"), versions


def with_split_and_hash(rows: DataFrame, cfg: ExportConfig) -> DataFrame:
    """Adds `split` (by a hash of SAMPLE_ID) and `h`, the order hash."""
    salt = F.lit(f"deparrot-export-{cfg.seed}")
    bucket = F.pmod(F.xxhash64(salt, F.lit("split"), "SAMPLE_ID"), F.lit(_HASH_SPACE))
    val = bucket < F.lit(int(round(cfg.val_fraction * _HASH_SPACE)))
    return rows.withColumn("split", F.when(val, "val").otherwise("train")) \
        .withColumn("h", F.xxhash64(salt, F.lit("order"), "SAMPLE_ID"))


def ranked(keys: DataFrame, counts: dict[str, int]) -> DataFrame:
    """(SAMPLE_ID, split, rank): the position in (h, SAMPLE_ID) order within the split.

    The hash space is cut into 2**bits buckets (an arithmetic shift keeps the order);
    rows are numbered within a bucket and shifted by the rows of earlier buckets.
    """
    buckets = max(1, math.ceil(max(counts.values(), default=0) / RANK_BUCKET_ROWS))
    bits = min(30, max(1, math.ceil(math.log2(buckets))))
    keys = keys.withColumn("bucket", F.shiftright("h", 64 - bits))
    sizes = sorted((r["split"], r["bucket"], r["count"])
                   for r in keys.groupBy("split", "bucket").count().collect())
    offsets, running = [], {}
    for split, bucket, count in sizes:
        offsets.append((split, bucket, running.get(split, 0)))
        running[split] = running.get(split, 0) + count
    spark = keys.sparkSession
    offset_df = spark.createDataFrame(offsets, "split string, bucket long, offset long")
    order = Window.partitionBy("split", "bucket").orderBy("h", "SAMPLE_ID")
    return keys.join(F.broadcast(offset_df), ["split", "bucket"]).select(
        "SAMPLE_ID", "split", (F.col("offset") + F.row_number().over(order) - 1).alias("rank"))


def signature(versions: dict[str, Any], cfg: ExportConfig, settings: ShardSettings) -> str:
    """What the shard bytes depend on: input versions and content settings."""
    content = {k: getattr(cfg, k) for k in ("source", "shard_size", "format", "image",
                                            "jpeg_quality", "val_fraction", "seed")}
    payload = {**versions, **content, "key_digits": settings.key_digits,
               "shard_digits": settings.shard_digits}
    return hashlib.sha1(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _fs(root: str):
    import fsspec

    return fsspec.core.url_to_fs(root)[0]


def _read_json(fs, path: str) -> dict[str, Any] | None:
    try:
        with fs.open(path, "r") as f:
            data = json.load(f)
    except (FileNotFoundError, json.JSONDecodeError, OSError):
        return None
    return data if isinstance(data, dict) else None


def finished_shard(fs, settings: ShardSettings, split: str, shard: int, count: int
                   ) -> dict[str, Any] | None:
    """The shard's stats when its file and stats agree with what this export would write."""
    folder = join(settings.root, split)
    stats = _read_json(fs, join(folder, settings.stats_file(shard)))
    if not stats or stats.get("signature") != settings.signature or stats.get("count") != count:
        return None
    path = join(folder, settings.shard_file(shard))
    try:
        size = fs.size(path)
    except (FileNotFoundError, OSError):
        return None
    return stats if size == stats.get("bytes") else None


def remove_stale(fs, settings: ShardSettings, shards: dict[str, int]) -> None:
    """Delete temp leftovers and shards beyond this export's count (the subset shrank)."""
    for split in SPLITS:
        folder = join(settings.root, split)
        if not fs.exists(folder):
            continue
        for path in fs.ls(folder, detail=False):
            name = path.rstrip("/").rsplit("/", 1)[-1]
            if name.startswith(".") and ".tmp-" in name:
                fs.rm(path)
                continue
            number = name.split("_", 1)[0].split(".", 1)[0]
            if not number.isdigit():
                continue  # sizes.json: rewritten with the manifest
            n = int(number)
            if n >= shards.get(split, 0) or name not in (settings.shard_file(n),
                                                         settings.stats_file(n)):
                fs.rm(path)


def plan(lake: Lake, cfg: ExportConfig) -> tuple[DataFrame, DataFrame, dict[str, int], int,
                                                    ShardSettings, dict[str, Any]]:
    """(rows, keys, samples per split, missing images, settings, versions)."""
    rows, versions = source_rows(lake, cfg)
    rows = with_split_and_hash(rows, cfg)
    missing = rows.where(F.col("_has_image").isNull()).count()
    keys = rows.where(F.col("_has_image")).select("SAMPLE_ID", "split", "h")
    counts = {r["split"]: int(r["count"]) for r in keys.groupBy("split").count().collect()}
    most = max(counts.values(), default=0)
    settings = ShardSettings(
        root=root_of(cfg), format=cfg.format, image=cfg.image, jpeg_quality=cfg.jpeg_quality,
        key_digits=max(9, len(str(max(0, most - 1)))), shard_size=cfg.shard_size,
        shard_digits=max(5, len(str(max(0, shard_count(most, cfg.shard_size) - 1)))))
    settings = dataclasses.replace(settings, signature=signature(versions, cfg, settings))
    return rows, keys, counts, missing, settings, versions


def write_pending(rows: DataFrame, keys: DataFrame, counts: dict[str, int],
                  pending: list[tuple[str, int]], settings: ShardSettings,
                  batch_rows: int) -> list[dict[str, Any]]:
    """Write the `pending` (split, shard)s from Spark tasks; their stats rows."""
    spark = rows.sparkSession
    wanted = spark.createDataFrame(pending, "split string, shard int")
    shard = F.floor(F.col("rank") / F.lit(settings.shard_size)).cast("int")
    todo = ranked(keys, counts).withColumn("shard", shard).join(F.broadcast(wanted),
                                                               ["split", "shard"])
    full = todo.join(rows.drop("split", "h"), "SAMPLE_ID").select(*INPUT_COLUMNS)
    full = full.repartition(len(pending), "split", "shard").sortWithinPartitions(
        "split", "shard", "rank")

    def body(batches):
        return write_shards(batches, settings)

    with scoped_conf(spark, {ARROW_BATCH: str(batch_rows)}):
        return [r.asDict() for r in full.mapInPandas(body, schema=STATS_SCHEMA_DDL).collect()]


def write_manifest(fs, settings: ShardSettings, cfg: ExportConfig, versions: dict[str, Any],
                   counts: dict[str, int], stats: list[dict[str, Any]]) -> dict[str, Any]:
    """manifest.json at the root (and open_clip's sizes.json per split), written last."""
    splits: dict[str, Any] = {}
    for split in SPLITS:
        entries = sorted((s for s in stats if s["split"] == split), key=lambda s: s["shard"])
        if not counts.get(split):
            continue
        if sum(s["count"] for s in entries) != counts[split]:
            raise RuntimeError(f"{split}: shards hold {sum(s['count'] for s in entries)} "
                               f"samples, expected {counts[split]}")
        files = [{k: s[k] for k in ("shard", "file", "count", "bytes", "sha256")}
                 for s in entries]
        splits[split] = {"samples": counts[split], "shards": len(files),
                         "pattern": brace_pattern(settings.root, split, len(files), settings),
                         "files": files}
        write_text_atomic(join(settings.root, split, "sizes.json"), json.dumps(
            {f["file"]: f["count"] for f in files}, indent=2, sort_keys=True))
    manifest = {
        "layout": "img2dataset", "format": settings.format, "source": cfg.source, **versions,
        "signature": settings.signature, "samples": sum(counts.values()), "splits": splits,
        "settings": {k: getattr(cfg, k) for k in ("shard_size", "image", "jpeg_quality",
                                                  "val_fraction", "seed")}
        | {"key_digits": settings.key_digits, "shard_digits": settings.shard_digits},
    }
    write_text_atomic(join(settings.root, MANIFEST), json.dumps(manifest, indent=2,
                                                                sort_keys=True))
    return manifest


def read_manifest(root: str) -> dict[str, Any]:
    """The manifest of a finished export, or a UserError saying how to make one."""
    path = join(root.rstrip("/") if is_remote(root) else os.path.abspath(root), MANIFEST)
    manifest = _read_json(_fs(path), path)
    if manifest is None:
        raise UserError(f"no export manifest at {path}: run `deparrot export` first "
                        "(or set train.train_data)")
    return manifest


def run(spark: SparkSession, cfg: Config) -> ExportReport:
    """Write the shards that are missing, then the manifest."""
    ec = dataclasses.replace(cfg.export, out=cfg.shared(cfg.export.out))
    rows, keys, counts, missing, settings, versions = plan(Lake(spark, cfg), ec)
    fs = _fs(settings.root)
    shards = {split: shard_count(counts.get(split, 0), ec.shard_size) for split in SPLITS}
    done, pending = [], []
    for split in SPLITS:
        for shard in range(shards[split]):
            size = min(ec.shard_size, counts[split] - shard * ec.shard_size)
            stats = finished_shard(fs, settings, split, shard, size)
            if stats:
                done.append(stats)
            else:
                pending.append((split, shard))
    manifest_path = join(settings.root, MANIFEST)
    old = _read_json(fs, manifest_path)
    report = ExportReport(rows=sum(counts.values()), missing_images=missing,
                          samples=dict(counts), shards=sum(shards.values()),
                          shards_skipped=len(done), manifest=manifest_path)
    if not pending and old and old.get("signature") == settings.signature:
        report.skipped = True
        report.patterns = {s: v["pattern"] for s, v in old["splits"].items()}
        return report
    if fs.exists(manifest_path):
        fs.rm(manifest_path)  # from here until the end the export is incomplete
    remove_stale(fs, settings, shards)
    written = write_pending(rows, keys, counts, pending, settings, ec.arrow_batch_size) \
        if pending else []
    report.shards_written = len(written)
    manifest = write_manifest(fs, settings, ec, versions, counts, done + written)
    report.patterns = {s: v["pattern"] for s, v in manifest["splits"].items()}
    return report


STAGES = (Stage("export", "write the subset as webdataset/parquet training shards", run,
                flags={"--out": "export.out", "--format": "export.format",
                       "--source": "export.source", "--shard-size": "export.shard_size"},
                reads=("metadata", "images", "subset")),)
