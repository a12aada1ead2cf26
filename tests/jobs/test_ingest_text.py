"""Text inputs of `deparrot ingest` (jobs/ingest_text.py): the parser alone (no Spark)
for each hostile case, then through the CLI into the tables."""

from __future__ import annotations

import gzip
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from jobs import cli, ingest
from jobs.errors import UserError
from jobs.ingest_text import stage_files
from jobs.lake import Lake

# ------------------------------------------------------------------ the parser alone


def _stage(tmp_path: Path, fmt: str, *contents: bytes, name: str = "in") -> list[dict]:
    """Parse files holding `contents`; the staged rows, in file and row order."""
    files = []
    tmp_path.mkdir(parents=True, exist_ok=True)
    for i, data in enumerate(contents):
        path = tmp_path / f"{name}{i}.{fmt}"
        path.write_bytes(gzip.compress(data) if fmt.endswith(".gz") else data)
        files.append(str(path))
    folder = tmp_path / "scratch"
    staged = stage_files(files, fmt, str(folder), lambda p: Path(p).name)
    rows = pq.read_table(folder).to_pylist() if staged.parts else []
    return sorted(rows, key=lambda r: (r["_source_file"], r["_source_row"]))


def test_csv_quoting_multiline_fields_bom_and_empty_cells(tmp_path):
    data = ('\ufeffURL,TEXT,WIDTH\n'
            'https://a.example/1.jpg,"two\nlines, one comma",10\n'
            '\n'  # a blank line is no record
            'https://a.example/2.jpg,"say ""hi""",\n'
            'https://a.example/3.jpg,"tab\there",30\r\n').encode()
    rows = _stage(tmp_path, "csv", data)
    assert [r["_source_row"] for r in rows] == [0, 1, 2]
    assert [r["TEXT"] for r in rows] == [b"two\nlines, one comma", b'say "hi"', b"tab\there"]
    assert [r["WIDTH"] for r in rows] == [b"10", None, b"30"]  # an empty field is null
    assert rows[0]["URL"] == b"https://a.example/1.jpg"  # the BOM is not in the first name
    assert all(r["_source_error"] is None for r in rows)


def test_tsv_with_quoted_tabs_and_newlines_and_gzip(tmp_path):
    data = b'url\tcaption\nhttps://a.example/1\t"a\tb\nc"\nhttps://a.example/2\tplain 5" tall\n'
    rows = _stage(tmp_path, "tsv.gz", data)
    assert [(r["url"], r["caption"]) for r in rows] == [
        (b"https://a.example/1", b"a\tb\nc"), (b"https://a.example/2", b'plain 5" tall')]


def test_invalid_utf8_bytes_are_kept_as_they_are(tmp_path):
    data = b"URL,TEXT\nhttps://a.example/1,caf\xc3\xa9\nhttps://a.example/2,caf\xe9 latin-1\n"
    rows = _stage(tmp_path, "csv", data)
    assert [r["TEXT"] for r in rows] == ["café".encode(), b"caf\xe9 latin-1"]


def test_rows_with_the_wrong_number_of_fields_keep_their_raw_text(tmp_path):
    data = b"URL,TEXT\nhttps://a.example/1,ok\nhttps://a.example/2,a,b\nhttps://a.example/3\n"
    rows = _stage(tmp_path, "csv", data)
    assert [r["_source_error"] for r in rows] == [None, "bad_field_count", "bad_field_count"]
    assert rows[1]["_source_text"] == b"https://a.example/2,a,b"


def test_header_less_tsv_is_one_line_naming_the_file(tmp_path):
    with pytest.raises(UserError, match=r"in0\.tsv is data .* need a header row") as err:
        _stage(tmp_path, "tsv", b"a cat on a mat\thttps://a.example/1.jpg\n")
    assert "'caption\\turl'" in str(err.value)


@pytest.mark.parametrize("data, message", [
    (b"URL,TEXT\nhttps://a.example/1,\"never closed\nhttps://a.example/2,x\n",
     "never closed"),
    ("URL,TEXT\nhttps://a.example/1,x\n".encode("utf-16"), "UTF-16"),
    (b"URL,T\xe9XT\nhttps://a.example/1,x\n", "header row of .* is not UTF-8"),
])
def test_unreadable_csv_is_one_line(tmp_path, data, message):
    with pytest.raises(UserError, match=message):
        _stage(tmp_path, "csv", data)


def test_truncated_gzip_names_the_file(tmp_path):
    path = tmp_path / "cut.tsv.gz"
    whole = gzip.compress(b"url\tcaption\n" + b"https://a.example/1\tx\n" * 2000)
    path.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(UserError, match=r"cannot read tsv.gz file .*cut\.tsv\.gz: it is "
                                        "corrupt or truncated"):
        stage_files([str(path)], "tsv.gz", str(tmp_path / "scratch"), str)


