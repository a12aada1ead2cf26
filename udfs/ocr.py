"""Text spotting behind a small interface so the detector can be swapped by name.

The Parrot-captions pipeline needs two things per image: how much of it is covered by
text (detection only, cheap) and, for images that have text, what the text says
(detection + recognition). Both spotters here run rapidocr's bundled PP-OCR ONNX models,
so they work offline: `udfs.batched_ocr.BatchedOcrSpotter` (the default, alias `batched`)
batches images through the detector and crops through the recogniser; `RapidOcrSpotter`
(alias `rapidocr`) runs RapidOCR image by image. Other spotters (DeepSolo, docTR) are
named by import path (`package.module:factory`) and built once per Python worker.

The image-level text rule lives here too (`reads_text`): text read, not boxes found.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
from PIL import Image, ImageDraw

from udfs.worker_cache import clear, worker_cached

Point = tuple[float, float]

# The detector sees each image with its short side at least this (smaller ones are
# upscaled): chosen with benchmarks/ocr_real.py on real photographs, where 512 (with a
# 1024 px view) found 8 of 18 images with small text (a sign a person must zoom to read)
# and 1024 (with the 1280 px view) 12; generated images had suggested 512
# (benchmarks/ocr_threshold_sweep.py).
DEFAULT_LIMIT_SIDE_LEN = 1024
DEFAULT_LIMIT_TYPE = "min"
# The spotter returns candidates down to this detector score; the text rule (TextRule)
# decides which count. Word crops and signs in real photographs score 0.45-0.5
# (benchmarks/ocr_real.py), below the 0.6 that generated images suggested; at 0.4 the
# junk reads of candidates made one more text-free photograph "text".
DEFAULT_BOX_THRESH = 0.45
DEFAULT_DET_THRESH = 0.3
DEFAULT_UNCLIP_RATIO = 1.6
DEFAULT_MIN_BOX_AREA = 0.0
# Spotter-side guards, off by default. PP-OCRv6 det sometimes returns one box over most
# of a flat or smooth image; the text rule handles that box (a box over more than
# text_rule.max_box_fraction counts only when read surely). The edge test (a box needs this
# share of sharp steps) kept generated backdrops clean but dropped real text: on the real
# photographs at 0.03 (1024 px view, 512 px detector size), 38 of 47 text images were
# found instead of 43.
DEFAULT_MAX_BOX_FRACTION = 1.0
DEFAULT_MIN_EDGE_DENSITY = 0.0
# Grey-level step between neighbouring pixels that counts as an edge (above sensor noise).
EDGE_LEVEL = 40.0
DEFAULT_REC_MIN_CONFIDENCE = 0.5
# The score stage's text rule (TextRule, `score.text_rule.*`): chosen with benchmarks/ocr_real.py
# on real photographs (the earlier values came from generated images, section 3 of
# benchmarks/ocr_threshold_sweep.py). A box read as at least one letter or digit counts
# when the read is at least this sure ...
DEFAULT_TEXT_MIN_CONFIDENCE = 0.6
# ... a single character at least this sure (a circle reads as "O", a fence post as "1")
DEFAULT_TEXT_SINGLE_CHAR_CONFIDENCE = 0.9
# ... and the detector's score is at least this.
DEFAULT_TEXT_MIN_DET_SCORE = 0.5
# A read of two or more letters or digits at least this sure counts whatever the
# detector thought of the box and however much of the image it covers: a word that fills
# its frame (a word crop, a wordmark) is where the detector is least sure (0.45-0.5).
DEFAULT_TEXT_SURE_READ_CONFIDENCE = 0.85
# Text in any script: the bundled recogniser reads Chinese and Latin only, so a Thai,
# Korean or Cyrillic sign is detected and read as nothing. Such a box counts when the
# detector scored it at least this and it is shaped like a line (LINE_ASPECT).
DEFAULT_TEXT_UNREAD_MIN_DET_SCORE = 0.8
# Boxes over more than this share of the image count only as sure reads: the detector
# returns one box over most of a flat or smooth image (skies, product shots).
DEFAULT_TEXT_MAX_BOX_FRACTION = 0.4
LINE_ASPECT = 2.0  # a line of text is at least this much longer than it is tall


@dataclass(frozen=True)
class OcrBox:
    """One text region; `confidence` is the recogniser's score when text was read,
    otherwise the detector's score. `text` is None when not read or below the bar.
    `det_score` is the detector's score (None when the spotter does not give one)."""

    polygon: list[Point]
    text: str | None
    confidence: float
    det_score: float | None = None


