"""Executor side of the score stage: image bytes -> OCR, CLIP and aesthetic scores.

One decode per image feeds every model. Models load once per Python worker (the
udfs.ocr / udfs.clip_models / udfs.aesthetic caches) on the task's device, and run on
batches of `batch_size` images. A batch that fails is retried image by image, so one bad
image becomes one error row, never a failed task.

On a GPU the data path is built to keep the device busy: the next batch is decoded by a
thread pool while the current one runs on the GPU (`decode_device: gpu`: its JPEGs by
nvjpeg on the GPU, udfs/gpu_decode.py); every decoded image goes to the GPU once
(pinned host memory, non-blocking copies, or decoded there) and that copy feeds the OCR
detector's and both CLIP towers' preprocessing, which run on the GPU too.

T-MARS: images with OCR boxes go through B/32 a second time with the boxes masked
(udfs/masking.py, on the same decoded array), scored against the caption embedding the
CLIP score computed anyway: `masked_clip_score`, which recipe.text_policy `tmars` reads.

The text rule (udfs.ocr.TextRule, the `text_rule` settings): an image has text when a box
reads as letters or digits confidently enough, or is a confident line in a script the
recogniser cannot read. Boxes that do not count stay in `ocr_boxes` (evidence) but are
not masked. With `recognize: none` (detection only, the fast path) a box counts on its
detector score and size.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from udfs.bounds import at_least
from udfs.decode import DEFAULT_MAX_PIXELS, decode_image
from udfs.failures import describe, guard_batch, is_resource_error, note
from udfs.gpu_decode import DECODE_DEVICES
from udfs.masking import MASK_METHODS, mask_text
from udfs.ocr import (
    DEFAULT_SPOTTER,
    OcrBox,
    OcrResult,
    TextRule,
    check_spotter_path,
)
from udfs.ocr_view import scale_polygon, view_scale
from udfs.resize import remove_border
from udfs.timing import Laps
from udfs.worker_cache import worker_cached

SCORE_FIELDS = (
    "sample_id", "status", "error", "ocr_box_count", "ocr_text_area", "ocr_text", "ocr_boxes",
    "has_text", "clip_score", "clip_score_source", "masked_clip_score", "aesthetic_score",
    "aesthetic_source", "image_embedding", "retryable", "error_detail",
)
MAX_BATCH_SPLITS = 8  # 256 -> 1 image: the most a batch is halved before giving up


class RetryableScoreError(RuntimeError):
    """A resource error (OOM, lost device) that batch splitting did not get past."""


def _release_memory() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
# Decode threads per Python worker on a GPU when `decode_threads` is 0 (auto).
GPU_DECODE_THREADS = 4


@dataclass(frozen=True)
class ScoreSettings:
    """What the score stage's executors need; the `score` config section extends it."""

    # Text spotter by import path (`package.module:factory`) and its options; the
    # factory also gets `device` and `cpu_threads`. Empty options: the spotter's defaults.
    spotter: str = DEFAULT_SPOTTER
    spotter_options: dict[str, Any] = field(default_factory=dict)
    # none: detection only (any box is text: the fast path); texted: read the boxes of
    # images with boxes; all: det+rec everywhere
    recognize: str = "texted"
    # The text rule (udfs.ocr.TextRule: which OCR boxes make an image one with text),
    # chosen with benchmarks/ocr_real.py on real photographs: `score.text_rule.*`.
    text_rule: TextRule = field(default_factory=TextRule)
    # CLIP ViT-B/32: an open_clip pretrained tag or a local checkpoint path. OpenAI's, as
    # the paper: LAION's `similarity` column, the 0.3 threshold read from it and the
    # published PCA/centroids (LAION-400M features) all come from OpenAI ViT-B/32.
    clip_model: str = "ViT-B-32"
    clip_pretrained: str = "openai"
    # The aesthetic predictor reads CLIP ViT-L/14 image embeddings.
    aesthetic_clip_model: str = "ViT-L-14"
    aesthetic_clip_pretrained: str = "openai"
    aesthetic_weights: str = ""  # path to sac+logos+ava1-l14-linearMSE.pth
    # Randomly initialised CLIP/aesthetic weights: only for offline demos and tests.
    random_init_ok: bool = False
    precision: str = "fp16"  # fp16 | bf16 | fp32 (CUDA only; CPU runs float32)
    prefer_gpu: bool = True
    batch_size: int = 64  # images per model call (conf/gpu.yaml: 256 on an H100)
    # CPU threads each Python worker gives torch and onnxruntime (0 = library default).
    # Spark already runs one task per core, so more than spark.task.cpus oversubscribes.
    cpu_threads: int = 1
    # Threads that decode the next batch while the models run on the current one.
    # 0 = auto: 4 on a GPU, none on CPU (decoding inline; the cores are busy anyway).
    decode_threads: int = 0
    # Where the stored JPEGs (and OCR views) are decoded: cpu (Pillow, in the decode
    # threads) or gpu (nvjpeg, udfs/gpu_decode.py: a whole batch in one call on the
    # task's GPU, its next batch's decode still overlapping the models). Other formats
    # and what nvjpeg should not decode use Pillow. A worker without CUDA says so once
    # and decodes on the CPU (the driver that validates this often has no GPU).
    decode_device: str = "cpu"
    # Reuse LAION's `similarity` / `aesthetic` when present instead of recomputing.
    reuse_similarity: bool = False
    reuse_aesthetic: bool = False
    # T-MARS (recipe.text_policy: tmars): CLIP score of the image with its OCR boxes
    # masked, against the caption. One more B/32 image forward, only for images with
    # boxes; images without boxes get clip_score. text_mask: mean | inpaint (udfs/masking).
    masked_clip_score: bool = True
    text_mask: str = "mean"
    max_pixels: int = DEFAULT_MAX_PIXELS
    # Undo img2dataset's `border` padding (from the recorded original size) before the
    # models see the image: LAION's similarity and the 0.3 threshold come from CLIP on
    # the original image, and the bars lower the score (udfs/resize.remove_border).
    remove_border: bool = True

    def __post_init__(self) -> None:
        if self.recognize not in ("none", "texted", "all"):
            raise ValueError(f"recognize must be none, texted or all, got {self.recognize!r}")
        if self.text_mask not in MASK_METHODS:
            raise ValueError(f"text_mask must be one of {', '.join(MASK_METHODS)}, "
                             f"got {self.text_mask!r}")
        if self.decode_threads < 0:
            raise ValueError(f"decode_threads must be >= 0, got {self.decode_threads!r}")
        if self.decode_device not in DECODE_DEVICES:
            raise ValueError(f"decode_device must be one of {', '.join(DECODE_DEVICES)}, "
                             f"got {self.decode_device!r}")
        at_least(self, 1, "batch_size", "max_pixels")
        at_least(self, 0, "cpu_threads")
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


