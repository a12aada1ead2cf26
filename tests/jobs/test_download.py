import dataclasses
import io
import json
import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from jobs import download, ingest
from jobs.lake import Lake
from jobs.sample import photo_image
from tests.jobs.test_ingest import L400M, _row400
from tests.support.http_server import LocalImageServer


def _jpeg(seed: int, size=(300, 200)) -> bytes:
    import numpy as np

    img = photo_image(np.random.default_rng(seed), 300).resize(size)
    buf = io.BytesIO()
    img.save(buf, "JPEG")
    return buf.getvalue()


def _ingest(spark, cfg, tmp_path: Path, urls: list[str]):
    rows = [_row400(i + 1, URL=u) for i, u in enumerate(urls)]
    src = tmp_path / "meta" / "m.parquet"
    src.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=L400M), src)
    cfg = dataclasses.replace(cfg, ingest=dataclasses.replace(cfg.ingest, input=str(src)))
    report = ingest.run(spark, cfg)
    assert report.kept == len(urls)
    return cfg


def _download_cfg(cfg, fetch=None, **kw):
    # Tests serve on loopback, so they opt in to it explicitly.
    fetch_opts = dict(allowed_networks=("127.0.0.1/32",), timeout_s=1.0, retries=1,
                      backoff_s=0.05, max_bytes=200_000)
    fetch_opts.update(fetch or {})
    base = dict(concurrency=4, rows_per_commit=8,
                fetch=dataclasses.replace(cfg.download.fetch, **fetch_opts),
                resize=dataclasses.replace(cfg.download.resize, image_size=64))
    base.update(kw)
    return dataclasses.replace(cfg, download=dataclasses.replace(cfg.download, **base))


def test_http_download_every_outcome_accounted_and_rerun_retries_only_retryable(
        spark, cfg, tmp_path):
    files = tmp_path / "files"
    files.mkdir()
    (files / "ok.jpg").write_bytes(_jpeg(1))
    (files / "wide.png").write_bytes(b"")
    Image.new("RGBA", (120, 60), (0, 0, 255, 128)).save(files / "wide.png")
    good = _jpeg(2)
    (files / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (files / "empty.jpg").write_bytes(b"")
    with LocalImageServer(files_dir=files, image_bytes=_jpeg(3)) as srv:
        cases = {
            srv.url("/files/ok.jpg"): ("ok", None),
            srv.url("/files/wide.png"): ("ok", None),
            srv.url("/redirect-chain/2"): ("ok", None),
            srv.url("/files/missing.jpg"): ("error", "http_404"),
            srv.url("/flaky/a/1/429"): ("ok", None),
            srv.url("/flaky/b/2/503"): ("error", "http_503"),  # ok on the re-run
            srv.url("/slow/3"): ("error", "timeout"),
            srv.url("/redirect?to=http://169.254.169.254/latest/meta-data"):
                ("error", "host_not_allowed"),
            srv.url("/header/noai"): ("error", "x_robots_tag:noai"),
            srv.url("/big/500000"): ("error", "too_large"),
            srv.url("/files/truncated.jpg"): ("error", "truncated"),
            srv.url("/files/empty.jpg"): ("error", "empty"),
            srv.url("/html"): ("error", "html_not_image"),
        }
        cfg = _ingest(spark, cfg, tmp_path, list(cases))
        cfg = _download_cfg(cfg)
        report = download.run(spark, cfg)
        assert report.pending == len(cases) and report.chunks == 2

        lake = Lake(spark, cfg)
        images = {r["url"]: r for r in lake.read("images").collect()}
        assert set(images) == set(cases)  # every metadata row has exactly one images row
        assert lake.read("images").count() == len(cases)
        for url, (status, error) in cases.items():
            assert (images[url]["status"], images[url]["error"]) == (status, error), url
        ok = images[srv.url("/files/ok.jpg")]
        assert (ok["original_width"], ok["original_height"]) == (300, 200)
        assert (ok["width"], ok["height"], ok["format"]) == (64, 64, "jpg")  # border mode
        assert Image.open(io.BytesIO(ok["image"])).size == (64, 64)
        assert srv.hits("/files/missing.jpg") == 1  # 404 is not retried
        assert srv.hits("/files/ok.jpg") == 1  # fetched once: MERGE reads Delta's one copy
        assert srv.hits("/flaky/a/1/429") == 2
        assert images[srv.url("/slow/3")]["retryable"] is True
        rejects = {r["sample_id"]: r["reason"] for r in
                   lake.read("rejects").where("stage = 'download'").collect()}
        errors = {r["sample_id"]: r["error"] for r in images.values() if r["status"] == "error"}
        assert rejects == errors

        hits_404, hits_ok = srv.hits("/files/missing.jpg"), srv.hits("/files/ok.jpg")
        again = download.run(spark, _download_cfg(cfg, fetch={"timeout_s": 5.0}))
        assert again.pending == 2  # only the retryable failures: the 503 and the timeout
        assert srv.hits("/files/missing.jpg") == hits_404 and srv.hits("/files/ok.jpg") == hits_ok
        images = {r["url"]: r for r in lake.read("images").collect()}
        assert len(images) == len(cases) and lake.read("images").count() == len(cases)
        assert images[srv.url("/flaky/b/2/503")]["status"] == "ok"
        assert images[srv.url("/slow/3")]["status"] == "ok"
        reasons = {r["reason"] for r in lake.read("rejects").where("stage='download'").collect()}
        assert "http_503" not in reasons and "timeout" not in reasons


@pytest.mark.slow  # default: tests/udfs/test_fetch.py refuses loopback per URL
def test_loopback_is_refused_unless_opted_in(spark, cfg, tmp_path):
    with LocalImageServer() as srv:
        cfg = _ingest(spark, cfg, tmp_path, [srv.url("/image")])
        cfg = _download_cfg(cfg, fetch={"allowed_networks": ()})
        download.run(spark, cfg)
        row = Lake(spark, cfg).read("images").first()
        assert (row["status"], row["error"]) == ("error", "host_not_allowed")
        assert srv.hits() == 0


def _wds_shard(path: Path, entries: list[tuple[str, str, bytes]]) -> None:
    with tarfile.open(path, "w") as tar:
        for key, url, data in entries:
            for name, payload in ((f"{key}.jpg", data),
                                  (f"{key}.json", json.dumps({"url": url, "key": key,
                                                              "status": "success"}).encode())):
                info = tarfile.TarInfo(name)
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))