@dataclass
class OcrResult:
    boxes: list[OcrBox]
    image_height: int
    image_width: int
    text_area_fraction: float = field(init=False)

    def __post_init__(self) -> None:
        self.text_area_fraction = union_area_fraction(
            [b.polygon for b in self.boxes], self.image_height, self.image_width
        )

    @property
    def box_count(self) -> int:
        return len(self.boxes)

    @property
    def text(self) -> str:
        """Recognised text in reading order; "" in detection-only mode."""
        return " ".join(b.text for b in self.boxes if b.text)


@dataclass(frozen=True)
class TextRule:
    """Which boxes make an image one "with text" (the paper's non-empty OCR result).

    Its fields are the `score.text_rule.*` settings; see the DEFAULT_TEXT_* comments.
    """

    min_confidence: float = DEFAULT_TEXT_MIN_CONFIDENCE
    single_char_confidence: float = DEFAULT_TEXT_SINGLE_CHAR_CONFIDENCE
    min_det_score: float = DEFAULT_TEXT_MIN_DET_SCORE
    sure_read_confidence: float = DEFAULT_TEXT_SURE_READ_CONFIDENCE
    unread_min_det_score: float = DEFAULT_TEXT_UNREAD_MIN_DET_SCORE
    max_box_fraction: float = DEFAULT_TEXT_MAX_BOX_FRACTION

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"text_rule.{name} must be in [0, 1], got {value!r}")

    def box_counts(self, box: OcrBox, height: int, width: int, recognized: bool = True
                   ) -> bool:
        """Whether this box is text. Without recognition (`score.recognize: none`) a box
        counts on the detector's score and size alone."""
        det = 1.0 if box.det_score is None else box.det_score
        big = polygon_area(box.polygon) > self.max_box_fraction * max(1, height * width)
        if not recognized:
            return det >= self.min_det_score and not big
        chars = sum(ch.isalnum() for ch in box.text or "")
        if chars >= 2 and box.confidence >= self.sure_read_confidence:
            return True
        if big:
            return False
        if (chars and det >= self.min_det_score and box.confidence >= self.min_confidence
                and (chars >= 2 or box.confidence >= self.single_char_confidence)):
            return True
        return det >= self.unread_min_det_score and line_shaped(box.polygon)

    def has_text(self, result: OcrResult, recognized: bool = True) -> bool:
        return any(self.box_counts(b, result.image_height, result.image_width, recognized)
                   for b in result.boxes)


def box_reads_text(box: OcrBox, min_confidence: float = DEFAULT_TEXT_MIN_CONFIDENCE) -> bool:
    """A box read as at least one letter or digit (any script) with confidence >=
    `min_confidence`; empty or punctuation-only reads do not count."""
    return (bool(box.text) and box.confidence >= min_confidence
            and any(ch.isalnum() for ch in box.text))


def reads_text(result: OcrResult, min_confidence: float = DEFAULT_TEXT_MIN_CONFIDENCE) -> bool:
    """Whether any box reads text (box_reads_text): the rule before TextRule, kept for
    the benchmarks that compare against it."""
    return any(box_reads_text(b, min_confidence) for b in result.boxes)


def line_shaped(polygon: Sequence[Point]) -> bool:
    """Whether a (rotated) box is at least LINE_ASPECT times longer than it is tall."""
    if len(polygon) < 4:
        return False
    pts = np.asarray(polygon[:4], dtype=np.float64)
    a = np.linalg.norm(pts[1] - pts[0])
    b = np.linalg.norm(pts[2] - pts[1])
    short = min(a, b)
    return short > 0 and max(a, b) >= LINE_ASPECT * short


def polygon_area(polygon: Sequence[Point]) -> float:
    """Shoelace area, for callers that want a per-box size."""
    if len(polygon) < 3:
        return 0.0
    pts = np.asarray(polygon, dtype=np.float64)
    x, y = pts[:, 0], pts[:, 1]
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2.0)


def union_area_fraction(polygons: Sequence[Sequence[Point]], height: int, width: int) -> float:
    """Fraction of the image covered by the union of the polygons.

    Rasterised rather than summed so overlapping boxes are not counted twice.
    """
    if height <= 0 or width <= 0 or not polygons:
        return 0.0
    mask = Image.new("1", (width, height), 0)
    draw = ImageDraw.Draw(mask)
    for poly in polygons:
        if len(poly) >= 3:
            draw.polygon([(float(x), float(y)) for x, y in poly], fill=1, outline=1)
    covered = int(np.count_nonzero(np.asarray(mask)))
    return min(1.0, covered / float(height * width))


@runtime_checkable
class TextSpotter(Protocol):
    def spot(self, images: list[np.ndarray], recognize: bool = False) -> list[OcrResult]:
        """One result per RGB uint8 HxWx3 image, in input order."""
        ...