def _error_row(sample_id: int, reason: str, retryable: bool = False,
               detail: str | None = None) -> dict:
    row = dict.fromkeys(SCORE_FIELDS)
    row.update(sample_id=sample_id, status="error", error=reason, retryable=retryable,
               error_detail=detail)
    return row


def _finite_or_none(values: pd.Series) -> list[float | None]:
    out = []
    for v in values:
        out.append(float(v) if v is not None and np.isfinite(v) else None)
    return out


def has_text(result, s: ScoreSettings, recognized: bool) -> bool:
    """The stage's text rule for one OCR result (see the module docstring)."""
    return s.text_rule.has_text(result, recognized)


def text_boxes(result, s: ScoreSettings, recognized: bool) -> list:
    """The boxes the text rule counts: what T-MARS masks (not a box over a whole flat
    image, nor a fence post read as "1")."""
    rule = s.text_rule
    return [b for b in result.boxes
            if rule.box_counts(b, result.image_height, result.image_width, recognized)]


def spot(spotter, arrays: list[np.ndarray], s: ScoreSettings,
         device_images: list | None = None) -> list:
    """OCR per `s.recognize`; one pass when the spotter only reads what it detects."""
    kw = {}
    if device_images is not None and getattr(spotter, "accepts_device_images", False):
        kw["device_images"] = device_images
    if s.recognize == "all" or (s.recognize == "texted"
                                and getattr(spotter, "reads_only_detected", False)):
        return spotter.spot(arrays, recognize=True, **kw)
    ocr = spotter.spot(arrays, recognize=False, **kw)
    if s.recognize == "texted":
        texted = [i for i, r in enumerate(ocr) if r.box_count > 0]
        if texted:
            read = spotter.spot([arrays[i] for i in texted], recognize=True)
            for i, r in zip(texted, read, strict=True):
                ocr[i] = r
    return ocr


