"""A static HTML report of one deparrot run, from small pre-aggregated pandas tables.

The Spark side collects aggregates only (histogram bins, counts per stage / cluster / OCR
type, top n-grams, a few dozen thumbnails) into `ReportData`; `write_report` turns them into
`index.html` plus one PNG per figure and `thumbs/*.jpg`, all linked relatively, with no external
CSS, JS or fonts, so the folder opens from the file system or any static host.

Figures use matplotlib's object-oriented API on the Agg canvas (`Figure` + `FigureCanvasAgg`),
never pyplot: no global figure registry to leak or close, safe inside a driver that runs other
work, and no display needed. Every text that comes from the data (captions, n-grams, reasons,
model names) is HTML-escaped, and drawn in figures with math-text parsing off ("$5 $10" would
otherwise be parsed as TeX).

Files are written to a temporary name and renamed; `index.html` is renamed last, so a reader
never sees a page that links to figures not yet written.
"""

from __future__ import annotations

import atexit
import html
import io
import math
import numbers
import os
import re
import shutil
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from udfs import storage

OCR_TYPE_COLOURS = {"no_text": "#4c9f70", "text_no_overlap": "#f2b134", "co_emb": "#d1495b"}
# score_hist metric -> the thresholds key drawn as its cut-off line
METRIC_THRESHOLDS = {"clip_score": "min_clip_score", "aesthetic_score": "min_aesthetic"}
TOP_CLUSTERS = 20
TOP_NGRAMS = 25
THUMB_SIZE = 256
MAX_THUMB_PIXELS = 64_000_000  # refuse to decode larger images (decompression bombs)
MAX_LABEL = 40


def _frame(*columns: str) -> Callable[[], pd.DataFrame]:
    return lambda: pd.DataFrame({c: [] for c in columns})


@dataclass
class ReportData:
    """Everything the report shows; every table is small (aggregated in Spark).

    inputs: name -> value shown verbatim (table versions, recipe thresholds, config file).
    warnings: shown as a red banner on top (e.g. the random-weights warning); empty = none.
    funnel: stage, rows (rows left after each stage, in pipeline order, first = input).
    rejects: stage, reason, rows.
    score_hist: metric ('clip_score' | 'aesthetic_score'), kept (bool), bin_left, bin_right,
        rows. thresholds: 'min_clip_score', 'min_aesthetic' (see METRIC_THRESHOLDS).
    cluster_sizes: kmeans, rows. cluster_ocr: kmeans, ocr_type, rows (udfs.parrot.OCR_TYPES).
    cotr_hist: bin_left, bin_right, rows (CoTR over images with text).
    parrot_summary: name, value, how (Table 1). clip_by_text: group, mean, std (Table 2;
        any further columns are shown too).
    top_ngrams: vocabulary name -> word, count (e.g. caption_1gram, caption_2gram,
        co_emb_1gram).
    contact_sheet: sample_id, group ('removed_text' | 'kept'), caption, image (encoded bytes).
    sync_scores: model, style, score (per-word Sync. Scores) or None; sync_summary: any
        columns (e.g. model, vocabulary, mean, std) or None.
    policy_counts: policy, kept, rejected, ... (rows each recipe.text_policy keeps) or None.
    training_runs: run_name, dataset, pairs, train_num_samples, loss_end and the evaluated
        metrics (sync_score, sync_gap, read_top1, visual_top1), one row per run, or None.
    review_quality: {"text": {tp, fp, fn, tn, reviewed, precision, recall}, "dedup":
        {confirmed, wrong, precision}} from `deparrot explore` reviews, or None.
    """

    title: str = "deparrot report"
    inputs: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    funnel: pd.DataFrame = field(default_factory=_frame("stage", "rows"))
    rejects: pd.DataFrame = field(default_factory=_frame("stage", "reason", "rows"))
    score_hist: pd.DataFrame = field(
        default_factory=_frame("metric", "kept", "bin_left", "bin_right", "rows")
    )
    thresholds: dict[str, float] = field(default_factory=dict)
    cluster_sizes: pd.DataFrame = field(default_factory=_frame("kmeans", "rows"))
    cluster_ocr: pd.DataFrame = field(default_factory=_frame("kmeans", "ocr_type", "rows"))
    cotr_hist: pd.DataFrame = field(default_factory=_frame("bin_left", "bin_right", "rows"))
    parrot_summary: pd.DataFrame = field(default_factory=_frame("name", "value", "how"))
    clip_by_text: pd.DataFrame = field(default_factory=_frame("group", "mean", "std"))
    top_ngrams: dict[str, pd.DataFrame] = field(default_factory=dict)
    contact_sheet: pd.DataFrame = field(
        default_factory=_frame("sample_id", "group", "caption", "image")
    )
    sync_scores: pd.DataFrame | None = None
    sync_summary: pd.DataFrame | None = None
    policy_counts: pd.DataFrame | None = None
    training_runs: pd.DataFrame | None = None
    # jobs.explore.reviews.quality_of on the curators' reviews, or None (no reviews table).
    review_quality: dict | None = None
    top_clusters: int = TOP_CLUSTERS


