"""The workbench's answers (jobs/explore): the funnel adds up, the what-if predicts what
Spark's publish then does, hostile web text stays text, bad parameters get one line,
reviews survive concurrent curators. The real-browser click-through is in
test_explore_browser.py."""

from __future__ import annotations

import dataclasses
import multiprocessing
import re
import shutil

import pytest
from starlette.testclient import TestClient

from benchmarks.explore_lake import HOSTILE, LakeShape, write_lake
from jobs.config import load_config
from jobs.explore import reviews as review_table
from jobs.explore.app import build_app
from jobs.explore.decisions import GalleryFilters, WhatIf
from jobs.explore.tables import ExploreError
from jobs.explore.views import highlight
from jobs.explore.workbench import Workbench


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    root = tmp_path_factory.mktemp("explore") / "lake"
    counts = write_lake(str(root), LakeShape(rows=240, hostile=True, seed=2))
    return root, counts


@pytest.fixture(scope="module")
def wb(lake):
    root, _ = lake
    cfg = load_config("conf/local.yaml", [f"storage.root={root}"])
    return Workbench.open(cfg)


@pytest.fixture(scope="module")
def client(wb):
    return TestClient(build_app(wb, config_path="conf/local.yaml"))


def test_funnel_adds_up_to_the_input_and_matches_the_tables(wb, lake):
    _, counts = lake
    f = wb.funnel()
    stages = {s["stage"]: s["total"] for s in f["stages"]}
    assert f["input"] == counts["input"]
    assert f["kept"] == counts["kept"]
    assert stages == {"ingest": counts["ingest_rejects"],
                      "download": counts["download_rejects"],
                      "score": counts["score_rejects"], "publish": counts["publish_rejects"]}
    assert f["input"] == f["kept"] + sum(stages.values()) + f["pending"]
    assert f["pending"] == 0
    reasons = dict(next(s for s in f["stages"] if s["stage"] == "score")["reasons"])
    assert reasons == {"decode:truncated": counts["score_rejects"]}  # a reason with a colon


def test_whatif_at_the_configured_knobs_is_what_was_published(wb, lake):
    _, counts = lake
    r = wb.whatif(wb.configured())
    assert r["kept"] == r["kept_before"] == counts["kept"]
    assert r["flip_in"]["count"] == r["flip_out"]["count"] == 0
    published = {s: n for s, n in
                 next(s for s in wb.funnel()["stages"] if s["stage"] == "publish")["reasons"]}
    assert {k: v for k, v in r["counts"] if k != "kept"} == published


def test_whatif_lists_flips_and_the_line_that_publishes_them(wb):
    w = dataclasses.replace(wb.configured(), min_clip_score=0.32)
    r = wb.whatif(w)
    assert r["kept"] < r["kept_before"]
    assert r["flip_out"]["count"] == r["kept_before"] - r["kept"]
    assert r["flip_in"]["count"] == 0
    assert all(x["before"] == "kept" and x["after"] == "low_clip_score"
               for x in r["flip_out"]["rows"])
    assert "--set recipe.min_clip_score=0.32" in r["set_line"]
    looser = wb.whatif(dataclasses.replace(wb.configured(), min_clip_score=0.28))
    # Rows that now pass the filters were never compared by dedup: said, not hidden.
    assert looser["not_deduplicated"] > 0
    with pytest.raises(ExploreError, match="min_clip_score"):
        wb.whatif(dataclasses.replace(wb.configured(), min_clip_score=3.0))


