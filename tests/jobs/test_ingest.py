import dataclasses
import math
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs import ingest
from jobs.lake import Lake


def _cfg(cfg, path: Path, family: str = "auto"):
    return dataclasses.replace(
        cfg, ingest=dataclasses.replace(cfg.ingest, input=str(path), family=family)
    )


def _write(path: Path, rows: list[dict], schema: pa.Schema) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
    return path


L400M = pa.schema([("SAMPLE_ID", pa.int64()), ("URL", pa.string()), ("TEXT", pa.string()),
                   ("HEIGHT", pa.float64()), ("WIDTH", pa.float64()), ("LICENSE", pa.string()),
                   ("NSFW", pa.string()), ("similarity", pa.float64())])


def _row400(i, **kw):
    row = {"SAMPLE_ID": i, "URL": f"https://a.example/{i}.jpg", "TEXT": f"caption {i}",
           "HEIGHT": 100.0, "WIDTH": 200.0, "LICENSE": "?", "NSFW": "UNLIKELY",
           "similarity": 0.31}
    row.update(kw)
    return row


# (row overrides, expected reason) -- one row per reject reason, plus valid ones.
CASES_400M = [
    ({}, None),
    ({"URL": "HTTP://UPPER.example/x.png"}, None),
    ({"URL": None}, "missing_url"),
    ({"URL": "   "}, "missing_url"),
    ({"URL": "ftp://a.example/x.jpg"}, "bad_url"),
    ({"URL": "javascript:alert(1)"}, "bad_url"),
    ({"URL": "https://"}, "bad_url"),
    ({"TEXT": None}, "missing_text"),
    ({"TEXT": "  "}, "missing_text"),
    ({"WIDTH": None}, "missing_number:width"),
    ({"similarity": float("nan")}, "non_finite:similarity"),
    ({"HEIGHT": float("inf")}, "non_finite:height"),
    ({"WIDTH": -5.0}, "negative_size"),
    ({"HEIGHT": 0.0}, "absurd_size"),
    ({"WIDTH": 1e9}, "absurd_size"),
    ({"SAMPLE_ID": None}, "missing_id"),
]


def test_laion400m_every_reason_accounting_and_idempotent_rerun(spark, cfg, tmp_path):
    rows = [_row400(100 + i, **over) for i, (over, _) in enumerate(CASES_400M)]
    rows.append(_row400(100, TEXT="same id as the first row"))  # duplicate within input
    src = _write(tmp_path / "in" / "laion400m.parquet", rows, L400M)
    cfg = _cfg(cfg, src)

    report = ingest.run(spark, cfg)

    lake = Lake(spark, cfg)
    meta = lake.read("metadata")
    rejects = lake.read("rejects").where("stage = 'ingest'")
    kept_rows = {r["source_row"]: r for r in meta.collect()}
    rejected = {r["source_row"]: r for r in rejects.collect()}
    assert len(kept_rows) + len(rejected) == len(rows)  # accounting invariant
    assert report.input_rows == len(rows)
    assert report.kept == len(kept_rows) and report.rejected_total == len(rejected)
    for i, (_, reason) in enumerate(CASES_400M):
        if reason is None:
            assert i in kept_rows, f"row {i} should be kept"
        else:
            assert rejected[i]["reason"] == reason, f"row {i}"
    assert rejected[len(CASES_400M)]["reason"] == "duplicate_id"
    # Rejects keep the original values.
    assert '"URL":"ftp://a.example/x.jpg"' in rejected[4]["record"]
    first = kept_rows[0]
    assert (first["sample_id"], first["url"], first["width"], first["height"], first["nsfw"]) == (
        100, "https://a.example/100.jpg", 200.0, 100.0, "UNLIKELY")
    assert first["family"] == "laion400m" and first["source_file"].endswith("laion400m.parquet")

    versions = (lake.version("metadata"), lake.version("rejects"))
    again = ingest.run(spark, cfg)
    assert again.kept == 0 and again.already_present == report.kept
    assert lake.read("metadata").count() == len(kept_rows)
    assert lake.read("rejects").count() == len(rejected)
    assert lake.version("metadata") >= versions[0]

    # Another file appends; an id already stored under another file is a duplicate.
    more = _write(tmp_path / "in2" / "more.parquet",
                  [_row400(500), _row400(501), _row400(100, TEXT="clash")], L400M)
    third = ingest.run(spark, _cfg(cfg, more))
    assert (third.kept, third.rejected) == (2, {"duplicate_id": 1})
    assert lake.read("metadata").count() == len(kept_rows) + 2