# ---------------------------------------------------------------- files


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", text).strip("_")[:40] or "x"


def _empty(df: pd.DataFrame | None) -> bool:
    return df is None or len(df) == 0


# ---------------------------------------------------------------- formatting


def _fmt(value: Any) -> str:
    """ints with thousands separators, floats with 4 decimals, anything else as text."""
    if value is None or value is pd.NA:
        return ""
    if isinstance(value, bool | np.bool_):
        return str(bool(value))
    if isinstance(value, numbers.Integral):
        return f"{int(value):,}"
    if isinstance(value, numbers.Real):
        return "" if math.isnan(value) else f"{float(value):.4f}"
    return str(value)


def _table(df: pd.DataFrame | None, columns: list[str] | None = None) -> str:
    if _empty(df):
        return _no_data()
    columns = columns or [str(c) for c in df.columns]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in row) + "</tr>"
        for row in df[columns].itertuples(index=False, name=None)
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _no_data(what: str = "") -> str:
    return f'<p class="nodata">No data{html.escape(" for " + what) if what else ""}.</p>'


def _img(src: str, alt: str) -> str:
    return f'<img class="fig" src="{html.escape(src)}" alt="{html.escape(alt)}">'


def _label(text: Any) -> str:
    text = str(text)
    return text if len(text) <= MAX_LABEL else text[: MAX_LABEL - 1] + "…"


# ---------------------------------------------------------------- figures


