"""Batched PP-OCR text spotting: one detector call per batch of images, and recognition
of the detected crops of every image in one go.

`udfs.ocr.RapidOcrSpotter` runs RapidOCR image by image: on a GPU that is a stream of
batch-1 convolutions, on a CPU a stream of small calls with per-call overheads. This
spotter keeps RapidOCR's models and its own pre/post-processing code (size rules,
`DBPostProcess`, box sorting and mapping, crop warping, `TextRecognizer` with its CTC
decoder) and changes only how images reach the networks:

1. Every image goes through rapidocr's size rules (`max_side_len`/`min_side_len`,
   vertical padding of banners, then `limit_side_len`/`limit_type` to a multiple of 32).
2. Images are grouped by that network size rounded up to `bucket` px and letterboxed
   (top-left; the padding is 0 after normalisation, the network's own zero padding) into
   one (N, 3, H, W) batch: one ONNX Runtime call per `det_batch_size` images. Each
   image's probability map is cropped back to its own size before the DB post-process,
   so boxes are in the same coordinates as in a per-image run. A map that never reaches
   `box_thresh` cannot hold a box (the DB box score is a mean of the map), so that image
   skips the post-process.
3. deparrot's guards drop implausible boxes (`max_box_fraction`, `min_edge_density`, as
   in `RapidOcrSpotter`).
4. With `recognize=True` the crops of all images with boxes go to rapidocr's
   recogniser together (`rec_batch_size` crops per call), grouped by their own padded
   width, so a crop's text never depends on the other crops of its call (or on how rows
   were chunked); detection letterboxes each image to a size set by the image alone.
   `rec_padding: per_call` restores rapidocr's padding to the widest crop of each call
   (benchmarks/bench_score.py compares the two).
   Unlike RapidOCR's pipeline, boxes read as nothing are kept, with `text=None` and the
   recogniser's confidence: the score stage's text rule decides what counts as text.

Two independent knobs say where the work runs:

- `engine` is the *pre-processing* (resize, letterbox, normalise): "torch" does it on the
  spotter's device in torch, "numpy" with cv2/numpy on the host; "auto" = torch on CUDA.
- `runtime` is what runs the *networks*: "onnxruntime" (the ONNX files as they are) or
  "torch" (the same files converted in memory by `udfs.ppocr_torch`, identical outputs
  to ~1e-6); "auto" = torch when the spotter's device is a CUDA device torch can use,
  onnxruntime otherwise (on CPU onnxruntime's fused kernels are several times faster).
  With torch on a GPU, CLIP and OCR share one runtime, and onnxruntime-gpu is not needed.

On CUDA, resizing, letterboxing and normalisation run in torch on the GPU, the batch
reaches the detector without a host round trip (the torch module, or ONNX Runtime I/O
binding with onnxruntime-gpu; fixed batch shapes so cuDNN's algorithm search runs once
per shape), and only the probability maps of images with a candidate box come back,
through pinned memory; with the torch runtime the recogniser's per-step argmax and max
are taken on the device too, so only (crops x steps) numbers come back. The same torch
path runs on CPU with `engine="torch"` (tests use it to exercise that code without a
GPU).

Use it with `score.spotter: udfs.batched_ocr:batched_spotter` (alias `batched`).
"""

from __future__ import annotations

import logging
import math
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from udfs.failures import is_resource_error
from udfs.ocr import (
    DEFAULT_BOX_THRESH,
    DEFAULT_DET_THRESH,
    DEFAULT_LIMIT_SIDE_LEN,
    DEFAULT_LIMIT_TYPE,
    DEFAULT_MAX_BOX_FRACTION,
    DEFAULT_MIN_BOX_AREA,
    DEFAULT_MIN_EDGE_DENSITY,
    DEFAULT_REC_MIN_CONFIDENCE,
    DEFAULT_UNCLIP_RATIO,
    OcrBox,
    OcrResult,
    as_rgb_uint8,
    edge_density,
    grey_levels,
    polygon_area,
)

log = logging.getLogger(__name__)

