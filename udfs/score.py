"""Executor side of the score stage: image bytes -> OCR, CLIP and aesthetic scores.

One decode per image feeds every model. Models load once per Python worker (the
udfs.ocr / udfs.clip_models / udfs.aesthetic caches) on the task's device, and run on
batches of `batch_size` images. A batch that fails is retried image by image, so one bad
image becomes one error row, never a failed task.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from udfs.decode import DEFAULT_MAX_PIXELS, decode_image
from udfs.ocr import DEFAULT_SPOTTER, check_spotter_path
from udfs.worker_cache import worker_cached

SCORE_FIELDS = (
    "sample_id", "status", "error", "ocr_box_count", "ocr_text_area", "ocr_text", "ocr_boxes",
    "has_text", "clip_score", "clip_score_source", "aesthetic_score", "aesthetic_source",
    "image_embedding",
)


@dataclass(frozen=True)
class ScoreSettings:
    """What the score stage's executors need; the `score` config section extends it."""

    # Text spotter by import path (`package.module:factory`) and its options; the
    # factory also gets `device` and `cpu_threads`. Empty options: the spotter's defaults.
    spotter: str = DEFAULT_SPOTTER
    spotter_options: dict[str, Any] = field(default_factory=dict)
    # none: detection only; texted: read the text of images with boxes; all: det+rec everywhere
    recognize: str = "texted"
    # CLIP ViT-B/32: an open_clip pretrained tag or a local checkpoint path.
    clip_model: str = "ViT-B-32"
    clip_pretrained: str = "laion2b_s34b_b79k"
    # The aesthetic predictor reads CLIP ViT-L/14 image embeddings.
    aesthetic_clip_model: str = "ViT-L-14"
    aesthetic_clip_pretrained: str = "openai"
    aesthetic_weights: str = ""  # path to sac+logos+ava1-l14-linearMSE.pth
    # Randomly initialised CLIP/aesthetic weights: only for offline demos and tests.
    random_init_ok: bool = False
    precision: str = "fp16"  # fp16 | bf16 | fp32 (CUDA only; CPU runs float32)
    prefer_gpu: bool = True
    batch_size: int = 64  # images per model call
    # CPU threads each Python worker gives torch and onnxruntime (0 = library default).
    # Spark already runs one task per core, so more than spark.task.cpus oversubscribes.
    cpu_threads: int = 1
    # Reuse LAION's `similarity` / `aesthetic` when present instead of recomputing.
    reuse_similarity: bool = False
    reuse_aesthetic: bool = False
    max_pixels: int = DEFAULT_MAX_PIXELS

    def __post_init__(self) -> None:
        if self.recognize not in ("none", "texted", "all"):
            raise ValueError(f"recognize must be none, texted or all, got {self.recognize!r}")
        check_spotter_path(self.spotter)


class Models:
    """The models of one worker, built on first use (so the settings pickle light)."""

    def __init__(self, s: ScoreSettings):
        from udfs import clip_models, ocr
        from udfs.device import select_device

        self.device = select_device(s.prefer_gpu)
        if s.cpu_threads > 0:
            import torch

            torch.set_num_threads(s.cpu_threads)
        self.spotter = ocr.make_spotter(s.spotter, s.spotter_options, device=self.device,
                                        cpu_threads=s.cpu_threads)
        self.b32 = clip_models.load_clip(s.clip_model, s.clip_pretrained, self.device,
                                         s.precision, random_init_ok=s.random_init_ok)
        # The ViT-L/14 tower is loaded on first need: reusing LAION's `aesthetic` skips it.
        self.l14 = None
        self.mlp = None

    def aesthetic_models(self, s: ScoreSettings):
        from udfs import aesthetic, clip_models

        if self.l14 is None:
            self.l14 = clip_models.load_clip(
                s.aesthetic_clip_model, s.aesthetic_clip_pretrained, self.device, s.precision,
                random_init_ok=s.random_init_ok)
            self.mlp = aesthetic.load_aesthetic(
                s.aesthetic_weights, self.device, input_dim=self.l14.embed_dim,
                random_init_ok=s.random_init_ok)
        return self.l14, self.mlp


def models_for(s: ScoreSettings) -> Models:
    return worker_cached("score_models", s, lambda: Models(s))


def _error_row(sample_id: int, reason: str) -> dict:
    row = dict.fromkeys(SCORE_FIELDS)
    row.update(sample_id=sample_id, status="error", error=reason)
    return row


def _finite_or_none(values: pd.Series) -> list[float | None]:
    out = []
    for v in values:
        out.append(float(v) if v is not None and np.isfinite(v) else None)
    return out