def test_empty_files_add_no_rows_and_only_empty_files_are_an_error(tmp_path):
    rows = _stage(tmp_path, "csv", b"", b"URL,TEXT\nhttps://a.example/1,x\n", b"URL,TEXT\n")
    assert [(r["_source_file"], r["_source_row"]) for r in rows] == [("in1.csv", 0)]
    with pytest.raises(UserError, match="empty"):
        _stage(tmp_path / "b", "csv", b"", b"\n")
    assert _stage(tmp_path / "c", "txt", b"") == []  # a txt file has no header to lack


def test_txt_is_one_url_a_line_and_json_forms(tmp_path):
    rows = _stage(tmp_path, "txt", b"https://a.example/1\n\n  https://a.example/2  \r\n")
    assert [(r["_source_row"], r["url"]) for r in rows] == [
        (0, b"https://a.example/1"), (1, b"https://a.example/2")]
    lines = b'{"url": "https://a.example/1", "w": 5, "n": null}\n[1]\nnot json\n'
    rows = _stage(tmp_path / "l", "jsonl", lines)
    assert (rows[0]["url"], rows[0]["w"], rows[0]["n"]) == (b"https://a.example/1", b"5", None)
    assert [(r["_source_error"], r["_source_text"]) for r in rows[1:]] == [
        ("bad_json", b"[1]"), ("bad_json", b"not json")]
    pandas_default = b'{"url": {"0": "https://a.example/1", "1": "https://a.example/2"}}'
    rows = _stage(tmp_path / "j", "json", pandas_default)
    assert [r["url"] for r in rows] == [b"https://a.example/1", b"https://a.example/2"]


def test_format_from_names_and_folders(tmp_path):
    assert ingest.format_of("/x/a.TSV.GZ") == "tsv.gz"
    assert ingest.format_of("/x/00000_stats.json") is None  # img2dataset's sidecar
    assert ingest.format_of("/x/_SUCCESS") is None
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "a.csv").write_text("URL,TEXT\n")
    (folder / "00000_stats.json").write_text("{}")
    assert ingest.input_format(str(folder)) == "csv"
    (folder / "b.tsv").write_text("URL\tTEXT\n")
    with pytest.raises(UserError, match="holds csv, tsv files: set ingest.input_format"):
        ingest.input_format(str(folder))
    assert ingest.input_files(str(folder), "tsv") == [str((folder / "b.tsv").resolve())]
    (folder / "c.parquet").write_bytes(b"")
    assert ingest.input_format(str(folder)) == "parquet"  # as before: parquet wins


# ------------------------------------------------------------------ through the CLI


def _argv(cfg, *extra: str) -> list[str]:
    return ["ingest", "--set", f"storage.root={cfg.storage.root}",
            "--set", f"storage.schema={cfg.storage.schema}", *extra]


def _tables(spark, cfg) -> tuple[list, dict]:
    lake = Lake(spark, cfg)
    kept = lake.read("metadata").collect()
    rejected = lake.read("rejects").where("stage = 'ingest'").collect()
    return kept, {(r["source_file"].rsplit("/", 1)[-1], r["source_row"]): r for r in rejected}


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err
    return err


# slow: parquet and tsv go through the same reader as csv (the default run keeps csv;
# test_txt_and_renamed_columns reads text files with other separators)
@pytest.mark.parametrize("fmt", [pytest.param("parquet", marks=pytest.mark.slow), "csv",
                                 pytest.param("tsv", marks=pytest.mark.slow)])
def test_url_caption_sample_is_ingested_through_the_cli(spark, cfg, tmp_path, fmt):
    """img2dataset's shape (URL, TEXT, a pandas index; no WIDTH/HEIGHT) in each format:
    every row is kept with null sizes or rejected with its reason, at its exact row."""
    out = tmp_path / "sample"
    assert cli.main(["sample", "--out", str(out), "--rows", "40", "--shape", "url_caption",
                     "--format", fmt, "--set", "sample.images=false"]) == 0
    assert cli.main(_argv(cfg, "--input", str(out / "metadata"))) == 0
    kept, rejected = _tables(spark, cfg)
    assert len(kept) + len(rejected) == 40  # rows in = kept + rejected
    assert all(r["width"] is None and r["height"] is None for r in kept)
    assert {r["family"] for r in kept} == {"laion2b"}
    truth = pq.read_table(out / "truth.parquet").to_pylist()
    expected = {(f"part-{i // 20:05d}.{fmt}", i % 20): t["kind"].split(":", 1)[1]
                for i, t in enumerate(truth) if t["kind"].startswith("invalid:")}
    assert {k: r["reason"] for k, r in rejected.items()} == expected
    if fmt == "csv":  # text rows are numbered by the parser: the same on every run
        assert cli.main(_argv(cfg, "--input", str(out / "metadata"))) == 0
        again, rejected_again = _tables(spark, cfg)
        assert (len(again), len(rejected_again)) == (len(kept), len(rejected))
    assert not list((Path(cfg.storage.root) / "_files" / "_scratch").glob("*"))