def _save_figure(
    out_dir: Path, name: str, draw: Callable[[Any], None], size: tuple[float, float] = (7.0, 3.6)
) -> str:
    """Draw on a fresh Agg figure, write `name`.png atomically, return its relative path."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    try:
        draw(fig.add_subplot())
        buf = io.BytesIO()
        with warnings.catch_warnings():  # CJK/emoji labels: DejaVu lacks glyphs, draws boxes
            warnings.filterwarnings("ignore", message=r".*[Gg]lyph.*missing")
            fig.savefig(buf, format="png")
    finally:
        fig.clear()
    path = f"{name}.png"
    _atomic_write(out_dir / path, buf.getvalue())
    return path


def _hbars(ax: Any, labels: list[str], values: list[float], colour: str = "#3b6ea5") -> None:
    pos = list(range(len(labels)))
    ax.barh(pos, values, color=colour)
    ax.set_yticks(pos, labels=[_label(x) for x in labels], parse_math=False, fontsize=8)
    ax.invert_yaxis()


def _hist_bars(ax: Any, df: pd.DataFrame, **kwargs: Any) -> None:
    left = df["bin_left"].astype(float)
    ax.bar(left, df["rows"], width=df["bin_right"].astype(float) - left, align="edge", **kwargs)


def _fig_funnel(ax: Any, funnel: pd.DataFrame) -> None:
    labels = [_label(s) for s in funnel["stage"]]
    bars = ax.bar(range(len(labels)), funnel["rows"], color="#3b6ea5")
    ax.set_xticks(range(len(labels)), labels=labels, parse_math=False, rotation=20)
    ax.bar_label(bars, labels=[_fmt(int(v)) for v in funnel["rows"]], fontsize=8)
    ax.set_ylabel("rows")
    ax.set_title("Rows left after each stage")


def _fig_score_hist(ax: Any, df: pd.DataFrame, metric: str, threshold: float | None) -> None:
    for kept, colour, name in ((True, "#4c9f70", "kept"), (False, "#d1495b", "removed")):
        part = df[df["kept"].astype(bool) == kept]
        if len(part):
            _hist_bars(ax, part, color=colour, alpha=0.6, label=name)
    if threshold is not None:
        ax.axvline(threshold, color="black", linestyle="--", label=f"threshold {threshold:g}")
    ax.set_xlabel(metric)
    ax.set_ylabel("rows")
    ax.legend(fontsize=8)
    ax.set_title(f"{metric}: kept vs removed", parse_math=False)


def _fig_cluster_sizes(ax: Any, sizes: pd.DataFrame) -> None:
    rows = sorted(sizes["rows"].astype(float), reverse=True)
    ax.fill_between(range(1, len(rows) + 1), rows, step="post", color="#3b6ea5")
    if rows and rows[-1] > 0 and rows[0] / rows[-1] > 100:
        ax.set_yscale("log")
    ax.set_xlabel("cluster rank (largest first)")
    ax.set_ylabel("rows")
    ax.set_title(f"Cluster sizes ({len(rows)} clusters)")


def _ocr_shares(cluster_ocr: pd.DataFrame, top: int) -> pd.DataFrame:
    """kmeans x ocr_type shares of the `top` largest clusters, largest first."""
    counts = cluster_ocr.pivot_table(
        index="kmeans", columns="ocr_type", values="rows", aggfunc="sum", fill_value=0
    )
    counts = counts.reindex(columns=list(OCR_TYPE_COLOURS), fill_value=0)
    totals = counts.sum(axis=1)
    order = totals.sort_values(ascending=False, kind="stable").index[:top]
    return counts.loc[order].div(totals.loc[order].where(totals.loc[order] > 0, 1), axis=0)


def _fig_cluster_ocr(ax: Any, shares: pd.DataFrame) -> None:
    x = list(range(len(shares)))
    bottom = [0.0] * len(shares)
    for ocr_type, colour in OCR_TYPE_COLOURS.items():
        values = shares[ocr_type].tolist()
        ax.bar(x, values, bottom=bottom, color=colour, label=ocr_type)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    ax.set_xticks(x, labels=[str(k) for k in shares.index], rotation=90, fontsize=7)
    ax.set_xlabel("kmeans cluster (largest first)")
    ax.set_ylabel("share of images")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.set_title("OCR type per cluster (paper Figure 3)")


def _fig_cotr(ax: Any, cotr_hist: pd.DataFrame) -> None:
    _hist_bars(ax, cotr_hist, color="#d1495b")
    ax.set_xlabel("CoTR (share of caption words also in the OCR text)")
    ax.set_ylabel("images with text")
    ax.set_title("Co-occurrence text ratio over images with text")


def _fig_sync(ax: Any, scores: pd.DataFrame, model: str) -> None:
    values = scores["score"].astype(float)
    lo, hi = float(values.min()), float(values.max())
    edges = np.linspace(lo, hi if hi > lo else lo + 1e-6, 31)  # shared bins across styles
    for style, part in scores.groupby("style", sort=True):
        label = _label(style).replace("$", r"\$")  # legend text has no parse_math switch
        ax.hist(part["score"].astype(float), bins=edges, histtype="step", label=label)
    ax.set_xlabel("Sync. Score (cosine of rendered word image and word)")
    ax.set_ylabel("words")
    ax.legend(fontsize=8)
    ax.set_title(f"Sync. Score: {_label(model)}", parse_math=False)


TRAINING_METRICS = {"read_top1": "read top-1 (rendered word -> its word)",
                    "sync_gap": "sync gap (own word - other words)",
                    "visual_top1": "visual top-1 (held-out visual images)"}


def _fig_training_runs(ax: Any, runs: pd.DataFrame) -> None:
    """Grouped bars: does each run's model read, and does it still see?"""
    metrics = [m for m in TRAINING_METRICS if runs[m].notna().any()]
    x = np.arange(len(runs))
    width = 0.8 / max(1, len(metrics))
    for i, metric in enumerate(metrics):
        ax.bar(x + (i - (len(metrics) - 1) / 2) * width, runs[metric].astype(float), width,
               label=TRAINING_METRICS[metric])
    ax.set_xticks(x, [_label(n) for n in runs["run_name"]])
    ax.axhline(0, color="#444", linewidth=0.8)
    ax.set_ylabel("score")
    ax.legend(fontsize=8)
    ax.set_title("Training runs: reading vs seeing")


# ---------------------------------------------------------------- sections


def _section(anchor: str, title: str, body: str) -> str:
    return f'<section id="{anchor}"><h2>{html.escape(title)}</h2>\n{body}\n</section>'


def _sec_inputs(data: ReportData) -> str:
    rows = pd.DataFrame({"input": list(data.inputs), "value": list(data.inputs.values())})
    thresholds = pd.DataFrame(
        {"threshold": list(data.thresholds), "value": list(data.thresholds.values())}
    )
    return _section(
        "inputs", "Inputs", _table(rows) + (_table(thresholds) if len(thresholds) else "")
    )


