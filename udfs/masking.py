"""Text masking for T-MARS-style scoring (Maini et al., ICLR 2024).

T-MARS asks whether a pair still matches once the text in the image is gone: the OCR
boxes are masked and the masked image is CLIP-scored against the caption. An image whose
only match with its caption was the text (a poster read aloud) loses its score; a photo
with a small sign keeps it.

Two fills, both on the decoded RGB array the other models see (no second decode):
- `mean`: each box polygon is filled with the mean colour of the image outside the
  boxes (the whole image's mean when boxes cover it all). Cheap, deterministic, no
  extra dependency.
- `inpaint`: OpenCV's Telea inpainting (`cv2.inpaint`) fills the boxes from their
  surroundings; smoother, a few milliseconds more per image. OpenCV is installed with
  the OCR package (rapidocr).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

MASK_METHODS = ("mean", "inpaint")
INPAINT_RADIUS = 3  # pixels around each masked pixel that Telea's method reads

Polygon = Sequence[Sequence[float]]


def box_mask(height: int, width: int, polygons: Sequence[Polygon]) -> np.ndarray:
    """Boolean (height, width) mask of the pixels inside any polygon (outline included)."""
    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    for poly in polygons:
        points = [(float(x), float(y)) for x, y in poly]
        if len(points) >= 3:
            draw.polygon(points, fill=255, outline=255)
        elif points:  # a degenerate box: its bounding rectangle
            xs, ys = zip(*points, strict=True)
            draw.rectangle([min(xs), min(ys), max(xs), max(ys)], fill=255)
    return np.asarray(canvas) > 0


def mask_text(image: np.ndarray, polygons: Sequence[Polygon],
              method: str = "mean") -> np.ndarray:
    """A copy of the HxWx3 uint8 `image` with the text boxes filled (`method`: module
    docstring); the image itself when there is nothing to mask."""
    if method not in MASK_METHODS:
        raise ValueError(f"method must be one of {MASK_METHODS}, got {method!r}")
    arr = np.asarray(image)
    if not polygons:
        return arr
    inside = box_mask(arr.shape[0], arr.shape[1], polygons)
    if not inside.any():
        return arr
    if method == "inpaint":
        import cv2

        rgb = np.ascontiguousarray(arr[:, :, :3], dtype=np.uint8)
        return cv2.inpaint(rgb, inside.astype(np.uint8) * 255, INPAINT_RADIUS,
                           cv2.INPAINT_TELEA)
    out = np.array(arr, dtype=np.uint8, copy=True)
    outside = arr[~inside] if not inside.all() else arr.reshape(-1, arr.shape[-1])
    out[inside] = np.round(outside.reshape(-1, arr.shape[-1]).mean(axis=0)).astype(np.uint8)
    return out