def spot_views(spotter, arrays: list[np.ndarray], views: list[np.ndarray | None] | None,
               s: ScoreSettings, device_images: list | None = None) -> list:
    """OCR on each image's OCR view where download stored one (udfs/ocr_view.py), else
    on the image; boxes come back in the image's coordinates, so masking, the stored
    polygons and the text area all refer to `image`."""
    if views is None or all(v is None for v in views):
        return spot(spotter, arrays, s, device_images)
    seen = [a if v is None else v for a, v in zip(arrays, views, strict=True)]
    results = spot(spotter, seen, s)
    out = []
    for a, v, r in zip(arrays, views, results, strict=True):
        if v is None:
            out.append(r)
            continue
        sx, sy = view_scale(a.shape[:2], v.shape[:2])
        boxes = [OcrBox(scale_polygon(b.polygon, sx, sy), b.text, b.confidence,
                        b.det_score)
                 for b in r.boxes]
        out.append(OcrResult(boxes, a.shape[0], a.shape[1]))
    return out


def score_images(ids: list[int], arrays: list[np.ndarray], texts: list[str | None],
                 given_sim: list[float | None], given_aes: list[float | None],
                 s: ScoreSettings, laps: dict[str, float] | None = None,
                 views: list[np.ndarray | None] | None = None,
                 device_images: list | None = None) -> list[dict]:
    """Score decoded RGB arrays; raises if any model fails (the caller isolates).

    `views`: each image's decoded OCR view, or None where it has none (the spotter
    reads the image itself). `device_images`: per array, the same pixels already on
    the GPU (decoded there, `decode_device: gpu`) or None (uploaded here).

    `laps`, when given, accumulates wall seconds per phase (upload, ocr, b32, masked, l14, rows).
    """
    from udfs import aesthetic, clip_models

    m = models_for(s)
    lap = Laps(laps)
    # Each image goes to the GPU once; OCR and both CLIP towers preprocess that copy.
    dev_images = (_on_device(arrays, device_images, m.device)
                  if m.device.type == "cuda" else None)
    lap("upload")
    ocr = spot_views(m.spotter, arrays, views, s, dev_images)
    lap("ocr")
    img_emb = clip_models.encode_images(m.b32, arrays, batch_size=s.batch_size,
                                        device_images=dev_images)
    sims: list[float | None] = list(given_sim) if s.reuse_similarity else [None] * len(ids)
    need_text = [i for i, v in enumerate(sims) if v is None]
    recognized = s.recognize != "none"
    counted = [text_boxes(r, s, recognized) for r in ocr]
    boxed = [i for i, b in enumerate(counted) if b] if s.masked_clip_score else []
    encode = sorted(set(need_text) | set(boxed))  # each caption encoded once
    txt = clip_models.encode_texts(m.b32, [texts[i] for i in encode],
                                   batch_size=s.batch_size) if encode else None
    txt_row = {i: j for j, i in enumerate(encode)}
    if need_text:
        computed = clip_models.clip_scores(img_emb[need_text],
                                           txt[[txt_row[i] for i in need_text]])
        for i, v in zip(need_text, computed, strict=True):
            sims[i] = float(v)
    lap("b32")
    masked = masked_scores(m, arrays, counted, sims, boxed, txt, txt_row, s)
    lap("masked")
    aes: list[float | None] = list(given_aes) if s.reuse_aesthetic else [None] * len(ids)
    need_aes = [i for i, v in enumerate(aes) if v is None]
    if need_aes:
        l14, mlp = m.aesthetic_models(s)
        emb = clip_models.encode_images(
            l14, [arrays[i] for i in need_aes], batch_size=s.batch_size,
            device_images=None if dev_images is None else [dev_images[i] for i in need_aes])
        for i, v in zip(need_aes, aesthetic.score(mlp, emb), strict=True):
            aes[i] = float(v)
    lap("l14")
    text_done, aes_done = set(need_text), set(need_aes)
    rows = []
    for k, sid in enumerate(ids):
        r = ocr[k]
        text = OcrResult(counted[k], r.image_height, r.image_width)  # the rule's boxes
        rows.append({
            "sample_id": sid, "status": "ok", "error": None,
            "ocr_box_count": text.box_count, "ocr_text_area": float(text.text_area_fraction),
            "ocr_text": text.text,
            "ocr_boxes": [
                {"polygon": [[float(x), float(y)] for x, y in b.polygon], "text": b.text,
                 "confidence": float(b.confidence)} for b in r.boxes
            ],
            "has_text": text.box_count > 0,
            "clip_score": sims[k],
            "clip_score_source": "computed" if k in text_done else "metadata",
            "masked_clip_score": masked[k],
            "aesthetic_score": aes[k],
            "aesthetic_source": "computed" if k in aes_done else "metadata",
            # A float32 array: Arrow converts it without a Python float per element.
            "image_embedding": img_emb[k],
            "retryable": False, "error_detail": None,
        })
    lap("rows")
    return rows


