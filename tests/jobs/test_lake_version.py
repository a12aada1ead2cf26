"""`Lake.version`: the Delta log's fast answer equals DESCRIBE HISTORY's, including after
a commit by a writer the session knows nothing of (delta-rs, no JVM)."""

from __future__ import annotations

import pyarrow as pa
import pytest
from pyspark.sql import types as T

from jobs.lake import Lake

SCHEMA = T.StructType([T.StructField("sample_id", T.LongType(), False)])


def _history_version(lake: Lake, key: str) -> int:
    return int(lake.delta(key).history(1).select("version").first()[0])


def test_version_follows_every_commit_including_another_writers(spark, cfg):
    deltalake = pytest.importorskip("deltalake")
    lake = Lake(spark, cfg)
    lake.ensure("metadata", SCHEMA)
    seen = [lake.version("metadata")]
    for i in range(2):
        spark.createDataFrame([(i,)], SCHEMA).writeTo(lake.ref("metadata").name).append()
        seen.append(lake.version("metadata"))
    assert seen == sorted(set(seen)) and seen[-1] == _history_version(lake, "metadata")
    # Another process's commit: the session's cached log must not hide it.
    deltalake.write_deltalake(lake.ref("metadata").path,
                              pa.table({"sample_id": pa.array([9], pa.int64())}), mode="append")
    assert lake.version("metadata") == seen[-1] + 1 == _history_version(lake, "metadata")


def test_version_of_a_missing_table_fails_as_before(spark, cfg):
    lake = Lake(spark, cfg)
    with pytest.raises(Exception, match="(?i)not a delta table|does not exist|not found"):
        lake.version("scores")