@pytest.mark.slow  # default: the laion400m and datacomp families
def test_laion2b_family_from_a_nested_folder(spark, cfg, tmp_path):
    schema = pa.schema([("URL", pa.string()), ("TEXT", pa.string()), ("WIDTH", pa.int64()),
                        ("HEIGHT", pa.int64()), ("similarity", pa.float64()),
                        ("hash", pa.int64()), ("punsafe", pa.float32()),
                        ("pwatermark", pa.float32()), ("LANGUAGE", pa.string()),
                        ("aesthetic", pa.float64())])

    def row(i, **kw):
        r = {"URL": f"http://b.example/{i}.jpg", "TEXT": f"two b {i}", "WIDTH": 64,
             "HEIGHT": 48, "similarity": 0.35, "hash": 9000 + i, "punsafe": 0.01,
             "pwatermark": 0.2, "LANGUAGE": "en", "aesthetic": 5.25}
        r.update(kw)
        return r

    _write(tmp_path / "in" / "a" / "part-0.parquet", [row(1), row(2)], schema)
    _write(tmp_path / "in" / "b" / "c" / "part-1.parquet",
           [row(3), row(1)], schema)  # same URL+TEXT as row 1 -> same id -> duplicate
    cfg = _cfg(cfg, tmp_path / "in")
    report = ingest.run(spark, cfg)
    assert (report.kept, report.rejected) == (3, {"duplicate_id": 1})
    meta = Lake(spark, cfg).read("metadata")
    got = {r["url"]: r for r in meta.collect()}
    r1 = got["http://b.example/1.jpg"]
    assert r1["family"] == "laion2b" and r1["source_uid"] == "9001"
    assert r1["aesthetic"] == 5.25 and r1["language"] == "en" and r1["width"] == 64.0
    assert math.isclose(r1["pwatermark"], 0.2, rel_tol=1e-6)
    expected_id = spark.sql(
        "SELECT xxhash64('http://b.example/1.jpg', 'two b 1') AS h").first()["h"]
    assert r1["sample_id"] == expected_id


def test_datacomp_family_and_independent_delta_reader(spark, cfg, tmp_path):
    from deltalake import DeltaTable

    schema = pa.schema([("uid", pa.string()), ("url", pa.string()), ("text", pa.string()),
                        ("original_width", pa.int64()), ("original_height", pa.int64()),
                        ("clip_b32_similarity_score", pa.float32()),
                        ("clip_l14_similarity_score", pa.float32()), ("sha256", pa.string())])
    rows = [
        {"uid": f"{i:032x}", "url": f"https://c.example/{i}", "text": f"dc {i}",
         "original_width": 640, "original_height": 480, "clip_b32_similarity_score": 0.25,
         "clip_l14_similarity_score": 0.5, "sha256": "ab" * 32}
        for i in range(4)
    ]
    rows.append({**rows[0], "uid": None, "url": "https://c.example/none"})
    src = _write(tmp_path / "dc.parquet", rows, schema)
    cfg = _cfg(cfg, src, family="datacomp")
    report = ingest.run(spark, cfg)
    assert (report.kept, report.rejected) == (4, {"missing_id": 1})

    ref = Lake(spark, cfg).ref("metadata")
    independent = DeltaTable(ref.path).to_pyarrow_table().to_pylist()
    assert sorted(r["source_uid"] for r in independent) == [f"{i:032x}" for i in range(4)]
    row = next(r for r in independent if r["source_uid"] == f"{0:032x}")
    assert row["family"] == "datacomp" and row["width"] == 640.0 and row["height"] == 480.0
    assert row["similarity"] == pytest.approx(0.25) and row["sha256"] == "ab" * 32
    assert row["clip_l14_similarity"] == pytest.approx(0.5)
    assert len({r["sample_id"] for r in independent}) == 4
    rejects = DeltaTable(Lake(spark, cfg).ref("rejects").path).to_pyarrow_table().to_pylist()
    assert [(r["stage"], r["reason"]) for r in rejects] == [("ingest", "missing_id")]


def test_detect_family_and_unknown_columns():
    assert ingest.detect_family(["SAMPLE_ID", "URL", "TEXT"]) == "laion400m"
    assert ingest.detect_family(["URL", "TEXT", "hash", "punsafe"]) == "laion2b"
    assert ingest.detect_family(["uid", "url", "text", "sha256"]) == "datacomp"
    with pytest.raises(ValueError, match="ingest.family"):
        ingest.detect_family(["image_path", "caption"])


# ------------------------------------------------------------------ hostile metadata


def _rejects(spark, cfg) -> dict[int, str]:
    rows = Lake(spark, cfg).read("rejects").where("stage = 'ingest'").collect()
    return {r["source_row"]: r["reason"] for r in rows}