@pytest.mark.parametrize("knobs", [
    {"min_clip_score": 0.29, "text_policy": "parrots", "max_cotr": 0.2},
    # slow: a second publish; the default run keeps the parrots line above
    pytest.param({"min_aesthetic": 4.8, "text_policy": "tmars",
                  "min_masked_clip_score": 0.27}, marks=pytest.mark.slow),
])
def test_publishing_the_whatif_line_gives_its_counts(spark, lake, tmp_path, knobs):
    """The what-if's SQL is the recipe written a second time: Spark's publish, run with
    the printed --set line, must land on exactly the predicted counts."""
    from jobs import publish

    root = tmp_path / "lake"
    shutil.copytree(lake[0], root)
    cfg = load_config("conf/local.yaml", [f"storage.root={root}",
                                          f"storage.schema=t_{tmp_path.name[-30:]}"])
    wb = Workbench.open(cfg)
    w = dataclasses.replace(wb.configured(), **knobs)
    predicted = wb.whatif(w)
    overrides = re.findall(r"--set (\S+)", predicted["set_line"])
    cfg2 = load_config("conf/local.yaml", [f"storage.root={root}",
                                           f"storage.schema=t_{tmp_path.name[-30:]}",
                                           *overrides])
    report = publish.run(spark, cfg2)
    assert report.kept == predicted["kept"]
    assert report.rejected == {k: v for k, v in predicted["counts"] if k != "kept"}
    # And the workbench opened on the new tables sees the new subset as published.
    again = Workbench.open(cfg2)
    assert again.funnel()["kept"] == predicted["kept"]
    assert again.whatif(w)["flip_in"]["count"] == 0


def test_gallery_filters(wb):
    total = wb.gallery(GalleryFilters())["total"]
    assert total == wb.decisions.n_rows
    text = wb.gallery(GalleryFilters(published="publish:text_found"))
    assert text["total"] > 0 and all(r["published"] == "publish:text_found"
                                     for r in text["rows"])
    by_stage = wb.gallery(GalleryFilters(published="publish"))["total"]
    assert by_stage > text["total"]
    cluster = wb.gallery(GalleryFilters(cluster=3))
    assert cluster["total"] > 0 and {r["kmeans"] for r in cluster["rows"]} == {3}
    band = wb.gallery(GalleryFilters(min_clip=0.30, max_clip=0.31), per_page=500)
    assert band["rows"] and all(0.30 <= r["clip_score"] <= 0.31 for r in band["rows"])
    drops = wb.gallery(GalleryFilters(policy="parrots", policy_verdict="drop"))["total"]
    anytext = wb.gallery(GalleryFilters(policy="any_text", policy_verdict="drop"))["total"]
    assert 0 < drops < anytext
    page2 = wb.gallery(GalleryFilters(), page=1, per_page=10)
    assert page2["rows"][0]["sample_id"] > wb.gallery(GalleryFilters(), per_page=10)[
        "rows"][-1]["sample_id"]


def test_detail_has_every_piece_of_evidence(wb):
    rows = wb.gallery(GalleryFilters(published="publish:text_found"), per_page=500)["rows"]
    d = wb.detail(rows[0]["sample_id"])
    assert d.boxes and d.boxes[0]["polygon"] and d.boxes[0]["text"]
    assert [p["policy"] for p in d.policies] == ["any_text", "parrots", "tmars"]
    assert d.policies[0] == {"policy": "any_text", "configured": True,
                             "decision": "rejected", "reason": "text_found"}
    dup = wb.gallery(GalleryFilters(published="publish:near_duplicate"))["rows"][0]
    keeper = wb.detail(dup["sample_id"]).duplicates["duplicate_of"]
    assert keeper is not None
    assert dup["sample_id"] in [x["sample_id"] for x in wb.detail(keeper).duplicates[
        "duplicates"]]


def test_caption_highlight_marks_the_words_the_ocr_repeats():
    pieces = highlight("Best COFFEE, in town", "best coffee")
    assert [p for p, hit in pieces if hit] == ["Best", "COFFEE,"]
    assert "".join(p for p, _ in pieces) == "Best COFFEE, in town"
    assert highlight(None, "x") == []