# Images per detector call. On CPU the batch only amortises per-call overheads; on a GPU
# it is what fills the device (a 512 x 512 PP-OCR det input is ~1 MB of float32).
DEFAULT_DET_BATCH_SIZE = 8
# Crops per recogniser call (rapidocr's own default is 6, tuned for one image at a time).
DEFAULT_REC_BATCH_SIZE = 32
# Letterbox granularity: network sizes are rounded up to a multiple of this many pixels,
# so mixed-size images share batches. 0 = exact sizes only (no padding at all).
DEFAULT_BUCKET = 128
# What runs the networks (`runtime`); "auto" = torch on CUDA, onnxruntime on CPU.
RUNTIMES = ("auto", "onnxruntime", "torch")
_STRIDE = 32  # the DB network's input sizes are multiples of 32 (rapidocr's rule)
# Recognition input widths: a crop's aspect ratio rounded up to this (x 48 px = 24 px).
REC_RATIO_STEP = 0.5
# The second look (see `_look`): the whole image with a margin, at this long side. A DB
# detector finds a text line from the background around it, so a word that fills the
# frame (a word crop, a wordmark, a banner) is invisible to the first look; the margin
# gives it that background, and the small size shows large text at a scale the network
# knows. Chosen with benchmarks/ocr_real.py.
DEFAULT_LOOK_SIDE = 640
DEFAULT_LOOK_MARGIN = 0.25  # margin on each side, as a share of the image's short side
DEFAULT_LOOK_MAX_RATIO = 3.0  # the padded look is padded further to at most this aspect


@dataclass
class _Plan:
    """One image on its way through the detector."""

    index: int  # position in the caller's list
    rgb: np.ndarray  # the caller's image, HxWx3 uint8 RGB
    work: np.ndarray  # after rapidocr's bounds resize and vertical padding (RGB)
    op_record: dict[str, Any]  # rapidocr's record of those steps, to map boxes back
    det_h: int  # network input size
    det_w: int
    own: bool = True  # the caller's image (False: a second look made here)

    @property
    def untouched(self) -> bool:
        """The caller's image as it came (so its device copy can be used as it is)."""
        return self.own and self.work is self.rgb


class _AttrDict(dict):
    """The mapping rapidocr's TextRecognizer reads (cfg.key and cfg["key"])."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError as exc:
            raise AttributeError(name) from exc


def _rapidocr_config(params: dict[str, Any]):
    from rapidocr.main import DEFAULT_CFG_PATH
    from rapidocr.utils.log import logger
    from rapidocr.utils.parse_parameters import ParseParams

    logger.setLevel("ERROR")
    return ParseParams.update_batch(ParseParams.load(DEFAULT_CFG_PATH), params)


def _model_path(task_cfg: Any, override: str | None) -> Path:
    """The bundled model rapidocr itself would load for this task (offline)."""
    if override:
        return Path(override)
    import rapidocr
    from rapidocr.inference_engine.base import FileInfo, InferSession

    info = InferSession.get_model_url(FileInfo(
        engine_type=task_cfg.engine_type, ocr_version=task_cfg.ocr_version,
        task_type=task_cfg.task_type, lang_type=task_cfg.lang_type,
        model_type=task_cfg.model_type))
    path = Path(rapidocr.__file__).parent / "models" / Path(info["model_dir"]).name
    if not path.is_file():
        raise FileNotFoundError(f"rapidocr model not found: {path}")
    return path


def det_size(h: int, w: int, limit_side_len: int, limit_type: str) -> tuple[int, int]:
    """rapidocr's DetPreProcess.resize rule: the (height, width) the detector sees."""
    if limit_type == "max":
        ratio = limit_side_len / max(h, w) if max(h, w) > limit_side_len else 1.0
    else:
        ratio = limit_side_len / min(h, w) if min(h, w) < limit_side_len else 1.0
    rh = int(round(int(h * ratio) / _STRIDE) * _STRIDE)
    rw = int(round(int(w * ratio) / _STRIDE) * _STRIDE)
    return max(rh, _STRIDE), max(rw, _STRIDE)