def test_sample_ids_that_are_not_numbers_are_rejected_not_a_traceback(spark, cfg, tmp_path):
    schema = pa.schema([("SAMPLE_ID", pa.string()), ("URL", pa.string()),
                        ("TEXT", pa.string()), ("WIDTH", pa.string()),
                        ("HEIGHT", pa.float64())])
    rows = [{"SAMPLE_ID": "17", "URL": "https://a.example/1.jpg", "TEXT": "ok",
             "WIDTH": "200", "HEIGHT": 100.0},
            {"SAMPLE_ID": "abc", "URL": "https://a.example/2.jpg", "TEXT": "id",
             "WIDTH": "200", "HEIGHT": 100.0},
            {"SAMPLE_ID": "18", "URL": "https://a.example/3.jpg", "TEXT": "width",
             "WIDTH": "12px", "HEIGHT": 100.0}]
    path = _write(tmp_path / "in" / "a.parquet", rows, schema)
    report = ingest.run(spark, _cfg(cfg, path, "laion400m"))
    assert (report.input_rows, report.kept) == (3, 1)
    assert _rejects(spark, cfg) == {1: "bad_id", 2: "bad_number:width"}


def test_columns_that_differ_only_in_case_are_one_line(spark, cfg, tmp_path, capsys):
    from jobs import cli

    table = pa.table({"url": ["https://a.example/1.jpg"], "URL": ["https://b.example/1.jpg"],
                      "TEXT": ["x"]})
    path = tmp_path / "both.parquet"
    pq.write_table(table, path)
    cli.main(["ingest", "--input", str(path), "--set", f"storage.root={cfg.storage.root}"])
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "differ only in case" in err and "url" in err
    assert not Lake(spark, cfg).exists("metadata")  # nothing half-written


def test_invalid_utf8_text_is_rejected_and_every_reader_can_open_the_tables(
        spark, cfg, tmp_path):
    schema = pa.schema([("SAMPLE_ID", pa.int64()), ("URL", pa.string()),
                        ("TEXT", pa.binary()), ("WIDTH", pa.float64()),
                        ("HEIGHT", pa.float64())])
    rows = [{"SAMPLE_ID": 1, "URL": "https://a.example/1.jpg", "TEXT": "café".encode(),
             "WIDTH": 10.0, "HEIGHT": 10.0},
            {"SAMPLE_ID": 2, "URL": "https://a.example/2.jpg", "TEXT": b"caf\xe9 \xff\xfe",
             "WIDTH": 10.0, "HEIGHT": 10.0}]
    path = _write(tmp_path / "in" / "a.parquet", rows, schema)
    report = ingest.run(spark, _cfg(cfg, path, "laion400m"))
    assert report.kept == 1 and report.rejected == {"invalid_utf8:text": 1}
    from deltalake import DeltaTable  # an Arrow-based reader outside Spark

    lake = Lake(spark, cfg)
    meta = DeltaTable(lake.ref("metadata").path).to_pyarrow_table()
    assert meta.column("text").to_pylist() == ["café"]
    rejects = DeltaTable(lake.ref("rejects").path).to_pyarrow_table().to_pylist()
    assert rejects[0]["reason"] == "invalid_utf8:text" and "\ufffd" not in rejects[0]["reason"]


def test_a_symlink_loop_reads_each_file_once(spark, cfg, tmp_path):
    folder = tmp_path / "in"
    _write(folder / "a.parquet", [_row400(1), _row400(2)], L400M)
    _write(folder / "sub" / "b.parquet", [_row400(3)], L400M)
    (folder / "sub" / "loop").symlink_to(folder, target_is_directory=True)
    (folder / "again").symlink_to(folder / "sub", target_is_directory=True)
    (folder / "link.parquet").symlink_to(folder / "a.parquet")
    assert len(ingest.parquet_files(str(folder))) == 2
    report = ingest.run(spark, _cfg(cfg, folder))
    assert (report.input_rows, report.kept, report.rejected) == (3, 3, {})


def test_nested_columns_and_files_of_different_types_are_one_line(spark, cfg, tmp_path, capsys):
    from jobs import cli

    base = ["--set", f"storage.root={cfg.storage.root}", "--set",
            f"storage.schema={cfg.storage.schema}"]
    nested = tmp_path / "nested.parquet"
    pq.write_table(pa.table({"SAMPLE_ID": [1], "URL": ["https://a.example/1"], "TEXT": ["x"],
                             "HEIGHT": [1.0], "WIDTH": pa.array([[1, 2]])}), nested)
    assert cli.main(["ingest", "--input", str(nested), *base]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "column WIDTH is array<bigint>" in err
    assert not Lake(spark, cfg).exists("metadata")

    mixed = tmp_path / "mixed"
    _write(mixed / "a.parquet", [_row400(1)], L400M)
    pq.write_table(pa.table({"SAMPLE_ID": [2], "URL": ["https://a.example/2"], "TEXT": ["y"],
                             "HEIGHT": [1.0], "WIDTH": ["wide"]}), mixed / "b.parquet")
    assert cli.main(["ingest", "--input", str(mixed), *base]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "column types differ" in err and "b.parquet" in err