def score_images(ids: list[int], arrays: list[np.ndarray], texts: list[str | None],
                 given_sim: list[float | None], given_aes: list[float | None],
                 s: ScoreSettings) -> list[dict]:
    """Score decoded RGB arrays; raises if any model fails (the caller isolates)."""
    from udfs import aesthetic, clip_models

    m = models_for(s)
    ocr = m.spotter.spot(arrays, recognize=s.recognize == "all")
    if s.recognize == "texted":
        texted = [i for i, r in enumerate(ocr) if r.box_count > 0]
        if texted:
            read = m.spotter.spot([arrays[i] for i in texted], recognize=True)
            for i, r in zip(texted, read, strict=True):
                ocr[i] = r
    img_emb = clip_models.encode_images(m.b32, arrays, batch_size=s.batch_size)
    sims: list[float | None] = list(given_sim) if s.reuse_similarity else [None] * len(ids)
    need_text = [i for i, v in enumerate(sims) if v is None]
    if need_text:
        txt = clip_models.encode_texts(m.b32, [texts[i] for i in need_text],
                                       batch_size=s.batch_size)
        computed = clip_models.clip_scores(img_emb[need_text], txt)
        for i, v in zip(need_text, computed, strict=True):
            sims[i] = float(v)
    aes: list[float | None] = list(given_aes) if s.reuse_aesthetic else [None] * len(ids)
    need_aes = [i for i, v in enumerate(aes) if v is None]
    if need_aes:
        l14, mlp = m.aesthetic_models(s)
        emb = clip_models.encode_images(l14, [arrays[i] for i in need_aes],
                                        batch_size=s.batch_size)
        for i, v in zip(need_aes, aesthetic.score(mlp, emb), strict=True):
            aes[i] = float(v)
    text_done, aes_done = set(need_text), set(need_aes)
    rows = []
    for k, sid in enumerate(ids):
        r = ocr[k]
        rows.append({
            "sample_id": sid, "status": "ok", "error": None,
            "ocr_box_count": r.box_count, "ocr_text_area": float(r.text_area_fraction),
            "ocr_text": r.text,
            "ocr_boxes": [
                {"polygon": [[float(x), float(y)] for x, y in b.polygon], "text": b.text,
                 "confidence": float(b.confidence)} for b in r.boxes
            ],
            "has_text": r.box_count > 0,
            "clip_score": sims[k],
            "clip_score_source": "computed" if k in text_done else "metadata",
            "aesthetic_score": aes[k],
            "aesthetic_source": "computed" if k in aes_done else "metadata",
            "image_embedding": img_emb[k].astype(np.float32).tolist(),
        })
    return rows


def score_batches(batches: Iterator[pd.DataFrame], s: ScoreSettings) -> Iterator[pd.DataFrame]:
    """mapInPandas body over (sample_id, image, text, similarity, aesthetic) rows."""
    for batch in batches:
        for start in range(0, len(batch), s.batch_size):
            part = batch.iloc[start:start + s.batch_size]
            yield pd.DataFrame(_score_part(part, s), columns=list(SCORE_FIELDS))


def _score_part(part: pd.DataFrame, s: ScoreSettings) -> list[dict]:
    rows: list[dict] = []
    ok_idx, arrays = [], []
    ids = part["sample_id"].tolist()
    for k, data in enumerate(part["image"]):
        decoded = decode_image(data, max_pixels=s.max_pixels)
        if decoded.ok:
            ok_idx.append(k)
            arrays.append(np.asarray(decoded.image))
        else:
            rows.append(_error_row(ids[k], f"decode:{decoded.error}"))
    if not ok_idx:
        return rows
    # Model loading errors (bad path, refused random weights) are configuration errors:
    # they fail the task loudly instead of turning every image into a reject.
    models = models_for(s)
    if not s.reuse_aesthetic or any(a is None for a in part["aesthetic"]):
        models.aesthetic_models(s)
    texts = part["text"].tolist()
    sims = _finite_or_none(part["similarity"])
    aes = _finite_or_none(part["aesthetic"])
    pick = [ids[k] for k in ok_idx], [texts[k] for k in ok_idx]
    given = [sims[k] for k in ok_idx], [aes[k] for k in ok_idx]
    try:
        rows.extend(score_images(pick[0], arrays, pick[1], given[0], given[1], s))
    except Exception:
        # Find the image that breaks the batch; the others still get their scores.
        for j, k in enumerate(ok_idx):
            try:
                rows.extend(score_images([ids[k]], [arrays[j]], [texts[k]], [sims[k]],
                                         [aes[k]], s))
            except Exception as exc:  # one image must not fail the task
                rows.append(_error_row(ids[k], f"score:{type(exc).__name__}"))
    return rows