def _bucket(size: int, step: int) -> int:
    return size if step <= 0 else -(-size // step) * step


class BatchedOcrSpotter:
    """PP-OCR det + rec on batches; see the module docstring.

    Options mirror `RapidOcrSpotter` (same defaults) plus the batching knobs.
    `engine` (pre-processing): "auto" (torch on CUDA, numpy/cv2 on CPU), "numpy" or
    "torch". `runtime` (the networks): "auto" (torch on CUDA, onnxruntime on CPU),
    "onnxruntime" or "torch"; `self.runtime` and `self.engine` hold the resolved choices.
    `seconds` accumulates wall time per phase (det, det_post, rec) for benchmarks.
    """

    reads_only_detected = True  # recognition only ever runs on detected boxes
    accepts_device_images = True  # spot(..., device_images=[uint8 HxWx3 tensors])

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
        det_batch_size: int = DEFAULT_DET_BATCH_SIZE,
        rec_batch_size: int = DEFAULT_REC_BATCH_SIZE,
        rec_padding: str = "per_crop",
        bucket: int = DEFAULT_BUCKET,
        engine: str = "auto",
        runtime: str = "auto",
        device: Any = None,
        num_threads: int = 0,
        det_model_path: str | None = None,
        rec_model_path: str | None = None,
        look_side: int = DEFAULT_LOOK_SIDE,
        look_margin: float = DEFAULT_LOOK_MARGIN,
        look_max_ratio: float = DEFAULT_LOOK_MAX_RATIO,
    ) -> None:
        from rapidocr.ch_ppocr_det.utils import DBPostProcess

        from udfs.device import ort_cuda_available

        if det_limit_type not in ("min", "max"):
            raise ValueError(f"det_limit_type must be 'min' or 'max', got {det_limit_type!r}")
        if engine not in ("auto", "numpy", "torch"):
            raise ValueError(f"engine must be auto, numpy or torch, got {engine!r}")
        if runtime not in RUNTIMES:
            raise ValueError(f"runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
        if rec_padding not in ("per_crop", "per_call"):
            raise ValueError(f"rec_padding must be per_crop or per_call, got {rec_padding!r}")
        self.rec_padding = rec_padding
        if det_batch_size < 1 or rec_batch_size < 1:
            raise ValueError("det_batch_size and rec_batch_size must be >= 1")
        self.limit_side_len = int(det_limit_side_len)
        self.limit_type = det_limit_type
        self.box_thresh = float(box_thresh)
        self.min_box_area = float(min_box_area)
        self.max_box_fraction = float(max_box_fraction)
        self.min_edge_density = float(min_edge_density)
        self.rec_min_confidence = float(rec_min_confidence)
        self.det_batch_size = int(det_batch_size)
        self.rec_batch_size = int(rec_batch_size)
        self.bucket = int(bucket)
        if look_side < 0 or look_margin < 0 or look_max_ratio < 1:
            raise ValueError("look_side and look_margin must be >= 0, look_max_ratio >= 1")
        self.look_side = int(look_side)
        self.look_margin = float(look_margin)
        self.look_max_ratio = float(look_max_ratio)
        self.seconds: dict[str, float] = defaultdict(float)

        cuda_index = _cuda_index(device)
        torch_cuda = cuda_index is not None and _torch_cuda_available()
        if runtime == "auto":
            runtime = "torch" if torch_cuda else "onnxruntime"
        self.runtime = runtime
        # On the GPU when the chosen runtime can use it there.
        self.on_gpu = cuda_index is not None and (
            torch_cuda if runtime == "torch" else ort_cuda_available())
        self.engine = ("torch" if self.on_gpu else "numpy") if engine == "auto" else engine
        self.cfg = _rapidocr_config({
            "Global.log_level": "error",
            "Det.limit_side_len": self.limit_side_len,
            "Det.limit_type": det_limit_type,
            "Rec.rec_batch_num": int(rec_batch_size),
        })
        det_path = _model_path(self.cfg.Det, det_model_path)
        rec_path = _model_path(self.cfg.Rec, rec_model_path)
        self._det: Any = None  # onnxruntime sessions (runtime onnxruntime)
        self._rec_session: Any = None
        self._det_net: Any = None  # udfs.ppocr_torch modules (runtime torch)
        self._rec_net: Any = None
        self._torch_device = None
        if self.engine == "torch" or runtime == "torch":
            import torch

            self._torch_device = (torch.device("cuda", cuda_index) if self.on_gpu
                                  else torch.device("cpu"))
        if runtime == "torch":
            from udfs.ppocr_torch import load_torch_ppocr

            # `num_threads` is onnxruntime's: torch's CPU threads are process-wide (the
            # score stage sets them from cpu_threads).
            self._det_net = load_torch_ppocr(det_path, self._torch_device)
            self._rec_net = load_torch_ppocr(rec_path, self._torch_device)
        else:
            providers = _providers(cuda_index if self.on_gpu else None)
            options = _session_options(num_threads)
            import onnxruntime as ort

            self._det = ort.InferenceSession(str(det_path), options, providers=providers)
            self._det_in = self._det.get_inputs()[0].name
            self._det_out = self._det.get_outputs()[0].name
            self._rec_session = ort.InferenceSession(str(rec_path), options,
                                                     providers=providers)
        self._db = DBPostProcess(thresh=float(det_thresh), box_thresh=self.box_thresh,
                                 max_candidates=int(self.cfg.Det.max_candidates),
                                 unclip_ratio=float(unclip_ratio),
                                 score_mode=str(self.cfg.Det.score_mode),
                                 use_dilation=bool(self.cfg.Det.use_dilation))
        self._rec = None  # rapidocr's TextRecognizer, built on first use

    # -- public --------------------------------------------------------------------

    def spot(self, images: list[np.ndarray], recognize: bool = False,
             device_images: Sequence[Any] | None = None) -> list[OcrResult]:
        """One result per RGB image, in input order.

        `device_images`: the same images as uint8 HxWx3 torch tensors already on this
        spotter's GPU (the score stage uploads each image once for CLIP and OCR); used
        by the torch engine instead of uploading again.
        """
        rgbs = [as_rgb_uint8(img) for img in images]
        results: list[OcrResult | None] = [None] * len(rgbs)
        plans, looks = [], []
        for i, rgb in enumerate(rgbs):
            if rgb.shape[0] == 0 or rgb.shape[1] == 0:
                results[i] = OcrResult([], rgb.shape[0], rgb.shape[1])
            else:
                plans.append(self._plan(i, rgb))
                if self.look_side > 0:
                    looks.append(self._look(len(rgbs) + i, rgb))
        boxes = self._detect(plans + [plan for plan, _ in looks], device_images)
        for look, (scale, left, top) in looks:
            second = boxes.pop(look.index, [])
            i = look.index - len(rgbs)
            if second:
                h, w = rgbs[i].shape[:2]
                cache: list = [None]

                def keep(polygon, rgb=rgbs[i], h=h, w=w, cache=cache) -> bool:
                    # No area cap: here a word may fill its whole image (the margin
                    # is what let the detector see it); flat backdrops still fail
                    # the edge test.
                    return self._plausible(polygon, rgb, h, w, cache, max_fraction=1.0)

                merged = _merge(boxes.get(i, []), second, scale, left, top, (h, w), keep)
                if merged:
                    boxes[i] = merged
        reads = self._recognize(plans, boxes) if recognize else {}
        for p in plans:
            found = boxes.get(p.index, [])
            out = []
            for k, (polygon, det_score) in enumerate(found):
                text, confidence = None, det_score
                if recognize:
                    txt, confidence = reads[(p.index, k)]
                    if confidence >= self.rec_min_confidence:
                        text = txt.strip() or None
                out.append(OcrBox(polygon, text, float(confidence), float(det_score)))
            results[p.index] = OcrResult(out, p.rgb.shape[0], p.rgb.shape[1])
        return results  # type: ignore[return-value]

    def _look(self, index: int, rgb: np.ndarray) -> tuple[_Plan, tuple[float, float, float]]:
        """The second look at an image: padded with its own border colour by
        `look_margin` of its short side (and to at most `look_max_ratio`), then scaled
        so its long side is `look_side`. Returns its plan and (scale, left, top) to map
        its boxes back."""
        import cv2

        h, w = rgb.shape[:2]
        margin = self.look_margin * min(h, w)
        H, W = h + 2 * margin, w + 2 * margin
        H, W = max(H, W / self.look_max_ratio), max(W, H / self.look_max_ratio)
        H, W = int(round(H)), int(round(W))
        edge = np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]])
        canvas = np.empty((H, W, 3), np.uint8)
        canvas[:] = np.median(edge, axis=0).astype(np.uint8)
        top, left = (H - h) // 2, (W - w) // 2
        canvas[top:top + h, left:left + w] = rgb
        scale = self.look_side / max(H, W)
        size = (max(1, round(W * scale)), max(1, round(H * scale)))
        canvas = cv2.resize(canvas, size, interpolation=cv2.INTER_AREA if scale < 1
                            else cv2.INTER_LINEAR)
        plan = self._plan(index, canvas, limit=(self.look_side, "max"))
        plan.own = False
        return plan, (scale, float(left), float(top))

    # -- detection -----------------------------------------------------------------

    def _plan(self, index: int, rgb: np.ndarray,
              limit: tuple[int, str] | None = None) -> _Plan:
        from rapidocr.utils.process_img import apply_vertical_padding, resize_image_within_bounds

        g = self.cfg.Global
        work, ratio_h, ratio_w = resize_image_within_bounds(rgb, g.min_side_len, g.max_side_len)
        record: dict[str, Any] = {"preprocess": {"ratio_h": ratio_h, "ratio_w": ratio_w}}
        if g.use_vertical_padding:
            work, record = apply_vertical_padding(work, record, g.width_height_ratio,
                                                  g.min_height)
        h, w = work.shape[:2]
        side, kind = limit or (self.limit_side_len, self.limit_type)
        det_h, det_w = det_size(h, w, side, kind)
        return _Plan(index, rgb, work, record, det_h, det_w)

    def _groups(self, plans: list[_Plan]) -> list[tuple[int, int, list[_Plan]]]:
        """Plans grouped by letterbox size, cut into detector batches."""
        by_size: dict[tuple[int, int], list[_Plan]] = defaultdict(list)
        for p in plans:
            by_size[(_bucket(p.det_h, self.bucket), _bucket(p.det_w, self.bucket))].append(p)
        out = []
        for (hb, wb), members in sorted(by_size.items()):
            for start in range(0, len(members), self.det_batch_size):
                out.append((hb, wb, members[start:start + self.det_batch_size]))
        return out

    def _detect(self, plans: list[_Plan], device_images: Sequence[Any] | None
                ) -> dict[int, list[tuple[list[tuple[float, float]], float]]]:
        found: dict[int, list] = {}
        for hb, wb, group in self._groups(plans):
            t0 = time.perf_counter()
            maps = None
            if self.engine == "torch":
                try:
                    maps = self._det_torch(hb, wb, group, device_images)
                except Exception as exc:  # e.g. an onnxruntime build without I/O binding
                    if is_resource_error(exc):
                        raise  # out of memory: the caller halves the batch (udfs.failures)
                    log.warning("batched OCR: the torch/I/O-binding detector path failed "
                                "(%s: %s); using the numpy path from now on",
                                type(exc).__name__, exc)
                    self.engine = "numpy"
            if maps is None:
                maps = self._det_numpy(hb, wb, group)
            t1 = time.perf_counter()
            for p, prob in zip(group, maps, strict=True):
                boxes = self._post(p, prob) if prob is not None else []
                if boxes:
                    found[p.index] = boxes
            self.seconds["det"] += t1 - t0
            self.seconds["det_post"] += time.perf_counter() - t1
        return found

    def _det_numpy(self, hb: int, wb: int, group: list[_Plan]) -> list[np.ndarray | None]:
        import cv2

        batch = np.zeros((len(group), 3, hb, wb), np.float32)
        for k, p in enumerate(group):
            resized = cv2.resize(p.work, (p.det_w, p.det_h))  # rapidocr: INTER_LINEAR
            x = resized.astype(np.float32)
            x *= 2.0 / 255.0  # (x / 255 - 0.5) / 0.5
            x -= 1.0
            batch[k, :, :p.det_h, :p.det_w] = x[:, :, ::-1].transpose(2, 0, 1)  # BGR planes
        if self._det_net is not None:
            pred = _net_output(self._det_net, batch, self._torch_device).cpu().numpy()
        else:
            pred = self._det.run([self._det_out], {self._det_in: batch})[0]
        maps: list[np.ndarray | None] = []
        for k, p in enumerate(group):
            prob = pred[k, 0, :p.det_h, :p.det_w]
            maps.append(prob if prob.max() >= self.box_thresh else None)
        return maps

    def _det_torch(self, hb: int, wb: int, group: list[_Plan],
                   device_images: Sequence[Any] | None) -> list[np.ndarray | None]:
        import torch
        import torch.nn.functional as F

        dev = self._torch_device
        cuda = dev.type == "cuda"
        # Fixed batch shapes on the GPU: cuDNN searches algorithms once per shape.
        n = self.det_batch_size if cuda else len(group)
        batch = torch.zeros((n, 3, hb, wb), dtype=torch.float32, device=dev)
        same: dict[tuple, list[int]] = defaultdict(list)
        for k, p in enumerate(group):
            same[(p.work.shape[:2], p.det_h, p.det_w)].append(k)
        for ((h, w), det_h, det_w), members in same.items():
            src = torch.stack([self._device_image(group[k], device_images) for k in members])
            x = src.permute(0, 3, 1, 2).flip(1).float()  # NHWC RGB uint8 -> NCHW BGR float
            if (h, w) != (det_h, det_w):
                x = F.interpolate(x, size=(det_h, det_w), mode="bilinear",
                                  align_corners=False, antialias=False)
            idx = torch.tensor(members, device=dev)
            batch[idx, :, :det_h, :det_w] = x.mul_(2.0 / 255.0).sub_(1.0)
        if self._det_net is not None:
            with torch.inference_mode():
                pred = self._det_net(batch).float()[:len(group), 0]
        else:
            pred = self._run_bound(batch)[:len(group), 0]
        hs = torch.tensor([p.det_h for p in group], device=dev)
        ws = torch.tensor([p.det_w for p in group], device=dev)
        rows = torch.arange(hb, device=dev)[None, :, None] < hs[:, None, None]
        cols = torch.arange(wb, device=dev)[None, None, :] < ws[:, None, None]
        peaks = pred.masked_fill(~(rows & cols), 0.0).amax(dim=(1, 2))
        need = (peaks >= self.box_thresh).nonzero().flatten().tolist()
        maps: list[np.ndarray | None] = [None] * len(group)
        if need:
            picked = pred[need]
            host = torch.empty(picked.shape, dtype=picked.dtype, pin_memory=cuda)
            host.copy_(picked, non_blocking=cuda)
            if cuda:
                torch.cuda.current_stream(dev).synchronize()
            arr = host.numpy()
            for j, k in enumerate(need):
                maps[k] = arr[j, :group[k].det_h, :group[k].det_w]
        return maps

    def _device_image(self, p: _Plan, device_images: Sequence[Any] | None):
        import torch

        if device_images is not None and p.untouched:
            t = device_images[p.index]
            if t.device == self._torch_device and t.dtype == torch.uint8:
                return t
        cpu = torch.from_numpy(np.require(p.work, np.uint8, ["C", "W"]))
        if self._torch_device.type == "cuda":
            return cpu.pin_memory().to(self._torch_device, non_blocking=True)
        return cpu

    def _run_bound(self, batch):
        """One detector call on a torch tensor, in place on its device (I/O binding)."""
        import torch

        out = torch.empty((batch.shape[0], 1, batch.shape[2], batch.shape[3]),
                          dtype=torch.float32, device=batch.device)
        kind, index = batch.device.type, batch.device.index or 0
        binding = self._det.io_binding()
        binding.bind_input(self._det_in, kind, index, np.float32, tuple(batch.shape),
                           batch.data_ptr())
        binding.bind_output(self._det_out, kind, index, np.float32, tuple(out.shape),
                            out.data_ptr())
        if batch.is_cuda:
            torch.cuda.current_stream(batch.device).synchronize()  # the input is written
        self._det.run_with_iobinding(binding)
        binding.synchronize_outputs()
        return out

    def _post(self, p: _Plan, prob: np.ndarray) -> list[tuple[list[tuple[float, float]], float]]:
        """rapidocr's DB post-process, box order and mapping, then deparrot's guards."""
        from rapidocr.ch_ppocr_det.main import TextDetector
        from rapidocr.utils.process_img import map_boxes_to_original

        boxes, scores = self._db(prob[None, None], p.work.shape[:2])
        if len(boxes) == 0:
            return []
        # rapidocr sorts boxes into reading order but leaves the scores unsorted; carry
        # each box's index through its own sort so scores stay with their boxes.
        idx = np.arange(len(boxes), dtype=np.float32)
        tagged = np.concatenate([boxes.astype(np.float32),
                                 np.repeat(idx[:, None, None], 2, axis=2)], axis=1)
        ordered = TextDetector.sorted_boxes(tagged)
        order = ordered[:, 4, 0].astype(int)
        height, width = p.rgb.shape[:2]
        mapped = map_boxes_to_original(ordered[:, :4, :].copy(), p.op_record, height, width)
        polygons = [[(float(x), float(y)) for x, y in box] for box in mapped]
        if not p.own:  # a second look: guarded in the image's own pixels (_merge)
            return [(poly, float(scores[k])) for poly, k in zip(polygons, order, strict=True)]
        grey: list = [None]  # computed on the first box that needs it
        return [(polygon, float(scores[k])) for polygon, k in zip(polygons, order, strict=True)
                if self._plausible(polygon, p.rgb, height, width, grey)]

    def _plausible(self, polygon, rgb: np.ndarray, height: int, width: int,
                   grey_cache: list, max_fraction: float | None = None) -> bool:
        """deparrot's guards against the detector's boxes over flat backdrops."""
        area = polygon_area(polygon)
        limit = self.max_box_fraction if max_fraction is None else max_fraction
        if area < self.min_box_area or area > limit * height * width:
            return False
        if self.min_edge_density > 0:
            if grey_cache[0] is None:
                grey_cache[0] = grey_levels(rgb)
            if edge_density(grey_cache[0], polygon) < self.min_edge_density:
                return False
        return True

    # -- recognition ---------------------------------------------------------------

    def _recognizer(self):
        if self._rec is None:
            from rapidocr.ch_ppocr_rec import TextRecognizer

            rec = self.cfg.Rec
            cfg = _AttrDict({k: rec[k] for k in rec})
            cfg.update(engine_cfg=self.cfg.EngineConfig[rec.engine_type.value],
                       model_root_dir=None, font_path=None, session=self._rec_session)
            if self._rec_net is None:
                self._rec = TextRecognizer(cfg)
            else:
                self._rec = _torch_text_recognizer(cfg, self._rec_net, self._torch_device)
        return self._rec

    def _recognize(self, plans: list[_Plan], boxes: dict[int, list]
                   ) -> dict[tuple[int, int], tuple[str, float]]:
        from rapidocr.ch_ppocr_rec import TextRecInput
        from rapidocr.utils.process_img import get_rotate_crop_image

        t0 = time.perf_counter()
        keys, crops = [], []
        for p in plans:
            for k, (polygon, _) in enumerate(boxes.get(p.index, [])):
                pts = np.asarray(polygon, dtype=np.float32)
                crop = get_rotate_crop_image(p.rgb, pts)
                keys.append((p.index, k))
                crops.append(np.ascontiguousarray(crop[:, :, ::-1]))  # the model reads BGR
        if not crops:
            return {}
        if self.rec_padding == "per_call":  # rapidocr's own batching (benchmarks compare)
            out = self._recognizer()(TextRecInput(img=crops))
            read = [(str(t), float(c)) for t, c in zip(out.txts, out.scores, strict=True)]
        else:
            read = self._read_crops(crops)
        self.seconds["rec"] += time.perf_counter() - t0
        return dict(zip(keys, read, strict=True))

    def _read_crops(self, crops: list[np.ndarray]) -> list[tuple[str, float]]:
        """rapidocr's recogniser, with each crop's padded width set by the crop alone.

        TextRecognizer pads every crop of a call to the widest aspect ratio *in that
        call*, so a crop read beside a wider one saw a different input, and its text
        could change with the batch it landed in (hence with chunking). Here a crop's
        width is its own aspect ratio rounded up to REC_RATIO_STEP (at least the model's
        320/48), and only crops with the same padded width share a call: the same crop
        gets the same input tensor whatever else is being read.
        """
        rec = self._recognizer()
        _, img_h, img_w = rec.rec_image_shape[:3]
        floor = img_w / img_h
        groups: dict[float, list[int]] = defaultdict(list)
        ratios = [c.shape[1] / float(c.shape[0]) for c in crops]
        for i, ratio in enumerate(ratios):
            groups[max(floor, math.ceil(ratio / REC_RATIO_STEP) * REC_RATIO_STEP)].append(i)
        out: list[tuple[str, float]] = [("", 0.0)] * len(crops)
        for padded, members in sorted(groups.items()):
            for start in range(0, len(members), self.rec_batch_size):
                part = members[start:start + self.rec_batch_size]
                batch = np.stack([rec.resize_norm_img(crops[i], padded) for i in part])
                wh_ratios = [ratios[i] for i in part]
                if self._rec_net is not None:
                    # CTCLabelDecode.__call__ is argmax/max over the classes, then
                    # decode: the reduction runs on the device (18710 classes a step).
                    idx, prob = _torch_rec_argmax(self._rec_net, batch, self._torch_device)
                    lines, _ = rec.postprocess_op.decode(idx, prob, False, wh_ratios, padded,
                                                         remove_duplicate=True)
                else:
                    preds = rec.session(batch.astype(np.float32))
                    lines, _ = rec.postprocess_op(preds, False, wh_ratio_list=wh_ratios,
                                                  max_wh_ratio=padded)
                for i, (txt, score) in zip(part, lines, strict=True):
                    out[i] = (str(txt), float(score))
        return out


