"""The static HTML report: every linked image exists and decodes, numbers show, text is escaped."""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from jobs.report_html import ReportData, report_figures, write_report

EVIL = '<script>alert("x")</script> & co'


def _jpeg(colour: tuple[int, int, int], size: tuple[int, int] = (64, 48)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="JPEG")
    return buf.getvalue()


def _hist(metric: str, lo: float, hi: float, bins: int) -> pd.DataFrame:
    step = (hi - lo) / bins
    rows = []
    for kept in (True, False):
        for i in range(bins):
            left = lo + i * step
            rows.append((metric, kept, left, left + step, (i + 1) * (3 if kept else 1)))
    return pd.DataFrame(rows, columns=["metric", "kept", "bin_left", "bin_right", "rows"])


def _full_data() -> ReportData:
    cluster_ocr = pd.DataFrame(
        [
            (k, t, (k + 1) * n)
            for k in range(25)
            for t, n in (("no_text", 5), ("text_no_overlap", 2), ("co_emb", 3))
        ],
        columns=["kmeans", "ocr_type", "rows"],
    )
    return ReportData(
        title="deparrot demo",
        inputs={"config": "conf/demo.yaml", "metadata version": "7"},
        warnings=["RANDOMLY INITIALISED CLIP WEIGHTS"],
        funnel=pd.DataFrame(
            {
                "stage": ["input", "ingest", "download", "score", "publish"],
                "rows": [123456, 120000, 110000, 110000, 54321],
            }
        ),
        rejects=pd.DataFrame(
            {
                "stage": ["ingest", "download", "publish"],
                "reason": ["bad_url", "empty", "text_found"],
                "rows": [3456, 10000, 40017],
            }
        ),
        score_hist=pd.concat(
            [_hist("clip_score", 0.0, 0.5, 10), _hist("aesthetic_score", 2.0, 8.0, 12)]
        ),
        thresholds={"min_clip_score": 0.3, "min_aesthetic": 4.5},
        cluster_sizes=pd.DataFrame(
            {"kmeans": range(25), "rows": [(k + 1) * 10 for k in range(25)]}
        ),
        cluster_ocr=cluster_ocr,
        cotr_hist=pd.DataFrame(
            {
                "bin_left": [0.0, 0.25, 0.5, 0.75],
                "bin_right": [0.25, 0.5, 0.75, 1.0],
                "rows": [70, 20, 7, 3],
            }
        ),
        parrot_summary=pd.DataFrame(
            {
                "name": ["images", "with text", "CoTR (all pairs)"],
                "value": [1985, "54.60%", 0.1542],
                "how": ["count(*)", "has_text", "mean(cotr)"],
            }
        ),
        clip_by_text=pd.DataFrame(
            {"group": ["no_text", "with_text"], "mean": [0.3223, 0.3358], "std": [0.0078, 0.0094]}
        ),
        top_ngrams={
            "caption_1gram": pd.DataFrame(
                {"word": ["the", "$5 $10", EVIL, "咖啡"], "count": [900, 50, 40, 30]}
            ),
            "caption_2gram": pd.DataFrame({"word": ["of the"], "count": [77]}),
            "co_emb_1gram": pd.DataFrame({"word": [], "count": []}),
        },
        contact_sheet=pd.DataFrame(
            {
                "sample_id": [1, 2, 3, 4],
                "group": ["removed_text", "removed_text", "kept", "kept"],
                "caption": [EVIL, "SALE 50% OFF", "a dog on a beach", None],
                "image": [
                    _jpeg((200, 0, 0)),
                    b"not an image",
                    _jpeg((0, 200, 0), (300, 200)),
                    bytearray(_jpeg((0, 0, 200))),
                ],
            }
        ),
        sync_scores=pd.DataFrame(
            {
                "model": ["ViT-B-32 $x$"] * 6 + ["other"] * 3,
                "style": ["white_black", "black_white", "gray_white"] * 3,
                "score": [0.1, 0.2, 0.3, 0.15, 0.25, 0.35, 0.3, 0.31, 0.32],
            }
        ),
        sync_summary=pd.DataFrame({"model": ["ViT-B-32"], "mean": [0.163], "std": [0.0659]}),
    )


def _check_images(index: Path) -> list[str]:
    sources = report_figures(index.read_text(encoding="utf-8"))
    for src in sources:
        assert not src.startswith(("/", "http:", "https:", "data:")), src
        path = index.parent / src
        assert path.is_file(), src
        with Image.open(path) as im:
            im.verify()
            assert im.format == ("PNG" if src.endswith(".png") else "JPEG")
    return sources