def test_search_by_caption_meaning_and_likeness(wb):
    hits = wb.search_caption("bicycle")
    assert hits["total"] > 0 and all("bicycle" in r["text"].lower() for r in hits["rows"])
    meaning = wb.search_meaning("a red bicycle", k=5)
    assert len(meaning) == 5 and meaning[0].similarity >= meaning[-1].similarity
    like = wb.more_like(meaning[0].sample_id, k=3)
    assert meaning[0].sample_id not in [h.sample_id for h in like]
    assert "meaningless" in wb.index.warning or "mean nothing" in wb.index.warning


def test_hostile_text_is_escaped_and_urls_never_become_links(client, wb):
    hostile = wb.gallery(GalleryFilters(caption="__pwned"), per_page=500)["rows"]
    assert hostile
    pages = [client.get("/gallery", params={"published": "publish"}),
             client.get("/search", params={"q": "pwned"}),
             client.get("/gallery", params={"published": "ingest"})]
    pages += [client.get(f"/row/{r['sample_id']}") for r in hostile]
    for page in pages:
        assert page.status_code == 200
        body = page.text
        assert "window.__pwned" in body  # shown ...
        for payload in HOSTILE:  # ... but never as markup
            if "<" in payload:
                assert payload not in body
        # Every link and image stays on the workbench: no javascript: URL, no original URL.
        targets = re.findall(r'(?:href|src|action)\s*=\s*"([^"]*)"', body, re.I)
        assert targets and all(t.startswith("/") for t in targets), targets
        assert "script-src 'self'" in page.headers["content-security-policy"]
        assert page.headers["x-content-type-options"] == "nosniff"


def test_images_are_served_by_id_only(client, wb):
    sid = wb.gallery(GalleryFilters(published="kept"))["rows"][0]["sample_id"]
    img = client.get(f"/image/{sid}")
    assert img.status_code == 200 and img.headers["content-type"] == "image/jpeg"
    assert img.content[:3] == b"\xff\xd8\xff"
    for bad in ("/image/abc", "/image/1e3", "/row/-1", "/image/..%2F..%2Fetc%2Fpasswd"):
        r = client.get(bad)
        assert r.status_code in (400, 404), bad
        assert "\n" not in r.text.strip() and "Traceback" not in r.text
    missing = wb.gallery(GalleryFilters(published="download"))["rows"][0]["sample_id"]
    assert client.get(f"/image/{missing}").status_code == 404


@pytest.mark.parametrize("url, says", [
    ("/gallery?cluster=abc", "cluster must be an integer"),
    ("/gallery?min_clip=nan", "finite"),
    ("/gallery?published=<script>", "published must be one of"),
    ("/gallery?policy=all", "policy must be one of"),
    ("/gallery?page=-1", "page must be between"),
    ("/whatif?min_clip_score=7", "min_clip_score"),
    ("/whatif/result?text_policy=none", "text_policy must be one of"),
    ("/search?like=1", "no image embedding"),
    ("/search?q=%20&mode=meaning", ""),
    ("/row/1", "no row with sample_id 1"),
])
def test_bad_parameters_get_400_and_one_line(client, url, says):
    r = client.get(url)
    if url.startswith("/search?q=%20"):  # a blank query is just the empty search form
        assert r.status_code == 200
        return
    assert r.status_code == 400, r.text
    assert says in r.text and "\n" not in r.text.strip() and "Traceback" not in r.text


def test_another_host_needs_the_token(wb):
    guarded = TestClient(build_app(wb, token="s3cret"))
    assert guarded.get("/").status_code == 403
    assert guarded.get("/", params={"token": "wrong"}).status_code == 403
    ok = guarded.get("/", params={"token": "s3cret"})
    assert ok.status_code == 200
    assert guarded.get("/gallery").status_code == 200  # the cookie now carries it
    from jobs.explore.app import is_loopback
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.1.2.3")


def _append_reviews(path: str, who: str, ids: list[int], go) -> None:
    go.wait(60)  # every reviewer starts at once: the first reviews race to create the table
    for sid in ids:
        review_table.append(path, [review_table.Review(sid, "has_text", who)])


