"""Sync. Score: how strongly a CLIP model "spots" text it is shown as pixels.

The paper renders every vocabulary word on a plain image (`udfs.render`) and scores the
cosine similarity between the CLIP embedding of that image and the CLIP embedding of the
word itself. A model that learnt to read (because its captions parroted the text in its
images) scores high; the paper's debiased 100M subset brings the 1-gram mean from 0.317
(OpenAI CLIP) down to 0.163.

This module is the executor side: `sync_batches` is a `mapInPandas` body that turns
(word, word_rank) rows into one row per (word, model, style); `summarize` reduces those
rows (collected to pandas) to the paper's mean/std table.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from udfs.checkpoint_files import CHECKPOINT_SUFFIXES
from udfs.render import STYLES, RenderSettings, can_render, render_word

if TYPE_CHECKING:  # torch and open_clip load on executors only: settings pickle light
    from udfs.clip_models import ClipBundle


SYNC_OUTPUT_COLUMNS = ("model", "style", "word", "word_rank", "status", "reason", "score")
SYNC_OUTPUT_SCHEMA_DDL = (
    "model string, style string, word string, word_rank long, "
    "status string, reason string, score double"
)
ALL_STYLES = "all"
SUMMARY_COLUMNS = ("model", "style", "mean", "std", "count", "skipped")

# The paper's published 1-gram Sync. Scores, (mean, population std), for comparison.
PUBLISHED_1GRAM: dict[str, tuple[float, float]] = {
    "100M subset (paper)": (0.163, 0.0659),
    "OpenAI CLIP WIT-400M": (0.317, 0.0305),
    "OpenCLIP LAION-2B": (0.368, 0.0427),
    "DataComp medium": (0.268, 0.0247),
    "DataComp large": (0.338, 0.0341),
}

_PRECISIONS = ("fp16", "bf16", "fp32")


@dataclass(frozen=True)
class SyncModel:
    """A CLIP model to benchmark: open_clip name plus a tag, checkpoint file or "random".

    `alias` names it in the output instead of "model:pretrained", e.g. when two
    checkpoints share a file name or a path is too long to read in a table.
    """

    model: str
    pretrained: str
    alias: str = ""

    def __post_init__(self) -> None:
        if not self.model or not self.model.strip():
            raise ValueError("SyncModel.model must name an open_clip model")
        if not self.pretrained or not self.pretrained.strip():
            raise ValueError(
                f"SyncModel({self.model!r}).pretrained must be an open_clip tag, a checkpoint "
                f"file ({', '.join(CHECKPOINT_SUFFIXES)}) or 'random'"
            )

    @property
    def label(self) -> str:
        return self.alias or f"{self.model}:{self.pretrained}"


@dataclass(frozen=True)
class SyncSettings:
    """How the benchmark renders, prompts and runs the models.

    `template` wraps the word for the text encoder; the paper uses the bare word ("{}").
    Only the single "{}" is substituted, other braces are kept literally.
    """

    render: RenderSettings = field(default_factory=RenderSettings)
    template: str = "{}"
    batch_size: int = 64
    precision: str = "fp16"
    prefer_gpu: bool = True
    cpu_threads: int = 1
    random_init_ok: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.render, RenderSettings):
            raise ValueError(f"render must be RenderSettings, got {type(self.render).__name__}")
        if self.template.count("{}") != 1:
            raise ValueError(f"template must contain '{{}}' exactly once, got {self.template!r}")
        if isinstance(self.batch_size, bool) or self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size!r}")
        if self.precision not in _PRECISIONS:
            raise ValueError(f"precision must be one of {_PRECISIONS}, got {self.precision!r}")
        if self.cpu_threads < 0:
            raise ValueError(
                f"cpu_threads must be >= 0 (0 = leave torch's default), got {self.cpu_threads}"
            )

    def prompt(self, word: str) -> str:
        return self.template.replace("{}", word, 1)


def _cosine(image_emb: np.ndarray, text_emb: np.ndarray) -> np.ndarray:
    """Row-wise cosine of already L2-normalised embeddings (what encode_* return)."""
    return np.einsum("nd,nd->n", image_emb, text_emb).astype(np.float32)


def score_words(
    bundle: ClipBundle, words: list[str | None], style: str, settings: SyncSettings
) -> np.ndarray:
    """Per-word Sync. Score (float32) of `words` drawn in `style`; NaN for skipped words."""
    from udfs.clip_models import encode_images, encode_texts

    if style not in settings.render.styles:
        raise ValueError(f"style {style!r} is not one of {list(settings.render.styles)}")
    out = np.full(len(words), np.nan, dtype=np.float32)
    step = settings.batch_size
    for start in range(0, len(words), step):
        chunk = words[start : start + step]
        keep = [i for i, w in enumerate(chunk) if can_render(w, settings.render) is None]
        if not keep:
            continue
        images = [render_word(chunk[i], style, settings.render) for i in keep]
        texts = [settings.prompt(chunk[i]) for i in keep]
        image_emb = encode_images(bundle, images, step)
        text_emb = encode_texts(bundle, texts, step)
        out[start + np.asarray(keep)] = _cosine(image_emb, text_emb)
    return out


def _load_bundles(models: tuple[SyncModel, ...], settings: SyncSettings) -> list[ClipBundle]:
    """Every model for this task; load_clip caches them per process, so this is cheap."""
    from udfs.clip_models import load_clip
    from udfs.device import select_device

    device = select_device(settings.prefer_gpu)
    return [
        load_clip(
            m.model,
            m.pretrained,
            device,
            settings.precision,
            random_init_ok=settings.random_init_ok,
        )
        for m in models
    ]


def _score_chunk(
    words: list[str], bundles: list[ClipBundle], settings: SyncSettings
) -> dict[tuple[int, str], np.ndarray]:
    """Scores of renderable `words` per (model index, style).

    Each word is rendered once per style and that image is encoded by every model; the
    text embedding of a word is computed once per model and reused for every style.
    """
    texts = [settings.prompt(w) for w in words]
    step = settings.batch_size
    from udfs.clip_models import encode_images, encode_texts

    text_emb = [encode_texts(b, texts, step) for b in bundles]
    scores: dict[tuple[int, str], np.ndarray] = {}
    for style in settings.render.styles:
        images = [render_word(w, style, settings.render) for w in words]
        for k, bundle in enumerate(bundles):
            scores[k, style] = _cosine(encode_images(bundle, images, step), text_emb[k])
    return scores


def _score_frame(
    words: list[str | None], bundles: list[ClipBundle], settings: SyncSettings
) -> tuple[list[str | None], dict[tuple[int, str], np.ndarray]]:
    """Skip reasons per word, and float64 scores per (model index, style), NaN if skipped."""
    reasons = [can_render(w, settings.render) for w in words]
    ok = np.asarray([r is None for r in reasons], dtype=bool)
    ok_idx = np.flatnonzero(ok)
    full = {
        (k, s): np.full(len(words), np.nan)
        for k in range(len(bundles))
        for s in settings.render.styles
    }
    for start in range(0, len(ok_idx), settings.batch_size):
        idx = ok_idx[start : start + settings.batch_size]
        chunk = [str(words[i]) for i in idx]  # renderable, so never None
        for key, values in _score_chunk(chunk, bundles, settings).items():
            full[key][idx] = values
    return reasons, full


def _as_words(values: pd.Series) -> list[str | None]:
    """Words as str, nulls (None, NaN, pd.NA) as None."""
    return [None if not isinstance(v, str) and pd.isna(v) else str(v) for v in values]


def sync_batches(
    batches: Iterator[pd.DataFrame], models: tuple[SyncModel, ...], settings: SyncSettings
) -> Iterator[pd.DataFrame]:
    """mapInPandas body: (word, word_rank) rows -> one row per (word, model, style).

    Output matches SYNC_OUTPUT_SCHEMA_DDL. Skipped words keep a row per (model, style)
    with status "skipped", their reason and a null score, so every input word is
    accounted for. Scores are float64 with NaN for skipped rows (null in Spark, which
    converts pandas NaN to null).
    """
    models = tuple(models)
    if not models:
        raise ValueError("sync_batches needs at least one SyncModel")
    labels = [m.label for m in models]
    if len(set(labels)) != len(labels):
        raise ValueError(f"model labels must be unique (set SyncModel.alias), got {labels}")
    if settings.cpu_threads > 0:
        import torch

        torch.set_num_threads(settings.cpu_threads)
    bundles: list[ClipBundle] | None = None  # loaded on the first rows: empty tasks skip it
    for pdf in batches:
        if pdf.empty:
            continue
        if bundles is None:
            bundles = _load_bundles(models, settings)
        words = _as_words(pdf["word"])
        ranks = pdf["word_rank"].to_numpy(dtype=np.int64)
        reasons, scores = _score_frame(words, bundles, settings)
        yield _output_frame(words, ranks, reasons, scores, labels, settings.render.styles)


def _output_frame(
    words: list[str | None],
    ranks: np.ndarray,
    reasons: list[str | None],
    scores: dict[tuple[int, str], np.ndarray],
    labels: list[str],
    styles: tuple[str, ...],
) -> pd.DataFrame:
    """Rows ordered by model, then style, then input order."""
    status = ["ok" if r is None else "skipped" for r in reasons]
    parts = [
        pd.DataFrame(
            {
                "model": label,
                "style": style,
                "word": pd.Series(words, dtype=object),
                "word_rank": ranks,
                "status": status,
                "reason": pd.Series(reasons, dtype=object),
                "score": scores[k, style],
            }
        )
        for k, label in enumerate(labels)
        for style in styles
    ]
    return pd.concat(parts, ignore_index=True)[list(SYNC_OUTPUT_COLUMNS)]


def _stats(scores: pd.Series, skipped: int) -> dict[str, float | int]:
    values = scores.to_numpy(dtype=np.float64)
    count = int(values.size)
    return {
        "mean": float(values.mean()) if count else float("nan"),
        "std": float(values.std(ddof=0)) if count else float("nan"),
        "count": count,
        "skipped": int(skipped),
    }


def summarize(df: pd.DataFrame) -> pd.DataFrame:
    """Mean, population std (ddof=0, numpy's default, as the paper's numpy-based script),
    count of scored words and number of skipped rows, per model and style.

    Each model also gets a style "all" row pooling every (word, style) score. Models keep
    their order of first appearance; styles follow STYLES, then "all".
    """
    rows: list[dict[str, object]] = []
    known = list(STYLES)
    for model in pd.unique(df["model"]):
        sub = df[df["model"] == model]
        present = set(sub["style"])
        styles = [s for s in known if s in present]
        styles += sorted(present - set(known))
        for style in [*styles, ALL_STYLES]:
            part = sub if style == ALL_STYLES else sub[sub["style"] == style]
            ok = part["status"] == "ok"
            stats = _stats(part.loc[ok, "score"], int((~ok).sum()))
            rows.append({"model": model, "style": style, **stats})
    return pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))