def test_full_report(tmp_path: Path):
    index = write_report(_full_data(), tmp_path / "report")
    assert index == tmp_path / "report" / "index.html"
    page = index.read_text(encoding="utf-8")
    sources = _check_images(index)
    pngs = {s for s in sources if s.endswith(".png")}
    assert {
        "funnel.png",
        "rejects.png",
        "score_clip_score.png",
        "score_aesthetic_score.png",
        "cluster_sizes.png",
        "cluster_ocr.png",
        "cotr_hist.png",
        "ngrams_caption_1gram.png",
        "ngrams_caption_2gram.png",
    } <= pngs
    assert sum(s.startswith("sync_") for s in pngs) == 2
    thumbs = [s for s in sources if s.startswith("thumbs/")]
    assert len(thumbs) == 3  # the undecodable one is reported, not linked
    assert "image not decodable" in page
    with Image.open(index.parent / thumbs[1]) as im:
        assert max(im.size) <= 256
    # numbers
    for text in (
        "123,456",
        "54,321",
        "44.00%",
        "40,017",
        "3,456",
        "1,985",
        "54.60%",
        "0.1542",
        "0.3223",
        "0.0094",
        "0.1630",
        "conf/demo.yaml",
    ):
        assert text in page, text
    # escaping of untrusted text
    assert "<script>" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; co" in page
    assert '<p class="warning">RANDOMLY INITIALISED CLIP WEIGHTS</p>' in page
    assert "No data for co_emb_1gram" in page
    assert not list(index.parent.glob(".*.tmp"))


def test_empty_report_does_not_crash(tmp_path: Path):
    index = write_report(ReportData(), tmp_path)
    page = index.read_text(encoding="utf-8")
    assert report_figures(page) == []
    assert page.count('class="nodata"') >= 8


@pytest.mark.parametrize("field", ["sync_scores", "contact_sheet", "cluster_ocr", "score_hist"])
def test_sections_skip_independently(tmp_path: Path, field: str):
    data = _full_data()
    setattr(data, field, None if field == "sync_scores" else getattr(data, field).iloc[:0])
    index = write_report(data, tmp_path)
    _check_images(index)
    assert "funnel.png" in report_figures(index.read_text(encoding="utf-8"))


def test_cluster_ocr_keeps_top_clusters(tmp_path: Path):
    from jobs.report_html import _ocr_shares

    data = _full_data()
    shares = _ocr_shares(data.cluster_ocr, 20)
    assert len(shares) == 20 and shares.index[0] == 24 and shares.index[-1] == 5
    assert list(shares.columns) == ["no_text", "text_no_overlap", "co_emb"]
    assert shares.loc[24].tolist() == pytest.approx([0.5, 0.2, 0.3])


def test_policy_counts_table_shows_only_when_present(tmp_path: Path):
    data = ReportData(policy_counts=pd.DataFrame({
        "policy": ["any_text", "parrots", "tmars"], "kept": [3, 6, 5],
        "rejected": [6, 3, 4], "rejected_text": [5, 2, 3],
        "share_kept": [3 / 9, 6 / 9, 5 / 9]}))
    page = write_report(data, tmp_path / "with").read_text(encoding="utf-8")
    assert "Text policies" in page
    assert "<td>parrots</td><td>6</td><td>3</td><td>2</td><td>0.6667</td>" in page
    page = write_report(ReportData(), tmp_path / "without").read_text(encoding="utf-8")
    assert "Text policies" not in page


def test_training_runs_show_as_a_figure_and_a_table(tmp_path: Path):
    runs = pd.DataFrame({
        "run_name": ["raw", EVIL], "dataset": ["raw", "any_text"], "pairs": [1200, 506],
        "train_num_samples": [24000, 24000], "final_epoch": [1, 1], "loss_end": [1.08, 0.98],
        "sync_score": [0.65, -0.24], "sync_gap": [0.243, -0.002], "read_top1": [0.28, 0.0625],
        "visual_top1": [0.886, 0.917]})
    index = write_report(ReportData(training_runs=runs), tmp_path)
    page = index.read_text(encoding="utf-8")
    assert "training_runs.png" in report_figures(page)
    _check_images(index)
    assert "<td>0.0625</td>" in page and EVIL not in page and html_escaped(EVIL) in page
    # Runs without the miniature's metrics (a plain `deparrot train`): a table, no figure.
    plain = runs.drop(columns=["sync_gap", "read_top1", "visual_top1"])
    page = write_report(ReportData(training_runs=plain), tmp_path / "plain").read_text("utf-8")
    assert "Training runs" in page and "training_runs.png" not in report_figures(page)


def html_escaped(text: str) -> str:
    import html

    return html.escape(text)