def _on_device(arrays: list[np.ndarray], given: list | None, device) -> list:
    """Each array on `device` once: the GPU-decoded copy where there is one (taken over
    by this stream), the others uploaded together."""
    if given is None or all(t is None for t in given):
        from udfs import clip_models

        return clip_models.upload_images(arrays, device)
    from udfs import clip_models, gpu_decode

    gpu_decode.adopt(given)
    out = list(given)
    missing = [i for i, t in enumerate(out) if t is None or t.device != device]
    if missing:
        for i, t in zip(missing, clip_models.upload_images([arrays[i] for i in missing],
                                                           device), strict=True):
            out[i] = t
    return out


def masked_scores(m: Models, arrays: list[np.ndarray], boxes: list, sims: list[float | None],
                  boxed: list[int], txt: np.ndarray | None, txt_row: dict[int, int],
                  s: ScoreSettings) -> list[float | None]:
    """T-MARS scores: B/32 on each boxed image with its text boxes (`boxes[i]`, those
    the text rule counts) masked, against the caption embeddings already computed
    (`txt`, row `txt_row[i]` for image i); clip_score for images without text boxes;
    all None when `s.masked_clip_score` is off."""
    from udfs import clip_models

    if not s.masked_clip_score:
        return [None] * len(arrays)
    out = list(sims)
    if boxed:
        views = [mask_text(arrays[i], [b.polygon for b in boxes[i]], s.text_mask)
                 for i in boxed]
        emb = clip_models.encode_images(m.b32, views, batch_size=s.batch_size)
        scores = clip_models.clip_scores(emb, txt[[txt_row[i] for i in boxed]])
        for i, v in zip(boxed, scores, strict=True):
            out[i] = float(v)
    return out


@dataclass
class Decoded:
    """One part of an Arrow batch after decoding."""

    part: pd.DataFrame
    ok_idx: list[int]
    arrays: list[np.ndarray]
    errors: list[dict]
    views: list[np.ndarray | None] = field(default_factory=list)  # per array: OCR view
    # per array: its pixels on the GPU (decode_device: gpu), or None; empty when none is
    device_images: list = field(default_factory=list)


def decode_part(part: pd.DataFrame, s: ScoreSettings,
                pool: ThreadPoolExecutor | None = None, device=None) -> Decoded:
    """Decode a part's images (in `pool` when given: Pillow releases the GIL); with
    `decode_device: gpu` on a CUDA `device` (default: the task's), JPEGs on the GPU."""
    ids = part["sample_id"].tolist()
    gpu = gpu_decode_device(s, device)
    data = part["image"].tolist()
    view_data = part["ocr_image"].tolist() if "ocr_image" in part else [None] * len(ids)
    decoded = _decode_all(data, s, pool, gpu)
    # A view that will not decode leaves OCR to the image itself.
    views = [a for a, _, _ in _decode_all(view_data, s, pool, gpu, keep_device=False)]
    sizes = original_sizes(part) if s.remove_border else [None] * len(ids)
    ok_idx, arrays, errors, kept_views, on_device = [], [], [], [], []
    for k, (array, error, tensor) in enumerate(decoded):
        if error is None:
            ok_idx.append(k)
            cropped = remove_border(array, sizes[k])
            arrays.append(cropped)
            kept_views.append(views[k])
            on_device.append(_crop_like(tensor, array.shape, cropped.shape))
        else:
            errors.append(_error_row(ids[k], f"decode:{error}"))
    if all(t is None for t in on_device):
        on_device = []
    return Decoded(part, ok_idx, arrays, errors, kept_views, on_device)