def test_hostile_csv_rows_are_kept_or_rejected_with_a_reason(spark, cfg, tmp_path):
    src = tmp_path / "in" / "hostile.csv"
    src.parent.mkdir()
    src.write_bytes(
        b"\xef\xbb\xbfURL,TEXT,WIDTH,HEIGHT\n"
        b'https://a.example/0.jpg,"multi\nline, ""quoted""",10,20\n'
        b"https://a.example/1.jpg,caf\xe9 in latin-1,10,20\n"
        b"https://a.example/2.jpg,no width,,20\n"
        b"https://a.example/3.jpg,too,many,fields,here\n"
        b"https://a.example/4.jpg,\xc3\xa9t\xc3\xa9,10,20\n")
    assert cli.main(_argv(cfg, "--input", str(src))) == 0
    kept, rejected = _tables(spark, cfg)
    assert {k[1]: r["reason"] for k, r in rejected.items()} == {
        1: "invalid_utf8:text", 2: "missing_number:width", 3: "bad_field_count"}
    assert rejected[("hostile.csv", 3)]["record"] == "https://a.example/3.jpg,too,many,fields,here"
    assert "caf\ufffd in latin-1" in rejected[("hostile.csv", 1)]["record"]
    assert sorted((r["source_row"], r["text"], r["width"]) for r in kept) == [
        (0, 'multi\nline, "quoted"', 10.0), (4, "été", 10.0)]
    assert kept[0]["source_file"].startswith("file:/") and kept[0]["source_file"].endswith(
        "/in/hostile.csv")


@pytest.mark.slow  # default: the csv CLI test reads the same way
def test_txt_and_renamed_columns(spark, cfg, tmp_path, capsys):
    urls = tmp_path / "urls.txt"
    urls.write_text("https://a.example/1.jpg\n\nhttps://a.example/2.jpg\nnot a url\n")
    assert cli.main(_argv(cfg, "--input", str(urls), "--set", "ingest.require_text=false")) == 0
    kept, rejected = _tables(spark, cfg)
    assert sorted(r["url"] for r in kept) == ["https://a.example/1.jpg",
                                              "https://a.example/2.jpg"]
    assert [(k[1], r["reason"]) for k, r in rejected.items()] == [(2, "bad_url")]
    expected = spark.sql("SELECT xxhash64('https://a.example/1.jpg') AS h").first()["h"]
    assert expected in {r["sample_id"] for r in kept}

    img2dataset = tmp_path / "pairs.jsonl"
    img2dataset.write_text('{"link": "https://b.example/1.jpg", "caption": "one"}\n')
    base = _argv(cfg, "--input", str(img2dataset), "--set", "ingest.url_col=link")
    assert cli.main([*base, "--set", "ingest.caption_col=alt"]) == 2
    assert "ingest.caption_col='alt': the input has no such column" in _one_line(capsys)
    assert cli.main([*base, "--set", "ingest.caption_col=caption"]) == 0
    kept, _ = _tables(spark, cfg)
    assert ("https://b.example/1.jpg", "one") in {(r["url"], r["text"]) for r in kept}


def test_unreadable_text_input_writes_nothing(spark, cfg, tmp_path, capsys):
    folder = tmp_path / "meta"
    folder.mkdir()
    (folder / "a.tsv.gz").write_bytes(gzip.compress(b"URL\tTEXT\nhttps://a.example/1\tx\n"))
    whole = gzip.compress(b"URL\tTEXT\n" + b"https://a.example/2\ty\n" * 5000)
    (folder / "b.tsv.gz").write_bytes(whole[: len(whole) // 2])
    assert cli.main(_argv(cfg, "--input", str(folder))) == 2
    err = _one_line(capsys)
    assert "b.tsv.gz: it is corrupt or truncated" in err
    assert not Lake(spark, cfg).exists("metadata")
    assert not list((Path(cfg.storage.root) / "_files" / "_scratch").glob("*"))


def test_required_numbers_only_where_the_file_has_the_column(spark, cfg, tmp_path):
    """Parquet files with and without WIDTH/HEIGHT in one folder: the one without is not
    rejected for it, the one with keeps its sizes (Spark alone would read one file's
    columns for all) and rejects its empty WIDTH."""
    import pyarrow as pa

    folder = tmp_path / "mixed"
    folder.mkdir()
    pq.write_table(pa.table({"URL": ["https://a.example/1", "https://a.example/2"],
                             "TEXT": ["a", "b"]}), folder / "a.parquet")
    pq.write_table(pa.table({"URL": ["https://a.example/3", "https://a.example/4"],
                             "TEXT": ["c", "d"], "WIDTH": [30.0, None],
                             "HEIGHT": [40.0, 40.0]}), folder / "b.parquet")
    assert cli.main(_argv(cfg, "--input", str(folder))) == 0
    kept, rejected = _tables(spark, cfg)
    assert {r["url"]: (r["width"], r["height"]) for r in kept} == {
        "https://a.example/1": (None, None), "https://a.example/2": (None, None),
        "https://a.example/3": (30.0, 40.0)}
    assert {k: r["reason"] for k, r in rejected.items()} == {
        ("b.parquet", 1): "missing_number:width"}
