"""The shard writer alone: layout, byte-identical output whatever the batching, no half files."""

from __future__ import annotations

import io
import json
import tarfile

import pandas as pd
import pyarrow.parquet as pq
import pytest
from PIL import Image

from udfs.shards import ShardSettings, brace_pattern, write_shards


def _rows(n: int = 10, shard_size: int = 4) -> pd.DataFrame:
    def jpeg(i: int) -> bytes:
        buf = io.BytesIO()
        Image.new("RGB", (8 + i, 8), (10 * i, 0, 0)).save(buf, "JPEG")
        return buf.getvalue()

    return pd.DataFrame({
        "split": "train", "shard": [i // shard_size for i in range(n)], "rank": range(n),
        "SAMPLE_ID": [500 + i for i in range(n)], "url": [f"http://x/{i}" for i in range(n)],
        "caption": [f"caption {i}" for i in range(n)], "image": [jpeg(i) for i in range(n)],
        "format": "jpg", "width": [8 + i for i in range(n)], "height": 8,
        "original_width": pd.array([None] * n, dtype="Int64"),
        "original_height": pd.array([16] * n, dtype="Int64"),
        "similarity": 0.33, "ase_scores": float("nan"),
        "kmeans": pd.array([i % 2 if i else None for i in range(n)], dtype="Int64"),
    })


def _write(rows: pd.DataFrame, settings: ShardSettings, batch: int) -> list[dict]:
    batches = (rows.iloc[i:i + batch] for i in range(0, len(rows), batch))
    return [r for df in write_shards(batches, settings) for r in df.to_dict("records")]


@pytest.mark.parametrize("fmt", ["webdataset", "parquet"])
def test_same_rows_same_bytes_whatever_the_batches(tmp_path, fmt):
    outputs = []
    for batch, folder in ((3, "a"), (10, "b")):
        settings = ShardSettings(root=str(tmp_path / folder), format=fmt, shard_size=4,
                                 signature="sig")
        stats = _write(_rows(), settings, batch)
        assert [s["count"] for s in stats] == [4, 4, 2]
        outputs.append({p.name: p.read_bytes() for p in (tmp_path / folder / "train").iterdir()})
    assert outputs[0] == outputs[1]
    assert not [n for n in outputs[0] if n.startswith(".")]  # no temp files left
    stats = json.loads(outputs[0]["00001_stats.json"])
    assert (stats["first_key"], stats["last_key"], stats["signature"]) == (
        "000000004", "000000007", "sig")


def test_tar_members_and_json(tmp_path):
    settings = ShardSettings(root=str(tmp_path), shard_size=4)
    _write(_rows(), settings, 5)
    with tarfile.open(tmp_path / "train" / "00000.tar") as tar:
        members = tar.getmembers()
        names = [m.name for m in members]
        meta = json.load(tar.extractfile("000000000.json"))
    assert names[:3] == ["000000000.jpg", "000000000.txt", "000000000.json"]
    assert {(m.mtime, m.uid, m.gid, m.mode) for m in members} == {(0, 0, 0, 0o644)}
    assert meta["SAMPLE_ID"] == 500 and meta["kmeans"] is None and meta["ase_scores"] is None
    assert meta["original_height"] == 16 and meta["original_width"] is None
    assert brace_pattern("/d", "train", 3, settings) == "/d/train/{00000..00002}.tar"
    assert brace_pattern("/d", "val", 1, settings) == "/d/val/00000.tar"


def test_parquet_columns_and_reencode(tmp_path):
    settings = ShardSettings(root=str(tmp_path), format="parquet", image="reencode",
                             jpeg_quality=70, shard_size=100)
    _write(_rows(shard_size=100), settings, 4)
    table = pq.read_table(tmp_path / "train" / "00000.parquet")
    assert table.column_names == ["key", "jpg", "txt", "json"] and table.num_rows == 10
    assert Image.open(io.BytesIO(table["jpg"][3].as_py())).size == (11, 8)


def test_a_failing_task_leaves_no_shard_under_its_final_name(tmp_path):
    rows = _rows()
    rows.loc[6, "image"] = b"not an image"
    settings = ShardSettings(root=str(tmp_path), image="reencode", shard_size=4)
    with pytest.raises(ValueError, match="re-encode"):
        _write(rows, settings, 10)
    names = sorted(p.name for p in (tmp_path / "train").iterdir())
    assert names == ["00000.tar", "00000_stats.json"]  # shard 1 never appeared, no temp file