def test_concurrent_reviewers_never_lose_a_row(tmp_path):
    path = str(tmp_path / "reviews")
    ctx = multiprocessing.get_context("spawn")
    go = ctx.Event()
    procs = [ctx.Process(target=_append_reviews,
                         args=(path, f"r{k}", list(range(k, 45, 3)), go)) for k in range(3)]
    for p in procs:
        p.start()
    import time

    time.sleep(3)  # the children import deltalake and wait
    go.set()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    table = review_table.read(path)
    assert table.num_rows == 45
    assert sorted(table["sample_id"].to_pylist()) == list(range(45))
    assert len(set(table["review_id"].to_pylist())) == 45


def test_reviews_measure_the_filters_precision_and_recall(lake, tmp_path):
    root = tmp_path / "lake"
    shutil.copytree(lake[0], root)
    wb = Workbench.open(load_config("conf/local.yaml", [f"storage.root={root}"]))
    found = wb.gallery(GalleryFilters(has_text=True, published="publish:text_found"))["rows"]
    clean = wb.gallery(GalleryFilters(has_text=False, published="kept"))["rows"]
    wb.review(found[0]["sample_id"], "has_text", "ann")  # true positive
    wb.review(found[1]["sample_id"], "has_text", "ann")  # true positive
    wb.review(found[2]["sample_id"], "no_text", "bob")  # false positive
    wb.review(clean[0]["sample_id"], "has_text", "bob")  # missed
    wb.review(clean[1]["sample_id"], "no_text", "bob")  # true negative
    wb.review(found[2]["sample_id"], "has_text", "ann")  # a later review wins: now a TP
    q = wb.quality()["text"]
    assert (q["tp"], q["fp"], q["fn"], q["tn"]) == (3, 0, 1, 1)
    assert q["precision"] == 1.0 and q["recall"] == 0.75
    dup = wb.gallery(GalleryFilters(published="publish:near_duplicate"))["rows"][0]
    wb.review(dup["sample_id"], "not_duplicate", "ann")
    assert wb.quality()["dedup"] == {"confirmed": 0, "wrong": 1, "precision": 0.0}
    with pytest.raises(ExploreError, match="label must be one of"):
        wb.review(dup["sample_id"], "maybe", "ann")
    with pytest.raises(ExploreError, match="no row"):
        wb.review(1, "has_text", "ann")
    # A reopened workbench (another curator) sees the same reviews.
    again = Workbench.open(load_config("conf/local.yaml", [f"storage.root={root}"]))
    assert again.quality() == wb.quality()