def _sec_funnel(data: ReportData, out: Path) -> str:
    parts = []
    if _empty(data.funnel):
        parts.append(_no_data("the funnel"))
    else:
        funnel = data.funnel[["stage", "rows"]].copy()
        first = float(funnel["rows"].iloc[0]) or 1.0
        funnel["% of input"] = [f"{100 * float(r) / first:.2f}%" for r in funnel["rows"]]
        fig = _save_figure(out, "funnel", partial(_fig_funnel, funnel=funnel))
        parts.append(_img(fig, "rows after each stage"))
        parts.append(_table(funnel))
    parts.append("<h3>Rejected rows by reason</h3>")
    if _empty(data.rejects):
        parts.append(_no_data("rejects"))
    else:
        rejects = data.rejects.sort_values("rows", ascending=False, kind="stable")
        labels = [f"{s}: {r}" for s, r in zip(rejects["stage"], rejects["reason"], strict=True)]
        height = max(2.5, 0.25 * len(labels) + 1)
        draw = partial(_hbars, labels=labels, values=rejects["rows"].tolist())
        parts.append(_img(_save_figure(out, "rejects", draw, (7.0, height)), "rejects"))
        parts.append(_table(rejects, ["stage", "reason", "rows"]))
    return _section("funnel", "Funnel", "\n".join(parts))


def _sec_scores(data: ReportData, out: Path) -> str:
    if _empty(data.score_hist):
        return _section("scores", "CLIP and aesthetic scores", _no_data("score histograms"))
    parts = []
    present = [str(m) for m in data.score_hist["metric"].unique()]
    ordered = [m for m in METRIC_THRESHOLDS if m in present] + sorted(
        set(present) - set(METRIC_THRESHOLDS)
    )
    for metric in ordered:
        df = data.score_hist[data.score_hist["metric"].astype(str) == metric]
        key = METRIC_THRESHOLDS.get(metric, metric)
        threshold = data.thresholds.get(key)
        draw = partial(_fig_score_hist, df=df, metric=metric, threshold=threshold)
        parts.append(_img(_save_figure(out, f"score_{_slug(metric)}", draw), metric))
    return _section("scores", "CLIP and aesthetic scores", "\n".join(parts))


def _sec_clusters(data: ReportData, out: Path) -> str:
    parts = []
    if _empty(data.cluster_sizes):
        parts.append(_no_data("cluster sizes"))
    else:
        draw = partial(_fig_cluster_sizes, sizes=data.cluster_sizes)
        parts.append(_img(_save_figure(out, "cluster_sizes", draw), "cluster sizes"))
    parts.append(f"<h3>OCR type per cluster, {data.top_clusters} largest clusters</h3>")
    if _empty(data.cluster_ocr):
        parts.append(_no_data("OCR types per cluster"))
    else:
        shares = _ocr_shares(data.cluster_ocr, data.top_clusters)
        draw = partial(_fig_cluster_ocr, shares=shares)
        parts.append(_img(_save_figure(out, "cluster_ocr", draw, (8.0, 4.0)), "OCR types"))
    return _section("clusters", "Clusters", "\n".join(parts))


def _sec_parrot(data: ReportData, out: Path) -> str:
    parts = ["<h3>Parrot captions (paper Table 1)</h3>", _table(data.parrot_summary)]
    parts.append("<h3>CoTR histogram</h3>")
    if _empty(data.cotr_hist):
        parts.append(_no_data("CoTR"))
    else:
        draw = partial(_fig_cotr, cotr_hist=data.cotr_hist)
        parts.append(_img(_save_figure(out, "cotr_hist", draw), "CoTR histogram"))
    parts.append("<h3>CLIP score by text presence, across clusters (paper Table 2)</h3>")
    parts.append(_table(data.clip_by_text))
    if not _empty(data.policy_counts):
        parts.append("<h3>Text policies (recipe.text_policy), before dedup</h3>")
        parts.append(_table(data.policy_counts))
    return _section("parrot", "Parrot captions", "\n".join(parts))