def as_rgb_uint8(image: np.ndarray) -> np.ndarray:
    """Accept grey, RGB or RGBA arrays; spotters only ever see HxWx3 uint8."""
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        arr = np.clip(arr, 0, 255).astype(np.uint8)
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    elif arr.ndim == 3 and arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    elif arr.ndim == 3 and arr.shape[2] == 4:
        arr = arr[:, :, :3]
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 RGB image, got shape {arr.shape}")
    return arr


class RapidOcrSpotter:
    """rapidocr (PP-OCR det + rec, ONNX) with one engine per instance.

    `det_limit_type="min"` upscales images whose short side is below
    `det_limit_side_len` (small text in small web images needs it); "max" only shrinks.
    Boxes larger than `max_box_fraction` of the image or with fewer than
    `min_edge_density` edge pixels are dropped: the bundled detector hallucinates them
    on flat backdrops. Set both guards off (1.0, 0.0) to see raw detector output.
    With `recognize=True` rapidocr drops boxes whose text reads empty, so `box_count`
    can be lower than in detection-only mode; boxes read below `rec_min_confidence`
    are kept with `text=None`.
    """

    reads_only_detected = True  # recognize=True reads detected boxes only: one pass

    def __init__(
        self,
        det_limit_side_len: int = DEFAULT_LIMIT_SIDE_LEN,
        box_thresh: float = DEFAULT_BOX_THRESH,
        *,
        det_limit_type: str = DEFAULT_LIMIT_TYPE,
        det_thresh: float = DEFAULT_DET_THRESH,
        unclip_ratio: float = DEFAULT_UNCLIP_RATIO,
        min_box_area: float = DEFAULT_MIN_BOX_AREA,
        max_box_fraction: float = DEFAULT_MAX_BOX_FRACTION,
        min_edge_density: float = DEFAULT_MIN_EDGE_DENSITY,
        rec_min_confidence: float = DEFAULT_REC_MIN_CONFIDENCE,
        use_angle_cls: bool = False,
        use_gpu: bool = False,
        device_id: int | None = None,
        num_threads: int | None = None,
    ) -> None:
        from rapidocr import RapidOCR

        from udfs.device import ort_cuda_available, select_device

        if det_limit_type not in ("min", "max"):
            raise ValueError(f"det_limit_type must be 'min' or 'max', got {det_limit_type!r}")
        self.min_box_area = float(min_box_area)
        self.max_box_fraction = float(max_box_fraction)
        self.min_edge_density = float(min_edge_density)
        self.rec_min_confidence = float(rec_min_confidence)
        self.use_angle_cls = use_angle_cls
        # Only ask for CUDA when this onnxruntime build has it; rapidocr would fall back
        # anyway, but with a page of warnings per worker.
        self.on_gpu = bool(use_gpu and ort_cuda_available())
        if self.on_gpu and device_id is None:
            device_id = select_device().index or 0  # the Spark task's GPU
        params: dict[str, Any] = {
            "Global.log_level": "error",
            "Global.use_cls": use_angle_cls,
            # Rec-score filtering is done here so low-confidence boxes still count as text.
            "Global.text_score": 0.0,
            "Det.limit_side_len": int(det_limit_side_len),
            "Det.limit_type": det_limit_type,
            "Det.box_thresh": float(box_thresh),
            "Det.thresh": float(det_thresh),
            "Det.unclip_ratio": float(unclip_ratio),
            "EngineConfig.onnxruntime.use_cuda": self.on_gpu,
            "EngineConfig.onnxruntime.cuda_ep_cfg.device_id": int(device_id or 0),
        }
        if num_threads:
            params["EngineConfig.onnxruntime.intra_op_num_threads"] = int(num_threads)
        self._engine = RapidOCR(params=params)
        # rapidocr stores per-call flags on the engine, so calls must not interleave.
        self._lock = threading.Lock()

    def spot(self, images: list[np.ndarray], recognize: bool = False) -> list[OcrResult]:
        return [self._spot_one(as_rgb_uint8(img), recognize) for img in images]

    def _spot_one(self, rgb: np.ndarray, recognize: bool) -> OcrResult:
        height, width = rgb.shape[:2]
        if height == 0 or width == 0:
            return OcrResult([], height, width)
        bgr = np.ascontiguousarray(rgb[:, :, ::-1])  # rapidocr treats arrays as BGR
        with self._lock:
            out = self._engine(
                bgr, use_det=True, use_cls=self.use_angle_cls and recognize, use_rec=recognize
            )
        raw_boxes = getattr(out, "boxes", None)
        if raw_boxes is None or len(raw_boxes) == 0:
            return OcrResult([], height, width)
        raw_scores = getattr(out, "scores", None)
        scores = [1.0] * len(raw_boxes) if raw_scores is None else list(raw_scores)
        texts = getattr(out, "txts", None) if recognize else None
        grey = grey_levels(rgb) if self.min_edge_density > 0 else None
        boxes = []
        for i, raw in enumerate(raw_boxes):
            polygon = [(float(x), float(y)) for x, y in np.asarray(raw).reshape(-1, 2)]
            if not self._plausible(polygon, grey, height, width):
                continue
            confidence = float(scores[i])
            text = None
            if texts is not None and confidence >= self.rec_min_confidence:
                text = str(texts[i]).strip() or None
            boxes.append(OcrBox(polygon, text, confidence, float(scores[i])))
        return OcrResult(boxes, height, width)

    def _plausible(
        self, polygon: list[Point], grey: np.ndarray | None, height: int, width: int
    ) -> bool:
        area = polygon_area(polygon)
        if area < self.min_box_area or area > self.max_box_fraction * height * width:
            return False
        return grey is None or edge_density(grey, polygon) >= self.min_edge_density


