"""Bad input through the real CLI: one line on stderr, exit status 2, no half-written table."""

from __future__ import annotations

import threading

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs import cli
from jobs.errors import ConcurrentRunError
from jobs.lake import REJECTS_SCHEMA, Lake, with_commit_retries

GOOD = {"URL": ["https://x.example/a.jpg", "https://x.example/b.jpg"], "TEXT": ["a", "b"],
        "WIDTH": [10.0, 20.0], "HEIGHT": [10.0, 20.0]}


def _argv(cfg, *extra: str) -> list[str]:
    return ["ingest", "--set", f"storage.root={cfg.storage.root}",
            "--set", f"storage.schema={cfg.storage.schema}", *extra]


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err and "at org.apache" not in err
    return err


def _nothing_written(spark, cfg) -> None:
    lake = Lake(spark, cfg)
    assert not lake.exists("metadata") or lake.read("metadata").count() == 0
    assert not lake.exists("rejects") or lake.read("rejects").count() == 0


def test_missing_input_path(spark, cfg, tmp_path, capsys):
    assert cli.main(_argv(cfg, "--input", str(tmp_path / "nope"))) == 2
    assert _one_line(capsys) == f"deparrot ingest: input path not found: {tmp_path / 'nope'}"
    _nothing_written(spark, cfg)


def test_folder_without_parquet_files(spark, cfg, tmp_path, capsys):
    folder = tmp_path / "shards"
    folder.mkdir()
    (folder / "00000_stats.json").write_text("{}")
    assert cli.main(_argv(cfg, "--input", str(folder))) == 2
    assert "no parquet files in" in _one_line(capsys)
    _nothing_written(spark, cfg)


def test_columns_of_no_known_family(spark, cfg, tmp_path, capsys):
    pq.write_table(pa.table({"image_path": ["a.jpg"], "caption": ["x"]}), tmp_path / "m.parquet")
    assert cli.main(_argv(cfg, "--input", str(tmp_path / "m.parquet"))) == 2
    err = _one_line(capsys)
    assert "cannot tell the metadata family" in err and "ingest.family" in err
    _nothing_written(spark, cfg)


@pytest.mark.slow  # default: one-line errors for bad files in test_ingest.py
def test_corrupt_file_among_good_ones_stops_before_writing(spark, cfg, tmp_path, capsys):
    folder = tmp_path / "meta"
    folder.mkdir()
    pq.write_table(pa.table(GOOD), folder / "part-00000.parquet")
    pq.write_table(pa.table(GOOD), folder / "part-00002.parquet")
    data = (folder / "part-00000.parquet").read_bytes()
    (folder / "part-00001.parquet").write_bytes(data[: len(data) // 2])  # truncated download
    assert cli.main(_argv(cfg, "--input", str(folder))) == 2
    err = _one_line(capsys)
    assert "part-00001.parquet" in err and "corrupt or truncated" in err
    _nothing_written(spark, cfg)
    # Once the file is fixed (or moved away), the same command ingests every row.
    (folder / "part-00001.parquet").write_bytes(data)
    assert cli.main(_argv(cfg, "--input", str(folder))) == 0
    assert Lake(spark, cfg).read("metadata").count() == 2  # same URLs+TEXT in each file
    assert Lake(spark, cfg).read("rejects").count() == 4  # the other copies: duplicate_id


def test_commit_conflicts_are_retried_then_named():
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 2:
            raise RuntimeError("[DELTA_CONCURRENT_APPEND] ConcurrentAppendException: files "
                               "were added by a concurrent update\n\tat io.delta...")
        return "ok"

    assert with_commit_retries(flaky) == "ok" and len(calls) == 2

    def always():
        raise RuntimeError("[DELTA_CONCURRENT_APPEND] ConcurrentAppendException: x")

    with pytest.raises(ConcurrentRunError, match="another run"):
        with_commit_retries(always, attempts=2)
    with pytest.raises(ValueError):  # anything else is not retried
        with_commit_retries(lambda: (_ for _ in ()).throw(ValueError("bug")))


def test_concurrent_writers_to_one_table_leave_no_duplicates(spark, cfg):
    lake = Lake(spark, cfg)
    lake.ensure("rejects", REJECTS_SCHEMA, partition_by=("stage",))
    errors: list[BaseException] = []

    def writer(offset: int) -> None:
        try:
            rows = [("t", "r", str(i), i) for i in range(offset, offset + 30)]
            df = spark.createDataFrame(rows, "stage string, reason string, reject_key string, "
                                             "sample_id long")
            lake.add_rejects(df)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(o,)) for o in (0, 10, 20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    keys = [r["reject_key"] for r in lake.read("rejects").collect()]
    assert sorted(keys, key=int) == [str(i) for i in range(50)]


def test_cli_turns_a_lost_race_into_one_line(monkeypatch, capsys):
    def lose(*_a, **_k):
        raise ConcurrentRunError("another run keeps committing to the same tables")

    monkeypatch.setattr(cli, "run_stage", lose)
    assert cli.main(["dedup"]) == cli.EXIT_CONCURRENT_RUN
    assert "another run" in _one_line(capsys)


def test_cli_says_a_suspected_bug_in_one_line(monkeypatch, capsys):
    """A task that failed on a bug (udfs.failures) arrives wrapped in Spark's error with
    the worker's traceback: the person reads the bug's line, exit status 4."""
    wrapped = ("An error occurred while calling o226.execute.\n: org.apache.spark.SparkException"
               ": Task failed\nTraceback (most recent call last):\n  File \"x.py\", line 1\n"
               "udfs.failures.SuspectedBugError: score: 4 of 4 rows of a batch failed with "
               "KeyError: 'det'. That is a bug.\n\tat org.apache.spark.api.python.Foo")

    def bug(*_a, **_k):
        raise RuntimeError(wrapped)

    monkeypatch.setattr(cli, "run_stage", bug)
    assert cli.main(["score"]) == cli.EXIT_SUSPECTED_BUG
    assert _one_line(capsys) == ("deparrot score: score: 4 of 4 rows of a batch failed with "
                                 "KeyError: 'det'. That is a bug. The executor log has its "
                                 "traceback.")