class _TorchRecSession:
    """What rapidocr's TextRecognizer calls as `session(batch)`: the ONNX recogniser's
    output (N, steps, classes) float32 numpy array, computed by the torch module."""

    def __init__(self, net: Any, device: Any) -> None:
        self.net, self.device = net, device

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return _net_output(self.net, batch, self.device).cpu().numpy()


def _torch_text_recognizer(cfg: Any, net: Any, device: Any):
    """rapidocr's TextRecognizer on the torch recogniser, without an onnxruntime session.

    TextRecognizer.__init__ insists on an onnxruntime InferenceSession (it reads the
    character list from the model's metadata through it); everything else it keeps is
    set here the same way: the CTC decoder from the ONNX file's own character list
    (`metadata_props["character"]`), batch size, input shape and config.
    """
    from rapidocr.ch_ppocr_rec import TextRecognizer
    from rapidocr.ch_ppocr_rec.utils import CTCLabelDecode

    if "character" not in net.metadata:
        raise ValueError("the recognition model has no character list in its metadata")
    rec = TextRecognizer.__new__(TextRecognizer)
    rec.session = _TorchRecSession(net, device)
    rec.postprocess_op = CTCLabelDecode(character=net.metadata["character"].splitlines())
    rec.rec_batch_num = cfg["rec_batch_num"]
    rec.rec_image_shape = cfg["rec_img_shape"]
    rec.cfg = cfg
    return rec