def gpu_decode_device(s: ScoreSettings, device=None):
    """The CUDA device to decode JPEGs on, or None (decode_device cpu, or no CUDA: said
    once per worker)."""
    if s.decode_device != "gpu":
        return None
    if device is None:
        from udfs.device import select_device

        device = select_device(s.prefer_gpu)
    if getattr(device, "type", str(device)) != "cuda":
        from udfs.gpu_decode import warn_no_cuda

        warn_no_cuda()
        return None
    return device


def _decode_all(blobs: list, s: ScoreSettings, pool: ThreadPoolExecutor | None, gpu,
                keep_device: bool = True) -> list[tuple[np.ndarray | None, str | None, Any]]:
    """(RGB array, None, GPU tensor or None) or (None, decode error, None) per blob: on
    the GPU what nvjpeg takes when `gpu` is a device, the rest with udfs.decode. A None
    blob (no OCR view) is (None, "empty", None) without decoding."""
    out: list[tuple[np.ndarray | None, str | None, Any] | None] = [None] * len(blobs)
    if gpu is not None and any(b is not None for b in blobs):
        from udfs import gpu_decode

        tensors, arrays = gpu_decode.decode_jpegs(blobs, gpu, s.max_pixels)
        for i, (t, a) in enumerate(zip(tensors, arrays, strict=True)):
            if a is not None:
                out[i] = (a, None, t if keep_device else None)
    todo = [i for i, r in enumerate(out) if r is None and blobs[i] is not None]

    def one(data) -> tuple[np.ndarray | None, str | None, Any]:
        d = decode_image(data, max_pixels=s.max_pixels)
        return (np.asarray(d.image), None, None) if d.ok else (None, d.error, None)

    work = [blobs[i] for i in todo]
    results = list(pool.map(one, work)) if pool is not None else [one(b) for b in work]
    for i, r in zip(todo, results, strict=True):
        out[i] = r
    return [r if r is not None else (None, "empty", None) for r in out]


def _crop_like(tensor, before: tuple[int, ...], after: tuple[int, ...]):
    """`tensor` (HxWx3, the array before remove_border) cropped as remove_border cropped
    the array: centred, (h - ch) // 2 and (w - cw) // 2 off the top and left."""
    if tensor is None or tuple(before) == tuple(after):
        return tensor
    h, w = before[:2]
    ch, cw = after[:2]
    top, left = (h - ch) // 2, (w - cw) // 2
    return tensor[top:top + ch, left:left + cw]


def original_sizes(part: pd.DataFrame) -> list[tuple[int, int] | None]:
    """(width, height) before download's resize, where the images table recorded it."""
    if "original_width" not in part or "original_height" not in part:
        return [None] * len(part)
    out: list[tuple[int, int] | None] = []
    for w, h in zip(part["original_width"], part["original_height"], strict=True):
        ok = w is not None and h is not None and not pd.isna(w) and not pd.isna(h)
        out.append((int(w), int(h)) if ok else None)
    return out


def decode_threads(s: ScoreSettings, device_type: str) -> int:
    if s.decode_threads > 0:
        return s.decode_threads
    if device_type == "cuda":
        return min(GPU_DECODE_THREADS, os.cpu_count() or 1)
    return 0


def _parts(batches: Iterator[pd.DataFrame], size: int) -> Iterator[pd.DataFrame]:
    for batch in batches:
        for start in range(0, len(batch), size):
            yield batch.iloc[start:start + size]


def last_task_attempt(task_attempts: int) -> bool:
    """True in the task's last attempt (Spark fails the job if it fails too)."""
    from pyspark import TaskContext

    ctx = TaskContext.get()
    attempt = ctx.attemptNumber() if ctx is not None else 0
    return attempt + 1 >= max(1, task_attempts)