def grey_levels(rgb: np.ndarray) -> np.ndarray:
    return rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)


def edge_density(grey: np.ndarray, polygon: Sequence[Point]) -> float:
    """Share of pixels in the polygon's bounding rectangle that sit on a sharp step."""
    pts = np.asarray(polygon, dtype=np.float64)
    h, w = grey.shape[:2]
    x0, y0 = max(0, int(pts[:, 0].min())), max(0, int(pts[:, 1].min()))
    x1, y1 = min(w, int(np.ceil(pts[:, 0].max())) + 1), min(h, int(np.ceil(pts[:, 1].max())) + 1)
    crop = grey[y0:y1, x0:x1]
    if crop.shape[0] < 2 or crop.shape[1] < 2:
        return 0.0
    gx = np.abs(np.diff(crop, axis=1))[:-1, :]
    gy = np.abs(np.diff(crop, axis=0))[:, :-1]
    return float(np.mean(np.maximum(gx, gy) > EDGE_LEVEL))


SpotterFactory = Callable[..., TextSpotter]

# Spotters are named by import path so that a third-party spotter reaches executors
# through the normal Python path (an installed package or `spark.sparkContext.addPyFile`):
# a registry filled on the driver would never exist in the executors' Python workers.
RAPIDOCR_SPOTTER = "udfs.ocr:rapidocr_spotter"
BATCHED_SPOTTER = "udfs.batched_ocr:batched_spotter"
# The batched spotter runs the same PP-OCR models with the same post-processing and
# agrees with per-image RapidOCR (benchmarks/ocr_threshold_sweep.py, section 2); it is
# cheaper on CPU and the one that batches on a GPU.
DEFAULT_SPOTTER = BATCHED_SPOTTER
SPOTTER_ALIASES = {"rapidocr": RAPIDOCR_SPOTTER, "batched": BATCHED_SPOTTER}


def rapidocr_spotter(device: Any = None, cpu_threads: int = 0, **options: Any) -> TextSpotter:
    """Per-image RapidOCR on the task's device with the worker's thread budget."""
    on_gpu = getattr(device, "type", None) == "cuda"
    options.setdefault("use_gpu", on_gpu)
    if on_gpu:
        options.setdefault("device_id", getattr(device, "index", None) or 0)
    if cpu_threads > 0:
        options.setdefault("num_threads", cpu_threads)
    return RapidOcrSpotter(**options)


def check_spotter_path(path: str) -> str:
    """Validate the `package.module:factory` form without importing it (driver side)."""
    path = SPOTTER_ALIASES.get(path, path)
    module, sep, attr = path.partition(":")
    if not sep or not module.strip() or not attr.strip() or " " in path:
        raise ValueError(
            f"text spotter must be an import path 'package.module:factory', got {path!r}"
        )
    return path


def resolve_spotter(path: str) -> SpotterFactory:
    """Import the factory named by `package.module:factory`."""
    import importlib

    module_name, _, attr = check_spotter_path(path).partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"text spotter {path!r}: cannot import {module_name!r} ({exc})") from exc
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ValueError(f"text spotter {path!r}: {module_name} has no callable {attr!r}")
    return factory


def make_spotter(path: str = DEFAULT_SPOTTER, options: Mapping[str, Any] | None = None, *,
                 device: Any = None, cpu_threads: int = 0) -> TextSpotter:
    """The worker-wide spotter for (path, options, device); engines load once per worker.

    The factory is called as `factory(device=..., cpu_threads=..., **options)`.
    """
    opts = dict(options or {})
    key = (check_spotter_path(path), opts, str(device), cpu_threads)
    return worker_cached("spotter", key, lambda: resolve_spotter(path)(
        device=device, cpu_threads=cpu_threads, **opts))


def clear_spotter_cache() -> None:
    clear("spotter")