def test_review_form_posts_and_redirects(lake, tmp_path):
    root = tmp_path / "lake"
    shutil.copytree(lake[0], root)
    wb = Workbench.open(load_config("conf/local.yaml", [f"storage.root={root}"]))
    c = TestClient(build_app(wb))
    sid = wb.gallery(GalleryFilters(published="kept"))["rows"][0]["sample_id"]
    r = c.post("/review", data={"sample_id": sid, "label": "no_text", "reviewer": "eve"},
               follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == f"/row/{sid}"
    assert "eve" in c.get(f"/row/{sid}").text
    bad = c.post("/review", data={"sample_id": sid, "label": "no_text", "reviewer": " "})
    assert bad.status_code == 400 and "reviewer" in bad.text
    assert review_table.read(str(root / "reviews")).num_rows == 1


def test_explore_command_errors_are_one_line(tmp_path, capsys):
    from jobs.cli import main

    assert main(["explore", "--set", "storage.root="]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "managed tables" in err
    assert main(["explore", "--set", f"storage.root={tmp_path / 'none'}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no metadata table" in err


def test_whatif_settings_round_trip_through_yaml(wb, tmp_path):
    w = WhatIf(0.31, 4.6, "tmars", 0.1, 0.25)
    overlay = tmp_path / "whatif.yaml"
    overlay.write_text(w.yaml_overlay(str((tmp_path / "base.yaml").resolve())))
    (tmp_path / "base.yaml").write_text("extends: " + str(
        __import__("pathlib").Path("conf/local.yaml").resolve()) + "\n")
    cfg = load_config(overlay)
    assert WhatIf.of(cfg.recipe) == w


def test_the_report_counts_reviews_as_the_workbench_does(spark, lake, tmp_path):
    from jobs.lake import Lake
    from jobs.report import review_quality
    from jobs.report_html import ReportData, render_html

    root = tmp_path / "lake"
    shutil.copytree(lake[0], root)
    cfg = load_config("conf/local.yaml", [f"storage.root={root}",
                                          f"storage.schema=t_{tmp_path.name[-30:]}"])
    lake_ = Lake(spark, cfg)
    assert review_quality(lake_, cfg) is None  # no reviews yet: the section says so
    wb = Workbench.open(cfg)
    found = wb.gallery(GalleryFilters(has_text=True, published="publish:text_found"))["rows"]
    clean = wb.gallery(GalleryFilters(has_text=False, published="kept"))["rows"]
    dup = wb.gallery(GalleryFilters(published="publish:near_duplicate"))["rows"][0]
    wb.review(found[0]["sample_id"], "no_text", "ann")
    wb.review(found[0]["sample_id"], "has_text", "bob")  # the later one counts
    wb.review(found[1]["sample_id"], "no_text", "ann")
    wb.review(clean[0]["sample_id"], "has_text", "ann")
    wb.review(dup["sample_id"], "duplicate", "ann")
    from_spark = review_quality(lake_, cfg)
    assert from_spark == wb.quality()
    assert from_spark["text"]["precision"] == 0.5 and from_spark["dedup"]["precision"] == 1.0
    page = render_html(ReportData(review_quality=from_spark), tmp_path / "report")
    assert 'id="reviews"' in page and "0.5" in page


def test_tables_with_deletion_vectors_are_read_without_the_deleted_rows(spark, lake, tmp_path):
    """Databricks enables deletion vectors on new tables: a DELETE then only marks rows.
    The workbench must read such a table (delta-rs' pyarrow dataset refuses it) and must
    not show the deleted rows."""
    from delta.tables import DeltaTable as SparkDeltaTable

    root = tmp_path / "lake"
    shutil.copytree(lake[0], root)
    meta = str(root / "metadata")
    spark.sql(f"ALTER TABLE delta.`{meta}` SET TBLPROPERTIES "
              "('delta.enableDeletionVectors' = 'true')")
    first = spark.read.format("delta").load(meta).agg({"sample_id": "min"}).first()[0]
    SparkDeltaTable.forPath(spark, meta).delete(f"sample_id = {first}")
    cfg = load_config("conf/local.yaml", [f"storage.root={root}"])
    wb = Workbench.open(cfg)
    assert wb.decisions.n_rows == 239
    assert wb.decisions.row(first) is None
    assert wb.source.lookup("metadata", first, ("text",)) is None


def test_a_review_that_loses_the_race_to_create_the_table_is_written_again(tmp_path,
                                                                          monkeypatch):
    """Two first reviews can both try to create the table; delta-rs fails the loser with
    "metadata changed" (seen in a full run). Its files were never committed, so the
    review is written again, once."""
    import deltalake
    from deltalake.exceptions import CommitFailedError

    real = deltalake.write_deltalake
    calls = []

    def lose_once(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            real(*args, **kwargs)  # the other curator's first review lands ...
            raise CommitFailedError("Metadata changed since last commit.")  # ... ours lost
        return real(*args, **kwargs)

    monkeypatch.setattr(deltalake, "write_deltalake", lose_once)
    path = str(tmp_path / "reviews")
    assert review_table.append(path, [review_table.Review(7, "no_text", "ann")]) == 1
    assert len(calls) == 2
    assert review_table.read(path).num_rows == 2  # the other's and ours, none lost
