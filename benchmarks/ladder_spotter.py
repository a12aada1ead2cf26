"""A text spotter that does no model work, named by import path in the scale ladder
(`score.spotter=ladder_spotter:make`): score then measures its data path alone."""

from __future__ import annotations

from udfs.ocr import OcrResult


class NoTextSpotter:
    """Finds no text in any image, at no cost."""

    def __init__(self, device=None, cpu_threads: int = 0) -> None:
        self.device = device

    def spot(self, images, recognize: bool = False) -> list[OcrResult]:
        return [OcrResult([], img.shape[0], img.shape[1]) for img in images]


def make(device=None, cpu_threads: int = 0) -> NoTextSpotter:
    return NoTextSpotter(device=device, cpu_threads=cpu_threads)