def _img2dataset_sidecars(folder: Path, shards: tuple[str, ...], webdataset: bool) -> None:
    """What img2dataset writes beside each shard: NNNNN_stats.json, and with webdataset
    output also the shard's metadata as NNNNN.parquet (url, key, status; no image)."""
    for shard in shards:
        (folder / f"{shard}_stats.json").write_text(json.dumps(
            {"count": 2, "successes": 2, "failed_to_download": 0, "status_dict": {}}))
        if webdataset:
            pq.write_table(pa.table({"url": ["https://img.example/x"], "key": [shard + "0000"],
                                     "status": ["success"]}), folder / f"{shard}.parquet")


@pytest.mark.slow  # another input shape; default: the HTTP path
def test_reads_img2dataset_webdataset_and_parquet_shards(spark, cfg, tmp_path):
    urls = [f"https://img.example/{i}.jpg" for i in range(4)]
    cfg = _ingest(spark, cfg, tmp_path, urls)
    shards = tmp_path / "wds"
    shards.mkdir()
    _wds_shard(shards / "00000.tar", [("000000000", urls[0], _jpeg(10)),
                                      ("000000001", urls[1], b"not an image")])
    _wds_shard(shards / "00001.tar", [("000010000", urls[2], _jpeg(12)),
                                      ("000010001", "https://img.example/unrelated", _jpeg(13))])
    _img2dataset_sidecars(shards, ("00000", "00001"), webdataset=True)
    cfg = _download_cfg(cfg, source="webdataset", shards=str(shards))
    report = download.run(spark, cfg)
    assert (report.ok, report.errors) == (2, {"unrecognized_format": 1, "not_in_shards": 1})
    lake = Lake(spark, cfg)
    got = {r["url"]: r for r in lake.read("images").collect()}
    assert got[urls[0]]["source"] == "webdataset" and got[urls[0]]["width"] == 64

    # The missing one arrives later as img2dataset parquet output: a re-run picks it up.
    pq.write_table(pa.table({"url": [urls[3]], "key": ["000020000"], "jpg": [_jpeg(14)],
                             "status": ["success"]}), tmp_path / "p.parquet")
    (tmp_path / "pq").mkdir()
    (tmp_path / "p.parquet").rename(tmp_path / "pq" / "00000.parquet")
    _img2dataset_sidecars(tmp_path / "pq", ("00000",), webdataset=False)
    cfg = _download_cfg(cfg, source="parquet", shards=str(tmp_path / "pq"))
    again = download.run(spark, cfg)
    assert again.pending == 1 and again.ok == 3
    row = next(r for r in lake.read("images").collect() if r["url"] == urls[3])
    assert (row["status"], row["source"]) == ("ok", "parquet")


@pytest.mark.slow  # default: the outcomes test's rerun and the pipeline's no-commit rerun
def test_rejects_catch_up_after_a_crash_and_are_not_rewritten_when_unchanged(
        spark, cfg, tmp_path, monkeypatch):
    with LocalImageServer(image_bytes=_jpeg(4)) as srv:
        urls = [srv.url("/image"), srv.url("/status/404"), srv.url("/header/noai")]
        cfg = _download_cfg(_ingest(spark, cfg, tmp_path, urls))
        lake = Lake(spark, cfg)

        def killed(_lake):  # as if the process died after the images commit
            raise RuntimeError("killed")

        with monkeypatch.context() as patch:
            patch.setattr(download, "refresh_rejects", killed)
            with pytest.raises(RuntimeError, match="killed"):
                download.run(spark, cfg)
        assert lake.read("images").count() == 3
        assert lake.read("rejects").where("stage = 'download'").count() == 0  # stale
        hits = srv.hits()

        report = download.run(spark, cfg)  # nothing to fetch, but the rejects catch up
        assert report.pending == 0 and srv.hits() == hits
        assert (report.ok, report.errors) == (1, {"http_404": 1, "x_robots_tag:noai": 1})
        rejects = {r["reason"] for r in lake.read("rejects").where("stage='download'").collect()}
        assert rejects == {"http_404", "x_robots_tag:noai"}

        version = lake.version("rejects")
        again = download.run(spark, cfg)
        assert (again.pending, again.ok, again.errors) == (0, report.ok, report.errors)
        assert lake.version("rejects") == version  # in sync already: no commit
