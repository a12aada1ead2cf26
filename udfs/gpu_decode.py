"""JPEG decoding on the GPU (nvjpeg through torchvision), for `score.decode_device: gpu`.

At thousands of images per second per GPU the CPU decode of the stored JPEGs (and of the
larger OCR views) takes more host cores than a GPU node has per GPU. nvjpeg decodes a
batch of JPEGs in one call on the device, where the models need the pixels anyway.

Only what nvjpeg decodes exactly like Pillow's decoder would accept goes to the GPU:
baseline JPEGs (not progressive), 1 or 3 colour components (not CMYK), no EXIF rotation
(torchvision applies it only on CPU), ending in an EOI marker (Pillow calls a truncated
file an error; nvjpeg may not), within `max_pixels` and GPU_MAX_PIXELS. Everything else,
and a batch nvjpeg refuses, is left to udfs.decode (`None` in the result), so error
reasons stay decode_image's. The pixels differ slightly from Pillow's (another IDCT and
chroma upsampling): CLIP scores agree within 0.01 (tests/udfs/test_gpu_decode.py, on a GPU).
"""

from __future__ import annotations

import functools
import io
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

from udfs.decode import sniff_format

DECODE_DEVICES = ("cpu", "gpu")
# One image above this many pixels is decoded on the CPU: its HxWx3 output alone would be
# 48 MB, and a batch of them could take GPU memory the models need.
GPU_MAX_PIXELS = 16_000_000
# Pixels per nvjpeg call (its output: ~3 bytes each on the device, ~200 MB per call).
CALL_PIXELS = 64_000_000
_EOI = b"\xff\xd9"
_EXIF_ORIENTATION = 0x0112


def gpu_decodable(data: bytes | None, max_pixels: int) -> tuple[int, int] | None:
    """(width, height) from the header when nvjpeg should decode `data`, else None.

    Pillow reads only the markers before the scan here (no pixel is decoded)."""
    if not data or sniff_format(data[:16]) != "JPEG" or data.rstrip(b"\0\r\n ")[-2:] != _EOI:
        return None
    try:
        with Image.open(io.BytesIO(data), formats=["JPEG"]) as img:
            w, h = img.size
            if img.format != "JPEG" or img.mode not in ("RGB", "L"):
                return None
            if img.info.get("progressive") or img.info.get("progression"):
                return None
            if w <= 0 or h <= 0 or w * h > min(max_pixels, GPU_MAX_PIXELS,
                                               Image.MAX_IMAGE_PIXELS or w * h):
                return None
            try:
                orientation = img.getexif().get(_EXIF_ORIENTATION, 1)
            except Exception:
                return None  # Pillow's decoder tolerates a bad EXIF; let it decide
            return (w, h) if orientation in (None, 1) else None
    except Exception:
        return None


@functools.lru_cache(maxsize=1)
def warn_no_cuda() -> None:
    """Once per worker: `decode_device: gpu` asked for, no CUDA device to decode on."""
    warnings.warn("score.decode_device is gpu but the worker has no CUDA device: JPEGs "
                  "are decoded on the CPU", RuntimeWarning, stacklevel=3)


@functools.lru_cache(maxsize=1)
def _warn_batch_refused(reason: str) -> None:
    warnings.warn(f"nvjpeg refused a batch ({reason}); its images were decoded on the CPU "
                  "(said once per worker)", RuntimeWarning, stacklevel=3)


_streams: dict[Any, Any] = {}


@functools.lru_cache(maxsize=1)
def _quiet_torchvision() -> None:
    """torchvision >= 0.29 warns that its image decoders are deprecated (for TorchCodec) on
    every call; filtered once for the process (catch_warnings is not thread-safe)."""
    warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torchvision\.io")


def _side_stream(device: Any) -> Any:
    """One decode stream per device: the next batch's decode runs beside the models."""
    import torch

    if device not in _streams:
        _streams[device] = torch.cuda.Stream(device=device)
    return _streams[device]


def decode_jpegs(blobs: Sequence[bytes | None], device: Any, max_pixels: int
                 ) -> tuple[list[Any], list[np.ndarray | None]]:
    """Decode the GPU-decodable JPEGs of `blobs` on `device` in batched nvjpeg calls.

    Returns (tensors, arrays), both aligned with `blobs`: uint8 HxWx3 tensors on the
    device and their host copies (uint8 HxWx3 numpy, for OCR post-processing and
    masking), or None where the CPU decoder must decide (see the module docstring).
    The work runs on a side stream, synchronised before returning; the caller's stream
    takes the tensors over with `adopt`.
    """
    import torch
    from torchvision.io import ImageReadMode, decode_jpeg

    dev = torch.device(device)
    tensors: list[Any] = [None] * len(blobs)
    arrays: list[np.ndarray | None] = [None] * len(blobs)
    sizes = [gpu_decodable(b, max_pixels) for b in blobs]
    todo = [i for i, s in enumerate(sizes) if s is not None]
    calls, call, pixels = [], [], 0
    for i in todo:
        w, h = sizes[i]  # type: ignore[misc]
        if call and pixels + w * h > CALL_PIXELS:
            calls.append(call)
            call, pixels = [], 0
        call.append(i)
        pixels += w * h
    if call:
        calls.append(call)
    stream = _side_stream(dev)
    _quiet_torchvision()
    with torch.cuda.stream(stream):
        for idx in calls:
            inputs = [torch.frombuffer(bytearray(blobs[i]), dtype=torch.uint8) for i in idx]
            try:
                out = decode_jpeg(inputs, mode=ImageReadMode.RGB, device=dev)
            except Exception as exc:  # one bad image fails the call: all go to the CPU
                _warn_batch_refused(str(exc).splitlines()[0][:120] if str(exc) else "error")
                continue
            by_shape: dict[tuple[int, ...], list[int]] = {}
            for j, t in enumerate(out):
                by_shape.setdefault(tuple(t.shape), []).append(j)
            for members in by_shape.values():
                hwc = torch.stack([out[j].permute(1, 2, 0) for j in members])  # N,H,W,3
                host = torch.empty(hwc.shape, dtype=torch.uint8, pin_memory=True)
                host.copy_(hwc, non_blocking=True)
                for k, j in enumerate(members):
                    tensors[idx[j]] = hwc[k]
                    arrays[idx[j]] = host[k].numpy()
        stream.synchronize()
    return tensors, arrays


def adopt(tensors: Sequence[Any]) -> None:
    """Let the current stream use tensors made on the decode stream: their memory is not
    reused by a later decode while this stream's kernels may still read it."""
    import torch

    for t in tensors:
        if t is not None and t.is_cuda:
            t.record_stream(torch.cuda.current_stream(t.device))
