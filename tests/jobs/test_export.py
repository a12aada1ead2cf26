"""`deparrot export`: subset + image bytes -> webdataset/parquet shards, crash-safe re-runs."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from PIL import Image

from jobs import export
from jobs.download import TABLE_SCHEMA as IMAGES_TABLE
from jobs.errors import UserError
from jobs.lake import Lake
from jobs.publish import SUBSET_SCHEMA

N = 20
MISSING_ID = 999  # in the subset, but its download failed


def _jpeg(i: int) -> bytes:
    img = Image.new("RGB", (16 + i, 12), ((37 * i) % 256, 80, 200 - 5 * i))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def _ids() -> list[int]:
    return [1_000 + 7 * i for i in range(N - 1)] + [-5_000_000_000]  # negative ids too


def build_tables(spark, cfg) -> dict[int, tuple[bytes, str]]:
    """A hand-made subset (N rows + one without an image) and its images; id -> (jpg, text)."""
    lake = Lake(spark, cfg)
    lake.ensure("subset", SUBSET_SCHEMA, partition_by=("part",))
    lake.ensure("images", IMAGES_TABLE)
    ids = _ids()
    subset = [(sid, f"http://x.example/{sid}.jpg", f"caption {i} of {sid}", 12.0, 16.0 + i,
               0.31 + 0.01 * i, 5.0 + 0.1 * i, i % 3, i % 3)
              for i, sid in enumerate([*ids, MISSING_ID])]
    spark.createDataFrame(
        subset, "SAMPLE_ID long, URL string, TEXT string, HEIGHT double, WIDTH double, "
        "similarity double, ase_scores double, kmeans long, part int",
    ).writeTo(lake.ref("subset").name).append()
    images = [(sid, f"http://x.example/{sid}.jpg", _jpeg(i), "jpg", 16 + i, 12, "ok")
              for i, sid in enumerate(ids)]
    images += [(MISSING_ID, "http://x.example/999.jpg", None, None, None, None, "error"),
               (12345, "http://x.example/other.jpg", _jpeg(99), "jpg", 115, 12, "ok")]
    spark.createDataFrame(
        images, "sample_id long, url string, image binary, format string, width int, "
        "height int, status string",
    ).writeTo(lake.ref("images").name).append()
    return {sid: (_jpeg(i), f"caption {i} of {sid}") for i, sid in enumerate(ids)}


def _with_export(cfg, out: Path, **kw):
    return dataclasses.replace(cfg, export=dataclasses.replace(cfg.export, out=str(out), **kw))


def _digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != "manifest.json"}


def _read_webdataset(pattern: str) -> list[dict]:
    import webdataset as wds

    return list(wds.WebDataset(pattern, shardshuffle=False))


@pytest.mark.slow  # default: CI step 2's export task writes shards that train reads
def test_webdataset_shards_hold_every_row_once_and_resume_after_a_crash(spark, cfg, tmp_path):
    truth = build_tables(spark, cfg)
    out = tmp_path / "shards"
    cfg = _with_export(cfg, out, shard_size=4, val_fraction=0.3)
    first = export.run(spark, cfg)
    assert first.rows == N and first.missing_images == 1
    assert sum(first.samples.values()) == N and first.samples["val"] > 0
    assert first.shards_written == first.shards and first.shards_skipped == 0

    seen: dict[str, set[int]] = {}
    for split, pattern in first.patterns.items():
        samples = _read_webdataset(pattern)
        assert len(samples) == first.samples[split]
        keys = [s["__key__"] for s in samples]
        assert keys == sorted(keys) and all(len(k) >= 9 and k.isdigit() for k in keys)
        for s in samples:
            meta = json.loads(s["json"])
            jpg, caption = truth[meta["SAMPLE_ID"]]
            assert s["jpg"] == jpg and s["txt"].decode() == caption == meta["caption"]
            assert meta["key"] == s["__key__"]
            assert (meta["width"], meta["height"]) == Image.open(io.BytesIO(jpg)).size
        seen[split] = {json.loads(s["json"])["SAMPLE_ID"] for s in samples}
    assert not seen["train"] & seen["val"]
    assert seen["train"] | seen["val"] == set(truth)  # each row exactly once, none missing
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["splits"]["train"]["samples"] == first.samples["train"]
    assert manifest["subset_version"] == Lake(spark, cfg).version("subset")
    assert json.loads((out / "train" / "00000_stats.json").read_text())["count"] == 4
    before = _digests(out)

    # A crash: one shard and the manifest never got written, a temp file was left behind.
    (out / "train" / "00001.tar").unlink()
    (out / "manifest.json").unlink()
    (out / "train" / ".00002.tar.tmp-dead").write_bytes(b"half a tar")
    again = export.run(spark, cfg)
    assert (again.shards_written, again.shards_skipped) == (1, first.shards - 1)
    assert _digests(out) == before  # byte-identical, temp file gone
    assert json.loads((out / "manifest.json").read_text()) == manifest
    assert export.run(spark, cfg).skipped


@pytest.mark.slow  # default: the webdataset shards test
def test_parquet_shards_reencoded(spark, cfg, tmp_path):
    truth = build_tables(spark, cfg)
    out = tmp_path / "pq"
    report = export.run(spark, _with_export(cfg, out, format="parquet", image="reencode",
                                            jpeg_quality=80, shard_size=8))
    assert report.patterns["train"].endswith("/train/{00000..00002}.parquet")
    files = sorted((out / "train").glob("*.parquet"))
    assert [f.name for f in files] == ["00000.parquet", "00001.parquet", "00002.parquet"]
    table = [row for f in files for row in pq.read_table(f).to_pylist()]
    assert list(table[0]) == ["key", "jpg", "txt", "json"]
    assert len(table) == N
    for row in table:
        meta = json.loads(row["json"])
        assert row["txt"] == truth[meta["SAMPLE_ID"]][1]
        assert Image.open(io.BytesIO(row["jpg"])).format == "JPEG"


def test_missing_subset_is_a_user_error(spark, cfg, tmp_path):
    with pytest.raises(UserError, match="deparrot|missing"):
        export.run(spark, _with_export(cfg, tmp_path / "x"))