def _sec_ngrams(data: ReportData, out: Path) -> str:
    parts = []
    for name, df in data.top_ngrams.items():
        parts.append(f"<h3>{html.escape(name)}</h3>")
        if _empty(df):
            parts.append(_no_data(name))
            continue
        top = df.sort_values("count", ascending=False, kind="stable").head(TOP_NGRAMS)
        height = max(2.5, 0.22 * len(top) + 1)
        words = top["word"].astype(str).tolist()
        draw = partial(_hbars, labels=words, values=top["count"].tolist())
        parts.append(_img(_save_figure(out, f"ngrams_{_slug(name)}", draw, (6.0, height)), name))
        parts.append(f"<details><summary>table</summary>{_table(top, ['word', 'count'])}</details>")
    return _section("ngrams", "Top n-grams", "\n".join(parts) or _no_data("n-grams"))


def _sec_sync(data: ReportData, out: Path) -> str:
    if _empty(data.sync_scores) and _empty(data.sync_summary):
        return _section("sync", "Sync. Score", _no_data("Sync. Scores"))
    parts = [] if _empty(data.sync_summary) else [_table(data.sync_summary)]
    if not _empty(data.sync_scores):
        groups = data.sync_scores.groupby("model", sort=True)
        for i, (model, df) in enumerate(groups):
            name = f"sync_{i:02d}_{_slug(str(model))}"
            fig = _save_figure(out, name, partial(_fig_sync, scores=df, model=str(model)))
            parts.append(_img(fig, f"Sync. Score {model}"))
    return _section("sync", "Sync. Score", "\n".join(parts))


def _sec_training(data: ReportData, out: Path) -> str:
    if _empty(data.training_runs):
        return _section("training", "Training runs", _no_data("training runs"))
    runs = data.training_runs
    parts = []
    if any(m in runs and runs[m].notna().any() for m in TRAINING_METRICS):
        shown = runs[[c for c in ("run_name", *TRAINING_METRICS) if c in runs]].fillna(np.nan)
        fig = _save_figure(out, "training_runs", partial(_fig_training_runs, runs=shown))
        parts.append(_img(fig, "training runs: reading and seeing"))
    parts.append(_table(runs))
    return _section("training", "Training runs", "\n".join(parts))


def _sec_reviews(data: ReportData) -> str:
    """The filters measured on curators' reviews: real images, judged by people."""
    q = data.review_quality
    if not q or not (q["text"]["reviewed"] or q["dedup"]["confirmed"] + q["dedup"]["wrong"]):
        return _section("reviews", "Reviews", _no_data(
            "reviews (mark decisions in `deparrot explore`: each review grows the evaluation "
            "set)"))
    t, d = q["text"], q["dedup"]
    table = pd.DataFrame([
        {"filter": "text (has_text)", "reviewed": t["reviewed"], "precision": t["precision"],
         "recall": t["recall"], "true positives": t["tp"], "false positives": t["fp"],
         "missed": t["fn"], "true negatives": t["tn"]},
        {"filter": "dedup (removed rows)", "reviewed": d["confirmed"] + d["wrong"],
         "precision": d["precision"], "recall": None, "true positives": d["confirmed"],
         "false positives": d["wrong"], "missed": None, "true negatives": None},
    ])
    return _section("reviews", "Reviews", _table(table))


def _thumbnail(image: Any) -> bytes | None:
    """A small JPEG of untrusted image bytes, or None when they do not decode safely."""
    from PIL import Image

    if not isinstance(image, bytes | bytearray | memoryview) or not len(image):
        return None
    try:
        with Image.open(io.BytesIO(bytes(image))) as im:
            if im.width * im.height > MAX_THUMB_PIXELS:
                return None
            im.draft("RGB", (THUMB_SIZE, THUMB_SIZE))
            rgb = im.convert("RGB")
        rgb.thumbnail((THUMB_SIZE, THUMB_SIZE))
        buf = io.BytesIO()
        rgb.save(buf, format="JPEG", quality=85)
        return buf.getvalue()
    except Exception:  # any decoder failure just drops the thumbnail
        return None


def _contact_cell(out: Path, index: int, row: Any) -> str:
    caption = "" if not isinstance(row.caption, str) else row.caption
    short = caption if len(caption) <= 300 else caption[:299] + "…"
    text = f"#{row.sample_id}: {short}"
    thumb = _thumbnail(row.image)
    if thumb is None:
        picture = '<div class="noimg">image not decodable</div>'
    else:
        rel = f"thumbs/{index:03d}_{_slug(str(row.sample_id))}.jpg"
        _atomic_write(out / rel, thumb)
        picture = f'<img src="{html.escape(rel)}" alt="{html.escape(short)}" loading="lazy">'
    return f"<figure>{picture}<figcaption>{html.escape(text)}</figcaption></figure>"