def _torch_rec_argmax(net: Any, batch: np.ndarray, device: Any
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Per step, the best class and its probability (what CTCLabelDecode takes from the
    (N, steps, classes) output), reduced where the network ran."""
    # ties: the first index, as numpy's argmax
    prob, idx = _net_output(net, batch, device).max(dim=2)
    return idx.cpu().numpy(), prob.cpu().numpy()


def _net_output(net: Any, batch: np.ndarray, device: Any):
    """A udfs.ppocr_torch module's float32 output for a host batch, left on `device`."""
    import torch

    with torch.inference_mode():
        x = torch.from_numpy(np.ascontiguousarray(batch, np.float32)).to(device)
        return net(x).float()


def _torch_cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def _rect(polygon: Sequence[tuple[float, float]]) -> tuple[float, float, float, float]:
    pts = np.asarray(polygon, dtype=np.float64)
    return pts[:, 0].min(), pts[:, 1].min(), pts[:, 0].max(), pts[:, 1].max()


def _merge(first: list, second: list, scale: float, left: float, top: float,
           shape: tuple[int, int], keep) -> list:
    """The first look's boxes plus the second look's (mapped back into the image) that
    are not already covered: at least half of a second-look box's rectangle inside a
    first-look box's rectangle means the same text."""
    h, w = shape
    out = list(first)
    rects = [_rect(p) for p, _ in first]
    for polygon, score in second:
        mapped = [(min(max(x / scale - left, 0.0), float(w)),
                   min(max(y / scale - top, 0.0), float(h))) for x, y in polygon]
        x0, y0, x1, y1 = _rect(mapped)
        area = (x1 - x0) * (y1 - y0)
        if area <= 0 or not keep(mapped):
            continue  # wholly in the margin, or over a flat backdrop
        covered = any(
            max(0.0, min(x1, r[2]) - max(x0, r[0])) * max(0.0, min(y1, r[3]) - max(y0, r[1]))
            >= 0.5 * area for r in rects)
        if not covered:
            out.append((mapped, score))
    return out


def _cuda_index(device: Any) -> int | None:
    """The CUDA ordinal of a torch device / "cuda:N" string, else None."""
    if device is None:
        return None
    kind = getattr(device, "type", None)
    if kind is None:
        text = str(device)
        kind, _, num = text.partition(":")
        return (int(num) if num else 0) if kind == "cuda" else None
    return (device.index or 0) if kind == "cuda" else None


def _providers(cuda_index: int | None) -> list[Any]:
    if cuda_index is None:
        return ["CPUExecutionProvider"]
    cuda = {
        "device_id": cuda_index,
        # Batch shapes are fixed per letterbox bucket: the exhaustive search runs once
        # per shape and then picks the fastest kernels.
        "cudnn_conv_algo_search": "EXHAUSTIVE",
        "arena_extend_strategy": "kSameAsRequested",
        "do_copy_in_default_stream": True,
    }
    return [("CUDAExecutionProvider", cuda), "CPUExecutionProvider"]


def _session_options(num_threads: int):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.enable_cpu_mem_arena = True  # rapidocr turns it off; reusing buffers is cheaper
    if num_threads > 0:
        opts.intra_op_num_threads = int(num_threads)
        opts.inter_op_num_threads = 1
    # Spinning threads burn the CPU that decoding and the other Spark tasks need.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return opts


def batched_spotter(device: Any = None, cpu_threads: int = 0, **options: Any) -> BatchedOcrSpotter:
    """Spotter factory for `score.spotter: udfs.batched_ocr:batched_spotter`."""
    options.setdefault("device", device)
    if cpu_threads > 0:
        options.setdefault("num_threads", cpu_threads)
    return BatchedOcrSpotter(**options)