def score_batches(batches: Iterator[pd.DataFrame], s: ScoreSettings,
                  task_attempts: int = 1) -> Iterator[pd.DataFrame]:
    """mapInPandas body over (sample_id, image, text, similarity, aesthetic) rows.

    With decode threads (a GPU worker by default) part k+1 is decoded while part k is
    scored. `task_attempts` is Spark's spark.task.maxFailures for this job: a resource
    error that batch splitting cannot get past fails the task while Spark will retry it,
    and becomes retryable error rows in the last attempt.
    """
    from udfs.device import select_device

    device = select_device(s.prefer_gpu)
    threads = decode_threads(s, device.type)
    columns = list(SCORE_FIELDS)
    last = last_task_attempt(task_attempts)
    if threads <= 0:
        for part in _parts(batches, s.batch_size):
            yield pd.DataFrame(_score_part(part, s, last_attempt=last), columns=columns)
        return
    with ThreadPoolExecutor(threads) as pool, ThreadPoolExecutor(1) as ahead:
        pending = None
        for part in _parts(batches, s.batch_size):
            upcoming = ahead.submit(decode_part, part, s, pool, device)
            if pending is not None:
                yield pd.DataFrame(score_decoded(pending.result(), s, last_attempt=last),
                                   columns=columns)
            pending = upcoming
        if pending is not None:
            yield pd.DataFrame(score_decoded(pending.result(), s, last_attempt=last),
                               columns=columns)


def _score_part(part: pd.DataFrame, s: ScoreSettings,
                laps: dict[str, float] | None = None, last_attempt: bool = True) -> list[dict]:
    lap = Laps(laps)
    decoded = decode_part(part, s)
    lap("decode")
    return score_decoded(decoded, s, laps, last_attempt=last_attempt)


def score_with_retries(ids: list[int], arrays: list[np.ndarray], texts: list[str | None],
                       sims: list[float | None], aes: list[float | None], s: ScoreSettings,
                       laps: dict[str, float] | None = None, splits: int = 0,
                       views: list[np.ndarray | None] | None = None,
                       device_images: list | None = None) -> list[dict]:
    """score_images, isolating failures: a resource error halves the batch (at most
    MAX_BATCH_SPLITS times, then RetryableScoreError); any other error is looked for image
    by image, and the image that raises it gets a permanent error row (with the error's
    words; its traceback is logged once per kind)."""
    views = views if views is not None else [None] * len(ids)
    on_device = device_images if device_images else [None] * len(ids)
    try:
        return score_images(ids, arrays, texts, sims, aes, s, laps, views,
                            device_images or None)
    except Exception as exc:
        if is_resource_error(exc):
            _release_memory()
            if len(ids) == 1 or splits >= MAX_BATCH_SPLITS:
                raise RetryableScoreError(
                    f"{type(exc).__name__} on a batch of {len(ids)} image(s) after {splits} "
                    f"split(s): {str(exc).splitlines()[0][:200] if str(exc) else ''}"
                ) from exc
            halves = (slice(0, len(ids) // 2), slice(len(ids) // 2, len(ids)))
        elif len(ids) == 1:
            kind = f"score:{type(exc).__name__}"
            return [_error_row(ids[0], kind, detail=note(kind, exc))]
        else:
            halves = tuple(slice(k, k + 1) for k in range(len(ids)))
            splits = MAX_BATCH_SPLITS  # one image at a time already
        out: list[dict] = []
        for h in halves:
            out.extend(score_with_retries(ids[h], arrays[h], texts[h], sims[h], aes[h], s,
                                          laps, splits + 1 if splits < MAX_BATCH_SPLITS
                                          else splits, views[h], on_device[h]))
        return out


def score_decoded(d: Decoded, s: ScoreSettings, laps: dict[str, float] | None = None,
                  last_attempt: bool = True) -> list[dict]:
    rows: list[dict] = list(d.errors)
    if not d.ok_idx:
        return rows
    part, ok_idx, arrays = d.part, d.ok_idx, d.arrays
    ids = part["sample_id"].tolist()
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
        rows.extend(score_with_retries(pick[0], arrays, pick[1], given[0], given[1], s, laps,
                                       views=d.views or None,
                                       device_images=d.device_images or None))
    except RetryableScoreError as exc:
        if not last_attempt:
            raise  # the task fails; Spark runs it again (maybe on another device)
        reason = f"score:resource:{type(exc.__cause__).__name__}"
        rows.extend(_error_row(sid, reason, retryable=True, detail=describe(exc))
                    for sid in pick[0])
        return rows
    # Decode errors are the images' own; a model error on most images is not.
    guard_batch("score", (r["error"] if r["status"] == "error" and not
                          r["error"].startswith("decode:") else None for r in rows),
                (r.get("error_detail") for r in rows))
    return rows