def _sec_contact(data: ReportData, out: Path) -> str:
    title = "Contact sheet: removed for text vs kept"
    if _empty(data.contact_sheet):
        return _section("contact", title, _no_data("thumbnails"))
    (out / "thumbs").mkdir(exist_ok=True)
    known = {"removed_text": "Removed for text", "kept": "Kept"}
    groups = list(known) + sorted(set(map(str, data.contact_sheet["group"])) - set(known))
    columns = []
    index = 0
    for group in groups:
        rows = data.contact_sheet[data.contact_sheet["group"].astype(str) == group]
        cells = []
        for row in rows.itertuples(index=False):
            cells.append(_contact_cell(out, index, row))
            index += 1
        body = "".join(cells) or _no_data(group)
        label = html.escape(known.get(group, group))
        columns.append(f'<div class="sheet"><h3>{label}</h3><div class="grid">{body}</div></div>')
    return _section("contact", title, f'<div class="sheets">{"".join(columns)}</div>')


# ---------------------------------------------------------------- page

_CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em auto;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:.5em 0 1em}td,th{border:1px solid #ccc;padding:2px 8px}
td{text-align:right}td:first-child{text-align:left}th{background:#eee}
img.fig{max-width:100%;display:block;margin:.5em 0}.nodata{color:#888;font-style:italic}
.warning{background:#fdd;border:2px solid #c00;padding:.6em;font-weight:bold}
.sheets{display:flex;gap:1em}.sheet{flex:1}.grid{display:flex;flex-wrap:wrap;gap:6px}
figure{width:160px;margin:0;font-size:11px}figure img{width:160px;height:auto}
.noimg{width:160px;height:100px;background:#eee;color:#888}nav a{margin-right:1em}
"""

_NAV = [
    ("inputs", "Inputs"),
    ("funnel", "Funnel"),
    ("scores", "Scores"),
    ("clusters", "Clusters"),
    ("parrot", "Parrot captions"),
    ("ngrams", "N-grams"),
    ("contact", "Contact sheet"),
    ("sync", "Sync. Score"),
    ("training", "Training runs"),
    ("reviews", "Reviews"),
]


def render_html(data: ReportData, out_dir: Path) -> str:
    """Write every figure and thumbnail into out_dir and return the page's HTML."""
    title = html.escape(data.title)
    banner = "".join(f'<p class="warning">{html.escape(w)}</p>' for w in data.warnings if w)
    nav = "".join(f'<a href="#{a}">{html.escape(t)}</a>' for a, t in _NAV)
    sections = [
        _sec_inputs(data),
        _sec_funnel(data, out_dir),
        _sec_scores(data, out_dir),
        _sec_clusters(data, out_dir),
        _sec_parrot(data, out_dir),
        _sec_ngrams(data, out_dir),
        _sec_contact(data, out_dir),
        _sec_sync(data, out_dir),
        _sec_training(data, out_dir),
        _sec_reviews(data),
    ]
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{title}</title><style>{_CSS}</style></head><body>\n"
        f"<h1>{title}</h1>{banner}<nav>{nav}</nav>\n" + "\n".join(sections) + "\n</body></html>\n"
    )


def write_report(data: ReportData, out_dir: str | Path) -> Path:
    """Write index.html, its PNG figures and thumbs/ into out_dir; return index.html's path.

    index.html is written last (temp file + rename), after everything it links to. A URL
    (udfs/storage.py) gets the page rendered in a local temp folder, then uploaded file by
    file with index.html last; the local copy of the page is what is returned.
    """
    target = str(out_dir)
    if storage.is_remote(target):
        staging = Path(tempfile.mkdtemp(prefix="deparrot-report-"))
        atexit.register(shutil.rmtree, staging, True)
        index = write_report(data, staging)
        storage.put_folder(str(staging), target, last=("index.html",))
        return index
    out = Path(storage.local_path(target))
    out.mkdir(parents=True, exist_ok=True)
    page = render_html(data, out)
    index = out / "index.html"
    _atomic_write(index, page.encode("utf-8"))
    return index


class _ImgSources(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.sources: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "img":
            self.sources.extend(v for k, v in attrs if k == "src" and v)


def report_figures(html_text: str) -> list[str]:
    """The `src` of every <img> in a page (unescaped, relative to the page), in page order."""
    parser = _ImgSources()
    parser.feed(html_text)
    parser.close()
    return parser.sources
